/**
 * The whole core, wired: the lifecycle over the store (SQLite, or PostgreSQL when
 * `TESSERA_DATABASE_URL` is set), the keyring, the event hub,
 * settings and the upstream retry policy, all read from the environment. An application
 * adds the drivers (`@tessera/providers`) and an `HttpClient`; the server and the CLI are
 * built on this layer.
 */
import { Layer } from "effect"
import * as Crypto from "./Crypto.js"
import * as Events from "./Events.js"
import * as Lifecycle from "./Lifecycle.js"
import * as Settings from "./Settings.js"
import * as TokenStore from "./TokenStore.js"
import * as Upstream from "./Upstream.js"

/**
 * Everything from the environment (`TESSERA_DATABASE_URL` or `TESSERA_DB`,
 * `TESSERA_ENCRYPTION_KEY`, `API_RETRY_*`, …), with the given event hub (`Events.layerLogged`
 * to log every event). The store's `SqlClient` is in the output too (see
 * `TokenStore.postgresClient` for PostgreSQL's).
 */
export const layerConfigWith = (options: { readonly events?: Layer.Layer<Events.Events> } = {}) =>
  Lifecycle.layer.pipe(
    Layer.provideMerge(options.events ?? Events.layer),
    Layer.provideMerge(TokenStore.layerConfig),
    Layer.provideMerge(Crypto.layerConfig),
    Layer.provide(Layer.mergeAll(Settings.layerConfig, Upstream.layerRetryPolicyConfig))
  )

/** Everything from the environment (`TESSERA_DATABASE_URL` or `TESSERA_DB`, `TESSERA_ENCRYPTION_KEY`, `API_RETRY_*`, …). */
export const layerConfig = layerConfigWith()
