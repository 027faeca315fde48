/**
 * The implementation of every route of `TesseraApi`: each handler calls core's services
 * (`Lifecycle`, `TokenPool`, `TokenStore`, `Events`) and maps their typed failures to the
 * API's errors at this edge (unknown account 404, token rejected upstream 422, conflicts 409,
 * exhausted pool 429 with `Retry-After`, no usable token 503, upstream failure 502). The
 * unscoped `/token/*` routes act on the default account: `INTERNAL_API_ACCOUNT_ID`, else the
 * only account, else the first one configuration declares (else the oldest).
 */
import { HttpApiBuilder, HttpServer, HttpServerResponse } from "@effect/platform"
import { Account, Events, Lifecycle, Settings, TokenPool, TokenStore, Upstream } from "@tessera/core"
import type { Errors, Token } from "@tessera/core"
import { Static } from "@tessera/providers"
import { Clock, Context, Data, DateTime, Deferred, Effect, Either, Layer, Option, Schedule, Schema, Stream } from "effect"
import type { Duration } from "effect"
import { TesseraApi } from "./Api.js"
import * as ApiError from "./ApiError.js"
import { retryAfter } from "./Auth.js"
import { Metrics, render } from "./Metrics.js"
import { ServerConfig } from "./ServerConfig.js"
import * as Wire from "./Wire.js"

// --- mapping core's failures --------------------------------------------------------------

const accountNotFound = (error: Errors.AccountNotFound) =>
  Effect.fail(ApiError.notFound("account_not_found", error.message))

const storeFailed = (error: Errors.StoreError) =>
  Effect.zipRight(
    Effect.logError(`store failure: ${error.message}`),
    Effect.fail(ApiError.unavailable("store_unavailable", "the store cannot be used right now"))
  )

const upstreamFailed = (error: Errors.UpstreamError) => Effect.fail(ApiError.badGateway(error.message))

const tokenUnavailable = (error: Errors.TokenUnavailable) =>
  Effect.fail(ApiError.unavailable("token_unavailable", error.message))

const unsupported = (error: Errors.OperationUnsupported) =>
  Effect.fail(ApiError.conflict("operation_unsupported", error.message))

/** Rejected upstream: 422 with the upstream's reason; refused before asking (malformed): 400. */
const tokenRejected = (error: Errors.TokenRejected) =>
  Effect.fail(
    error.upstreamStatus === null
      ? ApiError.badRequest("invalid_token", error.message)
      : new ApiError.Unprocessable({ error: { code: "token_rejected", message: error.message }, upstream_status: error.upstreamStatus })
  )

/** A token handed in with a new account is only checked for form: a refusal is the client's mistake. */
const malformedToken = (error: Errors.TokenRejected) => Effect.fail(ApiError.badRequest("invalid_token", error.message))

const accountExists = (error: Errors.AccountExists) => Effect.fail(ApiError.conflict("account_exists", error.message))

const renewFailed = {
  AccountNotFound: accountNotFound,
  StoreError: storeFailed,
  UpstreamError: upstreamFailed,
  TokenUnavailable: tokenUnavailable,
  OperationUnsupported: unsupported
} as const

// --- draining -----------------------------------------------------------------------------

/**
 * Completed when the server starts to shut down: long-lived responses (`/events`) end then,
 * so the server's close does not wait for their clients. Built after the HTTP server, so it
 * is released (completed) before the server stops listening and waits for open requests.
 */
export class Draining extends Context.Tag("@tessera/server/Draining")<Draining, Deferred.Deferred<void>>() {}

export const layerDraining: Layer.Layer<Draining, never, HttpServer.HttpServer> = Layer.scoped(
  Draining,
  Effect.gen(function*() {
    yield* HttpServer.HttpServer
    const draining = yield* Deferred.make<void>()
    yield* Effect.addFinalizer(() => Deferred.succeed(draining, undefined))
    return draining
  })
)

// --- shared pieces ------------------------------------------------------------------------

/** What the handlers run on. */
export type Services = Effect.Effect.Context<typeof services>

const services = Effect.gen(function*() {
  return {
    lifecycle: yield* Lifecycle.Lifecycle,
    pool: yield* TokenPool.TokenPool,
    store: yield* TokenStore.TokenStore,
    events: yield* Events.Events,
    metrics: yield* Metrics,
    config: yield* ServerConfig,
    zone: (yield* Settings.Settings).timeZone,
    declared: yield* Lifecycle.DeclaredAccounts
  }
})

const badExpiry = (reason: string) => ApiError.badRequest("invalid_expires_at", reason)

/** A client's expiry as epoch milliseconds: well-formed, and in the future. */
const expiryOf = (input: string | number | undefined, zone: DateTime.TimeZone) =>
  Effect.gen(function*() {
    if (input === undefined) return undefined
    const at = yield* Either.match(Wire.parseExpiresAt(input, zone), {
      onLeft: (reason) => Effect.fail(badExpiry(reason)),
      onRight: Effect.succeed
    })
    if (at <= (yield* Clock.currentTimeMillis)) return yield* Effect.fail(badExpiry("expires_at must be a time in the future"))
    return at
  })

// --- health -------------------------------------------------------------------------------

export const HealthLive = HttpApiBuilder.group(TesseraApi, "health", (handlers) =>
  Effect.gen(function*() {
    const { lifecycle, store, zone } = yield* services
    return handlers.handle("health", () =>
      Effect.gen(function*() {
        const now = Wire.instant(yield* Clock.currentTimeMillis, zone)
        const ping = yield* Effect.either(store.ping)
        if (Either.isLeft(ping)) {
          yield* Effect.logError(`health: ${ping.left.message}`)
          return yield* Effect.fail(
            new ApiError.HealthUnavailable({
              status: "unavailable",
              time: now.utc,
              time_local: now.local,
              error: { code: "unhealthy", message: "the store cannot be used" }
            })
          )
        }
        const infos = yield* lifecycle.list
        const degraded = infos.some((info) =>
          info.lastError !== null || info.status === "missing" || info.status === "invalid" || info.status === "expired"
        )
        return {
          status: degraded ? "degraded" as const : "ok" as const,
          time: now.utc,
          time_local: now.local,
          accounts: infos.length,
          tokens_available: infos.filter((info) => info.status === "available").length
        }
      }))
  }))

// --- token --------------------------------------------------------------------------------

export const TokenLive = HttpApiBuilder.group(TesseraApi, "token", (handlers) =>
  Effect.gen(function*() {
    const { config, declared, lifecycle, zone } = yield* services

    /** The account the unscoped routes act on (SPEC §5). */
    const defaultAccount = Effect.gen(function*() {
      if (Option.isSome(config.defaultAccount)) return config.defaultAccount.value
      const accounts = yield* lifecycle.accounts
      const chosen = Account.defaultAccountId(accounts, {
        configured: Option.none(),
        declared: declared.map((entry) => entry.account.id)
      })
      if (Option.isNone(chosen)) return yield* Effect.fail(ApiError.notFound("no_accounts", "there are no accounts"))
      return chosen.value
    })

    const info = (id: string) =>
      lifecycle.info(id).pipe(Effect.map((i) => Wire.tokenInfo(i, zone)), Effect.catchTag("AccountNotFound", accountNotFound))

    const validate = (id: string) =>
      lifecycle.validate(id).pipe(
        Effect.map((result) => Wire.validation(result, zone)),
        Effect.catchTags({
          AccountNotFound: accountNotFound,
          StoreError: storeFailed,
          UpstreamError: upstreamFailed,
          TokenUnavailable: tokenUnavailable
        })
      )

    const update = (id: string, payload: typeof Wire.UpdateToken.Type, params: typeof Wire.UpdateParams.Type) =>
      Effect.gen(function*() {
        const expiresAt = yield* expiryOf(payload.expires_at, zone)
        const updated = yield* lifecycle.update(id, payload.access_token, { expiresAt, validate: params.validate })
        return Wire.tokenInfo(updated, zone)
      }).pipe(
        Effect.catchTags({
          AccountNotFound: accountNotFound,
          StoreError: storeFailed,
          UpstreamError: upstreamFailed,
          TokenRejected: tokenRejected
        })
      )

    const refresh = (id: string) =>
      lifecycle.refresh(id).pipe(Effect.map((i) => Wire.tokenInfo(i, zone)), Effect.catchTags(renewFailed))

    return handlers
      .handle("defaultStatus", () => Effect.flatMap(defaultAccount, info))
      .handle("status", ({ path }) => info(path.id))
      .handle("defaultValidate", () => Effect.flatMap(defaultAccount, validate))
      .handle("validate", ({ path }) => validate(path.id))
      .handle("defaultUpdate", ({ payload, urlParams }) =>
        Effect.flatMap(
          payload.account_id === undefined ? defaultAccount : Effect.succeed(payload.account_id as string),
          (id) => update(id, payload, urlParams)
        ))
      .handle("update", ({ path, payload, urlParams }) =>
        payload.account_id !== undefined && payload.account_id !== path.id
          ? Effect.fail(ApiError.badRequest("account_mismatch", "account_id in the body differs from the account in the path"))
          : update(path.id, payload, urlParams))
      .handle("defaultRefresh", () => Effect.flatMap(defaultAccount, refresh))
      .handle("refresh", ({ path }) => refresh(path.id))
      .handle("get", ({ path }) =>
        lifecycle.get(path.id).pipe(Effect.map((lease) => Wire.rawToken(lease, zone)), Effect.catchTags(renewFailed)))
      .handle("clear", ({ path }) =>
        lifecycle.clear(path.id).pipe(
          Effect.map((i) => Wire.tokenInfo(i, zone)),
          Effect.catchTags({ AccountNotFound: accountNotFound, StoreError: storeFailed })
        ))
  }))

// --- accounts -----------------------------------------------------------------------------

/** Every account with its token info, by id. */
const accountViews = (lifecycle: Lifecycle.LifecycleService, zone: DateTime.TimeZone) =>
  Effect.gen(function*() {
    const accounts = yield* lifecycle.accounts
    const infos = new Map((yield* lifecycle.list).map((i) => [i.accountId, i] as const))
    return accounts
      .filter((account) => infos.has(account.id))
      .sort((a, b) => a.id.localeCompare(b.id))
      .map((account) => Wire.accountView(account, infos.get(account.id)!, zone))
  })

export const AccountsLive = HttpApiBuilder.group(TesseraApi, "accounts", (handlers) =>
  Effect.gen(function*() {
    const { lifecycle, zone } = yield* services
    return handlers
      .handle("list", () => accountViews(lifecycle, zone))
      .handle("add", ({ payload }) =>
        Effect.gen(function*() {
          const expiresAt = yield* expiryOf(payload.expires_at, zone)
          const input = new Account.NewAccount({
            id: payload.account_id,
            provider: payload.provider,
            pool: payload.pool,
            label: payload.label,
            source: Wire.sourceConfig(payload.source)
          })
          const token = payload.access_token === undefined ? undefined : { token: payload.access_token, expiresAt }
          const added = yield* lifecycle.add(input, token)
          // A renewable account without a token fetches one now; a failure shows as its last error.
          if (!added.hasToken && payload.source.type !== "static") yield* Effect.ignore(lifecycle.get(payload.account_id))
          const account = yield* lifecycle.account(payload.account_id)
          const current = yield* lifecycle.info(payload.account_id)
          return Wire.accountView(account, current, zone)
        }).pipe(
          Effect.catchTags({
            AccountExists: accountExists,
            AccountNotFound: accountNotFound,
            TokenRejected: malformedToken,
            StoreError: storeFailed
          })
        ))
      .handle("remove", ({ path }) =>
        lifecycle.remove(path.id).pipe(Effect.catchTags({ AccountNotFound: accountNotFound, StoreError: storeFailed })))
  }))

// --- pools --------------------------------------------------------------------------------

const poolNotFound = (name: string) => ApiError.notFound("pool_not_found", `pool '${name}' does not exist`)

// On every acquire: a constant-time check, not a summary of the pool
const existingPool = (pool: TokenPool.TokenPoolService) => (name: string) =>
  Effect.flatMap(pool.exists(name), (exists) => exists ? Effect.void : Effect.fail(poolNotFound(name)))

/** An exhausted pool's answer, with the instant its `Retry-After` header counts down to. */
export class Exhausted extends Data.TaggedError("Exhausted")<{
  readonly answer: ApiError.TooManyRequests
  readonly retryAt: number
}> {}

export type AcquireFailure = ApiError.NotFound | Exhausted | ApiError.ServiceUnavailable

/**
 * `POST /pools/{pool}/acquire` as both lanes answer it (the API's handler and `FastLane`):
 * the lease, or the API's error, counted either way.
 */
export interface Acquire {
  /** Runs as the request's actor, waiting up to `wait` for a rate limit to reset. */
  readonly run: (name: string, wait: Duration.DurationInput | undefined) => Effect.Effect<Token.Lease, AcquireFailure>
  /**
   * Answers at once as `who` at `at`, without waiting; undefined when only `run` can answer
   * (the pool's rotation is shared through the database).
   */
  readonly now: (name: string, who: string, at: number) => Either.Either<Token.Lease, AcquireFailure> | undefined
}

export const makeAcquire: Effect.Effect<Acquire, never, Services> = Effect.map(services, ({ metrics, pool, zone }) => {
  const existing = existingPool(pool)
  const answer = (name: string, taken: Either.Either<Token.Lease, TokenPool.AcquireError>): Either.Either<Token.Lease, AcquireFailure> => {
    if (Either.isRight(taken)) {
      metrics.unsafeAcquired(name, "success")
      return Either.right(taken.right)
    }
    const error = taken.left
    if (error._tag === "NoUsableToken") {
      metrics.unsafeAcquired(name, "unusable")
      return Either.left(ApiError.unavailable("no_usable_token", error.message))
    }
    metrics.unsafeAcquired(name, "exhausted")
    const at = Wire.instant(error.retryAt, zone)
    const exhausted = new ApiError.TooManyRequests({
      error: { code: "pool_exhausted", message: error.message },
      retry_at: at.utc,
      retry_at_local: at.local
    })
    return Either.left(new Exhausted({ answer: exhausted, retryAt: error.retryAt }))
  }
  return {
    run: (name, wait) =>
      Effect.zipRight(
        existing(name),
        Effect.flatMap(Effect.either(pool.acquire(name, { wait })), (taken) => answer(name, taken))
      ),
    now: (name, who, at) => {
      if (!pool.unsafeExists(name)) return Either.left(poolNotFound(name))
      const taken = pool.unsafeAcquire(name, who, at)
      return taken === undefined ? undefined : answer(name, taken)
    }
  }
})

export const PoolsLive = HttpApiBuilder.group(TesseraApi, "pools", (handlers) =>
  Effect.gen(function*() {
    const { lifecycle, pool, zone } = yield* services
    const acquire = yield* makeAcquire
    const existing = existingPool(pool)
    const summaryOf = pool.summary

    return handlers
      .handle("list", () =>
        Effect.map(pool.pools, (all) =>
          [...all].sort((a, b) => a.pool.localeCompare(b.pool)).map((summary) => Wire.pool(summary, zone))))
      .handle("tokens", ({ path }) =>
        Effect.zipRight(
          existing(path.pool),
          Effect.map(pool.list(path.pool), (infos) => infos.map((i) => Wire.tokenInfo(i, zone)))
        ))
      .handle("addToken", ({ path, payload }) =>
        Effect.gen(function*() {
          const summary = yield* summaryOf(path.pool)
          const provider = Option.isSome(summary) ? summary.value.provider : path.pool
          if (!Schema.is(Account.ProviderId)(provider)) {
            return yield* Effect.fail(
              ApiError.badRequest(
                "unknown_pool",
                `pool '${path.pool}' does not exist and is not named after a provider; register the first account with POST /accounts`
              )
            )
          }
          const expiresAt = yield* expiryOf(payload.expires_at, zone)
          const id = payload.account_id ?? Static.accountId(provider, payload.access_token)
          const added = yield* lifecycle.add(
            new Account.NewAccount({ id, provider, pool: path.pool, label: payload.label, source: new Account.StaticSource() }),
            { token: payload.access_token, expiresAt }
          )
          return Wire.tokenInfo(added, zone)
        }).pipe(Effect.catchTags({ AccountExists: accountExists, TokenRejected: malformedToken, StoreError: storeFailed })))
      .handle("acquire", ({ path, urlParams }) =>
        acquire.run(path.pool, urlParams.wait).pipe(
          Effect.map((leased) => Wire.lease(leased, zone)),
          Effect.catchTag("Exhausted", ({ answer, retryAt }) => Effect.zipRight(retryAfter(retryAt), Effect.fail(answer)))
        ))
      .handle("report", ({ path, payload }) =>
        Effect.gen(function*() {
          if (payload.account_id === undefined && payload.access_token === undefined) {
            return yield* Effect.fail(ApiError.badRequest("invalid_report", "a report needs account_id or access_token"))
          }
          yield* existing(path.pool)
          const headers: Record<string, string> = {}
          for (const [name, value] of Object.entries(payload.headers)) headers[name.toLowerCase()] = value
          const reported = yield* pool.report(path.pool, {
            accountId: payload.account_id,
            token: payload.access_token,
            status: payload.status,
            headers
          })
          return Wire.tokenInfo(reported, zone)
        }).pipe(
          Effect.catchTags({
            AccountNotFound: (error) =>
              Effect.fail(ApiError.notFound("account_not_found", payload.access_token !== undefined && payload.account_id === undefined
                ? `no account of pool '${path.pool}' holds this token`
                : error.message)),
            StoreError: storeFailed
          })
        ))
  }))

// --- events -------------------------------------------------------------------------------

const encoder = new TextEncoder()

export const EventsLive = HttpApiBuilder.group(TesseraApi, "events", (handlers) =>
  Effect.gen(function*() {
    const { config, events, zone } = yield* services
    const draining = yield* Draining
    return handlers.handle("stream", () =>
      Effect.sync(() => {
        // Subscribed before the first byte is sent: a client that sees `: connected` sees every later event.
        const body = Stream.unwrapScoped(Effect.map(events.subscribe, (subscription) =>
          Stream.concat(
            Stream.make(": connected\n\n"),
            Stream.merge(
              Stream.fromQueue(subscription).pipe(Stream.map((e) => `data: ${JSON.stringify(Wire.event(e, zone))}\n\n`)),
              Stream.fromSchedule(Schedule.spaced(config.keepAlive)).pipe(Stream.as(": keep-alive\n\n"))
            )
          ))).pipe(
            Stream.interruptWhen(Deferred.await(draining)),
            Stream.map((text) => encoder.encode(text))
          )
        return HttpServerResponse.stream(body, {
          contentType: "text/event-stream",
          headers: { "cache-control": "no-cache", "x-accel-buffering": "no" }
        })
      }))
  }))

// --- metrics and audit ----------------------------------------------------------------------

export const MetricsLive = HttpApiBuilder.group(TesseraApi, "metrics", (handlers) =>
  Effect.gen(function*() {
    const { lifecycle, metrics, pool } = yield* services
    return handlers.handle("metrics", () =>
      Effect.map(
        Effect.all({ infos: lifecycle.list, pools: pool.pools, counters: metrics.counters, upstream: Upstream.callCounts }),
        render
      ))
  }))

export const AuditLive = HttpApiBuilder.group(TesseraApi, "audit", (handlers) =>
  Effect.gen(function*() {
    const { store, zone } = yield* services
    return handlers.handle("list", ({ urlParams }) =>
      store.audit({ accountId: urlParams.account_id, limit: urlParams.limit ?? 100, before: urlParams.before }).pipe(
        Effect.map((entries) => entries.map((entry) => Wire.auditEntry(entry, zone))),
        Effect.catchTag("StoreError", storeFailed)
      ))
  }))

/** Every group. */
export const layer = Layer.mergeAll(HealthLive, TokenLive, AccountsLive, PoolsLive, EventsLive, MetricsLive, AuditLive)
