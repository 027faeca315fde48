import { describe, expect, it } from "@effect/vitest"
import { Source } from "@tessera/core"
import { Bitbucket } from "@tessera/providers"
import { Option } from "effect"

const now = 1_700_000_000_000

describe("Bitbucket.observe", () => {
  it("reads a bare 429 as a limit for the default minute", () => {
    const observation = Bitbucket.observe(429, {}, now)
    expect(observation.verdict).toEqual({ _tag: "rate_limited", until: now + Source.DEFAULT_LIMIT_MS, scope: "secondary" })
    expect(Option.getOrThrow(observation.rateLimit)).toMatchObject({ remaining: 0, resetAt: now + 60_000, limited: true })
  })

  it("reads 429 with Retry-After in seconds", () => {
    expect(Bitbucket.observe(429, { "retry-after": "5" }, now).verdict).toEqual({
      _tag: "rate_limited",
      until: now + 5_000,
      scope: "secondary"
    })
  })

  it("reads 429 with Retry-After as an HTTP date", () => {
    const at = new Date(now + 90_000).toUTCString()
    expect(Bitbucket.observe(429, { "retry-after": at }, now).verdict).toMatchObject({ until: now + 90_000 })
  })

  it("reads X-RateLimit-* when they are sent", () => {
    const headers = { "x-ratelimit-limit": "1000", "x-ratelimit-remaining": "999", "x-ratelimit-reset": "1700003600" }
    expect(Option.getOrThrow(Bitbucket.observe(200, headers, now).rateLimit)).toMatchObject({
      limit: 1000,
      remaining: 999,
      resetAt: 1_700_003_600_000,
      limited: false
    })
  })

  it("reports no rate limit when they are not", () => {
    const observation = Bitbucket.observe(200, { "content-type": "application/json" }, now)
    expect(observation).toEqual({ verdict: { _tag: "ok" }, rateLimit: Option.none() })
  })

  it("reads 429 with nothing remaining and no Retry-After as a limit until X-RateLimit-Reset", () => {
    const headers = { "x-ratelimit-limit": "1000", "x-ratelimit-remaining": "0", "x-ratelimit-reset": "1700003600" }
    expect(Bitbucket.observe(429, headers, now).verdict).toEqual({
      _tag: "rate_limited",
      until: 1_700_003_600_000,
      scope: "primary"
    })
  })
})
