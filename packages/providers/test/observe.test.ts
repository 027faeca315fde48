import { describe, expect, it } from "@effect/vitest"
import { Source } from "@tessera/core"
import { Bitbucket, GitHub, GitLab } from "@tessera/providers"
import { FastCheck as fc, Option } from "effect"

/** Each provider with the header family it reports its rate limit in. */
const providers = [
  { name: "github", observe: GitHub.observe, prefix: "x-ratelimit-" },
  { name: "gitlab", observe: GitLab.observe, prefix: "ratelimit-" },
  { name: "bitbucket", observe: Bitbucket.observe, prefix: "x-ratelimit-" }
] as const

const provider = fc.constantFrom(...providers)
const now = fc.integer({ min: 0, max: 4_000_000_000_000 })
const notTooManyRequests = fc.integer({ min: 200, max: 599 }).filter((status) => status !== 429)

const quotaHeaders = (prefix: string, quota: { limit: number; remaining: number; reset: number }) => ({
  [`${prefix}limit`]: String(quota.limit),
  [`${prefix}remaining`]: String(quota.remaining),
  [`${prefix}reset`]: String(quota.reset)
})

const isLimited = (observation: Source.Observation) =>
  observation.verdict._tag === "rate_limited" || Option.exists(observation.rateLimit, (rateLimit) => rateLimit.limited)

describe("rate-limit observation, for every provider", () => {
  it.prop(
    "an answer other than 429 with requests remaining and no Retry-After never limits the token",
    [provider, notTooManyRequests, fc.integer({ min: 1, max: 100_000 }), fc.integer({ min: 0, max: 4_000_000_000 }), now],
    ([{ observe, prefix }, status, remaining, reset, at]) => {
      const observation = observe(status, quotaHeaders(prefix, { limit: remaining + 10, remaining, reset }), at)
      expect(isLimited(observation)).toBe(false)
      expect(Option.getOrThrow(observation.rateLimit).remaining).toBe(remaining)
    }
  )

  it.prop(
    "a 429 with Retry-After in seconds limits the token for exactly that long",
    [provider, fc.integer({ min: 0, max: 86_400 }), now],
    ([{ observe }, seconds, at]) => {
      const observation = observe(429, { "retry-after": String(seconds) }, at)
      expect(observation.verdict).toEqual({ _tag: "rate_limited", until: at + seconds * 1000, scope: "secondary" })
      expect(Option.getOrThrow(observation.rateLimit).resetAt).toBe(at + seconds * 1000)
    }
  )

  it.prop(
    "a 429 with nothing remaining and no Retry-After limits the token until the reported reset",
    [provider, fc.integer({ min: 1, max: 4_000_000_000 }), now],
    ([{ observe, prefix }, reset, at]) => {
      const observation = observe(429, quotaHeaders(prefix, { limit: 100, remaining: 0, reset }), at)
      expect(observation.verdict).toEqual({ _tag: "rate_limited", until: reset * 1000, scope: "primary" })
    }
  )

  it.prop(
    "GitHub reads any 403 as a limit exactly when it has Retry-After or nothing remaining",
    [fc.integer({ min: 0, max: 5000 }), fc.option(fc.integer({ min: 0, max: 3600 }), { nil: undefined }), now],
    ([remaining, retryAfter, at]) => {
      const headers = {
        ...quotaHeaders("x-ratelimit-", { limit: 5000, remaining, reset: 2_000_000_000 }),
        ...(retryAfter === undefined ? {} : { "retry-after": String(retryAfter) })
      }
      const verdict = GitHub.observe(403, headers, at).verdict
      expect(verdict._tag === "rate_limited").toBe(remaining === 0 || retryAfter !== undefined)
      if (retryAfter !== undefined) expect(verdict).toMatchObject({ scope: "secondary", until: at + retryAfter * 1000 })
    }
  )
})
