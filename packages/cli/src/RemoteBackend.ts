/**
 * The `Backend` over a running tessera server (`--server URL`): every operation is a call of
 * the typed client of the server's API declaration (`Api.TesseraApi`), with the API key from
 * `TESSERA_API_KEY` as a bearer token. The server answers in the same wire format the local
 * backend builds, and the server's errors become `ServerError`s carrying its status and
 * message, so a command prints the same answer, the same one-line reason and the same exit
 * status in both modes. What the API has no route for (API keys, the encryption key) is
 * refused: it is done on the server's host.
 */
import { HttpApiClient, HttpClient, HttpClientRequest } from "@effect/platform"
import { NodeHttpClient } from "@effect/platform-node"
import { Account, Errors } from "@tessera/core"
import { Api, ApiError } from "@tessera/server"
import type { Wire } from "@tessera/server"
import { Clock, Config, Duration, Effect, Either, Layer, Option, ParseResult, Schema } from "effect"
import type { ConfigError } from "effect"
import { Backend, InvalidInput, NotSupported, ServerError } from "./Backend.js"
import type { BackendError, BackendService, CheckView, DoctorCheck } from "./Backend.js"
import { describeError } from "./Output.js"

const BULK_CONCURRENCY = 8

/** The statuses of the API's error classes. */
const STATUSES: ReadonlyArray<readonly [new(...args: never) => object, number]> = [
  [ApiError.BadRequest, 400],
  [ApiError.Unauthorized, 401],
  [ApiError.Forbidden, 403],
  [ApiError.NotFound, 404],
  [ApiError.Conflict, 409],
  [ApiError.PayloadTooLarge, 413],
  [ApiError.Unprocessable, 422],
  [ApiError.TooManyRequests, 429],
  [ApiError.BadGateway, 502],
  [ApiError.ServiceUnavailable, 503],
  [ApiError.HealthUnavailable, 503],
  [ApiError.InternalError, 500]
]

/** What the server's failure means for the user, as one line. */
const toServerError = (baseUrl: string) => (error: unknown): ServerError => {
  for (const [type, status] of STATUSES) {
    if (error instanceof type && "error" in error) {
      const detail = error.error as { readonly code: string; readonly message: string }
      const reason = status === 401 || status === 403
        ? `the server refused the API key (set TESSERA_API_KEY to a key with the right scope): ${detail.message}`
        : detail.message
      return new ServerError({ status, code: detail.code, reason })
    }
  }
  const tag = typeof error === "object" && error !== null && "_tag" in error ? error._tag : undefined
  if (tag === "RequestError") {
    return new ServerError({ status: null, code: "unreachable", reason: `cannot reach the server at ${baseUrl}: ${describeError(error)}` })
  }
  if (tag === "ResponseError") {
    const status = (error as { readonly response: { readonly status: number } }).response.status
    return new ServerError({ status, code: "bad_response", reason: `unexpected answer from the server at ${baseUrl} (HTTP ${status})` })
  }
  if (ParseResult.isParseError(error)) {
    return new ServerError({ status: null, code: "bad_response", reason: `unexpected answer from the server at ${baseUrl}: ${error.message.split("\n")[0]}` })
  }
  return new ServerError({ status: null, code: "failure", reason: describeError(error) })
}

const localOnly = (what: string) =>
  Effect.fail(new NotSupported({ reason: `${what} works on the local database: run it on the server's host, without --server` }))

/** The base URL: an absolute http(s) URL. */
const baseUrlOf = (text: string): Effect.Effect<string, InvalidInput> =>
  Either.match(
    Either.try(() => new URL(text)),
    {
      onLeft: () => Effect.fail(new InvalidInput({ reason: `bad --server '${text}': expected a URL such as http://127.0.0.1:8000` })),
      onRight: (url) =>
        url.protocol === "http:" || url.protocol === "https:"
          ? Effect.succeed(url.toString().replace(/\/$/, ""))
          : Effect.fail(new InvalidInput({ reason: `bad --server '${text}': the URL must use http or https` }))
    }
  )

export const make = (serverUrl: string): Effect.Effect<BackendService, InvalidInput | ConfigError.ConfigError, HttpClient.HttpClient> =>
  Effect.gen(function*() {
    const baseUrl = yield* baseUrlOf(serverUrl)
    const apiKey = yield* Config.option(Config.redacted("TESSERA_API_KEY"))
    const client = yield* HttpApiClient.make(Api.TesseraApi, {
      baseUrl,
      transformClient: (http) =>
        Option.match(apiKey, {
          onNone: () => http,
          onSome: (key) => HttpClient.mapRequest(http, HttpClientRequest.bearerToken(key))
        })
    })

    const call = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, BackendError, R> =>
      Effect.mapError(effect, toServerError(baseUrl))

    /** An account id for a path: a malformed one names no account, as it would locally. */
    const accountId = (id: string) =>
      Effect.mapError(Schema.decodeUnknown(Account.AccountId)(id), () => new Errors.AccountNotFound({ accountId: id }))

    /** The account `[ACCOUNT]` names, or the default account the server decides on. */
    const resolve = (account: Option.Option<string>) =>
      Option.match(account, {
        onSome: accountId,
        onNone: () => Effect.flatMap(call(client.token.defaultStatus()), (info) => accountId(info.account_id))
      })

    const expiresAt = (at: number | undefined) => at === undefined ? {} : { expires_at: new Date(at).toISOString() }

    const sourceInput = (source: Account.SourceConfig): Effect.Effect<Wire.SourceInput, NotSupported> => {
      switch (source._tag) {
        case "static":
          return Effect.succeed({ type: "static" })
        case "password":
          return Effect.succeed({
            type: "password",
            username: source.username,
            password: source.password,
            ...(source.baseUrl === undefined ? {} : { base_url: source.baseUrl })
          })
        case "remote":
          return Effect.succeed({ type: "remote", ...(source.serviceUrl === undefined ? {} : { service_url: source.serviceUrl }) })
        case "oauth2":
          return Effect.succeed({
            type: "oauth2",
            token_url: source.tokenUrl,
            client_id: source.clientId,
            client_secret: source.clientSecret,
            grant: source.grant,
            ...(source.refreshToken === undefined ? {} : { refresh_token: source.refreshToken }),
            ...(source.scope === undefined ? {} : { scope: source.scope })
          })
        case "custom":
          return Effect.fail(new NotSupported({ reason: `the server's API registers no '${source.kind}' accounts` }))
      }
    }

    const checkOne = (id: string): Effect.Effect<CheckView, BackendError> =>
      Effect.gen(function*() {
        const path = { id: yield* accountId(id) }
        const outcome = yield* Effect.either(call(client.token.validate({ path })))
        const info = yield* call(client.token.status({ path }))
        const now = yield* Clock.currentTimeMillis
        const base = { account_id: id, status: info.status, username: info.username, rate_limit: info.rate_limit }
        return Either.match(outcome, {
          onRight: (result): CheckView => ({
            ...base,
            valid: result.valid,
            checked_at: result.checked_at,
            reason: result.reason,
            upstream_status: result.upstream_status
          }),
          onLeft: (error): CheckView => ({
            ...base,
            valid: null,
            checked_at: new Date(now).toISOString(),
            reason: error.message,
            upstream_status: error._tag === "ServerError" ? error.status : null
          })
        })
      })

    const service: BackendService = {
      mode: "remote",

      listAccounts: call(client.accounts.list()),

      addAccount: (account, token) =>
        Effect.gen(function*() {
          const source = yield* sourceInput(account.source)
          return yield* call(client.accounts.add({
            payload: {
              account_id: account.id,
              provider: account.provider,
              source,
              ...(account.pool === undefined ? {} : { pool: account.pool }),
              ...(account.label === undefined ? {} : { label: account.label }),
              ...(token === undefined ? {} : { access_token: token.token, ...expiresAt(token.expiresAt) })
            }
          }))
        }),

      removeAccount: (id) => Effect.flatMap(accountId(id), (valid) => call(client.accounts.remove({ path: { id: valid } }))),

      getToken: (account) => Effect.flatMap(resolve(account), (id) => call(client.token.get({ path: { id } }))),

      tokenStatus: (account) =>
        Option.isNone(account)
          ? call(client.token.defaultStatus())
          : Effect.flatMap(accountId(account.value), (id) => call(client.token.status({ path: { id } }))),

      listTokens: Effect.map(call(client.accounts.list()), (accounts) => accounts.map((account) => account.token)),

      validateToken: (account) =>
        Option.isNone(account)
          ? call(client.token.defaultValidate())
          : Effect.flatMap(accountId(account.value), (id) => call(client.token.validate({ path: { id } }))),

      updateToken: (account, input) => {
        const payload = { access_token: input.token, ...expiresAt(input.expiresAt) }
        const urlParams = { validate: input.validate }
        return Option.isNone(account)
          ? call(client.token.defaultUpdate({ payload, urlParams }))
          : Effect.flatMap(accountId(account.value), (id) => call(client.token.update({ path: { id }, payload, urlParams })))
      },

      refreshToken: (account) =>
        Option.isNone(account)
          ? call(client.token.defaultRefresh())
          : Effect.flatMap(accountId(account.value), (id) => call(client.token.refresh({ path: { id } }))),

      clearToken: (account) => Effect.flatMap(resolve(account), (id) => call(client.token.clear({ path: { id } }))),

      checkTokens: (target, progress) =>
        Effect.gen(function*() {
          const infos = target._tag === "pool"
            ? yield* call(client.pools.tokens({ path: { pool: target.pool } }))
            : (yield* call(client.accounts.list())).map((account) => account.token)
          const ids = infos.map((info) => info.account_id).sort()
          yield* progress.start(ids.length)
          return yield* Effect.forEach(ids, (id) => Effect.tap(checkOne(id), () => progress.step(id)), { concurrency: BULK_CONCURRENCY })
        }),

      addPoolToken: (pool, input) =>
        Effect.gen(function*() {
          const account = input.accountId === undefined ? {} : { account_id: yield* accountId(input.accountId) }
          return yield* call(client.pools.addToken({
            path: { pool },
            payload: {
              access_token: input.token,
              ...account,
              ...(input.label === undefined ? {} : { label: input.label }),
              ...expiresAt(input.expiresAt)
            }
          }))
        }),

      listPools: call(client.pools.list()),

      listPoolTokens: (pool) => call(client.pools.tokens({ path: { pool } })),

      acquire: (pool, options) =>
        call(client.pools.acquire({
          path: { pool },
          urlParams: options.wait === undefined ? {} : { wait: Duration.decode(options.wait) }
        })),

      report: (pool, input) =>
        Effect.gen(function*() {
          const account = input.accountId === undefined ? {} : { account_id: yield* accountId(input.accountId) }
          return yield* call(client.pools.report({
            path: { pool },
            payload: {
              ...account,
              ...(input.token === undefined ? {} : { access_token: input.token }),
              status: input.status,
              headers: input.headers
            }
          }))
        }),

      audit: (query) =>
        call(client.audit.list({
          urlParams: {
            ...(query.accountId === undefined ? {} : { account_id: query.accountId }),
            ...(query.limit === undefined ? {} : { limit: query.limit })
          }
        })),

      createApiKey: () => localOnly("keys create"),
      listApiKeys: localOnly("keys list"),
      revokeApiKey: () => localOnly("keys revoke"),
      rotateKey: localOnly("keys rotate"),

      doctor: Effect.gen(function*() {
        const checks: Array<DoctorCheck> = []
        const health = yield* Effect.either(call(client.health.health()))
        checks.push(Either.match(health, {
          onLeft: (error) => ({ name: `server ${baseUrl}`, status: "fail" as const, detail: error.message }),
          onRight: (answer) => ({
            name: `server ${baseUrl}`,
            status: answer.status === "ok" ? "ok" as const : "warn" as const,
            detail: `${answer.status}: ${answer.accounts} account(s), ${answer.tokens_available} token(s) available`
          })
        }))
        if (Either.isRight(health)) {
          const access = yield* Effect.either(call(client.pools.list()))
          checks.push(Either.match(access, {
            onLeft: (error) => ({ name: "API key", status: "fail" as const, detail: error.message }),
            onRight: () => ({
              name: "API key",
              status: "ok" as const,
              detail: Option.isSome(apiKey) ? "TESSERA_API_KEY is accepted" : "the server needs no key (it runs open on loopback)"
            })
          }))
        }
        return { ok: checks.every((check) => check.status !== "fail"), checks }
      })
    }
    return service
  })

/** The backend for the server at `serverUrl`. */
export const layer = (serverUrl: string): Layer.Layer<Backend, InvalidInput | ConfigError.ConfigError> =>
  Layer.effect(Backend, make(serverUrl)).pipe(Layer.provide(NodeHttpClient.layerUndici))
