import { NodeHttpClient } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { GitLab as GitLabProvider } from "@tessera/providers"
import { Effect, Either, Option, TestClock } from "effect"
import { FakeServer, GitLab } from "../fakes/index.js"
import * as Harness from "./harness.js"

const withHttp = Effect.provide(NodeHttpClient.layerUndici)

const fake = Effect.flatMap(FakeServer.clockNow, (now) => GitLab.make({ now }))

const validate = (baseUrl: string, token: string) => Harness.validate(GitLabProvider.provider({ baseUrl }), token)

const project = (gitlab: GitLab.GitLabServer, token: string) =>
  Harness.observeGet(GitLabProvider.observe, `${gitlab.url}/api/v4/projects/1`, token)

describe("gitlab provider against the fake GitLab API", () => {
  it.scoped("validates a token with /api/v4/user: username and the RateLimit-* state of the answer", () =>
    Effect.gen(function*() {
      const gitlab = yield* fake
      gitlab.addToken("glpat-valid", { username: "tanuki" })
      const validation = yield* validate(gitlab.url, "glpat-valid")
      expect(validation).toMatchObject({ valid: true, username: "tanuki", upstreamStatus: 200 })
      expect(validation.rateLimit).toMatchObject({ limit: 2000, remaining: 1999, resetAt: 60_000, limited: false })
      expect(gitlab.lastRequest("user")?.headers.authorization).toBe("Bearer glpat-valid")
    }).pipe(withHttp))

  it.scoped("takes a base URL given with or without /api/v4", () =>
    Effect.gen(function*() {
      const gitlab = yield* fake
      gitlab.addToken("glpat-valid", { username: "tanuki" })
      expect((yield* validate(`${gitlab.url}/api/v4/`, "glpat-valid")).username).toBe("tanuki")
      expect(gitlab.calls("user")).toBe(1)
    }).pipe(withHttp))

  it.scoped("reports a revoked token invalid with GitLab's reason", () =>
    Effect.gen(function*() {
      const gitlab = yield* fake
      gitlab.addToken("glpat-revoked")
      gitlab.revoke("glpat-revoked")
      expect(yield* validate(gitlab.url, "glpat-revoked")).toEqual({
        valid: false,
        reason: "401 Unauthorized",
        upstreamStatus: 401
      })
    }).pipe(withHttp))

  it.scoped("reads a quota exhausted through the fake: limited on the last 200, a limit for Retry-After on the 429", () =>
    Effect.gen(function*() {
      const gitlab = yield* fake
      gitlab.addToken("glpat-small", { limit: 2 })
      yield* project(gitlab, "glpat-small")
      const last = yield* project(gitlab, "glpat-small")
      expect(Option.getOrThrow(last.rateLimit)).toMatchObject({ remaining: 0, resetAt: 60_000, limited: true })
      yield* TestClock.adjust("15 seconds")
      const refused = yield* project(gitlab, "glpat-small")
      expect(refused.status).toBe(429)
      expect(refused.verdict).toEqual({ _tag: "rate_limited", until: 60_000, scope: "secondary" })
      yield* TestClock.adjust("45 seconds")
      expect((yield* project(gitlab, "glpat-small")).verdict).toEqual({ _tag: "ok" })
    }).pipe(withHttp))

  it.scoped("fails to validate a throttled token rather than calling it invalid", () =>
    Effect.gen(function*() {
      const gitlab = yield* fake
      gitlab.addToken("glpat-none", { limit: 1, remaining: 0 })
      const result = yield* Effect.either(validate(gitlab.url, "glpat-none"))
      const error = Either.getLeft(result).pipe(Option.getOrThrow)
      expect(error).toMatchObject({ _tag: "UpstreamError", kind: "rate_limited", status: 429, retryAfterMs: 60_000 })
    }).pipe(withHttp))
})
