/**
 * Several instances on one PostgreSQL database (SPEC §9). Refresh leases, kept in the store,
 * already make one renewal per expiry across instances; this module adds the rest:
 * - a pool rotation shared through the database: the least recently used token that no
 *   instance has seen limited or invalid, claimed in turns per pool, so acquires on all
 *   instances together rotate as one instance would;
 * - events every instance sees: each instance NOTIFYs its events on one channel and LISTENs
 *   for the others', takes up the state they describe from the store, then publishes them on
 *   its own hub (its `/events`, metrics and mirrors).
 */
import { SqlClient } from "@effect/sql"
import type { SqlError } from "@effect/sql"
import { PgClient } from "@effect/sql-pg"
import { Effect, Layer, Option, Queue, Schedule, Schema, Stream } from "effect"
import * as crypto from "node:crypto"
import { StoreError } from "./Errors.js"
import * as Events from "./Events.js"
import { Lifecycle } from "./Lifecycle.js"
import { HANDOUT_MARGIN_MS } from "./Token.js"
import { SharedRotation } from "./TokenPool.js"
import { postgresClient } from "./TokenStore.js"
import type { SharedRotationShape } from "./TokenPool.js"

/** The channel instances announce their events on. */
export const CHANNEL = "tessera_events"

const storeError = (operation: string) => (error: SqlError.SqlError) =>
  new StoreError({ operation, detail: error.cause instanceof Error ? error.cause.message : error.message })

/**
 * Claims the pool's least recently used usable token: it has a token valid beyond the
 * hand-out margin, is not invalid, and is not rate-limited at `at`. The claim is one call of
 * the database function `tessera_claim` (migration 0004): claims of one pool take turns on
 * an advisory lock, each stamped later than the one before, so the instances together rotate
 * as one would. (`FOR UPDATE SKIP LOCKED` alone lets a claim take a row another has just
 * used: PostgreSQL re-checks a locked row's filter, not its order.)
 */
export const rotation: Effect.Effect<SharedRotationShape, never, SqlClient.SqlClient> = Effect.map(
  SqlClient.SqlClient,
  (sql) => {
    // One claim per pool at a time from this instance: the others wait here, not holding a
    // connection that the rest of the service needs while they queue for the advisory lock.
    const turns = new Map<string, Effect.Semaphore>()
    const turnOf = (pool: string) => {
      let turn = turns.get(pool)
      if (turn === undefined) turns.set(pool, turn = Effect.unsafeMakeSemaphore(1))
      return turn
    }
    return {
      claim: (pool: string, at: number) =>
        turnOf(pool).withPermits(1)(
          sql<{ account_id: string | null }>`SELECT tessera_claim(${pool}, ${at}, ${at + HANDOUT_MARGIN_MS}) AS account_id`
        ).pipe(
          Effect.map((rows) => Option.fromNullable(rows[0]?.account_id)),
          Effect.mapError(storeError("claim a pool token"))
        )
    }
  }
)

/** The shared rotation for the lifecycle's pools. */
export const layerRotation: Layer.Layer<SharedRotation, never, SqlClient.SqlClient> = Layer.effect(
  SharedRotation,
  Effect.map(rotation, Option.some)
)

/** The shared rotation when the store is PostgreSQL; on SQLite each process rotates in memory. */
export const layerRotationIfShared: Layer.Layer<SharedRotation, never, SqlClient.SqlClient> = Layer.effect(
  SharedRotation,
  Effect.flatMap(postgresClient, (pg) => Option.isSome(pg) ? Effect.map(rotation, Option.some) : Effect.succeedNone)
)

const Announcement = Schema.parseJson(Schema.Struct({ origin: Schema.String, event: Events.TokenEvent }))
const encodeAnnouncement = Schema.encodeSync(Announcement)
const decodeAnnouncement = Schema.decodeUnknownOption(Announcement)

/** Events that say nothing new about an account's state: no reason to read it again. */
const STATELESS: ReadonlySet<Events.EventType> = new Set(["acquired", "access_denied", "api_key_created", "api_key_revoked"])

/** NOTIFY payloads are limited to 8,000 bytes; details are for people and can be cut. */
const MAX_DETAIL = 2_000

/**
 * Announces this instance's events to the others and takes up theirs. A lost connection is
 * re-established; events announced while it was down are missed (the store still has every
 * change, and each instance reads an account again before renewing it).
 */
export const layerEvents: Layer.Layer<never, never, PgClient.PgClient | Events.Events | Lifecycle> = Layer.scopedDiscard(
  Effect.flatMap(PgClient.PgClient, (pg) => bridge(pg))
)

/** The events bridge when the store is PostgreSQL; nothing on SQLite. */
export const layerEventsIfShared: Layer.Layer<never, never, SqlClient.SqlClient | Events.Events | Lifecycle> = Layer
  .scopedDiscard(
    Effect.flatMap(postgresClient, (pg) => Option.isSome(pg) ? bridge(pg.value) : Effect.void)
  )

const bridge = (pg: PgClient.PgClient) =>
  Effect.gen(function*() {
    const events = yield* Events.Events
    const lifecycle = yield* Lifecycle
    const origin = crypto.randomUUID()
    const fromOthers = new WeakSet<Events.TokenEvent>()

    const announce = (event: Events.TokenEvent) => {
      const shown = event.detail.length > MAX_DETAIL ? new Events.TokenEvent({ ...event, detail: `${event.detail.slice(0, MAX_DETAIL)}…` }) : event
      // `pg_notify` rather than the client's `notify`: NOTIFY takes no bound parameters
      return pg`SELECT pg_notify(${CHANNEL}, ${encodeAnnouncement({ origin, event: shown })})`.pipe(
        Effect.catchAll((error) => Effect.logWarning(`could not announce a ${event.type} event to other instances: ${error.message}`))
      )
    }

    const takeUp = (payload: string) =>
      Option.match(decodeAnnouncement(payload), {
        onNone: () => Effect.logWarning("ignored an unreadable announcement on the events channel"),
        onSome: ({ event, origin: from }) =>
          from === origin ? Effect.void : Effect.gen(function*() {
            if (event.accountId !== null && !STATELESS.has(event.type)) {
              yield* lifecycle.reload(event.accountId).pipe(
                Effect.catchAll((error) => Effect.logWarning(`could not take up ${event.accountId}: ${error.message}`))
              )
            }
            fromOthers.add(event)
            yield* events.publish(event)
          })
      })

    const subscription = yield* events.subscribe
    yield* Queue.take(subscription).pipe(
      Effect.flatMap((event) => fromOthers.has(event) ? Effect.void : announce(event)),
      Effect.forever,
      Effect.forkScoped
    )
    yield* pg.listen(CHANNEL).pipe(
      Stream.runForEach(takeUp),
      Effect.tapError((error) => Effect.logWarning(`lost the events channel, listening again: ${error.message}`)),
      Effect.retry(Schedule.spaced("1 second")),
      Effect.forkScoped
    )
  })
