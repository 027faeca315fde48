import { describe, expect, it } from "@effect/vitest"
import { Crypto, Events, Lifecycle, TokenPool, TokenStore } from "@tessera/core"
import { Chunk, Effect, Either, FastCheck, Fiber, Option, Queue, Redacted, TestClock } from "effect"
import type { Scope } from "effect"
import * as path from "node:path"
import { PoolIndex } from "../src/internal/poolIndex.js"
import type { Standing } from "../src/internal/poolIndex.js"
import { tempDir } from "./utils/tempDir.js"
import * as TestUpstream from "./utils/TestUpstream.js"

const settle = Effect.repeatN(Effect.yieldNow(), 50)

/** A pool "test" of static tokens t0..t(n-1) (accounts p0..p(n-1)). */
const withPool = <A, E>(
  size: number,
  body: (pool: TokenPool.TokenPoolService, lifecycle: Lifecycle.LifecycleService) => Effect.Effect<A, E, TokenStore.TokenStore | Events.Events | Scope.Scope>,
  store: { readonly filename?: string; readonly key?: Crypto.EncryptionKey } = {}
) =>
  Effect.gen(function*() {
    const upstream = yield* TestUpstream.make()
    return yield* Effect.gen(function*() {
      const lifecycle = yield* Lifecycle.Lifecycle
      const pool = yield* TokenPool.TokenPool
      const existing = new Set((yield* lifecycle.accounts).map((a) => a.id as string))
      for (let i = 0; i < size; i++) {
        if (!existing.has(`p${i}`)) {
          yield* lifecycle.add(TestUpstream.staticAccount(`p${i}`), { token: Redacted.make(`static-token-${i}-abcdef`) })
        }
      }
      return yield* body(pool, lifecycle)
    }).pipe(Effect.scoped, Effect.provide(TestUpstream.layer(upstream, store)))
  })

const ids = (leases: ReadonlyArray<{ accountId: string }>) => leases.map((lease) => lease.accountId)
const acquireN = (pool: TokenPool.TokenPoolService, n: number) =>
  Effect.forEach(Array.from({ length: n }), () => pool.acquire("test"))

describe("SPEC §3.1 least-recently-used rotation", () => {
  it.scoped("hands out the token used longest ago and marks it used", () =>
    withPool(3, (pool) =>
      Effect.gen(function*() {
        const leases = yield* acquireN(pool, 7)
        expect(ids(leases)).toEqual(["p0", "p1", "p2", "p0", "p1", "p2", "p0"])
        expect(Redacted.value(leases[1]!.token)).toBe("static-token-1-abcdef")
      })))

  it.scoped("a token that comes back into rotation is next if it was used longest ago", () =>
    withPool(3, (pool) =>
      Effect.gen(function*() {
        yield* acquireN(pool, 3) // p0, p1, p2 used in that order
        yield* pool.report("test", { accountId: "p0", status: 429, headers: { "retry-after": "10" } })
        expect(ids(yield* acquireN(pool, 2))).toEqual(["p1", "p2"])
        yield* TestClock.adjust("10 seconds")
        // p0 was last used before p1 and p2's latest use: it goes first
        expect(ids(yield* acquireN(pool, 3))).toEqual(["p0", "p1", "p2"])
      })))

  it("rotates a pool of 5,000 strictly in least-recently-used order, also after members leave and return", () => {
    const index = new PoolIndex<number>()
    for (let i = 0; i < 5000; i++) index.set(`m${i}`, i, 0, { _tag: "available" })
    const take = (n: number, at: number) =>
      Array.from({ length: n }, () => {
        const result = index.acquire(at, () => ({ _tag: "available" }))
        return result._tag === "acquired" ? result.member.value : -1
      })
    const first = take(5000, 1)
    expect(first).toEqual(Array.from({ length: 5000 }, (_, i) => i))
    // take 100 out, rotate, put them back: they were used longest ago, so they come first
    for (let i = 0; i < 100; i++) index.set(`m${i}`, i, 0, { _tag: "out" })
    expect(take(4900, 2)).toEqual(Array.from({ length: 4900 }, (_, i) => i + 100))
    for (let i = 0; i < 100; i++) index.set(`m${i}`, i, 0, { _tag: "available" })
    expect(take(200, 3)).toEqual([...Array.from({ length: 100 }, (_, i) => i), ...Array.from({ length: 100 }, (_, i) => i + 100)])
    expect(index.countAvailable(3)).toBe(5000)
  })

  it.effect.prop(
    "the index always picks what a linear scan for the least recently used would pick",
    [FastCheck.array(
      FastCheck.oneof(
        FastCheck.record({ op: FastCheck.constant("acquire" as const) }),
        FastCheck.record({ op: FastCheck.constant("limit" as const), id: FastCheck.integer({ min: 0, max: 7 }), ms: FastCheck.integer({ min: 1, max: 50 }) }),
        FastCheck.record({ op: FastCheck.constant("out" as const), id: FastCheck.integer({ min: 0, max: 7 }) }),
        FastCheck.record({ op: FastCheck.constant("back" as const), id: FastCheck.integer({ min: 0, max: 7 }) }),
        FastCheck.record({ op: FastCheck.constant("tick" as const), ms: FastCheck.integer({ min: 0, max: 30 }) })
      ),
      { maxLength: 200 }
    )],
    ([ops]) =>
      Effect.sync(() => {
        const index = new PoolIndex<number>()
        // the model: every member with its last use and order, and its standing
        const model = new Map<number, { lastUsed: number; order: number; standing: Standing }>()
        let now = 1000
        let order = 0
        for (let id = 0; id < 8; id++) {
          index.set(`m${id}`, id, 0, { _tag: "available" })
          model.set(id, { lastUsed: 0, order: ++order, standing: { _tag: "available" } })
        }
        for (const step of ops) {
          if (step.op === "tick") now += step.ms
          else if (step.op === "limit" || step.op === "out" || step.op === "back") {
            const standing: Standing = step.op === "limit"
              ? { _tag: "limited", until: now + step.ms }
              : step.op === "out" ? { _tag: "out" } : { _tag: "available" }
            index.set(`m${step.id}`, step.id, 0, standing)
            model.get(step.id)!.standing = standing
          } else {
            const candidates = [...model.entries()].filter(([, m]) =>
              m.standing._tag === "available" || (m.standing._tag === "limited" && m.standing.until <= now)
            )
            candidates.sort(([, a], [, b]) => a.lastUsed - b.lastUsed || a.order - b.order)
            const result = index.acquire(now, () => ({ _tag: "available" }))
            if (candidates.length === 0) {
              expect(result._tag).not.toBe("acquired")
              const limits = [...model.values()].flatMap((m) => m.standing._tag === "limited" ? [m.standing.until] : [])
              if (limits.length > 0) expect(result).toEqual({ _tag: "exhausted", retryAt: Math.min(...limits) })
              else expect(result._tag).toBe("none")
            } else {
              expect(result._tag === "acquired" ? result.member.value : undefined).toBe(candidates[0]![0])
              const picked = model.get(candidates[0]![0])!
              picked.lastUsed = now
              picked.order = ++order
              picked.standing = { _tag: "available" }
            }
          }
        }
      })
  )
})

describe("withToken", () => {
  it.scoped("runs the work with a leased token and reports what the upstream answered", () =>
    withPool(2, (pool, lifecycle) =>
      Effect.gen(function*() {
        const seen = yield* pool.withToken(
          "test",
          (lease) => Effect.succeed({ status: 429, headers: { "retry-after": "30" }, token: Redacted.value(lease.token) }),
          { observe: (exit) => exit._tag === "Success" ? { status: exit.value.status, headers: exit.value.headers } : undefined }
        )
        expect(seen.token).toBe("static-token-0-abcdef")
        expect((yield* lifecycle.info("p0")).status).toBe("rate_limited")
        const failed = yield* Effect.flip(pool.withToken("test", () => Effect.fail("boom" as const)))
        expect(failed).toBe("boom")
        expect(ids(yield* acquireN(pool, 2))).toEqual(["p1", "p1"])
      })))
})

describe("SPEC §3.3 rate limits", () => {
  it.scoped("a token limited by a 429 is skipped until its reset and then returns by itself", () =>
    withPool(2, (pool) =>
      Effect.gen(function*() {
        const events = yield* Events.Events
        const subscription = yield* events.subscribe
        yield* pool.report("test", { accountId: "p0", status: 429, headers: { "retry-after": "30" } })
        expect(ids(yield* acquireN(pool, 3))).toEqual(["p1", "p1", "p1"])
        expect(yield* pool.countAvailable("test")).toBe(1)
        yield* TestClock.adjust("30 seconds")
        yield* settle
        expect(yield* pool.countAvailable("test")).toBe(2)
        expect(ids(yield* acquireN(pool, 1))).toEqual(["p0"])
        const seen = Chunk.toReadonlyArray(yield* Queue.takeAll(subscription))
          .filter((e) => e.type !== "acquired")
          .map((e) => `${e.type}:${e.accountId}`)
        expect(seen).toEqual(["rate_limited:p0", "recovered:p0"])
      })))

  it.scoped("a response saying remaining 0 takes the token out until its reset", () =>
    withPool(2, (pool) =>
      Effect.gen(function*() {
        const reset = String(60) // epoch seconds: one minute after TestClock's start
        // a generic provider only reads 429s; the GitHub reading of remaining 0 is in @tessera/providers
        yield* pool.report("test", { accountId: "p1", status: 429, headers: { "retry-after": reset } })
        const info = (yield* pool.list("test")).find((i) => i.accountId === "p1")!
        expect(info.status).toBe("rate_limited")
        expect(info.rateLimit?.resetAt).toBe(60_000)
      })))
})

describe("SPEC §3.4 invalid tokens", () => {
  it.scoped("an invalid token is never handed out until replaced", () =>
    withPool(2, (pool, lifecycle) =>
      Effect.gen(function*() {
        yield* pool.report("test", { accountId: "p0", status: 401, headers: {} })
        expect((yield* lifecycle.info("p0")).status).toBe("invalid")
        expect(ids(yield* acquireN(pool, 4))).toEqual(["p1", "p1", "p1", "p1"])
        yield* lifecycle.update("p0", Redacted.make("static-token-0-replaced"), { validate: false })
        expect(ids(yield* acquireN(pool, 2))).toContain("p0")
      })))

  it.scoped("an invalid token that validates again is back in rotation", () =>
    Effect.gen(function*() {
      const upstream = yield* TestUpstream.make()
      yield* upstream.accept("static-token-0-abcdef")
      yield* Effect.gen(function*() {
        const lifecycle = yield* Lifecycle.Lifecycle
        const pool = yield* TokenPool.TokenPool
        yield* lifecycle.add(TestUpstream.staticAccount("p0"), { token: Redacted.make("static-token-0-abcdef") })
        yield* pool.report("test", { accountId: "p0", status: 401, headers: {} })
        expect((yield* Effect.flip(pool.acquire("test")))._tag).toBe("NoUsableToken")
        expect((yield* lifecycle.validate("p0")).valid).toBe(true)
        expect((yield* pool.acquire("test")).accountId).toBe("p0")
      }).pipe(Effect.provide(TestUpstream.layer(upstream)))
    }))

  it.effect.prop(
    "no invalid or limited token is ever handed out",
    [FastCheck.array(FastCheck.tuple(FastCheck.integer({ min: 0, max: 4 }), FastCheck.constantFrom(200, 401, 429)), { maxLength: 30 })],
    ([reports]) =>
      withPool(5, (pool, lifecycle) =>
        Effect.gen(function*() {
          for (const [i, status] of reports) {
            yield* pool.report("test", { accountId: `p${i}`, status, headers: status === 429 ? { "retry-after": "100" } : {} })
            const lease = yield* Effect.either(pool.acquire("test"))
            if (Either.isRight(lease)) {
              const info = yield* lifecycle.info(lease.right.accountId)
              expect(info.status).toBe("available")
            }
          }
        })).pipe(Effect.scoped),
    { fastCheck: { numRuns: 15 } }
  )
})

describe("SPEC §3.5 exhaustion", () => {
  it.scoped("when every token is limited, acquire fails with the earliest reset; with a wait it waits for it", () =>
    withPool(2, (pool) =>
      Effect.gen(function*() {
        yield* pool.report("test", { accountId: "p0", status: 429, headers: { "retry-after": "50" } })
        yield* pool.report("test", { accountId: "p1", status: 429, headers: { "retry-after": "20" } })
        const error = yield* Effect.flip(pool.acquire("test"))
        expect(error).toEqual(new TokenPool.PoolExhausted({ pool: "test", retryAt: 20_000 }))
        const tooShort = yield* Effect.flip(pool.acquire("test", { wait: "10 seconds" }))
        expect(tooShort._tag).toBe("PoolExhausted")
        const waiting = yield* Effect.fork(pool.acquire("test", { wait: "1 minute" }))
        yield* TestClock.adjust("19 seconds")
        yield* settle
        expect(waiting.unsafePoll()).toBeNull()
        yield* TestClock.adjust("1 second")
        expect((yield* Fiber.join(waiting)).accountId).toBe("p1")
      })))

  it.scoped("when no token is usable at all, acquire fails with NoUsableToken", () =>
    withPool(2, (pool) =>
      Effect.gen(function*() {
        yield* pool.report("test", { accountId: "p0", status: 401, headers: {} })
        yield* pool.report("test", { accountId: "p1", status: 401, headers: {} })
        const error = yield* Effect.flip(pool.acquire("test"))
        expect(error._tag).toBe("NoUsableToken")
        expect((yield* Effect.flip(pool.acquire("nonexistent")))._tag).toBe("NoUsableToken")
      })))
})

describe("answers at once, without an effect (for the HTTP fast lane)", () => {
  it.scoped("unsafeAcquire rotates with acquire, names its caller in the audit log and fails as acquire does", () =>
    withPool(3, (pool) =>
      Effect.gen(function*() {
        const store = yield* TokenStore.TokenStore
        const at = yield* Effect.clockWith((clock) => clock.currentTimeMillis)
        const taken = (who: string) => {
          const result = pool.unsafeAcquire("test", who, at)
          if (result === undefined || Either.isLeft(result)) throw new Error(`no lease: ${JSON.stringify(result)}`)
          return result.right.accountId
        }
        expect([taken("lane"), (yield* pool.acquire("test")).accountId, taken("lane")]).toEqual(["p0", "p1", "p2"])
        expect(pool.unsafeExists("test")).toBe(true)
        expect(pool.unsafeExists("nonexistent")).toBe(false)
        yield* TestClock.adjust("2 seconds") // one usage flush
        const acquired = (yield* store.audit({})).filter((e) => e.type === "acquired")
        expect(acquired.map((e) => [e.accountId, e.actor]).sort()).toEqual([["p0", "lane"], ["p1", "library"], ["p2", "lane"]])

        yield* pool.report("test", { accountId: "p0", status: 429, headers: { "retry-after": "50" } })
        yield* pool.report("test", { accountId: "p1", status: 429, headers: { "retry-after": "20" } })
        yield* pool.report("test", { accountId: "p2", status: 429, headers: { "retry-after": "30" } })
        const later = yield* Effect.clockWith((clock) => clock.currentTimeMillis)
        expect(pool.unsafeAcquire("test", "lane", later)).toEqual(Either.left(yield* Effect.flip(pool.acquire("test"))))
        expect(pool.unsafeAcquire("test", "lane", later)).toEqual(
          Either.left(new TokenPool.PoolExhausted({ pool: "test", retryAt: later + 20_000 }))
        )
        const unknown = pool.unsafeAcquire("nonexistent", "lane", later)
        expect(unknown).toEqual(Either.left(yield* Effect.flip(pool.acquire("nonexistent"))))
        expect(unknown !== undefined && Either.isLeft(unknown) && unknown.left._tag).toBe("NoUsableToken")
      })))

  it.scoped("unsafeInfo is info, read at once; an unknown account is undefined", () =>
    withPool(2, (pool, lifecycle) =>
      Effect.gen(function*() {
        yield* TestClock.adjust("3 seconds")
        yield* pool.acquire("test")
        yield* pool.report("test", { accountId: "p1", status: 429, headers: { "retry-after": "60" } })
        const at = yield* Effect.clockWith((clock) => clock.currentTimeMillis)
        for (const id of ["p0", "p1"]) expect(lifecycle.unsafeInfo(id, at)).toEqual(yield* lifecycle.info(id))
        expect(lifecycle.unsafeInfo("p0", at)?.lastUsedAt).toBe(3000)
        expect(lifecycle.unsafeInfo("p1", at)?.status).toBe("rate_limited")
        expect(lifecycle.unsafeInfo("p1", at + 60_000)?.status).toBe("available")
        expect(lifecycle.unsafeInfo("nobody", at)).toBeUndefined()
        // kept while nothing it shows changes; a use or a report shows at once
        const shown = lifecycle.unsafeInfo("p0", at + 1)
        expect(lifecycle.unsafeInfo("p0", at + 2)).toBe(shown)
        yield* TestClock.adjust("1 second")
        yield* pool.acquire("test")
        expect(lifecycle.unsafeInfo("p0", at + 1_000)?.lastUsedAt).toBe(at + 1_000)
        yield* pool.report("test", { accountId: "p0", status: 401, headers: {} })
        expect(lifecycle.unsafeInfo("p0", at + 1_000)?.status).toBe("invalid")
      })))

  it.scoped("with a rotation shared through the database, unsafeAcquire leaves the answer to acquire", () =>
    withPool(2, (pool) =>
      Effect.gen(function*() {
        expect(pool.unsafeAcquire("test", "lane", 0)).toBeUndefined()
        expect((yield* pool.acquire("test")).accountId).toBe("p1")
      })).pipe(
        Effect.provideService(TokenPool.SharedRotation, Option.some({ claim: () => Effect.succeed(Option.some("p1")) }))
      ))
})

describe("SPEC §3.6 counting and listing", () => {
  it.scoped("counts available tokens and lists status, limits and last use", () =>
    withPool(3, (pool) =>
      Effect.gen(function*() {
        yield* TestClock.adjust("5 seconds")
        yield* pool.acquire("test")
        yield* pool.report("test", { accountId: "p2", status: 429, headers: { "retry-after": "60" } })
        yield* pool.report("test", { accountId: "p1", status: 401, headers: {} })
        expect(yield* pool.countAvailable("test")).toBe(1)
        const listed = yield* pool.list("test")
        const byId = Object.fromEntries(listed.map((info) => [info.accountId, info]))
        expect(byId["p0"]!.lastUsedAt).toBe(5000)
        expect(byId["p1"]!.status).toBe("invalid")
        expect(byId["p2"]!.status).toBe("rate_limited")
        expect(listed.every((info) => !JSON.stringify(info).includes("static-token"))).toBe(true)
        const [summary] = yield* pool.pools
        expect(summary).toEqual({
          pool: "test", provider: "test", total: 3, available: 1, rateLimited: 1, invalid: 1, nextResetAt: 65_000
        })
      })))
})

describe("pool state survives a restart", () => {
  it.scoped("rate limits, invalid marks, last use and acquire counts are persisted", () =>
    Effect.gen(function*() {
      const filename = path.join(yield* tempDir, "pool.db")
      const key = yield* Crypto.generateKey
      yield* withPool(3, (pool) =>
        Effect.gen(function*() {
          yield* TestClock.adjust("1 second")
          yield* Events.withActor(acquireN(pool, 2), "alice")
          yield* pool.report("test", { accountId: "p2", status: 429, headers: { "retry-after": "600" } })
          yield* pool.report("test", { accountId: "p1", status: 401, headers: {} })
        }), { filename, key })
      yield* withPool(3, (pool, lifecycle) =>
        Effect.gen(function*() {
          const store = yield* TokenStore.TokenStore
          expect(ids(yield* acquireN(pool, 2))).toEqual(["p0", "p0"])
          expect((yield* lifecycle.info("p1")).status).toBe("invalid")
          expect((yield* lifecycle.info("p2")).status).toBe("rate_limited")
          expect((yield* lifecycle.info("p0")).lastUsedAt).toBe(1000)
          const acquired = (yield* store.audit({})).filter((e) => e.type === "acquired")
          expect(acquired.map((e) => [e.accountId, e.actor, e.data["count"]]).sort()).toEqual([["p0", "alice", 1], ["p1", "alice", 1]])
        }), { filename, key })
    }))

  it.scoped("coalesced acquire counts are exact per account and caller across flushes, interleaved callers included", () =>
    withPool(3, (pool) =>
      Effect.gen(function*() {
        const store = yield* TokenStore.TokenStore
        const expected = new Map<string, number>()
        const take = (who: string, n: number) =>
          Effect.gen(function*() {
            for (const lease of yield* Events.withActor(acquireN(pool, n), who)) {
              const key = `${lease.accountId} ${who}`
              expected.set(key, (expected.get(key) ?? 0) + 1)
            }
          })
        // round 1: alice and bob take turns on the same accounts; then a flush
        yield* take("alice", 4)
        yield* take("bob", 2)
        yield* take("alice", 3)
        yield* TestClock.adjust("2 seconds")
        yield* settle
        // round 2: the shortcuts of round 1 must not count into records already written
        yield* take("alice", 5)
        yield* take("bob", 1)
        yield* TestClock.adjust("2 seconds")
        yield* settle
        const audited = new Map<string, number>()
        for (const entry of (yield* store.audit({})).filter((e) => e.type === "acquired")) {
          const key = `${entry.accountId} ${entry.actor}`
          audited.set(key, (audited.get(key) ?? 0) + Number(entry.data["count"]))
        }
        expect(new Map([...audited].sort())).toEqual(new Map([...expected].sort()))
        expect([...audited.values()].reduce((a, b) => a + b, 0)).toBe(15)
      })))

  it.scoped("hand-outs counted before a token is replaced or its account removed are audited, one record per account and caller", () =>
    withPool(2, (pool, lifecycle) =>
      Effect.gen(function*() {
        const store = yield* TokenStore.TokenStore
        yield* Events.withActor(acquireN(pool, 4), "alice") // p0 p1 p0 p1, counted on the entries
        yield* Events.withActor(acquireN(pool, 2), "bob") // alice's counts move aside for bob's
        yield* Events.withActor(acquireN(pool, 2), "alice") // counted on the entries again
        // a new token replaces p0's entry; p1 leaves the pool: neither loses its counts
        yield* lifecycle.update("p0", Redacted.make("replacement-token-abcdef"), { validate: false })
        yield* lifecycle.remove("p1")
        yield* TestClock.adjust("2 seconds")
        yield* settle
        const acquired = (yield* store.audit({})).filter((e) => e.type === "acquired")
        expect(acquired.map((e) => [e.accountId, e.actor, e.data["count"]]).sort()).toEqual([
          ["p0", "alice", 3],
          ["p0", "bob", 1],
          ["p1", "alice", 3],
          ["p1", "bob", 1]
        ])
      })))
})
