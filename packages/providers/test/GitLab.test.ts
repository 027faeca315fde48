import { describe, expect, it } from "@effect/vitest"
import { GitLab } from "@tessera/providers"
import { Option } from "effect"

const now = 1_700_000_000_000
const reset = 1_700_000_060

const quota = (remaining: number, extra: Record<string, string> = {}) => ({
  "ratelimit-limit": "2000",
  "ratelimit-remaining": String(remaining),
  "ratelimit-reset": String(reset),
  "ratelimit-observed": String(2000 - remaining),
  ...extra
})

describe("GitLab.observe", () => {
  it("reads RateLimit-Limit, -Remaining and -Reset (epoch seconds)", () => {
    const observation = GitLab.observe(200, quota(1999), now)
    expect(observation.verdict).toEqual({ _tag: "ok" })
    expect(Option.getOrThrow(observation.rateLimit)).toMatchObject({
      limit: 2000,
      remaining: 1999,
      resetAt: reset * 1000,
      limited: false
    })
  })

  it("reads 429 with Retry-After as a limit for that many seconds", () => {
    const observation = GitLab.observe(429, quota(0, { "retry-after": "42" }), now)
    expect(observation.verdict).toEqual({ _tag: "rate_limited", until: now + 42_000, scope: "secondary" })
    expect(Option.getOrThrow(observation.rateLimit)).toMatchObject({ limit: 2000, remaining: 0, limited: true })
  })

  it("reads 429 without Retry-After but with nothing remaining as a limit until RateLimit-Reset", () => {
    expect(GitLab.observe(429, quota(0), now).verdict).toEqual({ _tag: "rate_limited", until: reset * 1000, scope: "primary" })
  })

  it("does not take a 403 for a rate limit", () => {
    expect(GitLab.observe(403, quota(0), now).verdict).toEqual({ _tag: "rejected" })
  })

  it("ignores GitHub's header names", () => {
    expect(Option.isNone(GitLab.observe(200, { "x-ratelimit-remaining": "5" }, now).rateLimit)).toBe(true)
  })
})
