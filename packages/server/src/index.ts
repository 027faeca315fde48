/**
 * `@tessera/server`: the HTTP service (SPEC §6). `Api` declares the API once (a client is
 * `HttpApiClient.make(Api.TesseraApi)`), `Server` serves it on Node over core's services.
 */
export * as Api from "./Api.js"
export * as ApiError from "./ApiError.js"
export * as Auth from "./Auth.js"
export * as FastLane from "./FastLane.js"
export * as Handlers from "./Handlers.js"
export * as Metrics from "./Metrics.js"
export * as Server from "./Server.js"
export * as ServerConfig from "./ServerConfig.js"
export * as Wire from "./Wire.js"
