/**
 * What the provider integration tests share: accounts to validate with, a request made with a
 * token and read back through a provider's `observe`, and a lifecycle wired with given drivers.
 */
import { HttpClient, HttpClientRequest } from "@effect/platform"
import { NodeHttpClient } from "@effect/platform-node"
import { Account, Crypto, Events, Lifecycle, Source, TokenStore } from "@tessera/core"
import { Clock, Effect, Layer, Redacted, Schema } from "effect"

export const accountId = Schema.decodeSync(Account.AccountId)

/** A registered account of `provider` with `source` (static unless given). */
export const account = (provider: string, source: Account.SourceConfig = new Account.StaticSource()) =>
  new Account.Account({ id: accountId(`${provider}-test`), provider, pool: provider, source, createdAt: 0 })

/** Validates `token` with the provider `make` builds, for an account of that provider. */
export const validate = (make: Effect.Effect<Source.Provider, never, HttpClient.HttpClient>, token: string) =>
  Effect.flatMap(make, (provider) => provider.validate(Redacted.make(token), account(provider.id)))

/** GETs `url` with `token` as a Bearer token and reads the answer as `observe` does. */
export const observeGet = (
  observe: NonNullable<Source.Provider["observe"]>,
  url: string,
  token: string
) =>
  Effect.gen(function*() {
    const client = yield* HttpClient.HttpClient
    const response = yield* client.execute(HttpClientRequest.get(url).pipe(HttpClientRequest.bearerToken(Redacted.make(token))))
    const now = yield* Clock.currentTimeMillis
    return { status: response.status, ...observe(response.status, response.headers, now) }
  }).pipe(Effect.orDie)

/** A lifecycle on an in-memory store with `drivers`, and the accounts it is told configuration declares. */
export const lifecycle = <E>(
  drivers: Layer.Layer<Source.Drivers, E, HttpClient.HttpClient>,
  declared: ReadonlyArray<Lifecycle.Declared> = []
) =>
  Lifecycle.layer.pipe(
    Layer.provideMerge(Events.layer),
    Layer.provideMerge(Layer.provide(drivers, NodeHttpClient.layerUndici)),
    Layer.provideMerge(TokenStore.layerMemory),
    Layer.provideMerge(Crypto.layerRandom),
    Layer.provide(Layer.succeed(Lifecycle.DeclaredAccounts, declared))
  )
