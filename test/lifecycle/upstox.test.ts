import { describe, expect, it } from "@effect/vitest"
import { Account, Crypto, Lifecycle } from "@tessera/core"
import { Upstox as UpstoxProvider } from "@tessera/providers"
import { Effect, Redacted, TestClock } from "effect"
import * as path from "node:path"
import { AuthService, FakeServer, Upstox } from "../fakes/index.js"
import * as Harness from "./harness.js"

const remote = (id: string) =>
  new Account.NewAccount({ id: Harness.accountId(id), provider: "upstox", source: new Account.RemoteSource({}) })

const fakes = Effect.gen(function*() {
  const now = yield* FakeServer.clockNow
  const auth = yield* AuthService.make({ now })
  const upstox = yield* Upstox.make()
  Upstox.linkAuthService(upstox, auth)
  return { auth, upstox, upstreams: { authUrl: auth.url, upstoxUrl: upstox.url } }
})

const run = <A, E>(
  upstreams: Harness.Upstreams,
  store: { readonly filename: string; readonly key: Crypto.EncryptionKey },
  body: (lifecycle: Lifecycle.LifecycleService) => Effect.Effect<A, E, Harness.Services>
) => Effect.scoped(Effect.flatMap(Lifecycle.Lifecycle, body).pipe(Effect.provide(Harness.layer(upstreams, store))))

describe("remote (Upstox-style) accounts against a fake auth service and Upstox API", () => {
  it.scoped("startup: one account fetched, one the auth service cannot serve shows missing and recovers in the background", () =>
    Effect.gen(function*() {
      const { auth, upstreams } = yield* fakes
      const store = { filename: path.join(yield* Harness.tempDir, "t.db"), key: yield* Crypto.generateKey }
      auth.setAccount("acc-1")
      // first run: register both accounts (as UPSTOX_ACCOUNT_IDS would), nothing fetched yet
      yield* run(upstreams, store, (lifecycle) =>
        Effect.zipRight(lifecycle.add(remote("acc-1")), lifecycle.add(remote("acc-2"))))
      auth.resetCalls()
      yield* run(upstreams, store, (lifecycle) =>
        Effect.gen(function*() {
          yield* lifecycle.awaitStartup
          const one = yield* lifecycle.info("acc-1")
          const two = yield* lifecycle.info("acc-2")
          expect(one.status).toBe("available")
          expect(one.source).toBe("startup")
          expect(two.status).toBe("missing")
          expect(two.lastError?.message).toContain("unknown account")
          // the auth service learns the account; a backoff interval later it is served
          auth.setAccount("acc-2")
          for (let i = 0; i < 10 && (yield* lifecycle.info("acc-2")).status !== "available"; i++) {
            yield* TestClock.adjust("2 seconds")
            yield* Harness.waitUntil(() => true)
            yield* Harness.settle
          }
          expect((yield* lifecycle.info("acc-2")).status).toBe("available")
        }))
    }))

  it.scoped("with the auth service down the service still starts and the account recovers when it is back", () =>
    Effect.gen(function*() {
      const { auth, upstreams } = yield* fakes
      const store = { filename: path.join(yield* Harness.tempDir, "t.db"), key: yield* Crypto.generateKey }
      auth.setAccount("acc-1")
      yield* run(upstreams, store, (lifecycle) => lifecycle.add(remote("acc-1")))
      auth.down("reset")
      yield* run(upstreams, store, (lifecycle) =>
        Effect.gen(function*() {
          const started = yield* Effect.fork(lifecycle.awaitStartup)
          for (let i = 0; i < 3; i++) {
            yield* Harness.waitUntil(() => auth.calls("token") > i)
            yield* Harness.settle
            yield* TestClock.adjust("30 seconds")
          }
          yield* Effect.fromFiber(started)
          const down = yield* lifecycle.info("acc-1")
          expect(down.status).toBe("missing")
          expect(down.lastError?.code).toBe("connection")
          auth.up()
          for (let i = 0; i < 20 && (yield* lifecycle.info("acc-1")).status !== "available"; i++) {
            yield* TestClock.adjust("10 seconds")
            yield* Harness.waitUntil(() => true)
            yield* Harness.settle
          }
          expect((yield* lifecycle.info("acc-1")).status).toBe("available")
        }))
    }))

  it.scoped("validates against the Upstox profile endpoint and keeps the user name", () =>
    Effect.gen(function*() {
      const { auth, upstox, upstreams } = yield* fakes
      const store = { filename: path.join(yield* Harness.tempDir, "t.db"), key: yield* Crypto.generateKey }
      const issued = auth.setAccount("acc-1")
      yield* run(upstreams, store, (lifecycle) =>
        Effect.gen(function*() {
          yield* lifecycle.add(remote("acc-1"))
          yield* lifecycle.get("acc-1")
          const result = yield* lifecycle.validate("acc-1")
          expect(result.valid).toBe(true)
          expect(result.upstreamStatus).toBe(200)
          expect((yield* lifecycle.info("acc-1")).username).toBe("Test User")
          expect(upstox.lastRequest("profile")?.headers["authorization"]).toBe(`Bearer ${issued.token}`)
        }))
    }))

  it.scoped("a manual update is validated: rejected tokens keep the old one, accepted ones replace it", () =>
    Effect.gen(function*() {
      const { auth, upstox, upstreams } = yield* fakes
      const store = { filename: path.join(yield* Harness.tempDir, "t.db"), key: yield* Crypto.generateKey }
      auth.setAccount("acc-1")
      yield* run(upstreams, store, (lifecycle) =>
        Effect.gen(function*() {
          yield* lifecycle.add(remote("acc-1"))
          const before = yield* lifecycle.get("acc-1")
          const error = yield* Effect.flip(lifecycle.update("acc-1", Redacted.make("eyJ-not-a-real-upstox-token")))
          expect(error._tag).toBe("TokenRejected")
          expect(error.message).toContain("Invalid token used to access API")
          expect(Redacted.value((yield* lifecycle.get("acc-1")).token)).toBe(Redacted.value(before.token))
          upstox.allow("eyJ-a-real-manual-upstox-token")
          const info = yield* lifecycle.update("acc-1", Redacted.make("eyJ-a-real-manual-upstox-token"))
          expect(info.source).toBe("manual")
          expect(Redacted.value((yield* lifecycle.get("acc-1")).token)).toBe("eyJ-a-real-manual-upstox-token")
        }))
    }))

  it.scoped("a 401 makes the account refresh through the auth service", () =>
    Effect.gen(function*() {
      const { auth, upstreams } = yield* fakes
      const store = { filename: path.join(yield* Harness.tempDir, "t.db"), key: yield* Crypto.generateKey }
      auth.setAccount("acc-1")
      yield* run(upstreams, store, (lifecycle) =>
        Effect.gen(function*() {
          yield* lifecycle.add(remote("acc-1"))
          const lease = yield* lifecycle.get("acc-1")
          const info = yield* lifecycle.reportUnauthorized("acc-1", { reason: "HTTP 401 from the Upstox API", token: lease.token })
          expect(auth.calls("refresh")).toBe(1)
          expect(info.status).toBe("available")
          expect(Redacted.value((yield* lifecycle.get("acc-1")).token)).not.toBe(Redacted.value(lease.token))
        }))
    }))

  it("a token without expires_at expires at the next 03:30 Asia/Kolkata", () => {
    expect(new Date(UpstoxProvider.nextDailyExpiry(Date.parse("2026-11-23T10:00:00Z"))).toISOString()).toBe(
      "2026-11-23T22:00:00.000Z"
    )
    expect(new Date(UpstoxProvider.nextDailyExpiry(Date.parse("2026-11-23T21:59:00Z"))).toISOString()).toBe(
      "2026-11-23T22:00:00.000Z"
    )
  })
})
