/**
 * What the REST providers (GitHub, GitLab, Bitbucket) share: an API root under a base URL
 * that may or may not already name it, authorized GETs, and validation by asking the API
 * who the token belongs to. A 401 makes the token invalid with the upstream's own reason; a
 * 403 on the user endpoint means the token works but may not read its user (a GitHub App
 * token, a project token without `read_user`), so it is valid without a username; anything
 * else that goes wrong is a failure to ask, not a verdict on the token.
 */
import { HttpClient, HttpClientRequest } from "@effect/platform"
import { Upstream } from "@tessera/core"
import type { Account, Errors, Source } from "@tessera/core"
import { Clock, Effect, Option } from "effect"
import type { Redacted, Schema } from "effect"

/** `base` joined with the API's root path (`/api/v4`), unless the base already ends with it. */
export const apiRoot = (base: string, root: string): string => {
  const trimmed = base.replace(/\/+$/, "")
  return trimmed.endsWith(root) ? trimmed : Upstream.joinUrl(trimmed, root)
}

/** A GET with the token as `Authorization: Bearer`, asking for JSON (and any headers the API wants). */
export const authorizedGet = (
  url: string,
  token: Redacted.Redacted<string>,
  headers: Readonly<Record<string, string>> = {}
): HttpClientRequest.HttpClientRequest =>
  HttpClientRequest.get(url).pipe(
    HttpClientRequest.acceptJson,
    HttpClientRequest.setHeaders(headers),
    HttpClientRequest.bearerToken(token)
  )

export interface WhoAmI<A, I> {
  /** How the upstream is named in reasons: "the GitHub API". */
  readonly upstream: string
  readonly request: HttpClientRequest.HttpClientRequest
  readonly schema: Schema.Schema<A, I>
  readonly username: (user: A) => string | undefined
  readonly observe: NonNullable<Source.Provider["observe"]>
}

/** Validates by asking the user endpoint; the rate limit its answer reports comes along. */
export const whoAmI = <A, I>(options: WhoAmI<A, I>): Effect.Effect<Source.Validation, Errors.UpstreamError, HttpClient.HttpClient> =>
  Upstream.withRetry(Upstream.exchange("validate", options.request, options.schema)).pipe(
    Effect.flatMap(({ response, value }) =>
      Effect.map(Clock.currentTimeMillis, (now): Source.Validation => ({
        valid: true,
        reason: `the token is accepted by ${options.upstream}`,
        upstreamStatus: response.status,
        username: options.username(value),
        rateLimit: Option.getOrUndefined(options.observe(response.status, response.headers, now).rateLimit)
      }))
    ),
    Effect.catchIf(
      (error) => error.kind === "rejected" && error.status === 403,
      (error) =>
        Effect.succeed({
          valid: true,
          reason: `the token is accepted by ${options.upstream} but may not read its user: ${error.detail}`,
          upstreamStatus: 403
        })
    )
  )

/**
 * The upstream's own words for a refused token. Core reads only top-level message fields, so
 * an answer that nests its message (Bitbucket's `{"error": {"message": …}}`) has none.
 */
const refusalReason = (error: Errors.UpstreamError): string =>
  error.detail === "no details" ? `the upstream refused the token (HTTP ${error.status ?? "error"})` : error.detail

/**
 * A provider whose validation runs with the `HttpClient` it was built with; a token the
 * upstream refuses (401) is a `Validation` with `valid: false` and the upstream's reason.
 */
export const provider = (options: {
  readonly id: string
  readonly observe: NonNullable<Source.Provider["observe"]>
  readonly validate: (
    token: Redacted.Redacted<string>,
    account: Account.Account
  ) => Effect.Effect<Source.Validation, Errors.UpstreamError, HttpClient.HttpClient>
}): Effect.Effect<Source.Provider, never, HttpClient.HttpClient> =>
  Effect.map(HttpClient.HttpClient, (client) => ({
    id: options.id,
    observe: options.observe,
    validate: (token, account) =>
      options.validate(token, account).pipe(
        Effect.catchIf(
          (error) => error.kind === "unauthorized",
          (error) => Effect.succeed({ valid: false, reason: refusalReason(error), upstreamStatus: error.status })
        ),
        Effect.provideService(HttpClient.HttpClient, client)
      )
  }))

/** A provider validated by its user endpoint alone (GitLab, Bitbucket). */
export const userEndpointProvider = <A, I>(
  options: Omit<WhoAmI<A, I>, "request"> & { readonly id: string; readonly userUrl: string }
): Effect.Effect<Source.Provider, never, HttpClient.HttpClient> =>
  provider({
    id: options.id,
    observe: options.observe,
    validate: (token) => whoAmI({ ...options, request: authorizedGet(options.userUrl, token) })
  })
