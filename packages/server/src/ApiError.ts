/**
 * The errors of the HTTP API, one class per status, each with the body every error has:
 * `{"error":{"code","message"}}` (SPEC §4.6). `code` is a stable machine-readable word from a
 * fixed list per status (so the OpenAPI document lists them, and each error class is told
 * apart from the others by its codes); `message` is for people and never holds a secret. The
 * 429 answer also says when to come back (`retry_at`, beside the `Retry-After` header), the
 * 422 what the upstream answered, and the 503 of `/health` keeps the health fields.
 */
import { HttpApiSchema } from "@effect/platform"
import { Schema } from "effect"

const detail = <const Codes extends ReadonlyArray<string>>(...codes: Codes) =>
  Schema.Struct({ code: Schema.Literal(...codes), message: Schema.String })

export class BadRequest extends Schema.Class<BadRequest>("BadRequest")(
  {
    error: detail(
      "invalid_request",
      "malformed_request",
      "malformed_json",
      "unreadable_body",
      "invalid_token",
      "invalid_expires_at",
      "account_mismatch",
      "unknown_pool",
      "invalid_report"
    )
  },
  HttpApiSchema.annotations({ status: 400, description: "The request is malformed or does not match the schema" })
) {}

export class Unauthorized extends Schema.Class<Unauthorized>("Unauthorized")(
  { error: detail("unauthorized") },
  HttpApiSchema.annotations({ status: 401, description: "No API key, or an unknown or revoked one" })
) {}

export class Forbidden extends Schema.Class<Forbidden>("Forbidden")(
  { error: detail("forbidden") },
  HttpApiSchema.annotations({ status: 403, description: "The API key lacks the scope this route needs" })
) {}

export class NotFound extends Schema.Class<NotFound>("NotFound")(
  { error: detail("not_found", "account_not_found", "pool_not_found", "no_accounts") },
  HttpApiSchema.annotations({ status: 404, description: "No such route, account or pool" })
) {}

export class Conflict extends Schema.Class<Conflict>("Conflict")(
  { error: detail("account_exists", "operation_unsupported") },
  HttpApiSchema.annotations({ status: 409, description: "The request conflicts with the current state" })
) {}

export class PayloadTooLarge extends Schema.Class<PayloadTooLarge>("PayloadTooLarge")(
  { error: detail("payload_too_large") },
  HttpApiSchema.annotations({ status: 413, description: "The request body is larger than the server accepts" })
) {}

export class UnsupportedMediaType extends Schema.Class<UnsupportedMediaType>("UnsupportedMediaType")(
  { error: detail("unsupported_media_type") },
  HttpApiSchema.annotations({ status: 415, description: "The request body is not JSON (Content-Type: application/json)" })
) {}

export class RequestTimeout extends Schema.Class<RequestTimeout>("RequestTimeout")(
  { error: detail("request_timeout") },
  HttpApiSchema.annotations({ status: 408, description: "The request did not arrive in time; the connection is closed" })
) {}

export class HeadersTooLarge extends Schema.Class<HeadersTooLarge>("HeadersTooLarge")(
  { error: detail("headers_too_large") },
  HttpApiSchema.annotations({ status: 431, description: "The request line and headers are larger than the server accepts" })
) {}

export class Unprocessable extends Schema.Class<Unprocessable>("Unprocessable")(
  { error: detail("token_rejected"), upstream_status: Schema.NullOr(Schema.Number) },
  HttpApiSchema.annotations({ status: 422, description: "The upstream rejected the token; the previous one stays" })
) {}

export class TooManyRequests extends Schema.Class<TooManyRequests>("TooManyRequests")(
  { error: detail("pool_exhausted", "too_many_attempts"), retry_at: Schema.String, retry_at_local: Schema.String },
  HttpApiSchema.annotations({ status: 429, description: "Try again at retry_at (also in the Retry-After header)" })
) {}

export class BadGateway extends Schema.Class<BadGateway>("BadGateway")(
  { error: detail("upstream_error") },
  HttpApiSchema.annotations({ status: 502, description: "An upstream call failed" })
) {}

export class ServiceUnavailable extends Schema.Class<ServiceUnavailable>("ServiceUnavailable")(
  { error: detail("store_unavailable", "token_unavailable", "no_usable_token") },
  HttpApiSchema.annotations({ status: 503, description: "No usable token, or the store cannot be used" })
) {}

/** `/health` when the store cannot be used: the health fields and the error. */
export class HealthUnavailable extends Schema.Class<HealthUnavailable>("HealthUnavailable")(
  {
    status: Schema.Literal("unavailable"),
    time: Schema.String,
    time_local: Schema.String,
    error: detail("unhealthy")
  },
  HttpApiSchema.annotations({ status: 503, description: "The store cannot be used" })
) {}

export class InternalError extends Schema.Class<InternalError>("InternalError")(
  { error: detail("internal") },
  HttpApiSchema.annotations({ status: 500, description: "A bug: the server logged it" })
) {}

type Code<C extends { readonly fields: { readonly error: Schema.Struct<{ code: Schema.Schema.Any; message: typeof Schema.String }> } }> =
  Schema.Schema.Type<C["fields"]["error"]["fields"]["code"]>

export const badRequest = (code: Code<typeof BadRequest>, message: string) => new BadRequest({ error: { code, message } })
export const unauthorized = (message: string) => new Unauthorized({ error: { code: "unauthorized", message } })
export const forbidden = (message: string) => new Forbidden({ error: { code: "forbidden", message } })
export const notFound = (code: Code<typeof NotFound>, message: string) => new NotFound({ error: { code, message } })
export const conflict = (code: Code<typeof Conflict>, message: string) => new Conflict({ error: { code, message } })
export const payloadTooLarge = (message: string) => new PayloadTooLarge({ error: { code: "payload_too_large", message } })
export const unsupportedMediaType = (message: string) =>
  new UnsupportedMediaType({ error: { code: "unsupported_media_type", message } })
export const requestTimeout = () =>
  new RequestTimeout({ error: { code: "request_timeout", message: "the request did not arrive in time" } })
export const headersTooLarge = () =>
  new HeadersTooLarge({ error: { code: "headers_too_large", message: "the request line and headers are too large" } })
export const badGateway = (message: string) => new BadGateway({ error: { code: "upstream_error", message } })
export const unavailable = (code: Code<typeof ServiceUnavailable>, message: string) =>
  new ServiceUnavailable({ error: { code, message } })
export const internal = () => new InternalError({ error: { code: "internal", message: "internal error; the server logged the cause" } })

/** One problem a decoding failure found: where (a path into the input) and what. */
export interface Issue {
  readonly _tag: string
  readonly path: ReadonlyArray<PropertyKey>
  readonly message: string
}

/** How many problems of one request an answer lists. */
const MAX_ISSUES = 3

/**
 * Input the API's schemas refused, as a 400 that says where and what is wrong, briefly, and
 * never the value itself: the schema's "Expected …, actual …" would echo what the client sent,
 * which may be a secret in the wrong place, or large.
 */
export const invalidRequest = (issues: ReadonlyArray<Issue>): BadRequest => {
  const described = issues.slice(0, MAX_ISSUES).map((issue) => {
    const where = issue.path.map(String).join(".")
    if (issue._tag === "Type" && issue.path.length === 0) return "the request body must be a JSON object"
    const actual = issue.message.indexOf(", actual ")
    const what = (issue.message.startsWith("Expected ") && actual > 0 ? issue.message.slice(0, actual) : issue.message).slice(0, 200)
    const field = String(issue.path[issue.path.length - 1] ?? "")
    return where === "" || what.startsWith(field) ? what : `${where}: ${what}`
  })
  const more = issues.length > MAX_ISSUES ? ` (and ${issues.length - MAX_ISSUES} more)` : ""
  return badRequest("invalid_request", described.length === 0 ? "the request does not match the API" : `${described.join("; ")}${more}`)
}

/** The errors answered below the HTTP API: requests Node cannot parse (`Server`), and `FastLane`'s. */
export type Written = BadRequest | RequestTimeout | HeadersTooLarge | NotFound | TooManyRequests | ServiceUnavailable | InternalError

const written = new Map<unknown, { readonly status: number; readonly encode: (error: unknown) => string }>(
  [BadRequest, RequestTimeout, HeadersTooLarge, NotFound, TooManyRequests, ServiceUnavailable, InternalError].map((
    schema
  ) => [schema, { status: HttpApiSchema.getStatusError(schema), encode: Schema.encodeUnknownSync(Schema.parseJson(schema)) }])
)

/** An error as the JSON text the API answers it with, for answers written below the HTTP API. */
export const encode = (error: Written): string => written.get(error.constructor)!.encode(error)

/** The status the API answers an error with (its class's annotation). */
export const statusOf = (error: Written): number => written.get(error.constructor)!.status
