/**
 * `tessera serve`: runs the token service. It opens the database, registers the accounts
 * and API keys the environment declares, fetches the tokens at startup, keeps every token
 * alive, logs each token event, and serves the HTTP API (SPEC §6) on `TESSERA_HOST`:`PORT`.
 * On SIGINT/SIGTERM it stops accepting requests, lets open ones finish, stops the lifecycle
 * and closes the database.
 */
import type { FileSystem, Path } from "@effect/platform"
import { Lifecycle, TokenStore } from "@tessera/core"
import { Server } from "@tessera/server"
import { Effect } from "effect"
import type { Layer } from "effect"

/** What can stop the service from starting. */
export type StartupError = Layer.Layer.Error<typeof Server.layerConfig>

export const AppLayer: Layer.Layer<
  Layer.Layer.Success<typeof Server.layerConfig>,
  StartupError,
  FileSystem.FileSystem | Path.Path
> = Server.layerConfig

export const run: Effect.Effect<never, StartupError, FileSystem.FileSystem | Path.Path> = Effect.gen(function*() {
  const lifecycle = yield* Lifecycle.Lifecycle
  // never the PostgreSQL URL itself: it may hold a password
  const db = TokenStore.describeDatabase(yield* TokenStore.databaseConfig)
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
