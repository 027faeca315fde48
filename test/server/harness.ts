/**
 * The real HTTP service (`Server.layer`, the `HttpApiBuilder` app on Node) on 127.0.0.1 with
 * an ephemeral port, over an in-memory store, with the Upstox-style auth service, the Upstox
 * API and GitHub faked on 127.0.0.1. Requests go over real HTTP with `fetch`.
 */
import { HttpServer } from "@effect/platform"
import { NodeHttpClient } from "@effect/platform-node"
import { Account, ApiKeys, Crypto, Events, Lifecycle, Settings, Source, TokenPool, TokenStore, Upstream } from "@tessera/core"
import { Amp, GitHub as GitHubProvider, Upstox as UpstoxProvider } from "@tessera/providers"
import { Context, DateTime, Duration, Effect, Layer, Redacted, Schema } from "effect"
import { AuthService, GitHub, Upstox } from "../fakes/index.js"
import { waitUntil } from "../lifecycle/harness.js"
import { Metrics, Server, ServerConfig } from "@tessera/server"

export const accountId = Schema.decodeSync(Account.AccountId)
const keyName = Schema.decodeSync(ApiKeys.ApiKeyName)

export const GH_TOKENS = ["ghp_pool_token_one_0123456789", "ghp_pool_token_two_0123456789", "ghp_pool_token_three_012345"]

/** The fake upstreams: acc-1 and acc-2 known to the auth service, tokens it hands out valid at Upstox, three GitHub tokens. */
export const upstreams = Effect.gen(function*() {
  const auth = yield* AuthService.make({ accounts: ["acc-1", "acc-2"] })
  const upstox = yield* Upstox.make()
  Upstox.linkAuthService(upstox, auth)
  const github = yield* GitHub.make()
  for (const [i, token] of GH_TOKENS.entries()) github.addToken(token, { login: `octo${i + 1}` })
  return { auth, upstox, github }
})
export type Upstreams = Effect.Effect.Success<typeof upstreams>

const drivers = (fakes: Upstreams) =>
  Source.layerEffect(Effect.gen(function*() {
    return {
      sources: [yield* UpstoxProvider.remoteSource({ defaultServiceUrl: fakes.auth.url }), yield* Amp.passwordSource()],
      providers: [
        yield* UpstoxProvider.provider({ apiUrl: fakes.upstox.url }),
        yield* GitHubProvider.provider({ apiUrl: fakes.github.url })
      ]
    }
  })).pipe(Layer.provide(NodeHttpClient.layerUndici))

export interface Options {
  readonly config?: Partial<ServerConfig.ServerConfigShape>
  readonly declared?: ReadonlyArray<Lifecycle.Declared>
  readonly timeZone?: string
  /** Changes the store the server (and only the server) sees: to break its health check, say. */
  readonly serverStore?: (store: TokenStore.TokenStoreService) => TokenStore.TokenStoreService
}

/** The server and every service under it. */
export const layer = (fakes: Upstreams, options: Options = {}) => {
  const settings = Layer.succeed(Settings.Settings, {
    ...Settings.Settings.defaultValue(),
    timeZone: DateTime.zoneUnsafeMakeNamed(options.timeZone ?? "Asia/Kolkata"),
    flushInterval: Duration.millis(20)
  })
  const services = Lifecycle.layer.pipe(
    Layer.provideMerge(Metrics.layer),
    Layer.provideMerge(Events.layer),
    Layer.provideMerge(drivers(fakes)),
    Layer.provideMerge(ApiKeys.layerMemory),
    Layer.provideMerge(Crypto.layerRandom),
    Layer.provideMerge(settings),
    Layer.provideMerge(Layer.succeed(Upstream.RetryPolicy, {
      maxAttempts: 2,
      baseDelay: Duration.millis(20),
      maxDelay: Duration.millis(100),
      requestTimeout: Duration.seconds(2)
    })),
    Layer.provideMerge(Layer.succeed(Lifecycle.DeclaredAccounts, options.declared ?? []))
  )
  const wrapped = options.serverStore
  const server = wrapped === undefined
    ? Server.layer
    : Server.layer.pipe(Layer.provide(Layer.effect(TokenStore.TokenStore, Effect.map(TokenStore.TokenStore, wrapped))))
  return server.pipe(
    Layer.provideMerge(services),
    Layer.provideMerge(ServerConfig.layer({ port: 0, ...options.config }))
  )
}

export const remote = (id: string) =>
  new Account.NewAccount({ id: accountId(id), provider: "upstox", source: new Account.RemoteSource({}) })

export const githubAccount = (i: number) =>
  new Account.NewAccount({ id: accountId(`gh-${i + 1}`), provider: "github", source: new Account.StaticSource() })

export interface Keys {
  readonly admin: string
  readonly read: string
  readonly token: string
}

/** A running service: its URL, services, fakes, and a key per scope. */
export interface Running {
  readonly url: string
  readonly fakes: Upstreams
  readonly keys: Keys
  readonly lifecycle: Lifecycle.LifecycleService
  readonly pool: TokenPool.TokenPoolService
  readonly store: TokenStore.TokenStoreService
  readonly apiKeys: ApiKeys.ApiKeysService
  /** Everything the server runs on, to build more of it in a test. */
  readonly context: Context.Context<Layer.Layer.Success<ReturnType<typeof layer>>>
}

/**
 * Starts the service with acc-1 and acc-2 (remote, fetched), the GitHub pool of three static
 * tokens, and three keys: `admin`, `reader` (read), `tokens` (token).
 */
export const start = (options: Options & { readonly keys?: boolean; readonly accounts?: boolean } = {}) =>
  Effect.gen(function*() {
    const fakes = yield* upstreams
    const context = yield* Layer.build(layer(fakes, options))
    const server = Effect.provide(context)
    const lifecycle = yield* server(Lifecycle.Lifecycle)
    const apiKeys = yield* server(ApiKeys.ApiKeys)
    const address = (yield* server(HttpServer.HttpServer)).address
    const url = address._tag === "TcpAddress" ? `http://127.0.0.1:${address.port}` : ""
    if (options.accounts !== false) {
      yield* lifecycle.add(remote("acc-1"))
      yield* lifecycle.add(remote("acc-2"))
      yield* lifecycle.get("acc-1")
      yield* lifecycle.get("acc-2")
      for (const [i, token] of GH_TOKENS.entries()) yield* lifecycle.add(githubAccount(i), { token: Redacted.make(token) })
    }
    const create = (name: string, scopes: ReadonlyArray<ApiKeys.Scope>) =>
      Effect.map(apiKeys.create(keyName(name), scopes), (created) => Redacted.value(created.secret))
    const keys: Keys = options.keys === false
      ? { admin: "", read: "", token: "" }
      : { admin: yield* create("admin", ["admin"]), read: yield* create("reader", ["read"]), token: yield* create("tokens", ["token"]) }
    return {
      url,
      fakes,
      keys,
      lifecycle,
      apiKeys,
      context,
      pool: yield* server(TokenPool.TokenPool),
      store: yield* server(TokenStore.TokenStore)
    } satisfies Running
  }).pipe(Effect.orDie)

export interface Answer {
  readonly status: number
  readonly headers: Headers
  readonly text: string
  /** The body as JSON, or `undefined`. */
  readonly json: any
}

/** One request over real HTTP. `body` is sent as JSON unless it is a string. */
export const call = (
  running: { readonly url: string },
  method: string,
  path: string,
  options: {
    readonly key?: string | undefined
    readonly body?: unknown
    readonly headers?: Record<string, string> | undefined
  } = {}
) =>
  Effect.promise(async (): Promise<Answer> => {
    const headers: Record<string, string> = { ...options.headers }
    if (options.key !== undefined) headers["authorization"] = `Bearer ${options.key}`
    let body: string | undefined
    if (options.body !== undefined) {
      body = typeof options.body === "string" ? options.body : JSON.stringify(options.body)
      headers["content-type"] ??= "application/json"
    }
    const response = await fetch(`${running.url}${path}`, { method, headers, body: body ?? null })
    const text = await response.text()
    let json: unknown
    try {
      json = text === "" ? undefined : JSON.parse(text)
    } catch {
      json = undefined
    }
    return { status: response.status, headers: response.headers, text, json }
  })

/** Checks the shape every error has: `{"error":{"code","message"}}`. */
export const isError = (answer: Answer, status: number, code?: string) => {
  const ok = answer.status === status &&
    typeof answer.json?.error?.code === "string" &&
    typeof answer.json?.error?.message === "string" &&
    (code === undefined || answer.json.error.code === code)
  if (!ok) throw new Error(`expected a ${status}${code ? ` ${code}` : ""} JSON error, got ${answer.status}: ${answer.text.slice(0, 500)}`)
  return true
}

/** The token an account holds now, straight from the lifecycle. */
export const currentToken = (running: Running, id: string) =>
  Effect.map(Effect.orDie(running.lifecycle.info(id)), (info) => info.tokenPreview)


/**
 * Opens a server-sent event stream and collects what arrives: `received()` is the text so
 * far, `until(text)` waits for it. The scope closes the connection.
 */
export const openStream = (running: { readonly url: string }, path: string, key?: string) =>
  Effect.acquireRelease(
    Effect.promise(async () => {
      const controller = new AbortController()
      const response = await fetch(`${running.url}${path}`, {
        headers: key === undefined ? {} : { authorization: `Bearer ${key}` },
        signal: controller.signal
      })
      let text = ""
      const reader = response.body?.getReader()
      const decoder = new TextDecoder()
      const pump = async () => {
        if (reader === undefined) return
        for (;;) {
          const chunk = await reader.read().catch(() => ({ done: true, value: undefined }))
          if (chunk.done) return
          text += decoder.decode(chunk.value, { stream: true })
        }
      }
      const done = pump()
      return { response, controller, done, received: () => text }
    }),
    ({ controller, done }) => Effect.promise(() => (controller.abort(), done))
  ).pipe(
    Effect.map(({ done, received, response }) => ({
      status: response.status,
      headers: response.headers,
      received,
      /** Resolves when the server ends the stream. */
      ended: Effect.promise(() => done),
      until: (text: string, timeoutMs = 5000) => waitUntil(() => received().includes(text), timeoutMs)
    }))
  )

/** The data lines of an event stream, parsed. */
export const streamEvents = (text: string): Array<any> =>
  text.split("\n").filter((line) => line.startsWith("data: ")).map((line) => JSON.parse(line.slice(6)))
