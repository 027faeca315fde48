/**
 * The `oauth2` source (RFC 6749): an account's access token comes from its authorization
 * server's token endpoint, through the `refresh_token` grant (with the refresh token stored
 * in the account, which the server may rotate on every use) or the `client_credentials` grant.
 * The client authenticates with HTTP Basic by default, or with form fields for servers that
 * want them. Obtaining and refreshing are the same grant: a new access token does not need the
 * old one. A rotated refresh token is returned in `Issued.refreshToken`; the lifecycle stores
 * it before it hands the new access token out, so the next grant presents the new one.
 */
import { HttpClient, HttpClientRequest } from "@effect/platform"
import { Errors } from "@tessera/core"
import type { Account, Source } from "@tessera/core"
import { Effect, Option, Redacted, Schema } from "effect"
import { ExpiryFields } from "./internal/expiry.js"
import { call, issued } from "./internal/http.js"

export interface Options {
  /**
   * How the client authenticates to the token endpoint: `basic` (HTTP Basic, RFC 6749
   * §2.3.1, the default) or `body` (`client_id` / `client_secret` form fields, for servers
   * that accept nothing else).
   */
  readonly clientAuthentication?: "basic" | "body" | undefined
}

const TokenResponse = Schema.Struct({
  access_token: Schema.optional(Schema.NullOr(Schema.String)),
  token_type: Schema.optional(Schema.NullOr(Schema.String)),
  refresh_token: Schema.optional(Schema.NullOr(Schema.String)),
  scope: Schema.optional(Schema.NullOr(Schema.String)),
  ...ExpiryFields
})

type Operation = "obtain" | "refresh"

const refused = (operation: Operation, detail: string) =>
  new Errors.UpstreamError({ kind: "rejected", operation, status: null, detail, retryAfterMs: null })

/** Client credentials are form-encoded before they go into HTTP Basic (RFC 6749 §2.3.1). */
const formEncode = (value: string): string => encodeURIComponent(value).replace(/%20/g, "+")

/**
 * RFC 6749 §5.2: a token endpoint refuses a grant with 400 (`invalid_grant`: the refresh
 * token is unknown, expired, revoked or was used before; `unauthorized_client`,
 * `invalid_scope`, `unsupported_grant_type`, `invalid_request`) and a client with 401
 * (`invalid_client`, already `unauthorized`). None of these heals by asking again. The
 * lifecycle marks an account invalid when obtaining fails with kind `unauthorized` and the
 * account has no token, and never retries `unauthorized` in the background, whereas it keeps
 * retrying `rejected` with backoff. So a 400 becomes `unauthorized`: an account whose grant
 * was revoked (refresh-token reuse, say) is marked invalid with the server's reason instead
 * of presenting the dead refresh token forever.
 */
const grantRefusal = (error: Errors.UpstreamError): Errors.UpstreamError =>
  error.kind === "rejected" && error.status === 400
    ? new Errors.UpstreamError({
      kind: "unauthorized",
      operation: error.operation,
      status: error.status,
      detail: `the authorization server refused the grant: ${error.detail}`,
      retryAfterMs: error.retryAfterMs
    })
    : error

/** The form fields of the account's grant; a `refresh_token` grant needs a stored refresh token. */
const grantFields = (source: Account.OAuth2Source, operation: Operation) => {
  if (source.grant === "client_credentials") {
    return Effect.succeed<Record<string, string>>({
      grant_type: "client_credentials",
      ...(source.scope === undefined ? {} : { scope: source.scope })
    })
  }
  return source.refreshToken === undefined
    ? Effect.fail(refused(operation, "the account has no refresh token; add one to its oauth2 source"))
    : Effect.succeed<Record<string, string>>({ grant_type: "refresh_token", refresh_token: Redacted.value(source.refreshToken) })
}

/** The refresh token to store, when the server issued one other than the one presented. */
const rotatedRefreshToken = (
  source: Account.OAuth2Source,
  returned: string | null | undefined
): Redacted.Redacted<string> | undefined =>
  typeof returned === "string" && returned.length > 0 &&
    (source.refreshToken === undefined || Redacted.value(source.refreshToken) !== returned)
    ? Redacted.make(returned)
    : undefined

/** The `oauth2` source. */
export const source = (options: Options = {}): Effect.Effect<Source.TokenSource, never, HttpClient.HttpClient> =>
  Effect.map(HttpClient.HttpClient, (client) => {
    const authenticate = (source: Account.OAuth2Source, fields: Record<string, string>) =>
      options.clientAuthentication === "body"
        ? HttpClientRequest.bodyUrlParams({ ...fields, client_id: source.clientId, client_secret: Redacted.value(source.clientSecret) })
        : (request: HttpClientRequest.HttpClientRequest) =>
          request.pipe(
            HttpClientRequest.bodyUrlParams(fields),
            HttpClientRequest.basicAuth(formEncode(source.clientId), Redacted.make(formEncode(Redacted.value(source.clientSecret))))
          )

    const grant = (operation: Operation) => (account: Account.Account) =>
      Effect.gen(function*() {
        const source = account.source
        if (source._tag !== "oauth2") return yield* refused(operation, "not an oauth2 account")
        const fields = yield* grantFields(source, operation)
        const request = HttpClientRequest.post(source.tokenUrl).pipe(HttpClientRequest.acceptJson, authenticate(source, fields))
        const { answer, value } = yield* call(operation, request, TokenResponse).pipe(Effect.mapError(grantRefusal))
        const refreshToken = rotatedRefreshToken(source, value.refresh_token)
        // Without `expires_in` the lifetime is unknown: the token is used until a 401 says otherwise.
        return yield* issued(operation, value.access_token, value, answer, () => Option.none(), refreshToken === undefined ? {} : { refreshToken })
      }).pipe(Effect.provideService(HttpClient.HttpClient, client))

    return {
      kind: "oauth2",
      obtain: Option.some(grant("obtain")),
      refresh: Option.some((account: Account.Account, _current: Redacted.Redacted<string>) => grant("refresh")(account))
    } satisfies Source.TokenSource
  })
