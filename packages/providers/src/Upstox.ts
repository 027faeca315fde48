/**
 * The Upstox-style per-account token service: a `remote` source that fetches each
 * account's token from an internal auth service (`GET {TOKEN_REFRESH_SERVICE_URL}/accounts/{id}/token`)
 * and refreshes through it (`POST …/accounts/{id}/refresh`), and the `upstox` provider that
 * validates a token with `GET {UPSTOX_API_URL}/v2/user/profile`. Upstox tokens die daily at
 * 03:30 IST, so a token given without `expires_at` expires at the next 03:30 Asia/Kolkata.
 */
import { HttpClient, HttpClientRequest } from "@effect/platform"
import { Account, Errors, Source, Upstream } from "@tessera/core"
import { Config, Cron, Effect, Either, Option, Schema } from "effect"
import type { ConfigError, Redacted } from "effect"
import { ExpiryFields } from "./internal/expiry.js"
import { bearer, call, issued } from "./internal/http.js"

export const DEFAULT_API_URL = "https://api.upstox.com"

const dailyExpiry = Either.getOrThrow(Cron.parse("30 3 * * *", "Asia/Kolkata"))

/** The next 03:30 in Asia/Kolkata after `now`: when Upstox access tokens expire. */
export const nextDailyExpiry = (now: number): number => Cron.next(dailyExpiry, now).getTime()

const TokenResponse = Schema.Struct({
  access_token: Schema.optional(Schema.NullOr(Schema.String)),
  ...ExpiryFields
})

const accountPath = (id: string, action: "token" | "refresh") => `/accounts/${encodeURIComponent(id)}/${action}`

/** The `remote` source. `defaultServiceUrl` is `TOKEN_REFRESH_SERVICE_URL`. */
export const remoteSource = (
  options: { readonly defaultServiceUrl?: string | undefined } = {}
): Effect.Effect<Source.TokenSource, never, HttpClient.HttpClient> =>
  Effect.gen(function*() {
    const client = yield* HttpClient.HttpClient
    const serviceUrl = (account: Account.Account, operation: string) => {
      const url = account.source._tag === "remote" ? account.source.serviceUrl ?? options.defaultServiceUrl : undefined
      return url === undefined
        ? Effect.fail(
          new Errors.UpstreamError({
            kind: "rejected",
            operation,
            status: null,
            detail: "no auth service URL is configured (TOKEN_REFRESH_SERVICE_URL)",
            retryAfterMs: null
          })
        )
        : Effect.succeed(url)
    }
    const fetchToken = (operation: "obtain" | "refresh", account: Account.Account) =>
      Effect.gen(function*() {
        const base = yield* serviceUrl(account, operation)
        const url = Upstream.joinUrl(base, accountPath(account.id, operation === "obtain" ? "token" : "refresh"))
        const request = operation === "obtain" ? HttpClientRequest.get(url) : HttpClientRequest.post(url)
        const { answer, value } = yield* call(operation, HttpClientRequest.acceptJson(request), TokenResponse).pipe(
          Effect.provideService(HttpClient.HttpClient, client)
        )
        return yield* issued(operation, value.access_token, value, answer, (now) => Option.some(nextDailyExpiry(now)))
      })
    return {
      kind: "remote",
      obtain: Option.some((account: Account.Account) => fetchToken("obtain", account)),
      refresh: Option.some((account: Account.Account, _current: Redacted.Redacted<string>) => fetchToken("refresh", account))
    } satisfies Source.TokenSource
  })

const Profile = Schema.Struct({
  data: Schema.optional(Schema.Struct({
    user_id: Schema.optional(Schema.String),
    user_name: Schema.optional(Schema.String)
  }))
})

/** The `upstox` provider: validation against the profile endpoint. */
export const provider = (
  options: { readonly apiUrl?: string | undefined } = {}
): Effect.Effect<Source.Provider, never, HttpClient.HttpClient> =>
  Effect.gen(function*() {
    const client = yield* HttpClient.HttpClient
    const apiUrl = options.apiUrl ?? DEFAULT_API_URL
    return {
      id: "upstox",
      validate: (token) =>
        Upstream.withRetry(
          Upstream.exchange(
            "validate",
            HttpClientRequest.get(Upstream.joinUrl(apiUrl, "/v2/user/profile")).pipe(
              HttpClientRequest.acceptJson,
              HttpClientRequest.setHeader("authorization", bearer(token))
            ),
            Profile
          )
        ).pipe(
          Effect.map(({ value }): Source.Validation => ({
            valid: true,
            reason: "the token is accepted by the Upstox API",
            upstreamStatus: 200,
            username: value.data?.user_name ?? value.data?.user_id
          })),
          Effect.catchIf(
            (error) => error.kind === "unauthorized" || (error.kind === "rejected" && error.status === 403),
            (error) => Effect.succeed({ valid: false, reason: error.detail, upstreamStatus: error.status })
          ),
          Effect.provideService(HttpClient.HttpClient, client)
        )
    } satisfies Source.Provider
  })

const AccountIds = Schema.compose(Schema.split(","), Schema.Array(Schema.compose(Schema.Trim, Account.AccountId)))

/** Accounts from `UPSTOX_ACCOUNT_IDS` (comma-separated), each a `remote` account of provider `upstox`. */
export const accountsFromEnv: Effect.Effect<ReadonlyArray<Account.NewAccount>, ConfigError.ConfigError> = Effect.gen(
  function*() {
    const ids = yield* Config.option(Schema.Config("UPSTOX_ACCOUNT_IDS", AccountIds))
    return Option.match(ids, {
      onNone: () => [],
      onSome: (list) =>
        list.filter((id) => id.length > 0).map((id) =>
          new Account.NewAccount({ id, provider: "upstox", source: new Account.RemoteSource({}) })
        )
    })
  }
)
