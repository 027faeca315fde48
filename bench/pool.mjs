// Token pool benchmarks: acquire throughput of the real `TokenPool` service at 10, 1,000 and
// 100,000 static tokens, against a naive linear-scan LRU (what common token-rotation
// libraries do), plus the cost of restoring and holding a 100,000-token pool. Uses the built
// packages.
//
// The store is `TokenStore.layerMemory` (keys from `Crypto.layerRandom`). It is built on its
// own first and filled with `importAccounts`; the lifecycle is then built over that same
// store, so every account enters the pool through the startup path (`loadAll`, decryption,
// one actor each, `pools.sync`), as after a restart. `BENCH_POOL_STORE=file` uses a temporary
// SQLite file instead (removed afterwards).
import { Account, Crypto, Events, Lifecycle, Source, Token, TokenPool, TokenStore } from "@tessera/core"
import { Context, Effect, ExecutionStrategy, Exit, Layer, Option, Redacted, Schema, Scope } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"

const SIZES = [10, 1_000, 100_000]
const ITERATIONS = Number(process.env.BENCH_POOL_ITERATIONS ?? 200_000)
const WARMUP = Math.min(20_000, ITERATIONS)
/** Timed runs of each pool, in alternation (`tesseraAll`). */
const ROUNDS = 5
/** Restores of the largest pool (the best is reported), and timed runs of the naive pool. */
const RUNS = 3
/** The naive scan is O(n) per acquire: fewer iterations as the pool grows. */
const NAIVE_ITERATIONS = { 10: 200_000, 1_000: 20_000, 100_000: 2_000 }
const POOL = "bench"
const STORE = process.env.BENCH_POOL_STORE === "file" ? "file" : "memory"

const accountId = Schema.decodeSync(Account.AccountId)
const label = (size) => (size >= 1_000 ? `${size / 1_000}k` : String(size))

const memory = () => {
  globalThis.gc?.()
  globalThis.gc?.()
  const { rss, heapUsed } = process.memoryUsage()
  return { rss, heapUsed }
}

/** Best of `RUNS` timed runs of `body(n)`, after a warm-up; in operations per second. */
const bestRate = (n, warmup, body) =>
  Effect.gen(function*() {
    yield* body(warmup)
    let best = 0
    for (let run = 0; run < RUNS; run++) {
      const start = performance.now()
      yield* body(n)
      const ms = performance.now() - start
      best = Math.max(best, n / (ms / 1_000))
    }
    return best
  })

// --- Tessera ----------------------------------------------------------------------------

const entries = (size) => {
  const now = Date.now()
  return Array.from({ length: size }, (_, i) => ({
    account: new Account.Account({
      id: accountId(`tok-${i}`),
      provider: "bench",
      pool: POOL,
      source: new Account.StaticSource(),
      createdAt: now
    }),
    state: {
      ...Token.emptyState,
      token: Option.some({
        token: Redacted.make(`static-pool-token-${i}-abcdef`),
        expiresAt: Option.none(),
        issuedAt: now,
        origin: "static"
      })
    }
  }))
}

/** The store (and its keyring), built on its own so it can be filled before the lifecycle. */
const storeLayer = (file) =>
  file === undefined
    ? TokenStore.layerMemory.pipe(Layer.provideMerge(Crypto.layerRandom))
    : Layer.unwrapEffect(Effect.map(Crypto.generateKey, (key) =>
      TokenStore.layerSqlite(file).pipe(Layer.provideMerge(Crypto.layerKeys([key])))))

/** A lifecycle (and its pools) over an already built store: startup restores every account. */
const lifecycleLayer = (storeContext) =>
  Lifecycle.layer.pipe(
    Layer.provideMerge(Events.layer),
    Layer.provideMerge(Source.layer({})),
    Layer.provideMerge(Layer.succeedContext(storeContext))
  )

/** Builds a lifecycle over the store in `scope` and waits for its startup; returns it and the time taken. */
const restore = (storeContext, scope) =>
  Effect.gen(function*() {
    const start = performance.now()
    const context = yield* Layer.buildWithScope(lifecycleLayer(storeContext), scope)
    const lifecycle = Context.get(context, Lifecycle.Lifecycle)
    yield* lifecycle.awaitStartup
    return { ms: performance.now() - start, lifecycle, pool: Context.get(context, TokenPool.TokenPool) }
  })

const acquireLoop = (pool) => (n) =>
  Effect.gen(function*() {
    for (let i = 0; i < n; i++) yield* pool.acquire(POOL)
  })

/**
 * A pool of `size` tokens, restored into a lifecycle that lives in `scope`; for the largest
 * pool, restore time and memory too. Returns its `TokenPool`.
 */
const tessera = (size, measureRestore, results, scope) =>
  Effect.gen(function*() {
    const dir = STORE === "file" ? fs.mkdtempSync(path.join(os.tmpdir(), "tessera-pool-bench-")) : undefined
    yield* Scope.addFinalizer(scope, Effect.sync(() => dir && fs.rmSync(dir, { recursive: true, force: true })))
    const storeContext = yield* Layer.buildWithScope(storeLayer(dir && path.join(dir, "pool.db")), scope)
    const store = Context.get(storeContext, TokenStore.TokenStore)
    const populateStart = performance.now()
    yield* store.importAccounts(entries(size))
    const populateMs = performance.now() - populateStart

    const before = memory()
    const lifecycleScope = yield* Scope.fork(scope, ExecutionStrategy.sequential)
    const first = yield* restore(storeContext, lifecycleScope)
    const after = memory()
    const restored = (yield* first.lifecycle.accounts).length
    if (restored !== size) throw new Error(`restored ${restored} accounts, expected ${size}`)

    // Sanity, and one full rotation so the timed runs see the steady state: the first `size`
    // acquires hand out every token once (least recently used first).
    const seen = new Set()
    for (let i = 0; i < size; i++) seen.add((yield* first.pool.acquire(POOL)).accountId)
    if (seen.size !== size) throw new Error(`${size} acquires handed out ${seen.size} distinct tokens`)

    if (measureRestore) {
      const times = [first.ms]
      for (let run = 1; run < RUNS; run++) {
        const again = yield* Scope.make()
        times.push((yield* restore(storeContext, again)).ms)
        yield* Scope.close(again, Exit.void)
      }
      results[`populate${label(size)}Ms`] = populateMs
      results[`restore${label(size)}Ms`] = Math.min(...times)
      results[`restore${label(size)}FirstMs`] = first.ms
      results[`rssPerToken${label(size)}`] = Math.round((after.rss - before.rss) / size)
      results[`heapPerToken${label(size)}`] = Math.round((after.heapUsed - before.heapUsed) / size)
    }
    return { pool: first.pool, scope: lifecycleScope }
  })

/**
 * Acquire throughput at every size, measured in alternation: round after round, one timed
 * run of each pool in turn, all pools alive in one process. On this machine, whose speed
 * drifts over seconds, runs of one size after the other compared the machine's moments as
 * much as the pools; alternating, each size sees the same moments, the same heap and the
 * same background work (each pool's own flush of usage each second included).
 */
const tesseraAll = (results) =>
  Effect.scoped(Effect.gen(function*() {
    const scope = yield* Effect.scope
    const pools = []
    for (const size of SIZES) pools.push({ size, ...(yield* tessera(size, size === SIZES[SIZES.length - 1], results, scope)) })
    const rates = pools.map(() => [])
    for (const { pool } of pools) yield* acquireLoop(pool)(WARMUP)
    for (let round = 0; round < ROUNDS; round++) {
      for (let i = 0; i < pools.length; i++) {
        const start = performance.now()
        yield* acquireLoop(pools[i].pool)(ITERATIONS)
        rates[i].push(ITERATIONS / ((performance.now() - start) / 1_000))
      }
    }
    for (let i = 0; i < pools.length; i++) {
      const name = label(pools[i].size)
      const sorted = [...rates[i]].sort((a, b) => a - b)
      results[`tessera${name}PerSec`] = Math.round(sorted[sorted.length - 1])
      results[`tessera${name}MedianPerSec`] = Math.round(sorted[Math.floor(sorted.length / 2)])
      results[`tessera${name}NsPerAcquire`] = 1e9 / sorted[sorted.length - 1]
      results[`tessera${name}RunsPerSec`] = rates[i].map((rate) => Math.round(rate / 1_000) + "k").join(" ")
    }
    // Closing the largest pool's lifecycle writes what its last flush left: the usage (last
    // use, and one audit record per account and caller) of up to every one of its tokens.
    const largest = pools[pools.length - 1]
    const closeStart = performance.now()
    yield* Scope.close(largest.scope, Exit.void)
    results[`close${label(largest.size)}Ms`] = performance.now() - closeStart
  }))

// --- the naive baseline -------------------------------------------------------------------

/** An LRU by linear scan, as common token-rotation libraries do it. */
const naivePool = (size) => {
  const tokens = Array.from({ length: size }, (_, i) => ({
    token: `static-pool-token-${i}-abcdef`,
    lastUsed: 0,
    status: "available",
    resetAt: 0
  }))
  let clock = 0
  const acquire = () => {
    const now = ++clock
    let best
    for (let i = 0; i < tokens.length; i++) {
      const entry = tokens[i]
      if (entry.status !== "available" || entry.resetAt > now) continue
      if (best === undefined || entry.lastUsed < best.lastUsed) best = entry
    }
    if (best === undefined) throw new Error("no usable token")
    best.lastUsed = now
    return best.token
  }
  return { tokens, acquire }
}

const naive = (size, results) =>
  Effect.sync(() => {
    const before = size === 100_000 ? memory() : undefined
    const pool = naivePool(size)
    if (before !== undefined) {
      results[`naiveHeapPerToken${label(size)}`] = Math.round((memory().heapUsed - before.heapUsed) / size)
    }
    let sink = 0
    const n = NAIVE_ITERATIONS[size]
    const rate = Effect.runSync(bestRate(n, Math.max(1, n / 10), (k) =>
      Effect.sync(() => {
        for (let i = 0; i < k; i++) sink += pool.acquire().length
      })))
    if (sink === 0) throw new Error("unreachable")
    results[`naive${label(size)}PerSec`] = Math.round(rate)
  })

// ------------------------------------------------------------------------------------------

export const run = async () => {
  const results = {}
  await Effect.runPromise(tesseraAll(results))
  for (const size of SIZES) await Effect.runPromise(naive(size, results))
  const big = label(SIZES[SIZES.length - 1])
  const small = label(SIZES[0])
  results[`costRatio${big}Over${small}`] = results[`tessera${big}NsPerAcquire`] / results[`tessera${small}NsPerAcquire`]
  results[`costRatio${big}Over${small}Median`] = results[`tessera${small}MedianPerSec`] / results[`tessera${big}MedianPerSec`]
  for (const size of SIZES.slice(1)) {
    results[`vsNaive${label(size)}`] = results[`tessera${label(size)}PerSec`] / results[`naive${label(size)}PerSec`]
  }
  return results
}
