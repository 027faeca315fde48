import { describe, expect, it } from "@effect/vitest"
import { GitHub } from "@tessera/providers"
import { Option } from "effect"

const now = 1_700_000_000_000
const reset = 1_700_000_900

const quota = (remaining: number, extra: Record<string, string> = {}) => ({
  "x-ratelimit-limit": "5000",
  "x-ratelimit-remaining": String(remaining),
  "x-ratelimit-reset": String(reset),
  "x-ratelimit-used": String(5000 - remaining),
  "x-ratelimit-resource": "core",
  ...extra
})

describe("GitHub.observe", () => {
  it("reads x-ratelimit-* of a successful answer, reset from epoch seconds to milliseconds", () => {
    const observation = GitHub.observe(200, quota(4321), now)
    expect(observation.verdict).toEqual({ _tag: "ok" })
    const rateLimit = Option.getOrThrow(observation.rateLimit)
    expect(rateLimit).toMatchObject({ limit: 5000, remaining: 4321, resetAt: reset * 1000, resource: "core", limited: false })
  })

  it("reads an exhausted quota on 403 as the primary limit until its reset", () => {
    const observation = GitHub.observe(403, quota(0), now)
    expect(observation.verdict).toEqual({ _tag: "rate_limited", until: reset * 1000, scope: "primary" })
    expect(Option.getOrThrow(observation.rateLimit)).toMatchObject({ remaining: 0, resetAt: reset * 1000, limited: true })
  })

  it("reads an exhausted quota on 429 as the primary limit too", () => {
    expect(GitHub.observe(429, quota(0), now).verdict).toEqual({ _tag: "rate_limited", until: reset * 1000, scope: "primary" })
  })

  it("reads 403 with retry-after as a secondary limit for that many seconds, whatever the quota says", () => {
    const observation = GitHub.observe(403, quota(4000, { "retry-after": "60" }), now)
    expect(observation.verdict).toEqual({ _tag: "rate_limited", until: now + 60_000, scope: "secondary" })
    expect(Option.getOrThrow(observation.rateLimit)).toMatchObject({
      limit: 5000,
      remaining: 4000,
      resetAt: now + 60_000,
      limited: true
    })
  })

  it("lets the secondary limit win when the primary quota is exhausted as well", () => {
    const observation = GitHub.observe(403, quota(0, { "retry-after": "30" }), now)
    expect(observation.verdict).toEqual({ _tag: "rate_limited", until: now + 30_000, scope: "secondary" })
  })

  it("reads retry-after given as an HTTP date", () => {
    const at = new Date(now + 120_000).toUTCString()
    expect(GitHub.observe(429, { "retry-after": at }, now).verdict).toEqual({
      _tag: "rate_limited",
      until: now + 120_000,
      scope: "secondary"
    })
  })

  it("reads a 403 that is neither limit as a refusal of the request, not of the token's quota", () => {
    const observation = GitHub.observe(403, quota(4000), now)
    expect(observation.verdict).toEqual({ _tag: "rejected" })
    expect(Option.getOrThrow(observation.rateLimit).limited).toBe(false)
  })

  it("reads 401 as unauthorized and 5xx as retryable", () => {
    expect(GitHub.observe(401, {}, now).verdict).toEqual({ _tag: "unauthorized" })
    expect(GitHub.observe(502, quota(10), now).verdict).toEqual({ _tag: "retryable" })
  })

  it("marks a token whose successful answer used the last request as limited until the reset", () => {
    const observation = GitHub.observe(200, quota(0), now)
    expect(observation.verdict).toEqual({ _tag: "ok" })
    expect(Option.getOrThrow(observation.rateLimit)).toMatchObject({ remaining: 0, resetAt: reset * 1000, limited: true })
  })

  it("derives remaining from used when only limit and used are given", () => {
    const observation = GitHub.observe(200, { "x-ratelimit-limit": "60", "x-ratelimit-used": "45" }, now)
    expect(Option.getOrThrow(observation.rateLimit)).toMatchObject({ limit: 60, remaining: 15 })
  })

  it("reports no rate limit for an answer without the headers, and ignores unreadable values", () => {
    expect(Option.isNone(GitHub.observe(200, {}, now).rateLimit)).toBe(true)
    expect(Option.isNone(GitHub.observe(200, { "x-ratelimit-remaining": "lots" }, now).rateLimit)).toBe(true)
  })
})
