/**
 * Token events (SPEC §1): every change in a token's life is an event. Events are written to
 * the audit log in the same transaction as the change they describe (so an acknowledged
 * change always has its record), then published on a `PubSub` for live consumers (the
 * server's `/events` stream, metrics). Events never hold a secret: only ids, statuses,
 * times and human-readable details.
 */
import { Chunk, Context, Effect, FiberRef, Layer, LogLevel, PubSub, Queue, Schema, Stream } from "effect"
import { dual } from "effect/Function"
import type { Scope } from "effect"

export const EventType = Schema.Literal(
  "obtained",
  "refreshed",
  "updated",
  "validated",
  "rate_limited",
  "recovered",
  "invalidated",
  "expired",
  "refresh_failed",
  "cleared",
  "account_added",
  "account_removed",
  "acquired",
  "key_rotated",
  "access_denied",
  "api_key_created",
  "api_key_revoked"
)
export type EventType = typeof EventType.Type

export const Outcome = Schema.Literal("success", "failure", "denied")
export type Outcome = typeof Outcome.Type

const DataValue = Schema.Union(Schema.String, Schema.Number, Schema.Boolean, Schema.Null)

export class TokenEvent extends Schema.Class<TokenEvent>("@tessera/core/TokenEvent")({
  type: EventType,
  accountId: Schema.NullOr(Schema.String),
  at: Schema.Number,
  actor: Schema.String,
  outcome: Outcome,
  detail: Schema.String,
  data: Schema.Record({ key: Schema.String, value: DataValue })
}) {}

/**
 * Who is acting: an API key's name, `cli`, `scheduler`, or `library` by default. The server
 * and CLI set it around each operation so the audit log can say who did what.
 */
export class CurrentActor extends Context.Reference<CurrentActor>()("@tessera/core/CurrentActor", {
  defaultValue: () => "library"
}) {}

/** Runs `effect` on behalf of `actor`. */
export const withActor: {
  (actor: string): <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
  <A, E, R>(effect: Effect.Effect<A, E, R>, actor: string): Effect.Effect<A, E, R>
} = dual(
  2,
  <A, E, R>(effect: Effect.Effect<A, E, R>, actor: string): Effect.Effect<A, E, R> =>
    Effect.provideService(effect, CurrentActor, actor)
)

export interface EventsService {
  readonly publish: (event: TokenEvent) => Effect.Effect<void>
  readonly publishAll: (events: Iterable<TokenEvent>) => Effect.Effect<void>
  /** A subscription that starts now; slow subscribers lose the oldest events first. */
  readonly subscribe: Effect.Effect<Queue.Dequeue<TokenEvent>, never, Scope.Scope>
  readonly stream: Stream.Stream<TokenEvent>
}

export class Events extends Context.Tag("@tessera/core/Events")<Events, EventsService>() {}

/** How many events a live subscriber may fall behind before it loses the oldest. */
const SUBSCRIBER_BACKLOG = 4096

/**
 * How many events go out at once. A flush of a busy pool publishes one hand-out per acquire
 * of the last second, far more than a backlog: it goes out in slices, and subscribers that
 * keep up (the metrics, the log) take each slice before the next, so they lose none.
 */
const PUBLISH_SLICE = SUBSCRIBER_BACKLOG / 4

export const layer: Layer.Layer<Events> = Layer.scoped(
  Events,
  Effect.gen(function*() {
    const pubsub = yield* Effect.acquireRelease(PubSub.sliding<TokenEvent>(SUBSCRIBER_BACKLOG), PubSub.shutdown)
    const publishFrom = (events: ReadonlyArray<TokenEvent>, start: number): Effect.Effect<void> => {
      const slice = PubSub.publishAll(pubsub, events.length <= PUBLISH_SLICE ? events : events.slice(start, start + PUBLISH_SLICE))
      return start + PUBLISH_SLICE >= events.length
        ? Effect.asVoid(slice)
        : Effect.zipRight(slice, Effect.zipRight(Effect.yieldNow(), Effect.suspend(() => publishFrom(events, start + PUBLISH_SLICE))))
    }
    return {
      publish: (event) => Effect.asVoid(PubSub.publish(pubsub, event)),
      publishAll: (events) => Effect.suspend(() => publishFrom(Array.isArray(events) ? events : Array.from(events), 0)),
      subscribe: PubSub.subscribe(pubsub),
      stream: Stream.fromPubSub(pubsub)
    }
  })
)

/** One log line for an event: ids, outcome and detail, never a secret (events hold none). */
export const describe = (event: TokenEvent): string =>
  `${event.type} ${event.accountId ?? "-"} ${event.outcome}${event.detail === "" ? "" : `: ${event.detail}`} (by ${event.actor})`

/**
 * The event hub, with every event also logged (`acquired` at debug level, the rest at info):
 * subscribed as the hub is made, so none is missed.
 */
export const layerLogged: Layer.Layer<Events> = Layer.scoped(
  Events,
  Effect.gen(function*() {
    const events = yield* Layer.build(layer).pipe(Effect.map(Context.get(Events)))
    const subscription = yield* events.subscribe
    // Hand-outs are routine (one per acquire, kept in the audit log): the rest is news. They
    // come in batches of thousands, so whether debug lines are wanted is asked once a batch.
    const logBatch = (batch: Chunk.Chunk<TokenEvent>, debug: boolean) =>
      Effect.forEach(batch, (event) =>
        event.type !== "acquired"
          ? Effect.logInfo(describe(event))
          : debug
          ? Effect.logDebug(describe(event))
          : Effect.void, { discard: true })
    yield* Queue.takeBetween(subscription, 1, Number.MAX_SAFE_INTEGER).pipe(
      Effect.flatMap((batch) =>
        Effect.flatMap(FiberRef.get(FiberRef.currentMinimumLogLevel), (minimum) =>
          logBatch(batch, LogLevel.lessThanEqual(minimum, LogLevel.Debug)))),
      Effect.forever,
      Effect.forkScoped
    )
    return events
  })
)

/** Builds an event stamped with the current actor and time. */
export const make = (
  fields: {
    readonly type: EventType
    readonly accountId: string | null
    readonly outcome?: Outcome
    readonly detail?: string
    readonly data?: Record<string, string | number | boolean | null>
  }
): Effect.Effect<TokenEvent> =>
  Effect.gen(function*() {
    const actor = yield* CurrentActor
    const at = yield* Effect.clockWith((clock) => clock.currentTimeMillis)
    return new TokenEvent({
      type: fields.type,
      accountId: fields.accountId,
      at,
      actor,
      outcome: fields.outcome ?? "success",
      detail: fields.detail ?? "",
      data: fields.data ?? {}
    })
  })
