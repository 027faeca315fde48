import { describe, expect, it } from "@effect/vitest"
import { Account, Crypto, Lifecycle, TokenStore } from "@tessera/core"
import { Effect, Fiber, Redacted, TestClock } from "effect"
import { Amp, FakeServer } from "../fakes/index.js"
import * as Harness from "./harness.js"

const HOUR = 3_600_000
const MINUTE = 60_000

const ampAccount = (baseUrl?: string) =>
  new Account.NewAccount({
    id: Harness.accountId("amp"),
    provider: "amp",
    source: new Account.PasswordSource({ baseUrl, username: "trader", password: Redacted.make("s3cret-pass") })
  })

const withAmp = <A, E>(
  options: Amp.Options,
  body: (amp: Amp.AmpServer, lifecycle: Lifecycle.LifecycleService) => Effect.Effect<A, E, Harness.Services>
) =>
  Effect.gen(function*() {
    const amp = yield* Amp.make({ users: { trader: "s3cret-pass" }, now: yield* FakeServer.clockNow, ...options })
    return yield* Effect.flatMap(Lifecycle.Lifecycle, (lifecycle) => body(amp, lifecycle)).pipe(
      Effect.provide(Harness.layer({ ampUrl: amp.url }))
    )
  })

describe("password (AMP) accounts against a fake AMP server", () => {
  it.scoped("obtains with username and password; a token without expiry lives 24 hours", () =>
    withAmp({ expiry: "none" }, (amp, lifecycle) =>
      Effect.gen(function*() {
        yield* lifecycle.add(ampAccount())
        const lease = yield* lifecycle.get("amp")
        expect(amp.isValid(Redacted.value(lease.token))).toBe(true)
        expect(amp.lastRequest("obtain")?.body).toEqual({ username: "trader", password: "s3cret-pass" })
        const info = yield* lifecycle.info("amp")
        expect(info.expiresAt).toBe(24 * HOUR)
        expect(info.tokenPreview).not.toContain(Redacted.value(lease.token))
      })))

  it.scoped("reads token/access_token and expires_in/expires_at", () =>
    Effect.gen(function*() {
      for (const [tokenField, expiry] of [["token", "expires_in"], ["access_token", "expires_at"]] as const) {
        yield* withAmp({ tokenField, expiry, tokenLifetimeSeconds: 7200 }, (_amp, lifecycle) =>
          Effect.gen(function*() {
            yield* lifecycle.add(ampAccount())
            yield* lifecycle.get("amp")
            expect((yield* lifecycle.info("amp")).expiresAt).toBe(2 * HOUR)
          }))
      }
    }))

  it.scoped("refreshes with the current token 5 minutes before expiry, without any caller", () =>
    withAmp({}, (amp, lifecycle) =>
      Effect.gen(function*() {
        yield* lifecycle.add(ampAccount())
        const first = yield* lifecycle.get("amp")
        yield* TestClock.adjust(55 * MINUTE)
        yield* Harness.waitUntil(() => amp.calls("refresh") === 1)
        yield* Harness.settle
        expect(amp.lastRequest("refresh")?.headers["authorization"]).toBe(`Bearer ${Redacted.value(first.token)}`)
        // the fake issues the token before its answer reaches the lifecycle
        yield* Harness.waitUntil(() => lifecycle.unsafeInfo("amp", 0)?.source === "refresh")
        expect(amp.issued().length).toBe(2)
        expect((yield* lifecycle.info("amp")).source).toBe("refresh")
      })))

  it.scoped("an expired token is replaced by a fresh obtain, never a refresh with the dead token", () =>
    Effect.gen(function*() {
      const amp = yield* Amp.make({ users: { trader: "s3cret-pass" }, now: yield* FakeServer.clockNow })
      const store = { filename: `${yield* Harness.tempDir}/tessera.db`, key: yield* Crypto.generateKey }
      const run = <A, E>(body: (lifecycle: Lifecycle.LifecycleService) => Effect.Effect<A, E, Harness.Services>) =>
        Effect.scoped(Effect.flatMap(Lifecycle.Lifecycle, body).pipe(
          Effect.provide(Harness.layer({ ampUrl: amp.url }, store)),
          Effect.provideService(Lifecycle.StartupFetch, false)
        ))
      yield* run((lifecycle) =>
        lifecycle.add(ampAccount(), { token: Redacted.make("amp_OLDTOKENOLDTOKENOLDTOKEN"), expiresAt: 10 * MINUTE }))
      // the token dies while nothing runs (the service is down, say)
      yield* TestClock.adjust(11 * MINUTE)
      yield* run((lifecycle) =>
        Effect.gen(function*() {
          const lease = yield* lifecycle.get("amp")
          expect(amp.isValid(Redacted.value(lease.token))).toBe(true)
        }))
      expect(amp.calls("refresh")).toBe(0)
      expect(amp.calls("obtain")).toBe(1)
    }))

  it.scoped("a refresh the server refuses falls back to obtain", () =>
    withAmp({}, (amp, lifecycle) =>
      Effect.gen(function*() {
        yield* lifecycle.add(ampAccount())
        yield* lifecycle.get("amp")
        amp.failNext("refresh", { status: 401, body: "{\"detail\":\"Token is invalid or expired\"}" })
        const info = yield* lifecycle.refresh("amp")
        expect(info.source).toBe("obtain")
        expect(amp.calls("obtain")).toBe(2)
        const audit = yield* Effect.flatMap(TokenStore.TokenStore, (store) => store.audit({ accountId: "amp" }))
        expect(audit.map((e) => e.type)).toContain("refresh_failed")
      })))

  it.scoped("a 429 is retried after its Retry-After", () =>
    withAmp({}, (amp, lifecycle) =>
      Effect.gen(function*() {
        yield* lifecycle.add(ampAccount())
        amp.failNext("obtain", { status: 429, retryAfter: "5" })
        const fiber = yield* Effect.fork(lifecycle.get("amp"))
        yield* Harness.waitUntil(() => amp.calls("obtain") === 1)
        yield* Harness.settle
        yield* TestClock.adjust(4999)
        yield* Harness.settle
        expect(amp.calls("obtain")).toBe(1)
        yield* TestClock.adjust(1)
        const lease = yield* Fiber.join(fiber)
        expect(amp.calls("obtain")).toBe(2)
        expect(amp.isValid(Redacted.value(lease.token))).toBe(true)
      })))

  it.scoped("5xx answers are retried at most API_RETRY_MAX_ATTEMPTS times, then the account shows the error", () =>
    withAmp({}, (amp, lifecycle) =>
      Effect.gen(function*() {
        yield* lifecycle.add(ampAccount())
        amp.failAlways("obtain", { status: 503 })
        const fiber = yield* Effect.fork(Effect.either(lifecycle.get("amp")))
        for (let attempt = 1; attempt <= 3; attempt++) {
          yield* Harness.waitUntil(() => amp.calls("obtain") >= attempt)
          yield* Harness.settle
          yield* TestClock.adjust("30 seconds")
        }
        const result = yield* Fiber.join(fiber)
        expect(result._tag).toBe("Left")
        expect(amp.calls("obtain")).toBe(3)
        const info = yield* lifecycle.info("amp")
        expect(info.status).toBe("missing")
        expect(info.lastError?.code).toBe("server")
      })))

  it.scoped("wrong credentials make the account invalid instead of retrying forever", () =>
    withAmp({ users: { trader: "another-password" } }, (amp, lifecycle) =>
      Effect.gen(function*() {
        yield* lifecycle.add(ampAccount())
        const error = yield* Effect.flip(lifecycle.get("amp"))
        expect(error.message).not.toContain("s3cret-pass")
        const info = yield* lifecycle.info("amp")
        expect(info.status).toBe("invalid")
        expect(amp.calls("obtain")).toBe(1)
      })))
})
