/**
 * `@tessera/core`: the domain, the encrypted store, the token lifecycle and the event hub
 * of Tessera, as Effect services and layers.
 */
export * as Account from "./Account.js"
export * as Crypto from "./Crypto.js"
export * as Errors from "./Errors.js"
export * as Events from "./Events.js"
export * as Lifecycle from "./Lifecycle.js"
export * as Settings from "./Settings.js"
export * as Source from "./Source.js"
export * as Token from "./Token.js"
export * as TokenStore from "./TokenStore.js"
export * as Upstream from "./Upstream.js"
export * as Tessera from "./Tessera.js"
export * as TokenPool from "./TokenPool.js"
export * as PooledHttpClient from "./PooledHttpClient.js"
export * as ApiKeys from "./ApiKeys.js"
export * as RedisMirror from "./RedisMirror.js"
export * as Cluster from "./Cluster.js"
