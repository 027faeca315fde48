/**
 * The HTTP service, wired: `TesseraApi` implemented by `Handlers`, guarded by `Auth`, with
 * the OpenAPI document at `/openapi.json` and interactive docs at `/docs`, served by Node on
 * `TESSERA_HOST`:`TESSERA_PORT`. The edge turns every client mistake into a 4xx JSON error
 * (bodies that are not JSON or do not match the schema 400, bodies over the limit 413,
 * unknown routes 404) and anything unforeseen into a logged 500, so no input ends the process.
 * At start it registers the declared API keys; with none configured it serves only on
 * loopback (and says so), and refuses to listen anywhere else. On shutdown it stops
 * accepting, ends the event streams, lets open requests finish, then the lifecycle stops and
 * the database closes.
 */
import {
  HttpApiBuilder,
  HttpApiSwagger,
  HttpIncomingMessage,
  HttpMethod,
  HttpServer,
  HttpServerRequest
} from "@effect/platform"
import type { HttpApp } from "@effect/platform"
import { NodeHttpClient, NodeHttpServer, NodeHttpServerRequest } from "@effect/platform-node"
import { ApiKeys, Crypto, Events, Lifecycle, RedisMirror, Settings, TokenPool, TokenStore, Upstream } from "@tessera/core"
import type { Errors } from "@tessera/core"
import { Drivers } from "@tessera/providers"
import { Cause, Effect, Layer, Option, Schema } from "effect"
import type { ConfigError } from "effect"
import * as Http from "node:http"
import { TesseraApi } from "./Api.js"
import * as ApiError from "./ApiError.js"
import * as Auth from "./Auth.js"
import * as Handlers from "./Handlers.js"
import * as Metrics from "./Metrics.js"
import * as Wire from "./Wire.js"
import { isLoopback, ServerConfig } from "./ServerConfig.js"
import * as ServerConfigModule from "./ServerConfig.js"

/** Without any API key, the service would be open to whoever can reach it: only loopback may. */
export class InsecureBind extends Schema.TaggedError<InsecureBind>()("InsecureBind", {
  host: Schema.String
}) {
  override get message() {
    return `refusing to listen on ${this.host} without API keys: set TESSERA_API_KEYS (name:scope[+scope]:key) or TESSERA_HOST=127.0.0.1`
  }
}

export class ListenFailed extends Schema.TaggedError<ListenFailed>()("ListenFailed", {
  host: Schema.String,
  port: Schema.Number,
  reason: Schema.String
}) {
  override get message() {
    return `cannot listen on ${this.host}:${this.port}: ${this.reason}`
  }
}

// --- the edge -----------------------------------------------------------------------------

const isTagged = (tag: string) => (u: unknown): u is { readonly _tag: string; readonly message: string } =>
  typeof u === "object" && u !== null && "_tag" in u && u._tag === tag

/** A body the request parser gave up on: too large, or not what its content type says. */
const bodyFailure = (defect: unknown, maxBodyBytes: number) => {
  if (!isTagged("RequestError")(defect)) return Option.none()
  const cause = (defect as { readonly cause?: unknown }).cause
  const reason = cause instanceof Error ? cause.message : ""
  return Option.some(
    reason === "maxBytes exceeded"
      ? ApiError.payloadTooLarge(`the request body is larger than ${maxBodyBytes} bytes`)
      : cause instanceof SyntaxError
      ? ApiError.badRequest("malformed_json", `the request body is not valid JSON: ${reason}`)
      : ApiError.badRequest("unreadable_body", "the request body could not be read")
  )
}

/** How much of a too-large body without a length is read (and dropped) before the connection is cut. */
const DRAIN_FACTOR = 16

/**
 * Reads a body sent without a length (chunked), up to `limit` bytes. Past the limit the rest
 * is read and dropped rather than the socket destroyed, so the client gets its 413; a body
 * that goes on far longer gets the connection cut.
 */
const readChunked = (source: Http.IncomingMessage, limit: number) =>
  Effect.async<Option.Option<Buffer>>((resume) => {
    const chunks: Array<Buffer> = []
    let size = 0
    source.on("data", (chunk: Buffer) => {
      size += chunk.length
      if (size <= limit) chunks.push(chunk)
      else if (size > limit * DRAIN_FACTOR) source.destroy()
    })
    source.on("end", () => resume(Effect.succeed(size > limit ? Option.none() : Option.some(Buffer.concat(chunks)))))
    // A client that goes away (or is cut off) gets no answer; this only ends the wait.
    source.on("error", () => resume(Effect.succeed(Option.none())))
    source.on("close", () => resume(Effect.succeed(Option.none())))
  })

/**
 * The request with a chunked body read up front within the limit, or 413. The platform's
 * reader would destroy the socket of a body over the limit, and the client would see a reset
 * instead of the answer.
 */
const bufferChunked = (request: HttpServerRequest.HttpServerRequest, limit: number) =>
  Effect.gen(function*() {
    const body = yield* readChunked(NodeHttpServerRequest.toIncomingMessage(request), limit)
    if (Option.isNone(body)) return yield* Effect.fail(ApiError.payloadTooLarge(`the request body is larger than ${limit} bytes`))
    const headers = new globalThis.Headers()
    for (const [name, value] of Object.entries(request.headers)) if (name !== "transfer-encoding") headers.set(name, value)
    const web = yield* Effect.try({
      try: () => new Request(`http://localhost${request.url}`, { method: request.method, headers, body: body.value }),
      catch: () => ApiError.badRequest("unreadable_body", "the request could not be read")
    })
    const buffered = HttpServerRequest.fromWeb(web)
    return Option.match(request.remoteAddress, {
      onNone: () => buffered,
      onSome: (remoteAddress) => buffered.modify({ remoteAddress })
    })
  })

/**
 * Every failure the API's own schemas do not describe becomes one of its errors: decoding
 * failures 400 with the schema's message, unknown routes 404, unreadable bodies 400 or 413,
 * and defects a logged 500 that says nothing about the cause.
 */
const edge = Effect.map(ServerConfig, (config) => (app: HttpApp.Default) =>
  Effect.gen(function*() {
    const request = yield* HttpServerRequest.HttpServerRequest
    const length = Number(request.headers["content-length"] ?? "0")
    if (Number.isFinite(length) && length > config.maxBodyBytes) {
      return yield* Effect.fail(ApiError.payloadTooLarge(`the request body is larger than ${config.maxBodyBytes} bytes`))
    }
    const limited = HttpIncomingMessage.withMaxBodySize(app, Option.some(config.maxBodyBytes))
    const chunked = request.headers["transfer-encoding"] !== undefined && request.headers["content-length"] === undefined
    if (!chunked || !HttpMethod.hasBody(request.method)) return yield* limited
    const buffered = yield* bufferChunked(request, config.maxBodyBytes)
    return yield* Effect.provideService(limited, HttpServerRequest.HttpServerRequest, buffered)
  }).pipe(
    Effect.catchAllCause((cause) =>
      Effect.gen(function*() {
        if (Cause.isInterruptedOnly(cause)) return yield* Effect.failCause(cause)
        const failure = Cause.failureOption(cause)
        if (Option.isSome(failure)) {
          const error = failure.value as unknown
          if (isTagged("HttpApiDecodeError")(error)) {
            return yield* Effect.fail(ApiError.badRequest("invalid_request", error.message))
          }
          if (isTagged("RouteNotFound")(error)) {
            const request = yield* HttpServerRequest.HttpServerRequest
            const path = request.url.split("?")[0] ?? "/"
            return yield* Effect.fail(ApiError.notFound("not_found", `no route for ${request.method} ${path.slice(0, 200)}`))
          }
          return yield* Effect.failCause(cause)
        }
        const body = Option.flatMap(Cause.dieOption(cause), (defect) => bodyFailure(defect, config.maxBodyBytes))
        if (Option.isSome(body)) return yield* Effect.fail(body.value)
        yield* Effect.logError("unexpected failure while answering a request", cause)
        return yield* Effect.fail(ApiError.internal())
      })
    )
  )
)

// --- layers -------------------------------------------------------------------------------

/** The API implemented: handlers and authentication. */
export const layerApi = HttpApiBuilder.api(TesseraApi).pipe(
  Layer.provide(Handlers.layer),
  Layer.provide(Auth.layer)
)

/** Registers the declared keys and checks that the service may listen where it is told. */
const admit = Effect.gen(function*() {
  const config = yield* ServerConfig
  const keys = yield* ApiKeys.ApiKeys
  if (config.apiKeys.length > 0) {
    const summary = yield* keys.bootstrap(config.apiKeys)
    if (summary.created.length > 0) yield* Effect.logInfo(`API keys registered: ${summary.created.join(", ")}`)
    if (summary.updated.length > 0) yield* Effect.logInfo(`API keys updated: ${summary.updated.join(", ")}`)
    for (const name of summary.revoked) {
      yield* Effect.logWarning(`API key '${name}' from TESSERA_API_KEYS was revoked and stays revoked`)
    }
  }
  const open = !(yield* keys.hasActive)
  if (open && !isLoopback(config.host)) return yield* new InsecureBind({ host: config.host })
  return open
})

const announce = (open: boolean) =>
  Effect.gen(function*() {
    const server = yield* HttpServer.HttpServer
    const url = HttpServer.formatAddress(server.address)
    yield* Effect.logInfo(`listening on ${url} (API docs at ${url}/docs)`)
    yield* open
      ? Effect.logWarning(
        "no API key is configured: the API is open to clients on this machine only; " +
          "set TESSERA_API_KEYS=name:scope[+scope]:key (scopes read, token, admin) to require keys"
      )
      : Effect.logInfo("API keys are required: send Authorization: Bearer <key> (keys come from TESSERA_API_KEYS)")
  })

const nodeServer = (host: string, port: number) =>
  NodeHttpServer.layer(() => Http.createServer(), { host, port }).pipe(
    Layer.catchAll((error) =>
      Layer.fail(
        new ListenFailed({
          host,
          port,
          reason: error.cause instanceof Error ? error.cause.message : String(error.cause)
        })
      )
    )
  )

/**
 * The HTTP service on `ServerConfig`'s address, over core's services and the metrics
 * collector. Provides the running `HttpServer` (its address, for a port chosen by the system).
 */
export const layer: Layer.Layer<
  HttpServer.HttpServer,
  InsecureBind | ListenFailed | ApiKeys.InvalidApiKey | Errors.StoreError,
  | ApiKeys.ApiKeys
  | Lifecycle.Lifecycle
  | TokenPool.TokenPool
  | TokenStore.TokenStore
  | Events.Events
  | Metrics.Metrics
  | ServerConfig
> = Layer.unwrapScoped(
  Effect.gen(function*() {
    const open = yield* admit
    const config = yield* ServerConfig
    const server = nodeServer(config.host, config.port)
    const http = HttpApiBuilder.serve().pipe(
      Layer.provide(HttpApiSwagger.layer({ path: "/docs" })),
      Layer.provide(HttpApiBuilder.middlewareOpenApi({ path: "/openapi.json" })),
      Layer.provide(HttpApiBuilder.middleware(TesseraApi, edge)),
      Layer.provide(layerApi),
      Layer.provide(Handlers.layerDraining)
    )
    return Layer.mergeAll(http, Layer.effectDiscard(announce(open))).pipe(Layer.provideMerge(server))
  })
)

/** The accounts the environment declares (`AMP_*`, `UPSTOX_ACCOUNT_IDS`, `*_TOKENS`). */
const DeclaredAccountsLive = Layer.effect(Lifecycle.DeclaredAccounts, Drivers.accountsFromEnv)

/**
 * Core's services from the environment, as `tessera serve` runs them: the store and API keys
 * on `TESSERA_DB`, the keyring, every event logged, the metrics collector (subscribed before
 * the lifecycle starts, so the startup fetch is counted), the lifecycle and pools with the
 * built-in sources and providers and the accounts the environment declares, and the Redis
 * mirror when `TESSERA_REDIS_URL` is set.
 */
export const layerServicesConfig = RedisMirror.layerConfig({ tokenInfo: Wire.tokenInfo }).pipe(
  Layer.provideMerge(Lifecycle.layer),
  Layer.provideMerge(Metrics.layer),
  Layer.provideMerge(Events.layerLogged),
  Layer.provideMerge(ApiKeys.layerConfig),
  Layer.provideMerge(Crypto.layerConfig),
  Layer.provideMerge(Layer.mergeAll(Settings.layerConfig, Upstream.layerRetryPolicyConfig, DeclaredAccountsLive)),
  Layer.provide(Drivers.layerConfig),
  Layer.provide(NodeHttpClient.layerUndici)
)

/** Everything `tessera serve` runs, from the environment. */
export const layerConfig = layer.pipe(
  Layer.provideMerge(layerServicesConfig),
  Layer.provideMerge(ServerConfigModule.layerConfig)
)

export type StartupError =
  | Layer.Layer.Error<typeof layerConfig>
  | ConfigError.ConfigError
