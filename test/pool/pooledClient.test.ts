/**
 * The pooled HttpClient (SPEC §3.7) against the fake GitHub over real HTTP: rotation, rate
 * limits read from real headers, retry on the next token, exhaustion and recovery.
 */
import { NodeHttpClient } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { Account, Crypto, Events, Lifecycle, PooledHttpClient, Source, TokenPool, TokenStore } from "@tessera/core"
import { GitHub as GitHubProvider } from "@tessera/providers"
import { Effect, Layer, Redacted, Schema, TestClock } from "effect"
import { FakeServer, GitHub } from "../fakes/index.js"

const accountId = Schema.decodeSync(Account.AccountId)

const setup = (size: number, quota: (i: number) => GitHub.TokenOptions) =>
  Effect.gen(function*() {
    const github = yield* GitHub.make({ now: yield* FakeServer.clockNow })
    const tokens = Array.from({ length: size }, (_, i) => `ghp_pooled_token_${i}_abcdefghijkl`)
    tokens.forEach((token, i) => github.addToken(token, quota(i)))
    const drivers = Source.layerEffect(
      Effect.map(GitHubProvider.provider({ apiUrl: github.url }), (provider) => ({ providers: [provider] }))
    )
    const layer = Lifecycle.layer.pipe(
      Layer.provideMerge(Events.layer),
      Layer.provideMerge(drivers),
      Layer.provideMerge(TokenStore.layerMemory),
      Layer.provide(Crypto.layerRandom),
      Layer.provideMerge(NodeHttpClient.layerUndici)
    )
    const context = yield* Layer.build(layer)
    const lifecycle = yield* Effect.provide(Lifecycle.Lifecycle, context)
    for (const [i, token] of tokens.entries()) {
      yield* lifecycle.add(
        new Account.NewAccount({ id: accountId(`gh-${i}`), provider: "github", source: new Account.StaticSource() }),
        { token: Redacted.make(token) }
      )
    }
    const client = yield* Effect.provide(PooledHttpClient.make("github"), context)
    const pool = yield* Effect.provide(TokenPool.TokenPool, context)
    return { github, tokens, client, pool, lifecycle }
  })

const MINUTE = 60_000

describe("the pooled HttpClient against a fake GitHub", () => {
  it.scoped("5 tokens with a quota of 10 serve 50 requests; the 51st fails with PoolExhausted at the earliest reset; after it requests succeed again", () =>
    Effect.gen(function*() {
      const { client, github, tokens } = yield* setup(5, (i) => ({ limit: 10, resetAt: new Date((10 + i) * MINUTE) }))
      for (let n = 0; n < 50; n++) {
        const response = yield* client.get(`${github.url}/repos/tessera/tessera`)
        expect(response.status).toBe(200)
      }
      // least recently used: the load is spread evenly
      for (const token of tokens) expect(github.quota(token)?.remaining).toBe(0)
      const error = yield* Effect.flip(client.get(`${github.url}/repos/tessera/tessera`))
      expect(error).toEqual(new TokenPool.PoolExhausted({ pool: "github", retryAt: 10 * MINUTE }))
      expect(github.calls("api")).toBe(50)
      yield* TestClock.adjust(10 * MINUTE)
      const after = yield* client.get(`${github.url}/repos/tessera/tessera`)
      expect(after.status).toBe(200)
      expect(github.lastRequest("api")?.headers["authorization"]).toBe(`Bearer ${tokens[0]}`)
    }))

  it.scoped("a request that hits a secondary limit is sent again with the next token, and the limited token is skipped", () =>
    Effect.gen(function*() {
      const { client, github, tokens, pool } = yield* setup(3, () => ({ limit: 100 }))
      github.secondaryLimit(tokens[0]!, { retryAfterSeconds: 120 })
      const response = yield* client.get(`${github.url}/repos/tessera/tessera`)
      expect(response.status).toBe(200)
      expect(github.requests("api").map((r) => r.headers["authorization"])).toEqual([
        `Bearer ${tokens[0]}`,
        `Bearer ${tokens[1]}`
      ])
      expect(yield* pool.countAvailable("github")).toBe(2)
      for (let n = 0; n < 4; n++) yield* client.get(`${github.url}/repos/tessera/tessera`)
      expect(github.requests("api").slice(2).every((r) => r.headers["authorization"] !== `Bearer ${tokens[0]}`)).toBe(true)
      yield* TestClock.adjust("2 minutes")
      expect(yield* pool.countAvailable("github")).toBe(3)
    }))

  it.scoped("a revoked token's 401 invalidates it and the request is served by the next token", () =>
    Effect.gen(function*() {
      const { client, github, tokens, lifecycle } = yield* setup(2, () => ({ limit: 100 }))
      github.revoke(tokens[0]!)
      const response = yield* client.get(`${github.url}/repos/tessera/tessera`)
      expect(response.status).toBe(200)
      const info = yield* lifecycle.info("gh-0")
      expect(info.status).toBe("invalid")
      expect(info.invalidReason).toContain("401")
      for (let n = 0; n < 3; n++) yield* client.get(`${github.url}/repos/tessera/tessera`)
      expect(github.requests("api").filter((r) => r.headers["authorization"] === `Bearer ${tokens[0]}`)).toHaveLength(1)
    }))

  it.scoped("with every token invalid the client fails with NoUsableToken", () =>
    Effect.gen(function*() {
      const { client, github, tokens } = yield* setup(2, () => ({ limit: 100 }))
      tokens.forEach((token) => github.revoke(token))
      const error = yield* Effect.flip(client.get(`${github.url}/repos/tessera/tessera`))
      expect(error._tag).toBe("NoUsableToken")
    }))
})
