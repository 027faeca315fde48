/**
 * The HTTP service's settings (SPEC §5): where it listens (`TESSERA_HOST`, default
 * 127.0.0.1; `TESSERA_PORT` or `PORT`, default 8000; port 0 picks a free one), the default
 * account of the unscoped `/token/*` routes (`INTERNAL_API_ACCOUNT_ID`), and the limits that
 * keep clients from hurting it: the largest request body, and how many failed
 * authentications one address may make in a window before it is answered 429. The API keys
 * `TESSERA_API_KEYS` declares are registered when the server starts.
 */
import { Account, ApiKeys } from "@tessera/core"
import { Config, ConfigError, Context, Duration, Effect, Either, Layer, Option } from "effect"

export interface ServerConfigShape {
  readonly host: string
  readonly port: number
  /** `INTERNAL_API_ACCOUNT_ID`: else the only account, else the first declared one. */
  readonly defaultAccount: Option.Option<string>
  /** Keys registered at start (`TESSERA_API_KEYS`). */
  readonly apiKeys: ReadonlyArray<ApiKeys.Declared>
  readonly maxBodyBytes: number
  readonly authFailureLimit: number
  readonly authFailureWindow: Duration.Duration
  /** How many client addresses the failure counter remembers at most. */
  readonly authFailureClients: number
  /** How often `/events` sends a keep-alive comment. */
  readonly keepAlive: Duration.Duration
}

export const defaults: ServerConfigShape = {
  host: "127.0.0.1",
  port: 8000,
  defaultAccount: Option.none(),
  apiKeys: [],
  maxBodyBytes: 64 * 1024,
  authFailureLimit: 10,
  authFailureWindow: Duration.minutes(1),
  authFailureClients: 10_000,
  keepAlive: Duration.seconds(15)
}

export class ServerConfig extends Context.Tag("@tessera/server/ServerConfig")<ServerConfig, ServerConfigShape>() {}

const port = (name: string) =>
  Config.string(name).pipe(
    Config.mapOrFail((text) => {
      const trimmed = text.trim()
      return /^\d{1,5}$/.test(trimmed) && Number(trimmed) <= 65535
        ? Either.right(Number(trimmed))
        : Either.left(ConfigError.InvalidData([], `${name} must be a port number from 0 to 65535 (got '${text}')`))
    })
  )

/** The settings from the environment. */
export const config: Effect.Effect<ServerConfigShape, ConfigError.ConfigError> = Effect.gen(function*() {
  const host = yield* Config.string("TESSERA_HOST").pipe(
    Config.map((text) => text.trim()),
    Config.validate({ message: "TESSERA_HOST must not be empty", validation: (text) => text.length > 0 }),
    Config.withDefault(defaults.host)
  )
  const tesseraPort = yield* Config.option(port("TESSERA_PORT"))
  const listenPort = Option.isSome(tesseraPort)
    ? tesseraPort.value
    : yield* port("PORT").pipe(Config.withDefault(defaults.port))
  const defaultAccount = yield* Account.defaultAccountConfig
  const apiKeys = yield* ApiKeys.declaredConfig
  return { ...defaults, host, port: listenPort, defaultAccount, apiKeys }
})

export const layer = (settings: Partial<ServerConfigShape> = {}): Layer.Layer<ServerConfig> =>
  Layer.succeed(ServerConfig, { ...defaults, ...settings })

export const layerConfig: Layer.Layer<ServerConfig, ConfigError.ConfigError> = Layer.effect(ServerConfig, config)

/** Whether `host` only accepts connections from this machine. */
export const isLoopback = (host: string): boolean => {
  const h = host.toLowerCase().replace(/^\[|\]$/g, "")
  return h === "localhost" || h === "::1" || /^127(\.\d{1,3}){3}$/.test(h) || h === "::ffff:127.0.0.1"
}
