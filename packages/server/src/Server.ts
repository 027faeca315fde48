/**
 * The HTTP service, wired: `TesseraApi` implemented by `Handlers`, guarded by `Auth`, with
 * the OpenAPI document at `/openapi.json` and interactive docs at `/docs`, served by Node on
 * `TESSERA_HOST`:`TESSERA_PORT`. The edge turns every client mistake into a 4xx JSON error
 * (bodies of another media type 415, malformed, nested too deep or not matching the schema
 * 400, over the limit 413, unknown routes 404, requests that are not HTTP 400 or 431) and
 * anything unforeseen into a logged 500, so no input ends the process.
 * At start it registers the declared API keys; with none configured it serves only on
 * loopback (and says so), and refuses to listen anywhere else. On shutdown it stops
 * accepting, ends the event streams, lets open requests finish, then the lifecycle stops and
 * the database closes.
 */
import {
  Headers,
  HttpApiBuilder,
  HttpApiError,
  HttpApiSwagger,
  HttpIncomingMessage,
  HttpMethod,
  HttpServer,
  HttpServerRequest
} from "@effect/platform"
import type { HttpApp } from "@effect/platform"
import { NodeHttpClient, NodeHttpServer, NodeHttpServerRequest } from "@effect/platform-node"
import { ApiKeys, Cluster, Crypto, Events, Lifecycle, RedisMirror, Settings, TokenPool, TokenStore, Upstream } from "@tessera/core"
import type { Errors } from "@tessera/core"
import { Drivers } from "@tessera/providers"
import { Cause, Effect, Layer, Option, Schema } from "effect"
import type { ConfigError } from "effect"
import * as Http from "node:http"
import type { Duplex } from "node:stream"
import { TesseraApi } from "./Api.js"
import * as ApiError from "./ApiError.js"
import * as Auth from "./Auth.js"
import * as FastLane from "./FastLane.js"
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

const tooLarge = (maxBodyBytes: number) => ApiError.payloadTooLarge(`the request body is larger than ${maxBodyBytes} bytes`)

/** A body the request parser gave up on: too large, or not what its content type says. */
const bodyFailure = (error: unknown, maxBodyBytes: number): Option.Option<ApiError.BadRequest | ApiError.PayloadTooLarge> => {
  if (!isTagged("RequestError")(error)) return Option.none()
  const cause = (error as { readonly cause?: unknown }).cause
  if (cause instanceof Error && cause.message === "maxBytes exceeded") return Option.some(tooLarge(maxBodyBytes))
  if (!(cause instanceof SyntaxError)) return Option.some(ApiError.badRequest("unreadable_body", "the request body could not be read"))
  // The parser's own message quotes the body, which may hold a secret: only the position is kept.
  const position = /at position (\d+)/.exec(cause.message)?.[1]
  return Option.some(
    ApiError.badRequest("malformed_json", `the request body is not valid JSON${position === undefined ? "" : ` (at character ${position})`}`)
  )
}

/** How much of a too-large body without a length is read (and dropped) before the connection is cut. */
const DRAIN_FACTOR = 16

/**
 * Reads a body sent without a length (chunked), up to `limit` bytes, or none when it is
 * longer: then the answer (413) goes out at once, while the rest is read and dropped rather
 * than the socket destroyed, so the client sees its 413; a body that goes on far longer gets
 * the connection cut.
 */
const readChunked = (source: Http.IncomingMessage, limit: number) =>
  Effect.async<Option.Option<Buffer>>((resume) => {
    const chunks: Array<Buffer> = []
    let size = 0
    let done = false
    const finish = (body: Option.Option<Buffer>) => {
      if (!done) (done = true), resume(Effect.succeed(body))
    }
    source.on("data", (chunk: Buffer) => {
      size += chunk.length
      if (size <= limit) chunks.push(chunk)
      else if (size > limit * DRAIN_FACTOR) source.destroy()
      else finish(Option.none())
    })
    source.on("end", () => finish(size > limit ? Option.none() : Option.some(Buffer.concat(chunks))))
    // A client that goes away (or is cut off) gets no answer; this only ends the wait.
    source.on("error", () => finish(Option.none()))
    source.on("close", () => finish(Option.none()))
  })

/**
 * The request with a chunked body read up front within the limit, or 413. The platform's
 * reader would destroy the socket of a body over the limit, and the client would see a reset
 * instead of the answer.
 */
const bufferChunked = (request: HttpServerRequest.HttpServerRequest, limit: number) =>
  Effect.gen(function*() {
    const body = yield* readChunked(NodeHttpServerRequest.toIncomingMessage(request), limit)
    if (Option.isNone(body)) return yield* Effect.fail(tooLarge(limit))
    const headers = new globalThis.Headers()
    for (const [name, value] of Object.entries(request.headers)) if (name !== "transfer-encoding") headers.set(name, value)
    headers.set("content-length", String(body.value.length))
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

/** Deeper than any body of the API nests, and shallow enough for its decoding errors to be described. */
const MAX_JSON_DEPTH = 32

/** Whether JSON text nests arrays and objects deeper than `limit` (brackets inside strings do not count). */
const nestsDeeperThan = (text: string, limit: number): boolean => {
  let depth = 0
  let inString = false
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i)
    if (inString) {
      if (c === 0x5c) i++
      else if (c === 0x22) inString = false
    } else if (c === 0x22) inString = true
    else if (c === 0x5b || c === 0x7b) {
      if (++depth > limit) return true
    } else if (c === 0x5d || c === 0x7d) depth--
  }
  return false
}

/**
 * The request as the API may read it. A body must be within the limit (413), JSON (415: the
 * platform would otherwise read forms, multipart and text, and hang or fail on some), and
 * nest no deeper than any body of the API does (400). An empty body is no body, whatever
 * its content type says.
 */
const admitBody = (request: HttpServerRequest.HttpServerRequest, maxBodyBytes: number) =>
  Effect.gen(function*() {
    if (!HttpMethod.hasBody(request.method)) return request
    const declared = request.headers["content-length"]
    const length = Number(declared ?? "0")
    if (Number.isFinite(length) && length > maxBodyBytes) return yield* Effect.fail(tooLarge(maxBodyBytes))
    const chunked = request.headers["transfer-encoding"] !== undefined && declared === undefined
    const admitted = chunked ? yield* bufferChunked(request, maxBodyBytes) : request
    const type = admitted.headers["content-type"]
    if (Number(admitted.headers["content-length"] ?? "0") === 0) {
      return type === undefined ? admitted : admitted.modify({ headers: Headers.remove(admitted.headers, "content-type") })
    }
    if (type !== undefined && type.split(";")[0]!.trim().toLowerCase() !== "application/json") {
      return yield* Effect.fail(
        ApiError.unsupportedMediaType("the request body must be JSON, sent with Content-Type: application/json")
      )
    }
    const text = yield* HttpIncomingMessage.withMaxBodySize(admitted.text, Option.some(maxBodyBytes)).pipe(
      Effect.catchAll((error) => Effect.fail(Option.getOrElse(bodyFailure(error, maxBodyBytes), () => tooLarge(maxBodyBytes))))
    )
    if (nestsDeeperThan(text, MAX_JSON_DEPTH)) {
      return yield* Effect.fail(
        ApiError.badRequest("invalid_request", `the JSON body nests deeper than ${MAX_JSON_DEPTH} levels, which no request of this API does`)
      )
    }
    return admitted
  })

/**
 * Every failure the API's own schemas do not describe becomes one of its errors: decoding
 * failures 400 saying where and what (never the offending value), unknown routes 404,
 * unreadable bodies 400, 413 or 415, and defects a logged 500 that says nothing about the cause.
 */
const edge = Effect.map(ServerConfig, (config) => (app: HttpApp.Default) =>
  Effect.gen(function*() {
    const request = yield* admitBody(yield* HttpServerRequest.HttpServerRequest, config.maxBodyBytes)
    return yield* HttpIncomingMessage.withMaxBodySize(app, Option.some(config.maxBodyBytes)).pipe(
      Effect.provideService(HttpServerRequest.HttpServerRequest, request)
    )
  }).pipe(
    Effect.catchAllCause((cause) =>
      Effect.gen(function*() {
        if (Cause.isInterruptedOnly(cause)) return yield* Effect.failCause(cause)
        const failure = Cause.failureOption(cause)
        if (Option.isSome(failure)) {
          const error = failure.value as unknown
          if (error instanceof HttpApiError.HttpApiDecodeError) return yield* Effect.fail(ApiError.invalidRequest(error.issues))
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

/**
 * What Node answers a request it cannot parse as HTTP (a bad method or target, a malformed
 * header, headers too large, too slow): the API's JSON error, then the connection closes.
 */
const answerUnparsable = (error: Error & { readonly code?: string }, socket: Duplex) => {
  if (error.code === "ECONNRESET" || !socket.writable) return socket.destroy()
  const answer = error.code === "HPE_HEADER_OVERFLOW"
    ? ApiError.headersTooLarge()
    : error.code === "ERR_HTTP_REQUEST_TIMEOUT"
    ? ApiError.requestTimeout()
    : ApiError.badRequest("malformed_request", "the request is not valid HTTP/1.1")
  const status = ApiError.statusOf(answer)
  const body = ApiError.encode(answer)
  socket.end(
    `HTTP/1.1 ${status} ${Http.STATUS_CODES[status]}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n` +
      `connection: close\r\n\r\n${body}`
  )
}

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

/**
 * Node's server for the API on `host`:`port`, with the fast lane in front of the API's
 * handler (see `FastLane`). Requests that ask to upgrade the connection are plain requests
 * here: the API has no WebSocket route.
 */
const nodeServer = (host: string, port: number, lane: (next: FastLane.Listener) => FastLane.Listener) =>
  Layer.scoped(
    HttpServer.HttpServer,
    Effect.gen(function*() {
      const node = Http.createServer().on("clientError", answerUnparsable)
      const platform = yield* NodeHttpServer.make(() => node, { host, port })
      return HttpServer.make({
        address: platform.address,
        serve: (app, middleware) =>
          Effect.gen(function*() {
            const listener = lane(yield* NodeHttpServer.makeHandler(app, middleware!))
            yield* Effect.addFinalizer(() => Effect.sync(() => node.off("request", listener)))
            node.on("request", listener)
          })
      })
    })
  ).pipe(
    Layer.merge(NodeHttpServer.layerContext),
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
  | Settings.Settings
> = Layer.unwrapScoped(
  Effect.gen(function*() {
    const open = yield* admit
    const config = yield* ServerConfig
    // one count of failed authentications, which both lanes read
    const throttle = Layer.succeedContext(yield* Layer.build(Auth.layerThrottle))
    const lane = yield* FastLane.make.pipe(Effect.provide(throttle))
    const server = nodeServer(config.host, config.port, lane)
    const http = HttpApiBuilder.serve().pipe(
      Layer.provide(HttpApiSwagger.layer({ path: "/docs" })),
      Layer.provide(HttpApiBuilder.middlewareOpenApi({ path: "/openapi.json" })),
      Layer.provide(HttpApiBuilder.middleware(TesseraApi, edge)),
      Layer.provide(layerApi),
      Layer.provide(throttle),
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
export const layerServicesConfig = Layer.mergeAll(
  RedisMirror.layerConfig({ tokenInfo: Wire.tokenInfo }),
  // instances sharing a PostgreSQL database see each other's events and share pool rotation
  Cluster.layerEventsIfShared
).pipe(
  Layer.provideMerge(Lifecycle.layer),
  Layer.provideMerge(Cluster.layerRotationIfShared),
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
