/**
 * The pool routes (SPEC §3, §6) over a GitHub pool of three static tokens: least recently
 * used rotation, reports read back into rate limits, 429 with Retry-After when every token is
 * limited (or a bounded wait), 503 when none is usable, adding tokens.
 */
import { describe, expect, it } from "@effect/vitest"
import { Static } from "@tessera/providers"
import { Effect, Redacted } from "effect"
import * as H from "./harness.js"

const acquire = (running: H.Running, query = "") =>
  H.call(running, "POST", `/pools/github/acquire${query}`, { key: running.keys.token })

/** GitHub's answer to an exhausted quota, with header names as a client may spell them. */
const exhausted = (accountId: string, resetAt: number) => ({
  account_id: accountId,
  status: 403,
  headers: {
    "X-RateLimit-Limit": "5000",
    "X-RateLimit-Remaining": "0",
    "X-RateLimit-Reset": String(Math.ceil(resetAt / 1000)),
    "X-RateLimit-Resource": "core"
  }
})

const report = (running: H.Running, body: unknown) => H.call(running, "POST", "/pools/github/report", { key: running.keys.token, body })

describe("pool routes", () => {
  it.scopedLive("acquire hands the tokens out least recently used first, in rotation", () =>
    Effect.gen(function*() {
      const running = yield* H.start()
      const handed: Array<string> = []
      for (let i = 0; i < 6; i++) {
        const answer = yield* acquire(running)
        expect(answer.status).toBe(200)
        expect(answer.json).toMatchObject({ expires_at: null, rate_limit: null })
        handed.push(answer.json.account_id)
        expect(answer.json.access_token).toBe(H.GH_TOKENS[Number(answer.json.account_id.slice(3)) - 1])
      }
      expect(new Set(handed.slice(0, 3)).size).toBe(3)
      expect(handed.slice(3)).toEqual(handed.slice(0, 3))
    }))

  it.scopedLive("a report of an exhausted quota takes the token out of rotation until its reset; header names may be in any case", () =>
    Effect.gen(function*() {
      const running = yield* H.start()
      const resetAt = Date.now() + 3_600_000
      const reported = yield* report(running, exhausted("gh-1", resetAt))
      expect(reported.status).toBe(200)
      expect(reported.json).toMatchObject({ account_id: "gh-1", status: "rate_limited", rate_limit: { limit: 5000, remaining: 0, resource: "core" } })
      expect(reported.json.rate_limit.reset_at).toBe(new Date(Math.ceil(resetAt / 1000) * 1000).toISOString())
      expect(reported.json.rate_limit.reset_at_local).toMatch(/\+05:30$/)
      for (let i = 0; i < 4; i++) expect((yield* acquire(running)).json.account_id).not.toBe("gh-1")
      const pools = yield* H.call(running, "GET", "/pools", { key: running.keys.read })
      expect(pools.json.find((p: any) => p.pool === "github")).toMatchObject({
        provider: "github",
        total: 3,
        available: 2,
        rate_limited: 1,
        invalid: 0
      })
    }))

  it.scopedLive("every token limited: 429 with Retry-After and retry_at of the earliest reset; ?wait= waits for it", () =>
    Effect.gen(function*() {
      const running = yield* H.start()
      const now = Date.now()
      yield* report(running, exhausted("gh-1", now + 3_600_000))
      yield* report(running, exhausted("gh-2", now + 7_200_000))
      // a secondary limit for one second: the earliest reset
      const secondary = yield* report(running, { account_id: "gh-3", status: 429, headers: { "Retry-After": "1" } })
      expect(secondary.json.status).toBe("rate_limited")
      const limited = yield* acquire(running)
      expect(H.isError(limited, 429, "pool_exhausted")).toBe(true)
      const retryAt = Date.parse(limited.json.retry_at)
      expect(retryAt).toBeGreaterThan(now)
      expect(retryAt).toBeLessThan(now + 5_000)
      expect(limited.json.retry_at_local).toMatch(/\+05:30$/)
      expect(Number(limited.headers.get("retry-after"))).toBe(1)

      const started = Date.now()
      const waited = yield* acquire(running, "?wait=5s")
      expect(waited.status).toBe(200)
      expect(waited.json.account_id).toBe("gh-3")
      expect(Date.now() - started).toBeGreaterThan(300)

      const metrics = yield* H.call(running, "GET", "/metrics", { key: running.keys.read })
      expect(metrics.text).toContain(`tessera_http_acquires_total{pool="github",outcome="exhausted"} 1`)
      expect(metrics.text).toContain(`tessera_http_acquires_total{pool="github",outcome="success"} 1`)
    }))

  it.scopedLive("no usable token: every token refused (401) makes the pool answer 503", () =>
    Effect.gen(function*() {
      const running = yield* H.start()
      for (const id of ["gh-1", "gh-2", "gh-3"]) {
        const answer = yield* report(running, { account_id: id, status: 401, headers: {} })
        expect(answer.json).toMatchObject({ status: "invalid" })
      }
      expect(H.isError(yield* acquire(running), 503, "no_usable_token")).toBe(true)
      expect(H.isError(yield* H.call(running, "POST", "/pools/nowhere/acquire", { key: running.keys.token }), 404, "pool_not_found"))
        .toBe(true)
    }))

  it.scopedLive("a report names the account by id or by token; an unknown token is 404, neither 400", () =>
    Effect.gen(function*() {
      const running = yield* H.start()
      const byToken = yield* report(running, {
        access_token: H.GH_TOKENS[1],
        status: 200,
        headers: { "x-ratelimit-limit": 5000, "x-ratelimit-remaining": 4321, "x-ratelimit-reset": Math.ceil(Date.now() / 1000) + 3600 }
      })
      expect(byToken.json).toMatchObject({ account_id: "gh-2", status: "available", rate_limit: { remaining: 4321, limit: 5000 } })
      expect(byToken.text).not.toContain(H.GH_TOKENS[1])
      expect(H.isError(yield* report(running, { access_token: "ghp_not_in_the_pool_000000", status: 200 }), 404, "account_not_found"))
        .toBe(true)
      expect(H.isError(yield* report(running, { status: 200 }), 400, "invalid_report")).toBe(true)
    }))

  it.scopedLive("POST /pools/{pool}/tokens adds a static token (201) that joins the rotation; twice is 409", () =>
    Effect.gen(function*() {
      const running = yield* H.start()
      const token = "ghp_brand_new_pool_token_42"
      const added = yield* H.call(running, "POST", "/pools/github/tokens", { key: running.keys.admin, body: { access_token: token, label: "ci" } })
      expect(added.status).toBe(201)
      const id = Static.accountId("github", Redacted.make(token))
      expect(added.json).toMatchObject({ account_id: id, provider: "github", pool: "github", status: "available", source: "static" })
      expect(added.text).not.toContain(token)
      const twice = yield* H.call(running, "POST", "/pools/github/tokens", { key: running.keys.admin, body: { access_token: token } })
      expect(H.isError(twice, 409, "account_exists")).toBe(true)
      const listed = yield* H.call(running, "GET", "/pools/github/tokens", { key: running.keys.read })
      expect(listed.json.map((i: any) => i.account_id).sort()).toEqual(["gh-1", "gh-2", "gh-3", id].sort())
      const handed = new Set<string>()
      for (let i = 0; i < 4; i++) handed.add((yield* acquire(running)).json.account_id)
      expect(handed.has(id)).toBe(true)
      // a new pool named after a provider is created; one that is not is refused
      const gitlab = yield* H.call(running, "POST", "/pools/gitlab/tokens", { key: running.keys.admin, body: { access_token: "glpat-first-token-0123456" } })
      expect(gitlab.json).toMatchObject({ provider: "gitlab", pool: "gitlab" })
      const unknown = yield* H.call(running, "POST", "/pools/Team.A/tokens", { key: running.keys.admin, body: { access_token: "tok_0123456789abcdef" } })
      expect(H.isError(unknown, 400, "unknown_pool")).toBe(true)
    }))
})
