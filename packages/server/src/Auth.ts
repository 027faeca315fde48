/**
 * API-key authentication (SPEC §4.5): the implementations of the `RequireRead`,
 * `RequireToken` and `RequireAdmin` middlewares. A request without a bearer key, or with an
 * unknown or revoked one, is answered 401; a key without the route's scope 403; both are
 * written to the audit log (`denied`, naming the key when there is one, never the secret).
 * An address that keeps failing to authenticate is answered 429 with `Retry-After` until its
 * window passes (a bounded in-memory counter). With no key configured at all the service
 * runs open, which it only does on loopback (see `Server`), and the caller is `local`.
 */
import { HttpApp, HttpRouter, HttpServerRequest, HttpServerResponse } from "@effect/platform"
import { Account, ApiKeys, Events, Settings, TokenStore } from "@tessera/core"
import { Clock, Context, Duration, Effect, Layer, Option, Schema } from "effect"
import type { Redacted } from "effect"
import { RequireAdmin, RequireRead, RequireToken } from "./Api.js"
import * as ApiError from "./ApiError.js"
import { Metrics } from "./Metrics.js"
import { ServerConfig } from "./ServerConfig.js"
import * as Wire from "./Wire.js"

/** The actor of a request when no API key is configured. */
export const LOCAL_ACTOR = "local"
/** The actor of a denied request that presented no known key. */
export const ANONYMOUS_ACTOR = "anonymous"

/** The event type denials are recorded with (outcome `denied`). */
export const DENIED_EVENT: Events.EventType = "access_denied"

// --- failed-authentication counter --------------------------------------------------------

export interface ThrottleService {
  /** When the address may try again, if it is shut out now. */
  readonly blockedUntil: (client: string) => Effect.Effect<Option.Option<number>>
  /** `blockedUntil` at `now`, without an effect (the fast lane's check). */
  readonly unsafeBlockedUntil: (client: string, now: number) => number | undefined
  /** Counts a failed authentication. */
  readonly failed: (client: string) => Effect.Effect<void>
}

export class Throttle extends Context.Tag("@tessera/server/Auth/Throttle")<Throttle, ThrottleService>() {}

/** At most `limit` failures per address in a fixed window; remembers at most `clients` addresses. */
export const makeThrottle = (options: {
  readonly limit: number
  readonly window: Duration.Duration
  readonly clients: number
}): ThrottleService => {
  const windowMs = Duration.toMillis(options.window)
  const seen = new Map<string, { count: number; start: number }>()
  const evict = (now: number) => {
    for (const [client, entry] of seen) if (entry.start + windowMs <= now) seen.delete(client)
    // Still full: forget the longest-known addresses first (a Map iterates in insertion order).
    for (const client of seen.keys()) {
      if (seen.size < options.clients) break
      seen.delete(client)
    }
  }
  const blockedUntil = (client: string, now: number) => {
    const entry = seen.get(client)
    if (entry === undefined || entry.start + windowMs <= now || entry.count < options.limit) return undefined
    return entry.start + windowMs
  }
  return {
    blockedUntil: (client) => Effect.map(Clock.currentTimeMillis, (now) => Option.fromNullable(blockedUntil(client, now))),
    unsafeBlockedUntil: blockedUntil,
    failed: (client) =>
      Effect.map(Clock.currentTimeMillis, (now) => {
        const entry = seen.get(client)
        if (entry !== undefined && entry.start + windowMs > now) {
          entry.count++
          return
        }
        seen.delete(client)
        if (seen.size >= options.clients) evict(now)
        seen.set(client, { count: 1, start: now })
      })
  }
}

export const layerThrottle: Layer.Layer<Throttle, never, ServerConfig> = Layer.effect(
  Throttle,
  Effect.map(ServerConfig, (config) =>
    makeThrottle({ limit: config.authFailureLimit, window: config.authFailureWindow, clients: config.authFailureClients }))
)

// --- the middlewares ----------------------------------------------------------------------

const bearerPrefix = /^bearer\s+/i

/** How much of a denied request's path the audit log keeps. */
const MAX_AUDITED_PATH = 200

const isAccountId = Schema.is(Account.AccountId)

/** A `Retry-After` value: whole seconds from `now` to `retryAt`, at least 1. */
export const retryAfterSeconds = (retryAt: number, now: number) => String(Math.max(1, Math.ceil((retryAt - now) / 1000)))

/** The `Retry-After` header on whatever this request is answered with. */
export const retryAfter = (retryAt: number) =>
  Effect.flatMap(Clock.currentTimeMillis, (now) => {
    const seconds = retryAfterSeconds(retryAt, now)
    return HttpApp.appendPreResponseHandler((_, response) =>
      Effect.succeed(HttpServerResponse.setHeader(response, "retry-after", seconds))
    )
  })

/** Whether an `Authorization` header has the form of a bearer key (what follows may still be unknown). */
const isBearer = (header: string) => bearerPrefix.test(header) && header.replace(bearerPrefix, "").trim() !== ""

/** Where the key starts in a bearer header, as the API's security scheme (`HttpApiSecurity.bearer`) cuts it. */
const BEARER_LENGTH = "Bearer ".length

const make = (scope: ApiKeys.Scope) =>
  Effect.gen(function*() {
    const keys = yield* ApiKeys.ApiKeys
    const store = yield* TokenStore.TokenStore
    const events = yield* Events.Events
    const metrics = yield* Metrics
    const throttle = yield* Throttle
    const settings = yield* Settings.Settings

    /** Records the refusal, counts it, and fails with the answer. */
    const deny = <E>(status: 401 | 403, actor: string, reason: string, error: E) =>
      Effect.gen(function*() {
        const request = yield* HttpServerRequest.HttpServerRequest
        const route = yield* HttpRouter.RouteContext
        const client = Option.getOrElse(request.remoteAddress, () => "unknown")
        // Both come from a client that has not authenticated: an id only if it can be one, the path cut short.
        const path = (request.url.split("?")[0] ?? request.url).slice(0, MAX_AUDITED_PATH)
        const id = route.params["id"]
        const denied = yield* Events.make({
          type: DENIED_EVENT,
          accountId: id !== undefined && isAccountId(id) ? id : null,
          outcome: "denied",
          detail: `${request.method} ${path} refused (${status}): ${reason}`,
          data: { status, method: request.method, path, client, scope }
        }).pipe(Events.withActor(actor))
        yield* store.appendAudit([denied]).pipe(
          Effect.zipRight(events.publish(denied)),
          Effect.catchAll((failure) => Effect.logWarning(`could not record a denied request: ${failure.message}`))
        )
        yield* metrics.denied(status)
        return yield* Effect.fail(error)
      })

    const authenticate = (presented: Redacted.Redacted<string>) =>
      Effect.gen(function*() {
        const request = yield* HttpServerRequest.HttpServerRequest
        const client = Option.getOrElse(request.remoteAddress, () => "unknown")
        const blocked = yield* throttle.blockedUntil(client)
        if (Option.isSome(blocked)) {
          yield* metrics.denied(429)
          yield* retryAfter(blocked.value)
          const at = Wire.instant(blocked.value, settings.timeZone)
          return yield* Effect.fail(
            new ApiError.TooManyRequests({
              error: { code: "too_many_attempts", message: "too many failed authentications from this address; try again later" },
              retry_at: at.utc,
              retry_at_local: at.local
            })
          )
        }
        if (!(yield* keys.hasActive)) return LOCAL_ACTOR
        const header = request.headers["authorization"] ?? ""
        if (!isBearer(header)) {
          yield* throttle.failed(client)
          return yield* deny(
            401,
            ANONYMOUS_ACTOR,
            "no API key",
            ApiError.unauthorized("an API key is required: Authorization: Bearer <key>")
          )
        }
        const key = yield* keys.verify(presented)
        if (Option.isNone(key)) {
          yield* throttle.failed(client)
          return yield* deny(401, ANONYMOUS_ACTOR, "unknown or revoked API key", ApiError.unauthorized("unknown or revoked API key"))
        }
        if (!ApiKeys.allows(key.value, scope)) {
          return yield* deny(
            403,
            key.value.name,
            `key '${key.value.name}' lacks scope '${scope}'`,
            ApiError.forbidden(`this route needs an API key with the '${scope}' scope`)
          )
        }
        return key.value.name
      }).pipe(
        Effect.catchTag("StoreError", (error) =>
          Effect.zipRight(
            Effect.logError(`API key check failed: ${error.message}`),
            Effect.fail(ApiError.unavailable("store_unavailable", "the key store cannot be read"))
          ))
      )

    return { bearer: authenticate }
  })

/** The three middlewares, over the keys, the store (for denials), the counters and the failure counter. */
export const layer: Layer.Layer<
  RequireRead | RequireToken | RequireAdmin,
  never,
  ApiKeys.ApiKeys | TokenStore.TokenStore | Events.Events | Metrics | Throttle | Settings.Settings
> = Layer.mergeAll(
  Layer.effect(RequireRead, make("read")),
  Layer.effect(RequireToken, make("token")),
  Layer.effect(RequireAdmin, make("admin"))
)

/** The quick check's answer when the active keys in memory are too old to answer from. */
export const UNKNOWN = Symbol.for("@tessera/server/Auth/UNKNOWN")

/**
 * The check of the fast lane (`FastLane`), without an effect: the actor of a request that
 * passes authentication with nothing to record or count (its address not shut out, and a
 * known key with `scope`, or no key configured at all), else undefined; `UNKNOWN` when the
 * active keys were last read over a second ago (read them with `ApiKeys.hasActive`, then
 * ask again). A request it refuses goes to the middleware above, which answers and records
 * it; this check changes nothing, so that costs nothing twice.
 */
export const makeQuickCheck = Effect.gen(function*() {
  const keys = yield* ApiKeys.ApiKeys
  const throttle = yield* Throttle
  return (
    scope: ApiKeys.Scope,
    authorization: string | undefined,
    client: string,
    now: number
  ): string | undefined | typeof UNKNOWN => {
    if (throttle.unsafeBlockedUntil(client, now) !== undefined) return undefined
    const header = authorization ?? ""
    const known = keys.unsafeVerifyCached(isBearer(header) ? header.slice(BEARER_LENGTH) : undefined, now)
    if (known === undefined) return UNKNOWN
    if (!known.anyActive) return LOCAL_ACTOR
    if (Option.isNone(known.key)) return undefined
    return ApiKeys.allows(known.key.value, scope) ? known.key.value.name : undefined
  }
})
