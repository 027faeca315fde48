import { NodeHttpClient } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { Lifecycle, Source } from "@tessera/core"
import { Drivers, GitHub as GitHubProvider, Static } from "@tessera/providers"
import { ConfigProvider, Effect, Option, Redacted, TestClock } from "effect"
import { FakeServer, GitHub } from "../fakes/index.js"
import * as Harness from "./harness.js"

const withHttp = Effect.provide(NodeHttpClient.layerUndici)

const fake = (options: GitHub.Options = {}) =>
  Effect.flatMap(FakeServer.clockNow, (now) => GitHub.make({ now, ...options }))

const validate = (url: string, token: string) => Harness.validate(GitHubProvider.provider({ apiUrl: url }), token)

const repo = (github: GitHub.GitHubServer, token: string) =>
  Harness.observeGet(GitHubProvider.observe, `${github.url}/repos/octo/hello`, token)

describe("github provider against the fake GitHub API", () => {
  it.scoped("validates a token: login from /user, core quota from /rate_limit, with GitHub's headers", () =>
    Effect.gen(function*() {
      const github = yield* fake()
      github.addToken("ghp_valid", { login: "octocat" })
      const validation = yield* validate(github.url, "ghp_valid")
      expect(validation).toMatchObject({ valid: true, username: "octocat", upstreamStatus: 200 })
      // /user used one request; /rate_limit used none
      expect(validation.rateLimit).toMatchObject({ limit: 5000, remaining: 4999, resetAt: 3_600_000, resource: "core", limited: false })
      expect(github.quota("ghp_valid")?.remaining).toBe(4999)
      const sent = github.lastRequest("rate_limit")?.headers
      expect(sent).toMatchObject({
        authorization: "Bearer ghp_valid",
        accept: "application/vnd.github+json",
        "x-github-api-version": "2022-11-28"
      })
    }).pipe(withHttp))

  it.scoped("reports a revoked token invalid with GitHub's reason", () =>
    Effect.gen(function*() {
      const github = yield* fake()
      github.addToken("ghp_revoked")
      github.revoke("ghp_revoked")
      const validation = yield* validate(github.url, "ghp_revoked")
      expect(validation).toEqual({ valid: false, reason: "Bad credentials", upstreamStatus: 401 })
      expect(github.calls("user")).toBe(0)
    }).pipe(withHttp))

  it.scoped("accepts a token that may not read /user (403), without a username", () =>
    Effect.gen(function*() {
      const github = yield* fake()
      github.addToken("ghs_app")
      github.failNext("user", { status: 403, body: JSON.stringify({ message: "Resource not accessible by integration" }) })
      const validation = yield* validate(github.url, "ghs_app")
      expect(validation.valid).toBe(true)
      expect(validation.username).toBeUndefined()
      expect(validation.reason).toContain("Resource not accessible by integration")
      expect(validation.rateLimit).toMatchObject({ limit: 5000, remaining: 5000 })
    }).pipe(withHttp))

  it.scoped("reads a quota exhausted through the fake: limited on the last 200, a primary limit on the 403, back after the reset", () =>
    Effect.gen(function*() {
      const github = yield* fake()
      github.addToken("ghp_small", { limit: 3 })
      const answers = [yield* repo(github, "ghp_small"), yield* repo(github, "ghp_small"), yield* repo(github, "ghp_small")]
      expect(answers.map((answer) => [answer.status, Option.getOrThrow(answer.rateLimit).remaining])).toEqual([[200, 2], [200, 1], [200, 0]])
      expect(answers.map((answer) => Option.getOrThrow(answer.rateLimit).limited)).toEqual([false, false, true])

      const refused = yield* repo(github, "ghp_small")
      expect(refused.status).toBe(403)
      expect(refused.verdict).toEqual({ _tag: "rate_limited", until: 3_600_000, scope: "primary" })
      expect(Option.getOrThrow(refused.rateLimit)).toMatchObject({ limit: 3, remaining: 0, resetAt: 3_600_000, limited: true })

      // validation still accepts the token, reports the exhausted quota and spends nothing on /user
      github.resetCalls()
      const validation = yield* validate(github.url, "ghp_small")
      expect(validation).toMatchObject({ valid: true, rateLimit: { remaining: 0, resetAt: 3_600_000, limited: true } })
      expect(github.calls("user")).toBe(0)

      yield* TestClock.adjust("1 hour")
      const again = yield* repo(github, "ghp_small")
      expect(again.verdict).toEqual({ _tag: "ok" })
      expect(Option.getOrThrow(again.rateLimit)).toMatchObject({ remaining: 2, limited: false })
    }).pipe(withHttp))

  it.scoped("reads an exhausted quota answered with 429 as the primary limit too", () =>
    Effect.gen(function*() {
      const github = yield* fake({ exhaustedStatus: 429 })
      github.addToken("ghp_one", { limit: 1 })
      yield* repo(github, "ghp_one")
      const refused = yield* repo(github, "ghp_one")
      expect(refused.status).toBe(429)
      expect(refused.verdict).toMatchObject({ _tag: "rate_limited", scope: "primary" })
    }).pipe(withHttp))

  it.scoped("reads a secondary limit (403 + retry-after) as a limit for that many seconds", () =>
    Effect.gen(function*() {
      const github = yield* fake()
      github.addToken("ghp_busy")
      yield* TestClock.adjust("10 seconds")
      github.secondaryLimit("ghp_busy", { retryAfterSeconds: 30 })
      const refused = yield* repo(github, "ghp_busy")
      expect(refused.status).toBe(403)
      expect(refused.verdict).toEqual({ _tag: "rate_limited", until: 40_000, scope: "secondary" })
      expect(Option.getOrThrow(refused.rateLimit)).toMatchObject({ remaining: 5000, resetAt: 40_000, limited: true })
      expect((yield* repo(github, "ghp_busy")).verdict).toEqual({ _tag: "ok" })
    }).pipe(withHttp))
})

describe("github pool from the environment", () => {
  it.scoped("GITHUB_TOKENS and GITHUB_API_URL make validated static accounts of the pool `github`", () =>
    Effect.gen(function*() {
      const github = yield* fake()
      github.addToken("ghp_first", { login: "first" })
      github.addToken("ghp_second", { login: "second" })
      const env = ConfigProvider.fromMap(new Map([["GITHUB_TOKENS", "ghp_first, ghp_second"], ["GITHUB_API_URL", github.url]]))
      const declared = yield* Effect.withConfigProvider(Drivers.accountsFromEnv, env)
      const first = Static.accountId("github", Redacted.make("ghp_first"))
      yield* Effect.gen(function*() {
        const lifecycle = yield* Lifecycle.Lifecycle
        const infos = yield* lifecycle.list
        expect(infos.map((info) => [info.provider, info.pool, info.status])).toEqual([
          ["github", "github", "available"],
          ["github", "github", "available"]
        ])
        const result = yield* lifecycle.validate(first)
        expect(result).toMatchObject({ valid: true, upstreamStatus: 200 })
        const info = yield* lifecycle.info(first)
        expect(info.username).toBe("first")
        expect(info.rateLimit).toMatchObject({ limit: 5000, remaining: 4999 })
        // the provider's reading of responses is registered as well
        const drivers = yield* Source.Drivers
        const provider = drivers.provider(yield* lifecycle.account(first))
        expect(provider.observe).toBe(GitHubProvider.observe)
      }).pipe(
        Effect.provide(Harness.lifecycle(Drivers.layerConfig, declared)),
        Effect.withConfigProvider(env)
      )
    }))
})
