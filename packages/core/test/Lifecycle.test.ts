import { describe, expect, it } from "@effect/vitest"
import { Account, Crypto, Lifecycle, Settings, Token, TokenStore } from "@tessera/core"
import { Context, Cron, DateTime, Duration, Effect, Either, Exit, FastCheck, Fiber, Layer, Option, Redacted, TestClock } from "effect"
import * as path from "node:path"
import { tempDir } from "./utils/tempDir.js"
import * as TestUpstream from "./utils/TestUpstream.js"

const HOUR = 3_600_000
const MINUTE = 60_000

/** Lets forked fibers (scheduler, flights) run to their next wait. */
const settle = Effect.repeatN(Effect.yieldNow(), 50)

const withLifecycle = <A, E>(
  upstream: TestUpstream.TestUpstream,
  body: (lifecycle: Lifecycle.LifecycleService) => Effect.Effect<A, E>
) => Effect.flatMap(Lifecycle.Lifecycle, body).pipe(Effect.provide(TestUpstream.layer(upstream)))

describe("SPEC §2.1 proactive refresh", () => {
  it.scoped("refreshes at expiry minus the 5-minute window without any caller", () =>
    Effect.gen(function*() {
      const upstream = yield* TestUpstream.make({ lifetime: "1 hour" })
      yield* withLifecycle(upstream, (lifecycle) =>
        Effect.gen(function*() {
          yield* lifecycle.add(TestUpstream.testAccount("acme"))
          yield* lifecycle.get("acme")
          expect(yield* upstream.calls("obtain")).toBe(1)
          yield* TestClock.adjust(55 * MINUTE - 1)
          yield* settle
          expect(yield* upstream.calls("refresh")).toBe(0)
          yield* TestClock.adjust(1)
          yield* settle
          expect(yield* upstream.calls("refresh")).toBe(1)
          const info = yield* lifecycle.info("acme")
          expect(info.source).toBe("refresh")
          expect(info.expiresAt).toBe(55 * MINUTE + HOUR)
          // and again one window before the new expiry
          yield* TestClock.adjust(HOUR)
          yield* settle
          expect(yield* upstream.calls("refresh")).toBe(2)
        }))
    }))

  it.scoped("honours a configured window", () =>
    Effect.gen(function*() {
      const upstream = yield* TestUpstream.make({ lifetime: "1 hour" })
      yield* withLifecycle(upstream, (lifecycle) =>
        Effect.gen(function*() {
          yield* lifecycle.add(TestUpstream.testAccount("acme"))
          yield* lifecycle.get("acme")
          yield* TestClock.adjust(40 * MINUTE - 1)
          yield* settle
          expect(yield* upstream.calls("refresh")).toBe(0)
          yield* TestClock.adjust(1)
          yield* settle
          expect(yield* upstream.calls("refresh")).toBe(1)
        })).pipe(
          Effect.provideService(Settings.Settings, { ...Settings.Settings.defaultValue(), refreshWindow: Duration.minutes(20) })
        )
    }))
})

describe("SPEC §2.2 get", () => {
  it.scoped("returns the stored token while it is valid beyond the window", () =>
    Effect.gen(function*() {
      const upstream = yield* TestUpstream.make()
      yield* withLifecycle(upstream, (lifecycle) =>
        Effect.gen(function*() {
          yield* lifecycle.add(TestUpstream.testAccount("acme"))
          const first = yield* lifecycle.get("acme")
          yield* TestClock.adjust(30 * MINUTE)
          const second = yield* lifecycle.get("acme")
          expect(Redacted.value(second.token)).toBe(Redacted.value(first.token))
          expect(yield* upstream.calls("obtain")).toBe(1)
          expect(yield* upstream.calls("refresh")).toBe(0)
        }))
    }))

  it.scoped("refreshes first when the token is inside the window", () =>
    Effect.gen(function*() {
      const upstream = yield* TestUpstream.make()
      yield* withLifecycle(upstream, (lifecycle) =>
        Effect.gen(function*() {
          yield* lifecycle.add(TestUpstream.testAccount("acme"), {
            token: Redacted.make("manual-token-0001-abcdef"),
            expiresAt: 3 * MINUTE
          })
          const lease = yield* lifecycle.get("acme")
          expect(Redacted.value(lease.token)).toMatch(/^refresh-token-/)
          expect(yield* upstream.calls("refresh")).toBe(1)
          expect(yield* upstream.calls("obtain")).toBe(0)
        }))
    }))

  it.scoped("obtains a new token, never refreshing, when the token has expired", () =>
    Effect.gen(function*() {
      const upstream = yield* TestUpstream.make()
      const filename = path.join(yield* tempDir, "tessera.db")
      const key = yield* Crypto.generateKey
      const run = <A, E>(body: (lifecycle: Lifecycle.LifecycleService) => Effect.Effect<A, E>) =>
        Effect.scoped(Effect.flatMap(Lifecycle.Lifecycle, body).pipe(
          Effect.provide(TestUpstream.layer(upstream, { filename, key })),
          Effect.provideService(Lifecycle.StartupFetch, false)
        ))
      yield* run((lifecycle) =>
        lifecycle.add(TestUpstream.testAccount("acme"), { token: Redacted.make("manual-token-0001-abcdef"), expiresAt: 10 * MINUTE }))
      // the token dies while nothing runs (the service is down, say)
      yield* TestClock.adjust(20 * MINUTE)
      yield* run((lifecycle) =>
        Effect.gen(function*() {
          expect((yield* lifecycle.info("acme")).status).toBe("expired")
          const lease = yield* lifecycle.get("acme")
          expect(Redacted.value(lease.token)).toMatch(/^obtain-token-/)
        }))
      expect(yield* upstream.calls("refresh")).toBe(0)
      expect(yield* upstream.calls("obtain")).toBe(1)
    }))

  it.prop(
    "the decision: expired or missing → obtain, inside the window (never under the 60 s hand-out margin) → refresh, else use",
    { expiresIn: FastCheck.integer({ min: -HOUR, max: 2 * HOUR }), windowMs: FastCheck.integer({ min: 0, max: HOUR }), hasToken: FastCheck.boolean() },
    ({ expiresIn, windowMs, hasToken }) => {
      const now = 1_000_000_000
      const state: Token.TokenState = hasToken
        ? { ...Token.emptyState, token: Option.some({ token: Redacted.make("t"), expiresAt: Option.some(now + expiresIn), issuedAt: 0, origin: "obtain" }) }
        : Token.emptyState
      const need = Token.need(state, now, windowMs)
      if (!hasToken || expiresIn <= 0) expect(need).toBe("obtain")
      else if (expiresIn <= Math.max(windowMs, Token.HANDOUT_MARGIN_MS)) expect(need).toBe("refresh")
      else expect(need).toBe("use")
    }
  )

  it.scoped("obtains a token when there is none", () =>
    Effect.gen(function*() {
      const upstream = yield* TestUpstream.make()
      yield* withLifecycle(upstream, (lifecycle) =>
        Effect.gen(function*() {
          yield* lifecycle.add(TestUpstream.testAccount("acme"))
          expect((yield* lifecycle.info("acme")).status).toBe("missing")
          const lease = yield* lifecycle.get("acme")
          expect(Redacted.value(lease.token)).toMatch(/^obtain-token-/)
          expect((yield* lifecycle.info("acme")).status).toBe("available")
        }))
    }))

  it.scoped("fails with AccountNotFound for an unknown account", () =>
    Effect.gen(function*() {
      const upstream = yield* TestUpstream.make()
      const error = yield* withLifecycle(upstream, (lifecycle) => Effect.flip(lifecycle.get("nobody")))
      expect(error._tag).toBe("AccountNotFound")
    }))
})

describe("upstream outage", () => {
  it.scoped("a still-valid token keeps being served while renewal fails; the background retries; callers do not hammer", () =>
    Effect.gen(function*() {
      const upstream = yield* TestUpstream.make()
      yield* withLifecycle(upstream, (lifecycle) =>
        Effect.gen(function*() {
          yield* lifecycle.add(TestUpstream.testAccount("acme"), {
            token: Redacted.make("manual-token-0001-abcdef"),
            expiresAt: 4 * MINUTE
          })
          yield* upstream.failNext("refresh", TestUpstream.upstreamError("connection"), 3)
          yield* upstream.failNext("obtain", TestUpstream.upstreamError("connection"), 3)
          yield* settle // the scheduler's first attempt fails (inside the window from the start)
          const leases = yield* Effect.forEach(Array.from({ length: 100 }), () => lifecycle.get("acme"), {
            concurrency: "unbounded"
          })
          expect(leases.every((lease) => Redacted.value(lease.token) === "manual-token-0001-abcdef")).toBe(true)
          const attempts = (yield* upstream.calls("refresh")) + (yield* upstream.calls("obtain"))
          expect(attempts).toBeLessThanOrEqual(2)
          expect((yield* lifecycle.info("acme")).lastError?.code).toBe("connection")
          for (let i = 0; i < 30; i++) {
            yield* TestClock.adjust("1 second")
            yield* settle
          }
          const renewed = yield* lifecycle.get("acme")
          expect(Redacted.value(renewed.token)).not.toBe("manual-token-0001-abcdef")
          expect((yield* lifecycle.info("acme")).lastError).toBeNull()
        }))
    }))
})

describe("SPEC §2.3 fallback", () => {
  it.scoped("a failed refresh of a still-valid token falls back to obtain", () =>
    Effect.gen(function*() {
      const upstream = yield* TestUpstream.make()
      yield* withLifecycle(upstream, (lifecycle) =>
        Effect.gen(function*() {
          yield* lifecycle.add(TestUpstream.testAccount("acme"))
          yield* lifecycle.get("acme")
          yield* upstream.failNext("refresh", TestUpstream.upstreamError("unauthorized", 401))
          const info = yield* lifecycle.refresh("acme")
          expect(info.source).toBe("obtain")
          expect(info.status).toBe("available")
          expect(yield* upstream.calls("refresh")).toBe(1)
          expect(yield* upstream.calls("obtain")).toBe(2)
        }))
    }))
})

describe("SPEC §2.4 single flight", () => {
  it.scoped("1,000 concurrent gets during expiry cause one upstream call and share its result", () =>
    Effect.gen(function*() {
      const upstream = yield* TestUpstream.make({ latency: "1 second" })
      yield* withLifecycle(upstream, (lifecycle) =>
        Effect.gen(function*() {
          yield* lifecycle.add(TestUpstream.testAccount("acme"), {
            token: Redacted.make("manual-token-0001-abcdef"),
            expiresAt: 2 * MINUTE
          })
          const fiber = yield* Effect.forEach(Array.from({ length: 1000 }), () => lifecycle.get("acme"), {
            concurrency: "unbounded"
          }).pipe(Effect.fork)
          yield* settle
          yield* TestClock.adjust("1 second")
          const leases = yield* Fiber.join(fiber)
          expect(leases).toHaveLength(1000)
          expect(new Set(leases.map((lease) => Redacted.value(lease.token))).size).toBe(1)
          expect((yield* upstream.calls("refresh")) + (yield* upstream.calls("obtain"))).toBe(1)
        }))
    }))

  it.scoped("1,000 concurrent gets share one failure too", () =>
    Effect.gen(function*() {
      const upstream = yield* TestUpstream.make({ latency: "1 second" })
      yield* withLifecycle(upstream, (lifecycle) =>
        Effect.gen(function*() {
          yield* lifecycle.add(TestUpstream.testAccount("acme"))
          yield* upstream.failNext("obtain", TestUpstream.upstreamError("rejected", 400))
          const fiber = yield* Effect.forEach(Array.from({ length: 1000 }), () => Effect.either(lifecycle.get("acme")), {
            concurrency: "unbounded"
          }).pipe(Effect.fork)
          yield* settle
          yield* TestClock.adjust("1 second")
          const results = yield* Fiber.join(fiber)
          expect(results.filter(Either.isLeft)).toHaveLength(1000)
          expect(yield* upstream.calls("obtain")).toBe(1)
        }))
    }))

  it.scoped("a manual refresh joins the scheduler's renewal already under way", () =>
    Effect.gen(function*() {
      const upstream = yield* TestUpstream.make({ latency: "1 second" })
      yield* withLifecycle(upstream, (lifecycle) =>
        Effect.gen(function*() {
          yield* lifecycle.add(TestUpstream.testAccount("acme"), {
            token: Redacted.make("manual-token-0001-abcdef"),
            expiresAt: 10 * MINUTE
          })
          yield* TestClock.adjust(5 * MINUTE) // the scheduler starts its refresh
          yield* settle
          const manual = yield* Effect.fork(lifecycle.refresh("acme"))
          const reader = yield* Effect.fork(lifecycle.get("acme"))
          yield* settle
          yield* TestClock.adjust("1 second")
          yield* Fiber.join(manual)
          yield* Fiber.join(reader)
          expect(yield* upstream.calls("refresh")).toBe(1)
        }))
    }))
})

describe("SPEC §2.6 startup", () => {
  const run = <A, E>(
    upstream: TestUpstream.TestUpstream,
    filename: string,
    key: Crypto.EncryptionKey,
    body: (lifecycle: Lifecycle.LifecycleService) => Effect.Effect<A, E>
  ) => Effect.scoped(Effect.flatMap(Lifecycle.Lifecycle, body).pipe(Effect.provide(TestUpstream.layer(upstream, { filename, key }))))

  it.scoped("a restart with a valid stored token makes zero upstream calls", () =>
    Effect.gen(function*() {
      const file = path.join(yield* tempDir, "tessera.db")
      const key = yield* Crypto.generateKey
      const upstream = yield* TestUpstream.make()
      const first = yield* run(upstream, file, key, (lifecycle) =>
        Effect.zipLeft(lifecycle.add(TestUpstream.testAccount("acme")), lifecycle.get("acme")).pipe(
          Effect.zipRight(lifecycle.get("acme"))
        ))
      expect(yield* upstream.calls("obtain")).toBe(1)
      yield* TestClock.adjust(10 * MINUTE)
      yield* run(upstream, file, key, (lifecycle) =>
        Effect.gen(function*() {
          yield* lifecycle.awaitStartup
          yield* settle
          const info = yield* lifecycle.info("acme")
          expect(info.source).toBe("restored")
          expect(info.status).toBe("available")
          const lease = yield* lifecycle.get("acme")
          expect(Redacted.value(lease.token)).toBe(Redacted.value(first.token))
        }))
      expect(yield* upstream.calls("obtain")).toBe(1)
      expect(yield* upstream.calls("refresh")).toBe(0)
    }))

  it.scoped("a restored token shows as restored, but its stored origin is never overwritten with that label", () =>
    Effect.gen(function*() {
      const file = path.join(yield* tempDir, "tessera.db")
      const key = yield* Crypto.generateKey
      const upstream = yield* TestUpstream.make()
      yield* run(upstream, file, key, (lifecycle) =>
        Effect.zipRight(lifecycle.add(TestUpstream.testAccount("acme")), lifecycle.get("acme")))
      yield* run(upstream, file, key, (lifecycle) =>
        Effect.gen(function*() {
          expect((yield* lifecycle.info("acme")).source).toBe("restored")
          // any commit writes the whole state back
          yield* lifecycle.reportUnauthorized("acme", { reason: "HTTP 401", token: Redacted.make("some-other-token") })
          yield* lifecycle.validate("acme")
        }))
      const stored = yield* Effect.scoped(
        Effect.flatMap(TokenStore.TokenStore, (store) => store.load(TestUpstream.accountId("acme"))).pipe(
          Effect.provide(TestUpstream.layer(upstream, { filename: file, key }))
        )
      )
      expect(Option.getOrThrow(Option.getOrThrow(stored).state.token).origin).toBe("obtain")
    }))

  it.scoped("with the startup fetch turned off nothing is fetched until asked", () =>
    Effect.gen(function*() {
      const file = path.join(yield* tempDir, "tessera.db")
      const key = yield* Crypto.generateKey
      const upstream = yield* TestUpstream.make()
      yield* run(upstream, file, key, (lifecycle) =>
        Effect.zipRight(lifecycle.add(TestUpstream.testAccount("a")), lifecycle.add(TestUpstream.testAccount("b"))))
      yield* run(upstream, file, key, (lifecycle) =>
        Effect.gen(function*() {
          yield* lifecycle.awaitStartup
          expect(yield* upstream.calls("obtain")).toBe(0)
          yield* lifecycle.get("a")
          expect(yield* upstream.calls("obtain")).toBe(1)
        })).pipe(Effect.provideService(Lifecycle.StartupFetch, false))
    }))

  it.scoped("missing and expiring tokens are fetched concurrently at startup", () =>
    Effect.gen(function*() {
      const file = path.join(yield* tempDir, "tessera.db")
      const key = yield* Crypto.generateKey
      const upstream = yield* TestUpstream.make({ latency: "1 second" })
      yield* run(upstream, file, key, (lifecycle) =>
        Effect.gen(function*() {
          yield* lifecycle.add(TestUpstream.testAccount("missing-1"))
          yield* lifecycle.add(TestUpstream.testAccount("missing-2"))
          yield* lifecycle.add(TestUpstream.testAccount("expiring"), {
            token: Redacted.make("manual-token-0001-abcdef"),
            expiresAt: 20 * MINUTE
          })
          yield* lifecycle.add(TestUpstream.testAccount("fresh"), {
            token: Redacted.make("manual-token-0002-abcdef"),
            expiresAt: 10 * HOUR
          })
        }))
      yield* TestClock.adjust(16 * MINUTE)
      yield* run(upstream, file, key, (lifecycle) =>
        Effect.gen(function*() {
          yield* settle
          yield* TestClock.adjust("1 second") // one upstream latency for all three at once
          yield* lifecycle.awaitStartup
          const infos = yield* lifecycle.list
          const byId = Object.fromEntries(infos.map((info) => [info.accountId, info]))
          expect(byId["missing-1"]!.source).toBe("startup")
          expect(byId["missing-2"]!.source).toBe("startup")
          expect(byId["expiring"]!.source).toBe("refresh")
          expect(byId["fresh"]!.source).toBe("restored")
        }))
      expect(yield* upstream.calls("obtain")).toBe(2)
      expect(yield* upstream.calls("refresh")).toBe(1)
    }))

  it.scoped("with the auth service down the service starts, shows missing with the error, and recovers in the background", () =>
    Effect.gen(function*() {
      const file = path.join(yield* tempDir, "tessera.db")
      const key = yield* Crypto.generateKey
      const upstream = yield* TestUpstream.make()
      yield* run(upstream, file, key, (lifecycle) => lifecycle.add(TestUpstream.testAccount("acme")))
      yield* upstream.failNext("obtain", TestUpstream.upstreamError("connection"), 4)
      yield* run(upstream, file, key, (lifecycle) =>
        Effect.gen(function*() {
          yield* lifecycle.awaitStartup
          const down = yield* lifecycle.info("acme")
          expect(down.status).toBe("missing")
          expect(down.lastError?.code).toBe("connection")
          expect(down.lastError?.message).toContain("simulated connection")
          for (let i = 0; i < 20; i++) {
            yield* TestClock.adjust("1 second")
            yield* settle
          }
          // 1 + ~2 + ~4 seconds of backoff (with jitter) for three more failures, then success
          const up = yield* lifecycle.info("acme")
          expect(up.status).toBe("available")
          expect(up.lastError).toBeNull()
          expect(yield* upstream.calls("obtain")).toBe(5)
        }))
    }))
})

describe("accounts declared by configuration", () => {
  it.scoped("are registered and fetched with the startup pass; changed credentials replace the stored ones", () =>
    Effect.gen(function*() {
      const file = path.join(yield* tempDir, "tessera.db")
      const key = yield* Crypto.generateKey
      const upstream = yield* TestUpstream.make()
      const declare = (secret: string): ReadonlyArray<Lifecycle.Declared> => [
        {
          account: new Account.NewAccount({
            id: TestUpstream.accountId("declared"),
            provider: "test",
            source: new Account.CustomSource({ kind: "test", secrets: { password: Redacted.make(secret) } })
          })
        },
        { account: TestUpstream.staticAccount("pat"), token: { token: Redacted.make("ghp_declared_static_0001") } }
      ]
      const start = (secret: string) =>
        Effect.scoped(
          Effect.flatMap(Lifecycle.Lifecycle, (lifecycle) =>
            Effect.gen(function*() {
              yield* lifecycle.awaitStartup
              const declared = yield* lifecycle.info("declared")
              const account = yield* lifecycle.account("declared")
              const pat = yield* lifecycle.get("pat")
              return { declared, account, pat }
            })).pipe(
              Effect.provide(TestUpstream.layer(upstream, { filename: file, key })),
              Effect.provideService(Lifecycle.DeclaredAccounts, declare(secret))
            )
        )
      const first = yield* start("first-secret")
      expect(first.declared.source).toBe("startup")
      expect(Redacted.value(first.pat.token)).toBe("ghp_declared_static_0001")
      const second = yield* start("second-secret")
      expect(second.declared.source).toBe("restored")
      expect(second.account.source._tag === "custom" && Redacted.value(second.account.source.secrets["password"]!)).toBe(
        "second-secret"
      )
      expect(yield* upstream.calls("obtain")).toBe(1)
    }))
})

describe("SPEC §2.7 daily refresh", () => {
  it.effect("0 8 * * * in Asia/Kolkata fires at 02:30 UTC", () =>
    Effect.gen(function*() {
      const zone = Option.getOrThrow(DateTime.zoneFromString("Asia/Kolkata"))
      const cron = Either.getOrThrow(Settings.parseCron("0 8 * * *", zone))
      const next = Cron.next(cron, new Date("2026-11-23T00:00:00Z"))
      expect(next.toISOString()).toBe("2026-11-23T02:30:00.000Z")
      expect(Cron.next(cron, next).toISOString()).toBe("2026-11-24T02:30:00.000Z")
    }))

  it.scoped("the configured cron refreshes every renewable account at 08:00 IST", () =>
    Effect.gen(function*() {
      const upstream = yield* TestUpstream.make({ lifetime: "48 hours" })
      const zone = Option.getOrThrow(DateTime.zoneFromString("Asia/Kolkata"))
      const cron = Either.getOrThrow(Settings.parseCron("0 8 * * *", zone))
      // TestClock starts at 1970-01-01T00:00Z; the first 08:00 IST is 02:30 UTC that day
      yield* withLifecycle(upstream, (lifecycle) =>
        Effect.gen(function*() {
          yield* lifecycle.add(TestUpstream.testAccount("a"))
          yield* lifecycle.add(TestUpstream.testAccount("b"))
          yield* lifecycle.add(TestUpstream.staticAccount("s"), { token: Redacted.make("static-token-abcdef-0001") })
          yield* lifecycle.get("a")
          yield* lifecycle.get("b")
          yield* TestClock.adjust(2.5 * HOUR - 1000)
          yield* settle
          expect(yield* upstream.calls("refresh")).toBe(0)
          yield* TestClock.adjust(1000)
          yield* settle
          expect(yield* upstream.calls("refresh")).toBe(2)
          yield* TestClock.adjust(24 * HOUR)
          yield* settle
          expect(yield* upstream.calls("refresh")).toBe(4)
        })).pipe(
          Effect.provideService(Settings.Settings, { ...Settings.Settings.defaultValue(), refreshCron: Option.some(cron) })
        )
    }))
})

describe("SPEC §2.8 manual update", () => {
  it.scoped("validates the new token upstream and keeps it", () =>
    Effect.gen(function*() {
      const upstream = yield* TestUpstream.make()
      yield* upstream.accept("good-manual-token-123456")
      yield* withLifecycle(upstream, (lifecycle) =>
        Effect.gen(function*() {
          yield* lifecycle.add(TestUpstream.testAccount("acme"))
          const info = yield* lifecycle.update("acme", Redacted.make("good-manual-token-123456"), { expiresAt: 2 * HOUR })
          expect(info.source).toBe("manual")
          expect(info.tokenPreview).toBe("good…3456")
          expect(yield* upstream.calls("validate")).toBe(1)
          const lease = yield* lifecycle.get("acme")
          expect(Redacted.value(lease.token)).toBe("good-manual-token-123456")
        }))
    }))

  it.scoped("a token that fails validation is rejected with the upstream's reason and the previous token stays", () =>
    Effect.gen(function*() {
      const upstream = yield* TestUpstream.make()
      yield* withLifecycle(upstream, (lifecycle) =>
        Effect.gen(function*() {
          yield* lifecycle.add(TestUpstream.testAccount("acme"))
          const before = yield* lifecycle.get("acme")
          const error = yield* Effect.flip(lifecycle.update("acme", Redacted.make("bad-manual-token-123456")))
          expect(error._tag).toBe("TokenRejected")
          if (error._tag === "TokenRejected") {
            expect(error.reason).toBe("Invalid token used to access API")
            expect(error.upstreamStatus).toBe(401)
          }
          expect(error.message).not.toContain("bad-manual-token-123456")
          const after = yield* lifecycle.get("acme")
          expect(Redacted.value(after.token)).toBe(Redacted.value(before.token))
        }))
    }))

  it.scoped("validate=false skips validation", () =>
    Effect.gen(function*() {
      const upstream = yield* TestUpstream.make()
      yield* withLifecycle(upstream, (lifecycle) =>
        Effect.gen(function*() {
          yield* lifecycle.add(TestUpstream.testAccount("acme"))
          yield* lifecycle.update("acme", Redacted.make("unchecked-token-123456"), { validate: false })
          expect(yield* upstream.calls("validate")).toBe(0)
          expect(Redacted.value((yield* lifecycle.get("acme")).token)).toBe("unchecked-token-123456")
        }))
    }))

  it.scoped("bad input (empty token, past expiry) is rejected and changes nothing", () =>
    Effect.gen(function*() {
      const upstream = yield* TestUpstream.make()
      yield* TestClock.adjust(HOUR)
      yield* withLifecycle(upstream, (lifecycle) =>
        Effect.gen(function*() {
          yield* lifecycle.add(TestUpstream.testAccount("acme"))
          const before = yield* lifecycle.get("acme")
          for (const [token, expiresAt] of [["", undefined], ["has space", undefined], ["fine-token-123456", 1000]] as const) {
            const error = yield* Effect.flip(lifecycle.update("acme", Redacted.make(token), { expiresAt, validate: false }))
            expect(error._tag).toBe("TokenRejected")
          }
          expect(Redacted.value((yield* lifecycle.get("acme")).token)).toBe(Redacted.value(before.token))
        }))
    }))
})

describe("SPEC §2.9 401", () => {
  it.scoped("a refreshable account refreshes on a 401", () =>
    Effect.gen(function*() {
      const upstream = yield* TestUpstream.make()
      yield* withLifecycle(upstream, (lifecycle) =>
        Effect.gen(function*() {
          yield* lifecycle.add(TestUpstream.testAccount("acme"))
          const lease = yield* lifecycle.get("acme")
          const info = yield* lifecycle.reportUnauthorized("acme", { reason: "HTTP 401", token: lease.token })
          expect(info.status).toBe("available")
          expect(info.source).toBe("refresh")
        }))
    }))

  it.scoped("a 401 for a token that was already replaced is ignored", () =>
    Effect.gen(function*() {
      const upstream = yield* TestUpstream.make()
      yield* withLifecycle(upstream, (lifecycle) =>
        Effect.gen(function*() {
          yield* lifecycle.add(TestUpstream.testAccount("acme"))
          const old = yield* lifecycle.get("acme")
          yield* lifecycle.refresh("acme")
          yield* lifecycle.reportUnauthorized("acme", { reason: "HTTP 401", token: old.token })
          expect(yield* upstream.calls("refresh")).toBe(1)
        }))
    }))

  it.scoped("a static account becomes invalid with the reason and is not handed out", () =>
    Effect.gen(function*() {
      const upstream = yield* TestUpstream.make()
      yield* withLifecycle(upstream, (lifecycle) =>
        Effect.gen(function*() {
          yield* lifecycle.add(TestUpstream.staticAccount("pat"), { token: Redacted.make("ghp_static_token_0001") })
          const info = yield* lifecycle.reportUnauthorized("pat", { reason: "Bad credentials" })
          expect(info.status).toBe("invalid")
          expect(info.invalidReason).toBe("Bad credentials")
          const error = yield* Effect.flip(lifecycle.get("pat"))
          expect(error._tag).toBe("TokenUnavailable")
        }))
    }))

  it.scoped("an account whose refresh and obtain also fail becomes invalid", () =>
    Effect.gen(function*() {
      const upstream = yield* TestUpstream.make()
      yield* withLifecycle(upstream, (lifecycle) =>
        Effect.gen(function*() {
          yield* lifecycle.add(TestUpstream.testAccount("acme"))
          yield* lifecycle.get("acme")
          yield* upstream.failNext("refresh", TestUpstream.upstreamError("unauthorized", 401))
          yield* upstream.failNext("obtain", TestUpstream.upstreamError("unauthorized", 401))
          const info = yield* lifecycle.reportUnauthorized("acme", { reason: "HTTP 401" })
          expect(info.status).toBe("invalid")
          expect(info.invalidReason).toContain("HTTP 401")
        }))
    }))
})

describe("SPEC §2.10 clear", () => {
  it.scoped("forgets the token and keeps the account", () =>
    Effect.gen(function*() {
      const upstream = yield* TestUpstream.make()
      yield* withLifecycle(upstream, (lifecycle) =>
        Effect.gen(function*() {
          yield* lifecycle.add(TestUpstream.testAccount("acme"))
          yield* lifecycle.get("acme")
          const info = yield* lifecycle.clear("acme")
          expect(info.status).toBe("missing")
          expect(info.hasToken).toBe(false)
          expect((yield* lifecycle.accounts).map((a) => a.id)).toEqual(["acme"])
          const lease = yield* lifecycle.get("acme")
          expect(Redacted.value(lease.token)).toMatch(/^obtain-token-/)
        }))
    }))
})

describe("accounts at run time", () => {
  it.scoped("adds and removes accounts; a removed account is gone and its schedule stops", () =>
    Effect.gen(function*() {
      const upstream = yield* TestUpstream.make()
      yield* withLifecycle(upstream, (lifecycle) =>
        Effect.gen(function*() {
          yield* lifecycle.add(TestUpstream.testAccount("acme"))
          yield* lifecycle.get("acme")
          const duplicate = yield* Effect.flip(lifecycle.add(TestUpstream.testAccount("acme")))
          expect(duplicate._tag).toBe("AccountExists")
          yield* lifecycle.remove("acme")
          expect(yield* lifecycle.accounts).toEqual([])
          yield* TestClock.adjust(2 * HOUR)
          yield* settle
          expect(yield* upstream.calls("refresh")).toBe(0)
          expect(Exit.isFailure(yield* Effect.exit(lifecycle.get("acme")))).toBe(true)
        }))
    }))
})

describe("refresh leases: several processes on one database", () => {
  /** Two lifecycles on one SQLite file, as two processes would have: separate connections and memories. */
  const twoProcesses = (options: { readonly latency?: Duration.DurationInput } = {}) => Effect.gen(function*() {
    const filename = path.join(yield* tempDir, "tessera.db")
    const key = yield* Crypto.generateKey
    const upstream = yield* TestUpstream.make({ lifetime: "1 hour", ...options })
    const open = Effect.gen(function*() {
      const context = yield* Layer.build(TestUpstream.layer(upstream, { filename, key }))
      return { lifecycle: Context.get(context, Lifecycle.Lifecycle), store: Context.get(context, TokenStore.TokenStore) }
    })
    return { upstream, open }
  })

  /** Lets waits on the lease (polled every 50 ms) and the fibers behind them run. */
  const pass = (ms: number) => Effect.zipRight(TestClock.adjust(ms), settle)

  it.scoped("refreshes 20 synchronized expiries once between two processes, and both serve the new tokens", () =>
    Effect.gen(function*() {
      // renewals take a while upstream, so the two processes' renewals overlap
      const { open, upstream } = yield* twoProcesses({ latency: "200 millis" })
      const a = yield* open
      const ids = Array.from({ length: 20 }, (_, i) => `acct-${i}`)
      const setup = yield* Effect.fork(
        Effect.forEach(ids, (id) => Effect.zipRight(a.lifecycle.add(TestUpstream.testAccount(id)), a.lifecycle.get(id)), {
          concurrency: "unbounded"
        })
      )
      yield* pass(200)
      yield* Fiber.join(setup)
      const b = yield* open
      yield* b.lifecycle.awaitStartup
      expect(yield* upstream.calls("obtain")).toBe(20)
      // both schedulers fire at expiry − 5 minutes, and callers of both ask meanwhile
      yield* TestClock.adjust(55 * MINUTE + 200)
      const asked = yield* Effect.fork(
        Effect.forEach(ids, (id) => Effect.all([a.lifecycle.get(id), b.lifecycle.get(id)]), { concurrency: "unbounded" })
      )
      for (let i = 0; i < 20; i++) yield* pass(50)
      const leases = yield* Fiber.join(asked)
      expect(yield* upstream.calls("refresh")).toBe(20)
      expect(yield* upstream.calls("obtain")).toBe(20)
      for (const [fromA, fromB] of leases) {
        expect(Redacted.value(fromA.token)).toMatch(/^refresh-token-/)
        expect(Redacted.value(fromB.token)).toBe(Redacted.value(fromA.token))
      }
      // the process that did not refresh took up the new token, expiry and all, and schedules from it
      const infos = yield* Effect.forEach(ids, (id) => Effect.all([a.lifecycle.info(id), b.lifecycle.info(id)]))
      for (const [inA, inB] of infos) expect(inB.expiresAt).toBe(inA.expiresAt)
      yield* pass(HOUR)
      expect(yield* upstream.calls("refresh")).toBe(40)
    }))

  it.scoped("waits for a lease another process holds, and takes it over when its holder died without giving it back", () =>
    Effect.gen(function*() {
      const { open, upstream } = yield* twoProcesses()
      const a = yield* open
      yield* Effect.zipRight(a.lifecycle.add(TestUpstream.testAccount("acme")), a.lifecycle.get("acme"))
      // a process that took the lease and was killed
      const now = yield* Effect.clockWith((clock) => clock.currentTimeMillis)
      expect(yield* a.store.takeLease(TestUpstream.accountId("acme"), { owner: "killed", now, expiresAt: now + 30_000 })).toBe(true)
      const refresh = yield* Effect.fork(a.lifecycle.refresh("acme"))
      yield* pass(29_000)
      expect(yield* upstream.calls("refresh")).toBe(0)
      expect(refresh.unsafePoll()).toBeNull()
      for (let i = 0; i < 30; i++) yield* pass(50)
      const info = yield* Fiber.join(refresh)
      expect(info.source).toBe("refresh")
      expect(yield* upstream.calls("refresh")).toBe(1)
      // and a lease is never taken while a live holder has it
      expect(yield* a.store.takeLease(TestUpstream.accountId("acme"), { owner: "other", now: now + 31_000, expiresAt: now + 60_000 }))
        .toBe(true)
      expect(yield* a.store.takeLease(TestUpstream.accountId("acme"), { owner: "third", now: now + 32_000, expiresAt: now + 62_000 }))
        .toBe(false)
    }))

  it.scoped("a forced refresh that waited for another process's renewal returns that renewal instead of refreshing again", () =>
    Effect.gen(function*() {
      const { open, upstream } = yield* twoProcesses({ latency: "1 second" })
      const a = yield* open
      const setup = yield* Effect.fork(Effect.zipRight(a.lifecycle.add(TestUpstream.testAccount("acme")), a.lifecycle.get("acme")))
      yield* pass(1_000)
      yield* Fiber.join(setup)
      const b = yield* open
      // a is upstream (holding the lease) when b is asked to refresh
      const byA = yield* Effect.fork(a.lifecycle.refresh("acme"))
      yield* settle
      const byB = yield* Effect.fork(b.lifecycle.refresh("acme"))
      for (let i = 0; i < 30; i++) yield* pass(50)
      const [fromA, fromB] = [yield* Fiber.join(byA), yield* Fiber.join(byB)]
      expect(yield* upstream.calls("refresh")).toBe(1)
      expect(fromB.expiresAt).toBe(fromA.expiresAt)
      expect(Redacted.value((yield* b.lifecycle.get("acme")).token)).toBe(Redacted.value((yield* a.lifecycle.get("acme")).token))
      // asked again later, b refreshes: a forced refresh means now
      yield* pass(MINUTE)
      const later = yield* Effect.fork(b.lifecycle.refresh("acme"))
      yield* pass(1_000)
      yield* Fiber.join(later)
      expect(yield* upstream.calls("refresh")).toBe(2)
    }))
})

describe("the hand-out margin: no token within 60 s of its expiry", () => {
  it.scoped("refuses a static token that expires within a minute, and serves one that expires later", () =>
    Effect.gen(function*() {
      const upstream = yield* TestUpstream.make()
      yield* withLifecycle(upstream, (lifecycle) =>
        Effect.gen(function*() {
          yield* lifecycle.add(TestUpstream.staticAccount("soon"), { token: Redacted.make("static-token-soon-0001"), expiresAt: 59_000 })
          yield* lifecycle.add(TestUpstream.staticAccount("later"), { token: Redacted.make("static-token-late-0001"), expiresAt: 61_000 })
          const soon = yield* Effect.either(lifecycle.get("soon"))
          expect(Either.isLeft(soon) && soon.left._tag).toBe("OperationUnsupported")
          expect(Redacted.value((yield* lifecycle.get("later")).token)).toBe("static-token-late-0001")
          yield* TestClock.adjust(1_001)
          expect(Either.isLeft(yield* Effect.either(lifecycle.get("later")))).toBe(true)
        }))
    }))

  it.scoped("renews a token at expiry − 60 s even when the window is shorter", () =>
    Effect.gen(function*() {
      const upstream = yield* TestUpstream.make({ lifetime: "10 minutes" })
      yield* withLifecycle(upstream, (lifecycle) =>
        Effect.gen(function*() {
          yield* lifecycle.add(TestUpstream.testAccount("acme"))
          yield* lifecycle.get("acme")
          yield* TestClock.adjust(9 * MINUTE - 1)
          yield* settle
          expect(yield* upstream.calls("refresh")).toBe(0)
          yield* TestClock.adjust(1)
          yield* settle
          expect(yield* upstream.calls("refresh")).toBe(1)
        })).pipe(Effect.provideService(Settings.Settings, { ...Settings.Settings.defaultValue(), refreshWindow: Duration.seconds(10) }))
    }))

  it.scoped("while renewals fail, serves the current token until 60 s before its expiry, then fails the caller", () =>
    Effect.gen(function*() {
      const upstream = yield* TestUpstream.make({ lifetime: "1 hour" })
      yield* withLifecycle(upstream, (lifecycle) =>
        Effect.gen(function*() {
          yield* lifecycle.add(TestUpstream.testAccount("acme"))
          const first = yield* lifecycle.get("acme")
          const down = TestUpstream.upstreamError("server", 503)
          yield* upstream.failNext("refresh", down, 1_000)
          yield* upstream.failNext("obtain", down, 1_000)
          yield* TestClock.adjust(58 * MINUTE)
          yield* settle
          expect(Redacted.value((yield* lifecycle.get("acme")).token)).toBe(Redacted.value(first.token))
          yield* TestClock.adjust(MINUTE)
          yield* settle
          const late = yield* Effect.either(lifecycle.get("acme"))
          expect(Either.isLeft(late)).toBe(true)
        }))
    }))
})
