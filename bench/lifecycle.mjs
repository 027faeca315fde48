// Lifecycle benchmarks (issue 2): restoring 10,000 accounts from SQLite, memory per account,
// and single-flight renewal under 1,000 concurrent callers. Uses the built packages.
import { Account, Crypto, Events, Lifecycle, Source, Token, TokenStore } from "@tessera/core"
import { Duration, Effect, Layer, Option, Redacted, Schema } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"

const ACCOUNTS = Number(process.env.BENCH_ACCOUNTS ?? 10_000)
const CALLERS = 1_000
const accountId = Schema.decodeSync(Account.AccountId)

/** A source that counts calls and answers after a short delay, like a fast upstream. */
const countingSource = (latency) => {
  const calls = { obtain: 0, refresh: 0 }
  const issue = (op) =>
    Effect.gen(function*() {
      calls[op]++
      yield* Effect.sleep(latency)
      const now = Date.now()
      return { token: Redacted.make(`${op}-${calls[op]}-bench-token`), expiresAt: Option.some(now + 3_600_000) }
    })
  return {
    calls,
    source: { kind: "bench", obtain: Option.some(() => issue("obtain")), refresh: Option.some(() => issue("refresh")) }
  }
}

const gcRss = () => {
  globalThis.gc?.()
  globalThis.gc?.()
  return process.memoryUsage().rss
}

const layerFor = (file, key, source) =>
  Lifecycle.layer.pipe(
    Layer.provideMerge(Events.layer),
    Layer.provideMerge(Source.layer({ sources: [source] })),
    Layer.provideMerge(TokenStore.layerSqlite(file)),
    Layer.provideMerge(Crypto.layerKeys([key]))
  )

export const run = async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tessera-bench-"))
  const file = path.join(dir, "bench.db")
  const key = await Effect.runPromise(Crypto.generateKey)
  const { source, calls } = countingSource(Duration.millis(20))
  const results = {}
  try {
    // Populate: accounts with tokens valid for ten hours, written through the store.
    const populateStart = performance.now()
    await Effect.runPromise(Effect.scoped(Effect.gen(function*() {
      const store = yield* TokenStore.TokenStore
      const expiresAt = Date.now() + 10 * 3_600_000
      yield* store.importAccounts(Array.from({ length: ACCOUNTS }, (_, i) => ({
        account: new Account.Account({
          id: accountId(`acct-${i}`),
          provider: "bench",
          pool: "bench",
          source: new Account.CustomSource({ kind: "bench" }),
          createdAt: Date.now()
        }),
        state: {
          ...Token.emptyState,
          token: Option.some({ token: Redacted.make(`restored-token-${i}-abcdef`), expiresAt: Option.some(expiresAt), issuedAt: Date.now(), origin: "obtain" })
        }
      })))
    }).pipe(Effect.provide(TokenStore.layerSqlite(file).pipe(Layer.provide(Crypto.layerKeys([key])))))))
    results.populateMs = performance.now() - populateStart

    // Restore: a fresh lifecycle over the same file; nothing should be fetched.
    const rssBefore = gcRss()
    const restoreStart = performance.now()
    await Effect.runPromise(Effect.scoped(Effect.gen(function*() {
      const lifecycle = yield* Lifecycle.Lifecycle
      yield* lifecycle.awaitStartup
      results.restoreMs = performance.now() - restoreStart
      results.restoredAccounts = (yield* lifecycle.accounts).length
      results.bytesPerAccount = Math.round((gcRss() - rssBefore) / ACCOUNTS)
      results.upstreamCallsAtRestore = calls.obtain + calls.refresh

      // Single flight: one account inside its refresh window, 1,000 concurrent callers.
      yield* lifecycle.update("acct-0", Redacted.make("expiring-token-abcdef-0000"), {
        expiresAt: Date.now() + 60_000,
        validate: false
      })
      const before = calls.obtain + calls.refresh
      const flightStart = performance.now()
      const leases = yield* Effect.forEach(Array.from({ length: CALLERS }), () => lifecycle.get("acct-0"), {
        concurrency: "unbounded"
      })
      results.singleFlightMs = performance.now() - flightStart
      results.singleFlightCallers = leases.length
      results.singleFlightDistinctTokens = new Set(leases.map((l) => Redacted.value(l.token))).size
      results.singleFlightUpstreamCalls = calls.obtain + calls.refresh - before
    }).pipe(Effect.provide(layerFor(file, key, source)))))
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
  return results
}
