/**
 * `tessera serve`: runs the token service. It opens the database, registers the accounts
 * the environment declares, fetches their tokens at startup, keeps every token alive and
 * logs each token event. It stops cleanly on SIGINT/SIGTERM.
 */
import type { FileSystem, Path } from "@effect/platform"
import { NodeHttpClient } from "@effect/platform-node"
import { Events, Lifecycle, Tessera, TokenStore } from "@tessera/core"
import type { Crypto, Errors } from "@tessera/core"
import { Drivers } from "@tessera/providers"
import { Effect, Layer } from "effect"
import type { ConfigError } from "effect"

/** What can stop the service from starting. */
export type StartupError =
  | ConfigError.ConfigError
  | Errors.StoreError
  | Crypto.DecryptionFailed
  | Crypto.UnknownEncryptionKey
  | Crypto.InvalidEncryptionKey

/** The accounts the environment declares, registered before the startup fetch. */
const DeclaredLayer = Layer.effect(Lifecycle.DeclaredAccounts, Drivers.accountsFromEnv)

export const AppLayer: Layer.Layer<
  Lifecycle.Lifecycle | Events.Events | TokenStore.TokenStore | Crypto.Keyring,
  StartupError,
  FileSystem.FileSystem | Path.Path
> = Tessera.layerConfigWith({ events: Events.layerLogged }).pipe(
  Layer.provide(DeclaredLayer),
  Layer.provide(Drivers.layerConfig),
  Layer.provide(NodeHttpClient.layerUndici)
)

export const run: Effect.Effect<never, StartupError, FileSystem.FileSystem | Path.Path> = Effect.gen(function*() {
  const lifecycle = yield* Lifecycle.Lifecycle
  const db = yield* TokenStore.dbPathConfig
  const accounts = yield* lifecycle.accounts
  yield* Effect.logInfo(`tessera is running on ${db} with ${accounts.length} account(s); stop it with Ctrl-C`)
  yield* lifecycle.awaitStartup
  for (const info of yield* lifecycle.list) {
    yield* Effect.logInfo(
      `${info.accountId}: ${info.status}${info.lastError === null ? "" : ` (${info.lastError.message})`}`
    )
  }
  return yield* Effect.never
}).pipe(
  Effect.onInterrupt(() => Effect.logInfo("tessera is stopping")),
  Effect.scoped,
  Effect.provide(AppLayer)
)
