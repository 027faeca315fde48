/**
 * The HTTP API of Tessera (SPEC §6), declared once: every route with its path, input and
 * output schemas, errors and the scope its API key needs. The server implements it
 * (`Handlers`), the OpenAPI document and the docs page are generated from it, and a client
 * (`HttpApiClient.make(TesseraApi)`) gets a typed method per route. Each route that needs a
 * key carries one of the three security middlewares `RequireRead`, `RequireToken`,
 * `RequireAdmin`; they authenticate the bearer key and run the route as the key's name
 * (`Events.CurrentActor`), so the audit log says who did what.
 */
import { HttpApi, HttpApiEndpoint, HttpApiGroup, HttpApiMiddleware, HttpApiSchema, HttpApiSecurity, OpenApi } from "@effect/platform"
import type { HttpMethod } from "@effect/platform"
import { Events } from "@tessera/core"
import { Schema } from "effect"
import * as ApiError from "./ApiError.js"
import * as Wire from "./Wire.js"

// --- security -----------------------------------------------------------------------------

const bearer = HttpApiSecurity.bearer.pipe(
  HttpApiSecurity.annotate(OpenApi.Description, "An API key: `Authorization: Bearer tsr_…` (see TESSERA_API_KEYS)")
)

const AuthFailure = Schema.Union(
  ApiError.Unauthorized,
  ApiError.Forbidden,
  ApiError.TooManyRequests,
  ApiError.ServiceUnavailable
)

/** Needs a key with the `read` scope (or `admin`). */
export class RequireRead extends HttpApiMiddleware.Tag<RequireRead>()("@tessera/server/RequireRead", {
  security: { bearer },
  provides: Events.CurrentActor,
  failure: AuthFailure
}) {}

/** Needs a key with the `token` scope (or `admin`): routes that hand raw tokens out. */
export class RequireToken extends HttpApiMiddleware.Tag<RequireToken>()("@tessera/server/RequireToken", {
  security: { bearer },
  provides: Events.CurrentActor,
  failure: AuthFailure
}) {}

/** Needs a key with the `admin` scope. */
export class RequireAdmin extends HttpApiMiddleware.Tag<RequireAdmin>()("@tessera/server/RequireAdmin", {
  security: { bearer },
  provides: Events.CurrentActor,
  failure: AuthFailure
}) {}

/** A route's description, with the scope its key needs. */
const needs = (scope: "read" | "token" | "admin", description: string) =>
  `${description} Scope: \`${scope}\`${scope === "admin" ? "" : " (or \`admin\`)"}.`

// --- path parameters ----------------------------------------------------------------------

const id = HttpApiSchema.param("id", Wire.AccountIdParam)
const pool = HttpApiSchema.param("pool", Wire.PoolParam)

// --- groups -------------------------------------------------------------------------------

export class HealthGroup extends HttpApiGroup.make("health").add(
  HttpApiEndpoint.get("health", "/health")
    .addSuccess(Wire.Health)
    .addError(ApiError.HealthUnavailable)
    .annotate(OpenApi.Description, "Liveness and a summary: no key needed. 503 when the store cannot be used.")
) {}

// Each token operation has an unscoped route for the default account and one per account;
// these give both the same input, output, errors and scope.

type Route<Name extends string, Method extends HttpMethod.HttpMethod, Path> = HttpApiEndpoint.HttpApiEndpoint<Name, Method, Path>

const statusRoute = <N extends string, P>(endpoint: Route<N, "GET", P>, description: string) =>
  endpoint
    .addSuccess(Wire.TokenInfo)
    .addError(ApiError.NotFound)
    .middleware(RequireRead)
    .annotate(OpenApi.Description, needs("read", description))

const validateRoute = <N extends string, P>(endpoint: Route<N, "GET", P>, description: string) =>
  endpoint
    .addSuccess(Wire.Validation)
    .addError(ApiError.NotFound)
    .addError(ApiError.BadGateway)
    .addError(ApiError.ServiceUnavailable)
    .middleware(RequireRead)
    .annotate(OpenApi.Description, needs("read", description))

const updateRoute = <N extends string, P>(endpoint: Route<N, "POST", P>, description: string) =>
  endpoint
    .setPayload(Wire.UpdateToken)
    .setUrlParams(Wire.UpdateParams)
    .addSuccess(Wire.TokenInfo)
    .addError(ApiError.NotFound)
    .addError(ApiError.Unprocessable)
    .addError(ApiError.BadGateway)
    .middleware(RequireAdmin)
    .annotate(OpenApi.Description, needs("admin", description))

const refreshRoute = <N extends string, P>(endpoint: Route<N, "POST", P>, description: string) =>
  endpoint
    .addSuccess(Wire.TokenInfo)
    .addError(ApiError.NotFound)
    .addError(ApiError.Conflict)
    .addError(ApiError.BadGateway)
    .addError(ApiError.ServiceUnavailable)
    .middleware(RequireAdmin)
    .annotate(OpenApi.Description, needs("admin", description))

export class TokenGroup extends HttpApiGroup.make("token")
  .add(statusRoute(HttpApiEndpoint.get("defaultStatus", "/token/status"), "The default account's token info."))
  .add(statusRoute(HttpApiEndpoint.get("status")`/accounts/${id}/token/status`, "An account's token info (never the token)."))
  .add(validateRoute(HttpApiEndpoint.get("defaultValidate", "/token/validate"), "Validates the default account's token upstream."))
  .add(validateRoute(HttpApiEndpoint.get("validate")`/accounts/${id}/token/validate`, "Validates an account's token upstream."))
  .add(updateRoute(
    HttpApiEndpoint.post("defaultUpdate", "/token/update"),
    "Replaces the token of `account_id` (the default account when absent), validated upstream unless `?validate=false`; 422 if the upstream rejects it, and the previous token stays."
  ))
  .add(updateRoute(
    HttpApiEndpoint.post("update")`/accounts/${id}/token/update`,
    "Replaces an account's token (see POST /token/update)."
  ))
  .add(refreshRoute(
    HttpApiEndpoint.post("defaultRefresh", "/refresh-token"),
    "Refreshes the default account's token now (joining a refresh under way)."
  ))
  .add(refreshRoute(
    HttpApiEndpoint.post("refresh")`/accounts/${id}/token/refresh`,
    "Refreshes an account's token now (joining a refresh under way)."
  ))
  .add(
    HttpApiEndpoint.get("get")`/accounts/${id}/token`
      .addSuccess(Wire.RawToken)
      .addError(ApiError.NotFound)
      .addError(ApiError.Conflict)
      .addError(ApiError.BadGateway)
      .addError(ApiError.ServiceUnavailable)
      .middleware(RequireToken)
      .annotate(OpenApi.Description, needs("token", "The raw token, valid beyond the refresh window (renewed first when needed)."))
  )
  .add(
    HttpApiEndpoint.del("clear")`/accounts/${id}/token`
      .addSuccess(Wire.TokenInfo)
      .addError(ApiError.NotFound)
      .middleware(RequireAdmin)
      .annotate(OpenApi.Description, needs("admin", "Forgets the account's token; the account stays."))
  )
{}

export class AccountsGroup extends HttpApiGroup.make("accounts")
  .add(
    HttpApiEndpoint.get("list", "/accounts")
      .addSuccess(Schema.Array(Wire.AccountView))
      .middleware(RequireRead)
      .annotate(OpenApi.Description, needs("read", "Every account with its token info."))
  )
  .add(
    HttpApiEndpoint.post("add", "/accounts")
      .setPayload(Wire.NewAccount)
      .addSuccess(Wire.AccountView, { status: 201 })
      .addError(ApiError.Conflict)
      .middleware(RequireAdmin)
      .annotate(OpenApi.Description, needs("admin", "Registers an account; secrets in the body are stored encrypted and never shown again."))
  )
  .add(
    HttpApiEndpoint.del("remove")`/accounts/${id}`
      .addError(ApiError.NotFound)
      .middleware(RequireAdmin)
      .annotate(OpenApi.Description, needs("admin", "Removes an account and its token; the audit log keeps its history."))
  )
{}

export class PoolsGroup extends HttpApiGroup.make("pools")
  .add(
    HttpApiEndpoint.get("list", "/pools")
      .addSuccess(Schema.Array(Wire.Pool))
      .middleware(RequireRead)
      .annotate(OpenApi.Description, needs("read", "Every pool with its counts."))
  )
  .add(
    HttpApiEndpoint.get("tokens")`/pools/${pool}/tokens`
      .addSuccess(Schema.Array(Wire.TokenInfo))
      .addError(ApiError.NotFound)
      .middleware(RequireRead)
      .annotate(OpenApi.Description, needs("read", "The token info of every account in the pool."))
  )
  .add(
    HttpApiEndpoint.post("addToken")`/pools/${pool}/tokens`
      .setPayload(Wire.AddPoolToken)
      .addSuccess(Wire.TokenInfo, { status: 201 })
      .addError(ApiError.Conflict)
      .middleware(RequireAdmin)
      .annotate(OpenApi.Description, needs("admin", "Adds a static token to the pool (its provider is the pool's, or the pool's name)."))
  )
  .add(
    HttpApiEndpoint.post("acquire")`/pools/${pool}/acquire`
      .setUrlParams(Wire.AcquireParams)
      .addSuccess(Wire.Lease)
      .addError(ApiError.NotFound)
      .addError(ApiError.ServiceUnavailable)
      .middleware(RequireToken)
      .annotate(OpenApi.Description, needs(
        "token",
        "Hands out the least recently used available token. 429 with Retry-After and retry_at when every token is rate-limited (or waits up to `?wait=`), 503 when none is usable."
      ))
  )
  .add(
    HttpApiEndpoint.post("report")`/pools/${pool}/report`
      .setPayload(Wire.Report)
      .addSuccess(Wire.TokenInfo)
      .addError(ApiError.NotFound)
      .middleware(RequireToken)
      .annotate(OpenApi.Description, needs("token", "Feeds an upstream response's status and headers back: rate limits, 401s."))
  )
{}

export class EventsGroup extends HttpApiGroup.make("events").add(
  HttpApiEndpoint.get("stream", "/events")
    .addSuccess(HttpApiSchema.Text({ contentType: "text/event-stream" }))
    .middleware(RequireRead)
    .annotate(OpenApi.Description, needs("read", "Server-sent events: one `data:` line of JSON (an Event) per token event, with keep-alive comments."))
) {}

export class MetricsGroup extends HttpApiGroup.make("metrics").add(
  HttpApiEndpoint.get("metrics", "/metrics")
    .addSuccess(HttpApiSchema.Text({ contentType: "text/plain; version=0.0.4; charset=utf-8" }))
    .middleware(RequireRead)
    .annotate(OpenApi.Description, needs("read", "Prometheus metrics."))
) {}

export class AuditGroup extends HttpApiGroup.make("audit").add(
  HttpApiEndpoint.get("list", "/audit")
    .setUrlParams(Wire.AuditParams)
    .addSuccess(Schema.Array(Wire.AuditEntry))
    .middleware(RequireAdmin)
    .annotate(OpenApi.Description, needs("admin", "Audit entries, newest first (`?account_id=`, `?limit=` up to 1000, `?before=` an entry id for the next page)."))
) {}

/** The whole API. */
export class TesseraApi extends HttpApi.make("tessera")
  .add(HealthGroup)
  .add(TokenGroup)
  .add(AccountsGroup)
  .add(PoolsGroup)
  .add(EventsGroup)
  .add(MetricsGroup)
  .add(AuditGroup)
  .addError(ApiError.BadRequest)
  .addError(ApiError.NotFound)
  .addError(ApiError.PayloadTooLarge)
  .addError(ApiError.UnsupportedMediaType)
  .addError(ApiError.RequestTimeout)
  .addError(ApiError.HeadersTooLarge)
  .addError(ApiError.InternalError)
  .annotate(OpenApi.Title, "Tessera")
  .annotate(OpenApi.Version, "0.1.0")
  .annotate(
    OpenApi.Description,
    "Tessera keeps API credentials alive: token status, validation, manual updates, refreshes, raw tokens, rotating pools, events, metrics and the audit log. Errors are JSON `{\"error\":{\"code\",\"message\"}}`."
  )
{}
