import { describe, expect, it } from "@effect/vitest"
import { Account, Crypto, Events, Lifecycle, Source, Token, TokenPool, TokenStore } from "@tessera/core"
import { Effect, Layer, Option, Redacted, Schema } from "effect"

/**
 * An embedding application's own upstream: its tokens report quota in `x-acme-quota-left`
 * and `x-acme-quota-reset` (epoch ms), and a token is valid when it starts with `acme_`.
 */
const acme: Source.Provider = {
  id: "acme",
  validate: (token) =>
    Effect.succeed(
      Redacted.value(token).startsWith("acme_")
        ? { valid: true, reason: "ok", upstreamStatus: 200, username: "acme-bot" }
        : { valid: false, reason: "not an acme token", upstreamStatus: 401 }
    ),
  observe: (status, headers, now) => {
    const left = Number(headers["x-acme-quota-left"] ?? NaN)
    const reset = Number(headers["x-acme-quota-reset"] ?? NaN)
    if (Number.isNaN(left)) return Source.observeGeneric(status, headers, now)
    return {
      verdict: left === 0 ? { _tag: "rate_limited", until: reset, scope: "primary" } : { _tag: "ok" },
      rateLimit: Option.some(new Token.RateLimit({ remaining: left, resetAt: reset, limited: left === 0 }))
    }
  }
}

const layer = Lifecycle.layer.pipe(
  Layer.provideMerge(Events.layer),
  Layer.provideMerge(Source.layer({ providers: [acme] })),
  Layer.provideMerge(TokenStore.layerMemory),
  Layer.provide(Crypto.layerRandom)
)

const account = (id: string) =>
  new Account.NewAccount({ id: Schema.decodeSync(Account.AccountId)(id), provider: "acme", source: new Account.StaticSource() })

describe("a provider registered by an embedding application", () => {
  it.scoped("validates its tokens and reads its own rate-limit headers into the pool", () =>
    Effect.gen(function*() {
      const lifecycle = yield* Lifecycle.Lifecycle
      const pool = yield* TokenPool.TokenPool
      yield* lifecycle.add(account("a1"), { token: Redacted.make("acme_token_one_1234") })
      yield* lifecycle.add(account("a2"), { token: Redacted.make("acme_token_two_1234") })
      const rejected = yield* Effect.flip(lifecycle.update("a1", Redacted.make("other_token_1234")))
      expect(rejected._tag).toBe("TokenRejected")
      expect((yield* lifecycle.validate("a1")).valid).toBe(true)
      expect((yield* lifecycle.info("a1")).username).toBe("acme-bot")
      yield* pool.report("acme", { accountId: "a1", status: 200, headers: { "x-acme-quota-left": "0", "x-acme-quota-reset": "90000" } })
      expect((yield* lifecycle.info("a1")).status).toBe("rate_limited")
      const leases = yield* Effect.forEach([1, 2, 3], () => pool.acquire("acme"))
      expect(leases.map((lease) => lease.accountId)).toEqual(["a2", "a2", "a2"])
    }).pipe(Effect.provide(layer)))
})
