/**
 * The Redis mirror against the machine's Redis (database 5 of 127.0.0.1:6379, emptied before
 * each test) and a lifecycle over real HTTP to the fake auth service: what the keys hold and
 * for how long, the legacy keys of the default account, deletion, an outage made with a TCP
 * proxy (token operations go on, the outage is logged once, the mirror catches up), and the
 * consumer's figure: `GET upstox_access_token` sees every refreshed token within a second.
 */
import { describe, expect, it } from "@effect/vitest"
import { Account, Crypto, Lifecycle, RedisMirror } from "@tessera/core"
import { Wire } from "@tessera/server"
import { DateTime, Effect, Layer, Logger, Option, Redacted } from "effect"
import type { Redis } from "ioredis"
import * as path from "node:path"
import { AuthService } from "../fakes/index.js"
import * as Lifecycles from "../lifecycle/harness.js"
import * as Harness from "./harness.js"

const DB = 5

const remote = (id: string) =>
  new Account.NewAccount({ id: Lifecycles.accountId(id), provider: "upstox", source: new Account.RemoteSource({}) })

const handedIn = (id: string) =>
  new Account.NewAccount({ id: Lifecycles.accountId(id), provider: "upstox", source: new Account.StaticSource() })

const mirrorOptions = (url: string, options: Partial<RedisMirror.Options> = {}): RedisMirror.Options => ({
  url: Redacted.make(url),
  ttl: "1 hour",
  tokenInfo: Wire.tokenInfo,
  ...options
})

/** A lifecycle against `authUrl` with the mirror on top; `body` runs while both are up. */
const withMirror = <A, E>(
  authUrl: string,
  options: RedisMirror.Options,
  body: (lifecycle: Lifecycle.LifecycleService) => Effect.Effect<A, E>,
  logs?: Array<string>
) => {
  const services = RedisMirror.layer(options).pipe(Layer.provideMerge(Lifecycles.layer({ authUrl })))
  const logged = logs === undefined
    ? services
    : services.pipe(Layer.provide(Logger.replace(Logger.defaultLogger, Logger.make(({ message }) => {
      logs.push(Array.isArray(message) ? message.join(" ") : String(message))
    }))))
  return Effect.scoped(Effect.flatMap(Lifecycle.Lifecycle, body).pipe(Effect.provide(logged)))
}

const get = (redis: Redis, key: string) => Effect.promise(() => redis.get(key))
const ttl = (redis: Redis, key: string) => Effect.promise(() => redis.ttl(key))

const preview = (token: string) => `${token.slice(0, 4)}…${token.slice(-4)}`

/** Waits until `key` holds `value` (null: until it is gone). */
const until = (redis: Redis, key: string, value: string | null) =>
  Harness.eventually(`${key} = ${value === null ? "(deleted)" : preview(value)}`, async () => {
    const current = await redis.get(key)
    return current === value ? true : undefined
  })

const infoOf = (redis: Redis, key: string) =>
  Effect.map(get(redis, key), (json) => (json === null ? null : JSON.parse(json) as Record<string, unknown>))

const tokenOf = (auth: AuthService.AuthServiceServer, id: string) => auth.account(id)!.token

const percentile = (values: ReadonlyArray<number>, p: number) => {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!
}

const available = await Harness.probe()

if (!available) {
  Harness.describeWithoutRedis("Redis mirror")
} else {
  describe("Redis mirror (database 5 of the machine's Redis)", () => {
    it.scopedLive("obtain, refresh and update write the token and its info with the configured TTL; legacy keys only for the default account", () =>
      Effect.gen(function*() {
        const redis = yield* Harness.consumer(DB)
        const auth = yield* AuthService.make({ accounts: ["acc-1", "acc-2"] })
        const options = mirrorOptions(Harness.url(DB), { defaultAccount: Option.some("acc-2") })
        yield* withMirror(auth.url, options, (lifecycle) =>
          Effect.gen(function*() {
            yield* lifecycle.add(remote("acc-1"))
            yield* lifecycle.add(remote("acc-2"))

            // obtained
            yield* lifecycle.get("acc-1")
            yield* until(redis, "upstox_access_token:acc-1", tokenOf(auth, "acc-1"))
            const info = (yield* infoOf(redis, "token_info:acc-1"))!
            const status = Wire.tokenInfo(yield* lifecycle.info("acc-1"), DateTime.zoneUnsafeMakeNamed("UTC"))
            expect(Object.keys(info).sort()).toEqual(Object.keys(status).sort())
            expect(info).toMatchObject({
              account_id: "acc-1",
              provider: "upstox",
              status: "available",
              has_token: true,
              token_preview: status.token_preview,
              expires_at: status.expires_at
            })
            expect(JSON.stringify(info)).not.toContain(tokenOf(auth, "acc-1"))
            // the tokens live 24 hours; the keys the configured hour
            for (const key of ["upstox_access_token:acc-1", "token_info:acc-1"]) {
              const seconds = yield* ttl(redis, key)
              expect(seconds).toBeGreaterThan(3500)
              expect(seconds).toBeLessThanOrEqual(3600)
            }
            // acc-1 is not the default account: nothing under the legacy keys yet
            expect(yield* get(redis, "upstox_access_token")).toBeNull()
            expect(yield* get(redis, "token_info")).toBeNull()

            yield* lifecycle.get("acc-2")
            yield* until(redis, "upstox_access_token", tokenOf(auth, "acc-2"))
            expect(yield* get(redis, "upstox_access_token:acc-2")).toBe(tokenOf(auth, "acc-2"))
            expect((yield* infoOf(redis, "token_info"))?.["account_id"]).toBe("acc-2")
            expect(yield* ttl(redis, "upstox_access_token")).toBeGreaterThan(3500)

            // refreshed: a new token under both of the default account's keys; acc-1 untouched
            const before = tokenOf(auth, "acc-2")
            yield* lifecycle.refresh("acc-2")
            const after = tokenOf(auth, "acc-2")
            expect(after).not.toBe(before)
            yield* until(redis, "upstox_access_token", after)
            expect(yield* get(redis, "upstox_access_token:acc-2")).toBe(after)
            expect((yield* infoOf(redis, "token_info:acc-2"))?.["source"]).toBe("refresh")
            expect(yield* get(redis, "upstox_access_token:acc-1")).toBe(tokenOf(auth, "acc-1"))

            // updated with a token that expires in ten minutes: the token key does not outlive it
            const manual = "manual-token-0123456789abcdef"
            yield* lifecycle.update("acc-1", Redacted.make(manual), { expiresAt: Date.now() + 600_000, validate: false })
            yield* until(redis, "upstox_access_token:acc-1", manual)
            const tokenTtl = yield* ttl(redis, "upstox_access_token:acc-1")
            expect(tokenTtl).toBeGreaterThan(500)
            expect(tokenTtl).toBeLessThanOrEqual(600)
            expect(yield* ttl(redis, "token_info:acc-1")).toBeGreaterThan(3500)
            expect((yield* infoOf(redis, "token_info:acc-1"))?.["source"]).toBe("manual")
            expect(yield* get(redis, "upstox_access_token")).toBe(after)
          }))
      }), { timeout: 60_000 })

    it.scopedLive("clear and remove delete the keys; an invalid token is taken out with its info saying why; the default moves with the accounts", () =>
      Effect.gen(function*() {
        const redis = yield* Harness.consumer(DB)
        const auth = yield* AuthService.make({ accounts: ["acc-1", "acc-2"] })
        // no INTERNAL_API_ACCOUNT_ID: the default account is the oldest, then the only one
        yield* withMirror(auth.url, mirrorOptions(Harness.url(DB)), (lifecycle) =>
          Effect.gen(function*() {
            yield* lifecycle.add(remote("acc-1"))
            yield* Effect.sleep("5 millis")
            yield* lifecycle.add(remote("acc-2"))
            yield* lifecycle.get("acc-1")
            yield* lifecycle.get("acc-2")
            yield* until(redis, "upstox_access_token:acc-2", tokenOf(auth, "acc-2"))
            yield* until(redis, "upstox_access_token", tokenOf(auth, "acc-1"))

            yield* lifecycle.clear("acc-2")
            yield* until(redis, "upstox_access_token:acc-2", null)
            yield* until(redis, "token_info:acc-2", null)
            expect(yield* get(redis, "upstox_access_token")).toBe(tokenOf(auth, "acc-1"))

            // acc-1 (the default) removed: acc-2, the only account left, has no token, so
            // nothing is under the legacy keys until it gets one
            yield* lifecycle.remove("acc-1")
            yield* until(redis, "upstox_access_token:acc-1", null)
            yield* until(redis, "token_info:acc-1", null)
            yield* until(redis, "upstox_access_token", null)
            expect(yield* get(redis, "token_info")).toBeNull()
            yield* lifecycle.get("acc-2")
            yield* until(redis, "upstox_access_token", tokenOf(auth, "acc-2"))
            expect((yield* infoOf(redis, "token_info"))?.["account_id"]).toBe("acc-2")

            // a handed-in token that the upstream rejects
            const pat = "static-token-abcdef0123456789"
            yield* lifecycle.add(handedIn("pat-1"), { token: Redacted.make(pat) })
            yield* until(redis, "upstox_access_token:pat-1", pat)
            yield* lifecycle.reportUnauthorized("pat-1", { reason: "401 from upstream" })
            yield* until(redis, "upstox_access_token:pat-1", null)
            const info = yield* infoOf(redis, "token_info:pat-1")
            expect(info).toMatchObject({ account_id: "pat-1", status: "invalid", has_token: true })
            expect(String(info?.["invalid_reason"])).toContain("401 from upstream")
            expect(yield* get(redis, "upstox_access_token")).toBe(tokenOf(auth, "acc-2"))
          }))
      }), { timeout: 60_000 })

    it.scopedLive("at startup every current token is mirrored, without a single upstream call", () =>
      Effect.gen(function*() {
        const redis = yield* Harness.consumer(DB)
        const auth = yield* AuthService.make({ accounts: ["acc-1", "acc-2"] })
        const store = { filename: path.join(yield* Lifecycles.tempDir, "t.db"), key: yield* Crypto.generateKey }
        // the service ran before, without the mirror
        yield* Effect.scoped(Effect.flatMap(Lifecycle.Lifecycle, (lifecycle) =>
          Effect.gen(function*() {
            yield* lifecycle.add(remote("acc-1"))
            yield* lifecycle.add(remote("acc-2"))
            yield* lifecycle.get("acc-1")
            yield* lifecycle.get("acc-2")
          })).pipe(Effect.provide(Lifecycles.layer({ authUrl: auth.url }, store))))
        auth.resetCalls()
        const options = mirrorOptions(Harness.url(DB), { defaultAccount: Option.some("acc-2") })
        const services = RedisMirror.layer(options).pipe(Layer.provideMerge(Lifecycles.layer({ authUrl: auth.url }, store)))
        yield* Effect.scoped(Effect.flatMap(Lifecycle.Lifecycle, () =>
          Effect.gen(function*() {
            yield* until(redis, "upstox_access_token:acc-1", tokenOf(auth, "acc-1"))
            yield* until(redis, "upstox_access_token:acc-2", tokenOf(auth, "acc-2"))
            yield* until(redis, "upstox_access_token", tokenOf(auth, "acc-2"))
            expect((yield* infoOf(redis, "token_info:acc-1"))?.["status"]).toBe("available")
          })).pipe(Effect.provide(services)))
        expect(auth.calls("token") + auth.calls("refresh")).toBe(0)
      }), { timeout: 60_000 })

    it.scopedLive("keys of a token that does not change are written again before their TTL runs out", () =>
      Effect.gen(function*() {
        const redis = yield* Harness.consumer(DB)
        const auth = yield* AuthService.make()
        const pat = "static-token-never-expires-0123456789"
        yield* withMirror(auth.url, mirrorOptions(Harness.url(DB), { ttl: "1 second" }), (lifecycle) =>
          Effect.gen(function*() {
            yield* lifecycle.add(handedIn("pat-1"), { token: Redacted.make(pat) })
            yield* until(redis, "upstox_access_token:pat-1", pat)
            // three TTLs later, with no change in between, the key is still there (and still short-lived)
            yield* Effect.sleep("3 seconds")
            expect(yield* get(redis, "upstox_access_token:pat-1")).toBe(pat)
            expect(yield* get(redis, "upstox_access_token")).toBe(pat)
            expect(yield* ttl(redis, "upstox_access_token:pat-1")).toBeLessThanOrEqual(1)
          }))
      }), { timeout: 60_000 })

    it.scopedLive("a Redis outage never holds up token operations, is logged once, and the mirror catches up when Redis is back", () =>
      Effect.gen(function*() {
        const redis = yield* Harness.consumer(DB)
        const proxy = yield* Harness.proxy
        const auth = yield* AuthService.make({ accounts: ["acc-1", "acc-2", "acc-3"] })
        const logs: Array<string> = []
        const options = mirrorOptions(proxy.url(DB), {
          defaultAccount: Option.some("acc-1"),
          commandTimeout: "300 millis",
          retryMax: "500 millis"
        })
        const figures = yield* withMirror(auth.url, options, (lifecycle) =>
          Effect.gen(function*() {
            yield* lifecycle.add(remote("acc-1"))
            yield* lifecycle.add(remote("acc-2"))
            yield* lifecycle.add(remote("acc-3"))
            yield* lifecycle.get("acc-1")
            yield* lifecycle.get("acc-2")
            yield* lifecycle.get("acc-3")
            yield* until(redis, "upstox_access_token", tokenOf(auth, "acc-1"))
            yield* until(redis, "upstox_access_token:acc-2", tokenOf(auth, "acc-2"))
            yield* until(redis, "upstox_access_token:acc-3", tokenOf(auth, "acc-3"))
            const mirrored = tokenOf(auth, "acc-1")

            /** Token operations while Redis is away: each must complete (a mirror that blocked would hang here). */
            const operations = Effect.gen(function*() {
              const durations: Array<number> = []
              for (let i = 0; i < 3; i++) {
                const started = Date.now()
                const info = yield* lifecycle.refresh("acc-1")
                durations.push(Date.now() - started)
                expect(info.status).toBe("available")
              }
              return durations
            })

            // a hung Redis: connections open, nothing answered
            proxy.stall()
            const hung = yield* operations
            // a Redis that refuses connections
            yield* proxy.close
            const refused = yield* operations
            const started = Date.now()
            yield* lifecycle.clear("acc-2")
            refused.push(Date.now() - started)
            // the consumer still sees what was there before the outage: the mirror really was cut off
            expect(yield* get(redis, "upstox_access_token")).toBe(mirrored)
            expect(yield* get(redis, "upstox_access_token:acc-2")).toBe(tokenOf(auth, "acc-2"))
            // several retries' worth of outage, and Redis loses everything (a restart without persistence)
            yield* Effect.sleep("1500 millis")
            yield* Effect.promise(() => redis.flushdb())

            const reopened = Date.now()
            yield* proxy.open
            const latest = tokenOf(auth, "acc-1")
            expect(latest).not.toBe(mirrored)
            yield* until(redis, "upstox_access_token", latest)
            yield* until(redis, "upstox_access_token:acc-1", latest)
            yield* until(redis, "upstox_access_token:acc-2", null)
            yield* until(redis, "token_info:acc-2", null)
            // acc-3 did not change: only the full write after the reconnection brings it back
            yield* until(redis, "upstox_access_token:acc-3", tokenOf(auth, "acc-3"))
            expect((yield* infoOf(redis, "token_info"))?.["account_id"]).toBe("acc-1")
            return { hung, refused, catchUp: Date.now() - reopened }
          }), logs)

        const outages = logs.filter((line) => line.includes("Redis mirror: cannot write"))
        const recoveries = logs.filter((line) => line.includes("Redis mirror: writing to"))
        expect(outages, logs.join("\n")).toHaveLength(1)
        expect(recoveries).toHaveLength(1)
        expect(outages[0]).toContain(`127.0.0.1:${proxy.port}/${DB}`)
        const everything = logs.join("\n")
        for (const secret of [tokenOf(auth, "acc-1"), tokenOf(auth, "acc-2")]) expect(everything).not.toContain(secret)
        const all = [...figures.hung, ...figures.refused]
        console.log(
          `redis outage: ${all.length} token operations completed while Redis was hung or refusing ` +
            `(hung: ${figures.hung.join(", ")} ms; refused: ${figures.refused.join(", ")} ms; max ${Math.max(...all)} ms); ` +
            `outage logged ${outages.length}x; mirror caught up ${figures.catchUp} ms after Redis came back`
        )
      }), { timeout: 60_000 })

    it.scopedLive("a consumer polling GET upstox_access_token sees every refreshed token of the default account within a second", () =>
      Effect.gen(function*() {
        const redis = yield* Harness.consumer(DB)
        const auth = yield* AuthService.make({ accounts: ["acc-1"] })
        const REFRESHES = 10
        const result = yield* withMirror(auth.url, mirrorOptions(Harness.url(DB)), (lifecycle) =>
          Effect.gen(function*() {
            yield* lifecycle.add(remote("acc-1"))
            yield* lifecycle.get("acc-1")
            yield* until(redis, "upstox_access_token", tokenOf(auth, "acc-1"))

            // the consumer: its own connection, polling the legacy key as the existing service's users do
            const firstSeen = new Map<string, number>()
            let polling = true
            const consumer = Effect.promise(async () => {
              while (polling) {
                const value = await redis.get("upstox_access_token")
                if (value !== null && !firstSeen.has(value)) firstSeen.set(value, Date.now())
                await new Promise((resolve) => setTimeout(resolve, 2))
              }
            })
            const fiber = yield* Effect.fork(consumer)

            const refreshes: Array<{ token: string; started: number; done: number; next: number }> = []
            for (let i = 0; i < REFRESHES; i++) {
              const started = Date.now()
              yield* lifecycle.refresh("acc-1")
              const done = Date.now()
              // the next refresh replaces this token a second later
              yield* Effect.sleep("1 second")
              refreshes.push({ token: tokenOf(auth, "acc-1"), started, done, next: Date.now() })
            }
            polling = false
            yield* Effect.promise(() => new Promise((resolve) => setTimeout(resolve, 10)))
            yield* Effect.fromFiber(fiber)
            return { firstSeen, refreshes }
          }))

        const tokens = new Set(result.refreshes.map((r) => r.token))
        expect(tokens.size).toBe(REFRESHES)
        const latencies: Array<number> = []
        for (const refresh of result.refreshes) {
          const seen = result.firstSeen.get(refresh.token)
          // every token was seen, before the next refresh replaced it
          expect(seen, `token ${refresh.token.slice(0, 4)}… never seen`).toBeDefined()
          expect(seen!).toBeLessThan(refresh.next)
          latencies.push(Math.max(0, seen! - refresh.done))
        }
        console.log(
          `redis consumer: ${REFRESHES}/${REFRESHES} refreshed tokens seen by GET upstox_access_token; ` +
            `latency after the refresh returned: p50 ${percentile(latencies, 50)} ms, max ${Math.max(...latencies)} ms`
        )
      }), { timeout: 90_000 })
  })
}
