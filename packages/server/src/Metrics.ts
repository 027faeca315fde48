/**
 * Prometheus metrics for `GET /metrics`: what can be counted honestly. Gauges come from the
 * accounts' current state (tokens by pool and status, seconds to expiry). Counters come from
 * the token events this process has seen since it started (every event by type and outcome;
 * renewals and their failures), from the acquires and denials the HTTP edge answered. The
 * collector subscribes to the event hub when it is built: build it before the lifecycle, so
 * the startup fetch is counted too.
 */
import { Events, Token } from "@tessera/core"
import type { TokenPool } from "@tessera/core"
import { Chunk, Context, Effect, Layer, Queue } from "effect"

export type AcquireOutcome = "success" | "exhausted" | "unusable"

export interface Counters {
  /** Events since start, keyed by type and outcome. */
  readonly events: ReadonlyMap<string, { readonly type: string; readonly outcome: string; readonly count: number }>
  readonly acquires: ReadonlyMap<string, { readonly pool: string; readonly outcome: AcquireOutcome; readonly count: number }>
  readonly denied: ReadonlyMap<number, number>
}

export interface MetricsService {
  /** Counts an acquire answer, at once: both lanes call it, the fast one without a fiber. */
  readonly unsafeAcquired: (pool: string, outcome: AcquireOutcome) => void
  readonly denied: (status: number) => Effect.Effect<void>
  readonly counters: Effect.Effect<Counters>
}

export class Metrics extends Context.Tag("@tessera/server/Metrics")<Metrics, MetricsService>() {}

export const layer: Layer.Layer<Metrics, never, Events.Events> = Layer.scoped(
  Metrics,
  Effect.gen(function*() {
    const hub = yield* Events.Events
    const events = new Map<string, { type: string; outcome: string; count: number }>()
    const acquires = new Map<string, { pool: string; outcome: AcquireOutcome; count: number }>()
    const denied = new Map<number, number>()

    const count = (event: Events.TokenEvent) => {
      const key = `${event.type}\u0000${event.outcome}`
      const entry = events.get(key)
      // A coalesced `acquired` record stands for `count` hand-outs.
      const n = typeof event.data["count"] === "number" ? event.data["count"] : 1
      if (entry === undefined) events.set(key, { type: event.type, outcome: event.outcome, count: n })
      else entry.count += n
    }

    const subscription = yield* hub.subscribe
    // taken in batches: a busy pool publishes thousands of hand-outs a second
    yield* Queue.takeBetween(subscription, 1, Number.MAX_SAFE_INTEGER).pipe(
      Effect.flatMap((batch) => Effect.sync(() => Chunk.forEach(batch, count))),
      Effect.forever,
      Effect.forkScoped
    )

    const unsafeAcquired = (pool: string, outcome: AcquireOutcome) => {
      const key = `${pool}\u0000${outcome}`
      const entry = acquires.get(key)
      if (entry === undefined) acquires.set(key, { pool, outcome, count: 1 })
      else entry.count++
    }

    return {
      unsafeAcquired,
      denied: (status) => Effect.sync(() => void denied.set(status, (denied.get(status) ?? 0) + 1)),
      counters: Effect.sync(() => ({
        events: new Map(Array.from(events, ([key, value]) => [key, { ...value }])),
        acquires: new Map(Array.from(acquires, ([key, value]) => [key, { ...value }])),
        denied: new Map(denied)
      }))
    }
  })
)

// --- the text format ----------------------------------------------------------------------

const escape = (value: string) => value.replace(/\\/g, "\\\\").replace(/"/g, "\\\"").replace(/\n/g, "\\n")

const labels = (pairs: Record<string, string>) => {
  const body = Object.entries(pairs).map(([name, value]) => `${name}="${escape(value)}"`).join(",")
  return body === "" ? "" : `{${body}}`
}

class Exposition {
  private readonly lines: Array<string> = []
  family(name: string, type: "gauge" | "counter", help: string, samples: Iterable<readonly [Record<string, string>, number]>) {
    this.lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`)
    for (const [pairs, value] of samples) this.lines.push(`${name}${labels(pairs)} ${value}`)
  }
  toString() {
    return `${this.lines.join("\n")}\n`
  }
}

/** The Prometheus text exposition of the current state and the counters. */
export const render = (input: {
  readonly infos: ReadonlyArray<Token.TokenInfo>
  readonly pools: ReadonlyArray<TokenPool.PoolSummary>
  readonly counters: Counters
  /** Upstream requests this process made (`Upstream.callCounts`). */
  readonly upstream?: ReadonlyArray<{ readonly operation: string; readonly outcome: string; readonly count: number }> | undefined
}): string => {
  const out = new Exposition()
  const { infos, counters } = input

  const byPool = new Map<string, Map<Token.TokenStatus, number>>()
  for (const info of infos) {
    const statuses = byPool.get(info.pool) ?? new Map(Token.TokenStatus.literals.map((status) => [status, 0]))
    statuses.set(info.status, (statuses.get(info.status) ?? 0) + 1)
    byPool.set(info.pool, statuses)
  }
  out.family("tessera_accounts", "gauge", "Accounts registered.", [[{}, infos.length]])
  out.family(
    "tessera_tokens",
    "gauge",
    "Accounts by pool and token status.",
    Array.from(byPool).flatMap(([pool, statuses]) =>
      Array.from(statuses, ([status, n]) => [{ pool, status }, n] as const)
    )
  )
  out.family(
    "tessera_token_expiry_seconds",
    "gauge",
    "Seconds until an account's token expires (accounts whose token has an expiry).",
    infos.filter((info) => info.expiresInSeconds !== null).map((info) =>
      [{ account_id: info.accountId, pool: info.pool, provider: info.provider }, info.expiresInSeconds ?? 0] as const
    )
  )
  out.family(
    "tessera_pool_tokens_available",
    "gauge",
    "Tokens a pool can hand out now.",
    input.pools.map((pool) => [{ pool: pool.pool, provider: pool.provider }, pool.available] as const)
  )

  const events = Array.from(counters.events.values())
  out.family(
    "tessera_token_events_total",
    "counter",
    "Token events this process published since it started, by type and outcome.",
    events.map((e) => [{ type: e.type, outcome: e.outcome }, e.count] as const)
  )
  const renewals = (types: ReadonlyArray<string>, outcome: string) =>
    events.filter((e) => types.includes(e.type) && e.outcome === outcome).reduce((sum, e) => sum + e.count, 0)
  out.family("tessera_token_renewals_total", "counter", "Tokens obtained or refreshed since the service started, and failed renewals.", [
    [{ outcome: "success" }, renewals(["obtained", "refreshed"], "success")],
    [{ outcome: "failure" }, renewals(["refresh_failed"], "failure")]
  ])
  out.family(
    "tessera_upstream_calls_total",
    "counter",
    "Upstream requests since the service started, by operation (obtain, refresh, validate, …) and outcome (ok or the error kind).",
    (input.upstream ?? []).map((c) => [{ operation: c.operation, outcome: c.outcome }, c.count] as const)
  )
  out.family(
    "tessera_http_acquires_total",
    "counter",
    "POST /pools/{pool}/acquire answers since the service started: success, exhausted (429), unusable (503).",
    Array.from(counters.acquires.values(), (a) => [{ pool: a.pool, outcome: a.outcome }, a.count] as const)
  )
  out.family(
    "tessera_http_denied_total",
    "counter",
    "Requests refused for their API key since the service started, by status (401, 403, 429).",
    Array.from(counters.denied, ([status, n]) => [{ status: String(status) }, n] as const)
  )
  return out.toString()
}
