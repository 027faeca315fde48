/**
 * `@tessera/providers`: the sources (how tokens are obtained) and providers (how they are
 * validated) for the upstreams Tessera serves.
 */
export * as Amp from "./Amp.js"
export * as Upstox from "./Upstox.js"
export * as GitHub from "./GitHub.js"
export * as GitLab from "./GitLab.js"
export * as Bitbucket from "./Bitbucket.js"
export * as OAuth2 from "./OAuth2.js"
export * as Static from "./Static.js"
export * as Drivers from "./Drivers.js"
