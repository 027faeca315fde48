import { NodeHttpClient } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { Source } from "@tessera/core"
import { Bitbucket as BitbucketProvider } from "@tessera/providers"
import { Effect, Option, TestClock } from "effect"
import { Bitbucket, FakeServer } from "../fakes/index.js"
import * as Harness from "./harness.js"

const withHttp = Effect.provide(NodeHttpClient.layerUndici)

const fake = (options: Bitbucket.Options = {}) =>
  Effect.flatMap(FakeServer.clockNow, (now) => Bitbucket.make({ now, ...options }))

const validate = (apiUrl: string, token: string) => Harness.validate(BitbucketProvider.provider({ apiUrl }), token)

const repositories = (bitbucket: Bitbucket.BitbucketServer, token: string) =>
  Harness.observeGet(BitbucketProvider.observe, `${bitbucket.url}/2.0/repositories/team`, token)

describe("bitbucket provider against the fake Bitbucket API", () => {
  it.scoped("validates a token with /2.0/user: username, and no rate limit when none is sent", () =>
    Effect.gen(function*() {
      const bitbucket = yield* fake()
      bitbucket.addToken("bb-valid", { username: "atlas" })
      const validation = yield* validate(bitbucket.url, "bb-valid")
      expect(validation).toMatchObject({ valid: true, username: "atlas", upstreamStatus: 200 })
      expect(validation.rateLimit).toBeUndefined()
      expect(bitbucket.lastRequest("user")?.headers.authorization).toBe("Bearer bb-valid")
    }).pipe(withHttp))

  it.scoped("reads X-RateLimit-* when the API sends them, and takes a base URL ending in /2.0", () =>
    Effect.gen(function*() {
      const bitbucket = yield* fake({ rateLimitHeaders: true })
      bitbucket.addToken("bb-valid", { username: "atlas", limit: 1000 })
      const validation = yield* validate(`${bitbucket.url}/2.0`, "bb-valid")
      expect(validation.rateLimit).toMatchObject({ limit: 1000, remaining: 999, resetAt: 3_600_000, limited: false })
    }).pipe(withHttp))

  it.scoped("reports a revoked token invalid", () =>
    Effect.gen(function*() {
      const bitbucket = yield* fake()
      bitbucket.addToken("bb-revoked")
      bitbucket.revoke("bb-revoked")
      expect(yield* validate(bitbucket.url, "bb-revoked")).toEqual({
        valid: false,
        reason: "Unauthorized",
        upstreamStatus: 401
      })
    }).pipe(withHttp))

  it.scoped("reads 429 with Retry-After as a limit for that long", () =>
    Effect.gen(function*() {
      const bitbucket = yield* fake()
      bitbucket.addToken("bb-none", { limit: 5, remaining: 0, resetAt: new Date(600_000) })
      yield* TestClock.adjust("100 seconds")
      const refused = yield* repositories(bitbucket, "bb-none")
      expect(refused.status).toBe(429)
      expect(refused.verdict).toEqual({ _tag: "rate_limited", until: 600_000, scope: "secondary" })
    }).pipe(withHttp))

  it.scoped("reads a bare 429 as a limit for the default minute", () =>
    Effect.gen(function*() {
      const bitbucket = yield* fake({ retryAfter: false })
      bitbucket.addToken("bb-none", { limit: 5, remaining: 0 })
      const refused = yield* repositories(bitbucket, "bb-none")
      expect(refused.status).toBe(429)
      expect(refused.verdict).toEqual({ _tag: "rate_limited", until: Source.DEFAULT_LIMIT_MS, scope: "secondary" })
      expect(Option.getOrThrow(refused.rateLimit)).toMatchObject({ remaining: 0, limited: true })
    }).pipe(withHttp))
})
