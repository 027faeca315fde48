import { describe, expect, it } from "@effect/vitest"
import { Token } from "@tessera/core"
import { Effect, FastCheck as fc, Option, Redacted } from "effect"
import type { AccountId } from "../src/Account.js"

const account = { id: "acc-1" as AccountId, provider: "github", pool: "github" }
const NOW = 1_800_000_000_000

/** A state at NOW: a token or none, expiring around NOW or never, rate-limited or not, invalid or not. */
const states = fc.record({
  token: fc.boolean(),
  expiresIn: fc.option(fc.oneof(fc.integer({ min: -5_000, max: 5_000 }), fc.double({ min: -5_000, max: 5_000, noNaN: true }))),
  invalid: fc.boolean(),
  rateLimit: fc.option(fc.record({
    limited: fc.boolean(),
    remaining: fc.option(fc.integer({ min: 0, max: 2 }), { nil: undefined }),
    resetIn: fc.option(fc.oneof(fc.integer({ min: -5_000, max: 5_000 }), fc.double({ min: -5_000, max: 5_000, noNaN: true })), {
      nil: undefined
    })
  }))
}).map(({ expiresIn, invalid, rateLimit, token }): Token.TokenState => ({
  ...Token.emptyState,
  token: token
    ? Option.some({
      token: Redacted.make("ghp_0123456789abcdef"),
      expiresAt: Option.map(Option.fromNullable(expiresIn), (ms) => NOW + ms),
      issuedAt: NOW - 60_000,
      origin: "obtain" as const
    })
    : Option.none(),
  invalid: invalid ? Option.some({ reason: "revoked", at: NOW - 1 }) : Option.none(),
  rateLimit: Option.map(Option.fromNullable(rateLimit), (rl) =>
    new Token.RateLimit({
      limited: rl.limited,
      remaining: rl.remaining,
      resetAt: rl.resetIn === undefined ? undefined : NOW + rl.resetIn
    }))
}))

describe("Token.infoSteadyUntil", () => {
  it.effect.prop(
    "an info read at any whole millisecond before it reads as it did at the start",
    [states, fc.integer({ min: 0, max: 1_000_000 })],
    ([state, offset]) =>
      Effect.sync(() => {
        const until = Token.infoSteadyUntil(state, NOW)
        expect(until === Infinity || (Number.isInteger(until) && until > NOW)).toBe(true)
        const at = NOW + (until === Infinity ? offset : offset % (until - NOW))
        expect(Token.info(account, state, at)).toEqual(Token.info(account, state, NOW))
      }),
    { fastCheck: { numRuns: 500 } }
  )

  it("ends at the countdown's next second, at expiry, and at a rate limit's reset", () => {
    const expiring = (ms: number): Token.TokenState => ({
      ...Token.emptyState,
      token: Option.some({ token: Redacted.make("ghp_0123456789abcdef"), expiresAt: Option.some(NOW + ms), issuedAt: NOW, origin: "obtain" })
    })
    expect(Token.infoSteadyUntil(expiring(2_500), NOW)).toBe(NOW + 501)
    expect(Token.info(account, expiring(2_500), NOW + 500).expiresInSeconds).toBe(2)
    expect(Token.info(account, expiring(2_500), NOW + 501).expiresInSeconds).toBe(1)
    expect(Token.infoSteadyUntil(expiring(700), NOW)).toBe(NOW + 700)
    expect(Token.info(account, expiring(700), NOW + 699).status).toBe("available")
    expect(Token.info(account, expiring(700), NOW + 700).status).toBe("expired")
    expect(Token.infoSteadyUntil(expiring(-1), NOW)).toBe(Infinity)
    const limited: Token.TokenState = {
      ...expiring(3_600_500),
      rateLimit: Option.some(new Token.RateLimit({ limited: true, resetAt: NOW + 42 }))
    }
    expect(Token.infoSteadyUntil(limited, NOW)).toBe(NOW + 42)
    expect(Token.infoSteadyUntil(Token.emptyState, NOW)).toBe(Infinity)
  })
})
