import { NodeHttpClient } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { Account, Lifecycle, Source } from "@tessera/core"
import type { Errors } from "@tessera/core"
import { OAuth2 as OAuth2Source } from "@tessera/providers"
import { Effect, Either, Option, Redacted } from "effect"
import { FakeServer, OAuth2 } from "../fakes/index.js"
import * as Harness from "./harness.js"

const withHttp = Effect.provide(NodeHttpClient.layerUndici)

const CLIENT = "tessera"
const SECRET = "s3cret-client-secret"

const fake = (options: OAuth2.Options = {}) =>
  Effect.flatMap(FakeServer.clockNow, (now) => OAuth2.make({ now, clients: { [CLIENT]: SECRET }, ...options }))

const oauth2 = (
  server: OAuth2.OAuth2Server,
  fields: Partial<ConstructorParameters<typeof Account.OAuth2Source>[0]> = {}
) =>
  new Account.OAuth2Source({
    tokenUrl: `${server.url}/oauth/token`,
    clientId: CLIENT,
    clientSecret: Redacted.make(SECRET),
    ...fields
  })

const withRefreshToken = (server: OAuth2.OAuth2Server, refreshToken: string) =>
  Harness.account("example", oauth2(server, { refreshToken: Redacted.make(refreshToken) }))

const current = Redacted.make("at_current")

const refresh = (account: Account.Account, options: OAuth2Source.Options = {}) =>
  Effect.flatMap(OAuth2Source.source(options), (source) => Option.getOrThrow(source.refresh)(account, current))

const obtain = (account: Account.Account, options: OAuth2Source.Options = {}) =>
  Effect.flatMap(OAuth2Source.source(options), (source) => Option.getOrThrow(source.obtain)(account))

const failure = <A, R>(effect: Effect.Effect<A, Errors.UpstreamError, R>) =>
  Effect.map(Effect.either(effect), (result) => Option.getOrThrow(Either.getLeft(result)))

const value = (secret: Redacted.Redacted<string> | undefined) => (secret === undefined ? undefined : Redacted.value(secret))

describe("oauth2 source against a fake OAuth2 token endpoint", () => {
  it.scoped("refreshes with the stored refresh token and returns the rotated one", () =>
    Effect.gen(function*() {
      const server = yield* fake()
      const { refreshToken: first } = server.issueGrant(CLIENT)
      const issued = yield* refresh(withRefreshToken(server, first))
      expect(server.isValidAccessToken(Redacted.value(issued.token))).toBe(true)
      expect(issued.expiresAt).toEqual(Option.some(3_600_000))
      const rotated = value(issued.refreshToken)
      expect(rotated).toBeDefined()
      expect(rotated).not.toBe(first)
      expect(server.isValidRefreshToken(rotated ?? "")).toBe(true)
      const sent = server.lastRequest("token")
      expect(sent?.body).toEqual({ grant_type: "refresh_token", refresh_token: first })
      expect(sent?.headers.authorization).toMatch(/^Basic /)
    }).pipe(withHttp))

  it.scoped("the second refresh presents the rotated token; presenting the old one again is reported as a refused grant", () =>
    Effect.gen(function*() {
      const server = yield* fake()
      const { refreshToken: first } = server.issueGrant(CLIENT)
      const one = yield* refresh(withRefreshToken(server, first))
      const second = value(one.refreshToken) ?? ""
      const two = yield* obtain(withRefreshToken(server, second))
      expect(server.refreshes()).toBe(2)
      expect(server.lastRequest("token")?.body).toMatchObject({ refresh_token: second })
      expect(value(two.refreshToken)).not.toBe(second)

      const error = yield* failure(refresh(withRefreshToken(server, first)))
      expect(error).toMatchObject({ kind: "unauthorized", status: 400 })
      expect(error.detail).toContain("reuse detected")
      expect(server.reuseRevocations()).toBe(1)
      expect(error.message).not.toContain(first)
      expect(error.message).not.toContain(SECRET)
    }).pipe(withHttp))

  it.scoped("returns no refresh token when the server does not rotate it", () =>
    Effect.gen(function*() {
      const server = yield* fake({ rotateRefreshTokens: false })
      const { refreshToken } = server.issueGrant(CLIENT)
      const issued = yield* refresh(withRefreshToken(server, refreshToken))
      expect(issued.refreshToken).toBeUndefined()
      expect(server.isValidRefreshToken(refreshToken)).toBe(true)
    }).pipe(withHttp))

  it.scoped("form-encodes client credentials for HTTP Basic, or sends them as form fields when told to", () =>
    Effect.gen(function*() {
      const server = yield* fake({ clients: { "my client:1": "p@ss word:%" } })
      const account = Harness.account(
        "example",
        oauth2(server, { clientId: "my client:1", clientSecret: Redacted.make("p@ss word:%"), grant: "client_credentials" })
      )
      yield* obtain(account)
      expect(server.lastRequest("token")?.headers.authorization).toMatch(/^Basic /)
      yield* obtain(account, { clientAuthentication: "body" })
      const sent = server.lastRequest("token")
      expect(sent?.headers.authorization).toBeUndefined()
      expect(sent?.body).toMatchObject({ client_id: "my client:1", client_secret: "p@ss word:%" })
    }).pipe(withHttp))

  it.scoped("obtains with client credentials, with the scope when one is set", () =>
    Effect.gen(function*() {
      const server = yield* fake()
      const account = Harness.account("example", oauth2(server, { grant: "client_credentials", scope: "read write" }))
      const issued = yield* obtain(account)
      expect(server.isValidAccessToken(Redacted.value(issued.token))).toBe(true)
      expect(issued.refreshToken).toBeUndefined()
      expect(server.lastRequest("token")?.body).toEqual({ grant_type: "client_credentials", scope: "read write" })
      yield* refresh(account)
      expect(server.calls("token")).toBe(2)
    }).pipe(withHttp))

  it.scoped("reports a wrong client secret (401 invalid_client) as unauthorized, without the secret", () =>
    Effect.gen(function*() {
      const server = yield* fake()
      const account = Harness.account(
        "example",
        oauth2(server, { grant: "client_credentials", clientSecret: Redacted.make("wrong-secret") })
      )
      const error = yield* failure(obtain(account))
      expect(error).toMatchObject({ kind: "unauthorized", status: 401, detail: "invalid_client" })
      expect(error.message).not.toContain("wrong-secret")
    }).pipe(withHttp))

  it.scoped("cannot use the refresh_token grant without a refresh token, and does not ask", () =>
    Effect.gen(function*() {
      const server = yield* fake()
      const error = yield* failure(obtain(Harness.account("example", oauth2(server))))
      expect(error).toMatchObject({ kind: "rejected", status: null })
      expect(error.detail).toContain("no refresh token")
      expect(server.calls("token")).toBe(0)
    }).pipe(withHttp))
})

describe("oauth2 accounts in the lifecycle", () => {
  const drivers = Source.layerEffect(Effect.map(OAuth2Source.source(), (source) => ({ sources: [source] })))
  const newAccount = (id: string, source: Account.OAuth2Source) =>
    new Account.NewAccount({ id: Harness.accountId(id), provider: "example", source })

  /** A lifecycle with an account `oauth-1` holding a fresh grant's first refresh token. */
  const withGrant = <A, E, R>(
    body: (lifecycle: Lifecycle.LifecycleService, server: OAuth2.OAuth2Server, refreshToken: string) => Effect.Effect<A, E, R>
  ) =>
    Effect.gen(function*() {
      const server = yield* fake()
      const { refreshToken } = server.issueGrant(CLIENT)
      return yield* Effect.gen(function*() {
        const lifecycle = yield* Lifecycle.Lifecycle
        yield* lifecycle.add(newAccount("oauth-1", oauth2(server, { refreshToken: Redacted.make(refreshToken) })))
        return yield* body(lifecycle, server, refreshToken)
      }).pipe(Effect.provide(Harness.lifecycle(drivers)))
    })

  it.scoped("stores each rotated refresh token, so the next refresh presents it", () =>
    withGrant((lifecycle, server, refreshToken) =>
      Effect.gen(function*() {
        const lease = yield* lifecycle.get("oauth-1")
        expect(server.isValidAccessToken(Redacted.value(lease.token))).toBe(true)
        const stored = (yield* lifecycle.account("oauth-1")).source
        const second = stored._tag === "oauth2" ? value(stored.refreshToken) : undefined
        expect(second).not.toBe(refreshToken)
        expect(server.isValidRefreshToken(second ?? "")).toBe(true)

        yield* lifecycle.refresh("oauth-1")
        expect(server.lastRequest("token")?.body).toMatchObject({ refresh_token: second })
        expect(server.refreshes()).toBe(2)
        expect(server.reuseRevocations()).toBe(0)
        expect((yield* lifecycle.info("oauth-1")).status).toBe("available")
      })))

  it.scoped("marks an account invalid when its refresh token is refused, instead of retrying it", () =>
    withGrant((lifecycle, server, refreshToken) =>
      Effect.gen(function*() {
        yield* lifecycle.get("oauth-1")
        // a second account still holding the grant's first refresh token presents it again
        yield* lifecycle.add(newAccount("oauth-stale", oauth2(server, { refreshToken: Redacted.make(refreshToken) })))
        const result = yield* Effect.either(lifecycle.get("oauth-stale"))
        expect(Either.isLeft(result)).toBe(true)
        const info = yield* lifecycle.info("oauth-stale")
        expect(info.status).toBe("invalid")
        expect(info.invalidReason).toContain("reuse detected")
        expect(server.reuseRevocations()).toBe(1)
        expect(JSON.stringify(info)).not.toContain(refreshToken)
      })))
})
