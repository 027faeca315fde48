/**
 * The AMP-style `password` source: obtain a token with username and password
 * (`POST {base}/user/obtain_token`), refresh it with the current token
 * (`GET {base}/user/refresh-token`, Bearer). The token comes as `token` or `access_token`,
 * with `expires_at` / `expires_in` or, without them, a 24-hour lifetime. Configured from
 * `AMP_API_URL`, `AMP_USERNAME`, `AMP_PASSWORD` as the account `amp`.
 */
import { HttpClient, HttpClientRequest } from "@effect/platform"
import { Account, Errors, Source, Upstream } from "@tessera/core"
import { Config, Duration, Effect, Option, Redacted, Schema } from "effect"
import { ExpiryFields } from "./internal/expiry.js"
import { bearer, call, issued } from "./internal/http.js"
import type { Answer } from "./internal/http.js"

export const DEFAULT_LIFETIME = Duration.hours(24)

const TokenResponse = Schema.Struct({
  token: Schema.optional(Schema.NullOr(Schema.String)),
  access_token: Schema.optional(Schema.NullOr(Schema.String)),
  ...ExpiryFields
})

const lifetime = (now: number) => Option.some(now + Duration.toMillis(DEFAULT_LIFETIME))

/** The password source. `defaultBaseUrl` serves accounts whose source names no base URL. */
export const passwordSource = (
  options: { readonly defaultBaseUrl?: string | undefined } = {}
): Effect.Effect<Source.TokenSource, never, HttpClient.HttpClient> =>
  Effect.gen(function*() {
    const client = yield* HttpClient.HttpClient
    const provide = <A, E>(effect: Effect.Effect<A, E, HttpClient.HttpClient>) =>
      Effect.provideService(effect, HttpClient.HttpClient, client)

    const config = (account: Account.Account, operation: string) => {
      const source = account.source
      if (source._tag !== "password") {
        return Effect.fail(
          new Errors.UpstreamError({ kind: "rejected", operation, status: null, detail: "not a password account", retryAfterMs: null })
        )
      }
      const base = source.baseUrl ?? options.defaultBaseUrl
      return base === undefined
        ? Effect.fail(
          new Errors.UpstreamError({ kind: "rejected", operation, status: null, detail: "no base URL is configured (AMP_API_URL)", retryAfterMs: null })
        )
        : Effect.succeed({ source, base })
    }

    const toIssued = (operation: string) => ({ answer, value }: { readonly value: typeof TokenResponse.Type; readonly answer: Answer }) =>
      issued(operation, value.token ?? value.access_token, value, answer, lifetime)

    return {
      kind: "password",
      obtain: Option.some((account: Account.Account) =>
        Effect.gen(function*() {
          const { base, source } = yield* config(account, "obtain")
          const request = HttpClientRequest.post(Upstream.joinUrl(base, "/user/obtain_token")).pipe(
            HttpClientRequest.acceptJson,
            HttpClientRequest.bodyUnsafeJson({ username: source.username, password: Redacted.value(source.password) })
          )
          return yield* toIssued("obtain")(yield* provide(call("obtain", request, TokenResponse)))
        })
      ),
      refresh: Option.some((account: Account.Account, current: Redacted.Redacted<string>) =>
        Effect.gen(function*() {
          const { base } = yield* config(account, "refresh")
          const request = HttpClientRequest.get(Upstream.joinUrl(base, "/user/refresh-token")).pipe(
            HttpClientRequest.acceptJson,
            HttpClientRequest.setHeader("authorization", bearer(current))
          )
          return yield* toIssued("refresh")(yield* provide(call("refresh", request, TokenResponse)))
        })
      )
    } satisfies Source.TokenSource
  })

/** The `amp` account from `AMP_API_URL`, `AMP_USERNAME`, `AMP_PASSWORD`, when all are set. */
export const accountFromEnv: Effect.Effect<Option.Option<Account.NewAccount>, import("effect").ConfigError.ConfigError> =
  Effect.gen(function*() {
    const url = yield* Config.option(Config.string("AMP_API_URL"))
    const username = yield* Config.option(Config.string("AMP_USERNAME"))
    const password = yield* Config.option(Config.redacted("AMP_PASSWORD"))
    if (Option.isNone(url) || Option.isNone(username) || Option.isNone(password)) return Option.none()
    return Option.some(
      new Account.NewAccount({
        id: Schema.decodeSync(Account.AccountId)("amp"),
        provider: "amp",
        source: new Account.PasswordSource({ baseUrl: url.value, username: username.value, password: password.value })
      })
    )
  })
