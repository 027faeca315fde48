/**
 * A scripted source and provider for lifecycle unit tests: counts calls, takes simulated
 * time per call (so `TestClock` can hold calls in flight), issues numbered tokens, and fails
 * on demand. Integration tests use the real sources against fake HTTP servers instead.
 */
import { Account, Crypto, Errors, Events, Lifecycle, Source, TokenStore } from "@tessera/core"
import { Duration, Effect, Layer, Option, Redacted, Ref, Schema } from "effect"

type Op = "obtain" | "refresh" | "validate"

export interface TestUpstream {
  readonly source: Source.TokenSource
  readonly provider: Source.Provider
  readonly calls: (op: Op) => Effect.Effect<number>
  /** The next `times` calls of `op` fail with `error`. */
  readonly failNext: (op: Op, error: Errors.UpstreamError, times?: number) => Effect.Effect<void>
  readonly revoke: (token: string) => Effect.Effect<void>
  /** Tokens the provider accepts besides the ones this upstream issued. */
  readonly accept: (token: string) => Effect.Effect<void>
}

export const make = (options: {
  readonly lifetime?: Duration.DurationInput
  readonly latency?: Duration.DurationInput
  readonly refreshable?: boolean
  readonly obtainable?: boolean
} = {}): Effect.Effect<TestUpstream> =>
  Effect.gen(function*() {
    const lifetime = Duration.toMillis(options.lifetime ?? "1 hour")
    const latency = Duration.decode(options.latency ?? 0)
    const counts = yield* Ref.make({ obtain: 0, refresh: 0, validate: 0 })
    const failures = yield* Ref.make<Array<{ op: Op; error: Errors.UpstreamError }>>([])
    const valid = yield* Ref.make(new Set<string>())
    const serial = yield* Ref.make(0)

    const step = (op: Op) =>
      Effect.gen(function*() {
        yield* Ref.update(counts, (c) => ({ ...c, [op]: c[op] + 1 }))
        if (Duration.toMillis(latency) > 0) yield* Effect.sleep(latency)
        const failure = yield* Ref.modify(failures, (list) => {
          const index = list.findIndex((f) => f.op === op)
          return index < 0 ? [undefined, list] : [list[index], list.filter((_, i) => i !== index)]
        })
        if (failure !== undefined) return yield* Effect.fail(failure.error)
      })

    const issue = (op: "obtain" | "refresh") =>
      Effect.gen(function*() {
        yield* step(op)
        const n = yield* Ref.updateAndGet(serial, (k) => k + 1)
        const token = `${op}-token-${String(n).padStart(4, "0")}-abcdef`
        yield* Ref.update(valid, (set) => new Set(set).add(token))
        const now = yield* Effect.clockWith((clock) => clock.currentTimeMillis)
        return { token: Redacted.make(token), expiresAt: Option.some(now + lifetime), username: "tester" }
      })

    const source: Source.TokenSource = {
      kind: "test",
      obtain: options.obtainable === false ? Option.none() : Option.some(() => issue("obtain")),
      refresh: options.refreshable === false ? Option.none() : Option.some(() => issue("refresh"))
    }
    const provider: Source.Provider = {
      id: "test",
      validate: (token) =>
        Effect.gen(function*() {
          yield* step("validate")
          const ok = (yield* Ref.get(valid)).has(Redacted.value(token))
          return ok
            ? { valid: true, reason: "ok", upstreamStatus: 200, username: "tester" }
            : { valid: false, reason: "Invalid token used to access API", upstreamStatus: 401 }
        })
    }
    return {
      source,
      provider,
      calls: (op) => Effect.map(Ref.get(counts), (c) => c[op]),
      failNext: (op, error, times = 1) =>
        Ref.update(failures, (list) => [...list, ...Array.from({ length: times }, () => ({ op, error }))]),
      revoke: (token) => Ref.update(valid, (set) => { const next = new Set(set); next.delete(token); return next }),
      accept: (token) => Ref.update(valid, (set) => new Set(set).add(token))
    }
  })

export const accountId = Schema.decodeSync(Account.AccountId)

export const testAccount = (id: string, kind = "test") =>
  new Account.NewAccount({
    id: accountId(id),
    provider: "test",
    source: new Account.CustomSource({ kind, options: {}, secrets: {} })
  })

export const staticAccount = (id: string) =>
  new Account.NewAccount({ id: accountId(id), provider: "test", source: new Account.StaticSource() })


/** A lifecycle over an in-memory (or file) store, with the given upstream. */
export const layer = (upstream: TestUpstream, options: { readonly filename?: string; readonly key?: Crypto.EncryptionKey } = {}) => {
  const keys = options.key === undefined ? Crypto.layerRandom : Crypto.layerKeys([options.key])
  return Lifecycle.layer.pipe(
    Layer.provideMerge(Events.layer),
    Layer.provideMerge(Source.layer({ sources: [upstream.source], providers: [upstream.provider] })),
    Layer.provideMerge(options.filename === undefined ? TokenStore.layerMemory : TokenStore.layerSqlite(options.filename)),
    Layer.provideMerge(keys)
  )
}

export const upstreamError = (
  kind: Errors.UpstreamError["kind"],
  status: number | null = null,
  retryAfterMs: number | null = null
) => new Errors.UpstreamError({ kind, operation: "test", status, detail: `simulated ${kind}`, retryAfterMs })
