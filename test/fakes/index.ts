/**
 * Fake upstream servers for Tessera's integration tests: real HTTP servers on 127.0.0.1 that
 * speak each upstream's wire format, count calls per route, log requests and inject faults.
 * Each `make` is a scoped resource; see `FakeServer.FakeServer` for what every handle offers.
 */
export * as Amp from "./amp.js"
export * as AuthService from "./authService.js"
export * as Bitbucket from "./bitbucket.js"
export * as FakeServer from "./server.js"
export * as GitHub from "./github.js"
export * as GitLab from "./gitlab.js"
export * as OAuth2 from "./oauth2.js"
export * as Quota from "./quota.js"
export * as Upstox from "./upstox.js"
