/**
 * The HTTP service end to end: the built `tessera serve` with two Upstox-style accounts (the
 * auth service knows one of them) and a GitHub pool, API keys from TESSERA_API_KEYS. It
 * starts with one account available and one missing with its error, recovers the missing one
 * in the background once the auth service knows it, keeps accounts, tokens, pool state and
 * keys across a restart, and exits 0 on SIGTERM.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { AuthService, GitHub, Upstox } from "../fakes/index.js"
import { tempDir, waitUntil } from "../lifecycle/harness.js"
import { call, requireBuild, serve } from "./harness.js"

const ADMIN_KEY = "e2e-admin-key-0123456789abcdef"
const APP_KEY = "e2e-app-key-0123456789abcdefgh"
const GH_TOKENS = ["ghp_e2e_pool_token_one_000000", "ghp_e2e_pool_token_two_000000"]

/** Polls `probe` until `done` holds for its answer. */
const eventually = <A>(probe: Effect.Effect<A>, done: (a: A) => boolean, timeoutMs = 15_000) =>
  Effect.gen(function*() {
    const started = Date.now()
    for (;;) {
      const value = yield* probe
      if (done(value)) return value
      if (Date.now() - started > timeoutMs) return value
      yield* Effect.promise(() => new Promise((resolve) => setTimeout(resolve, 100)))
    }
  })

describe("tessera serve: the HTTP API", () => {
  it.scopedLive("starts with one account missing, recovers it, keeps everything across a restart, and stops on SIGTERM with 0", () =>
    Effect.gen(function*() {
      yield* requireBuild
      const cwd = yield* tempDir
      const auth = yield* AuthService.make({ accounts: ["acc-1"] })
      const upstox = yield* Upstox.make()
      Upstox.linkAuthService(upstox, auth)
      const github = yield* GitHub.make()
      for (const token of GH_TOKENS) github.addToken(token)
      const env = {
        TOKEN_REFRESH_SERVICE_URL: auth.url,
        UPSTOX_ACCOUNT_IDS: "acc-1,acc-2",
        UPSTOX_API_URL: upstox.url,
        GITHUB_TOKENS: GH_TOKENS.join(","),
        GITHUB_API_URL: github.url,
        TESSERA_TIMEZONE: "Asia/Kolkata",
        API_RETRY_BASE_DELAY_MS: "100",
        API_RETRY_MAX_ATTEMPTS: "2",
        TESSERA_BACKGROUND_RETRY_MAX: "500ms",
        TESSERA_FLUSH_INTERVAL: "100ms"
      }

      // --- first run: keys from the environment ---------------------------------------------
      const first = yield* serve(cwd, { ...env, TESSERA_API_KEYS: `ops:admin:${ADMIN_KEY},app:read+token:${APP_KEY}` })
      const url = yield* first.url
      yield* waitUntil(() => first.output().includes("acc-2: missing"), 15_000)
      expect(first.output()).toContain("API keys registered: ops, app")

      const health = yield* call(url, "GET", "/health")
      expect(health.status).toBe(200)
      expect(health.json).toMatchObject({ status: "degraded", accounts: 4, tokens_available: 3 })
      expect(health.json.time_local).toMatch(/\+05:30$/)
      expect((yield* call(url, "GET", "/accounts")).status).toBe(401)

      const one = yield* call(url, "GET", "/accounts/acc-1/token/status", { key: APP_KEY })
      expect(one.json).toMatchObject({ account_id: "acc-1", status: "available", source: "startup" })
      const two = yield* call(url, "GET", "/accounts/acc-2/token/status", { key: APP_KEY })
      expect(two.json).toMatchObject({ account_id: "acc-2", status: "missing", has_token: false })
      expect(two.json.last_error.message).toContain("unknown account")

      // the auth service learns acc-2: the background retry fetches it
      auth.setAccount("acc-2")
      const recovered = yield* eventually(
        call(url, "GET", "/accounts/acc-2/token/status", { key: APP_KEY }),
        (answer) => answer.json?.status === "available"
      )
      expect(recovered.json).toMatchObject({ status: "available", last_error: null })
      expect((yield* call(url, "GET", "/accounts/acc-2/token", { key: APP_KEY })).json.access_token).toBe(auth.account("acc-2")!.token)

      // pool state: one GitHub token exhausted until an hour from now
      const pool = yield* call(url, "GET", "/pools/github/tokens", { key: APP_KEY })
      const limitedId = pool.json[0].account_id as string
      const resetAt = Math.ceil(Date.now() / 1000) + 3600
      const reported = yield* call(url, "POST", "/pools/github/report", {
        key: APP_KEY,
        body: { account_id: limitedId, status: 403, headers: { "x-ratelimit-remaining": "0", "x-ratelimit-reset": String(resetAt) } }
      })
      expect(reported.json.status).toBe("rate_limited")
      const leased = yield* call(url, "POST", "/pools/github/acquire", { key: APP_KEY })
      expect(leased.status).toBe(200)
      expect(leased.json.account_id).not.toBe(limitedId)
      expect((yield* call(url, "POST", "/accounts/acc-1/token/refresh", { key: APP_KEY })).status).toBe(403)

      const tokensBefore = {
        acc1: (yield* call(url, "GET", "/accounts/acc-1/token/status", { key: APP_KEY })).json.token_preview,
        acc2: (yield* call(url, "GET", "/accounts/acc-2/token/status", { key: APP_KEY })).json.token_preview
      }
      expect(yield* first.stop("SIGTERM")).toBe(0)
      expect(first.output()).toContain("tessera is stopping")

      // --- second run: no TESSERA_API_KEYS; the stored keys still guard the API -------------
      auth.resetCalls()
      const second = yield* serve(cwd, env)
      const url2 = yield* second.url
      yield* waitUntil(() => second.output().includes("acc-2: available"), 15_000)
      expect(second.output()).toContain("API keys are required")
      expect((yield* call(url2, "GET", "/accounts")).status).toBe(401)
      const accounts = yield* call(url2, "GET", "/accounts", { key: ADMIN_KEY })
      expect(accounts.json.map((a: any) => a.account_id).sort()).toHaveLength(4)
      const restored1 = (yield* call(url2, "GET", "/accounts/acc-1/token/status", { key: APP_KEY })).json
      const restored2 = (yield* call(url2, "GET", "/accounts/acc-2/token/status", { key: APP_KEY })).json
      expect(restored1).toMatchObject({ status: "available", source: "restored", token_preview: tokensBefore.acc1 })
      expect(restored2).toMatchObject({ status: "available", source: "restored", token_preview: tokensBefore.acc2 })
      expect(auth.calls("token")).toBe(0)
      const limited = (yield* call(url2, "GET", `/accounts/${limitedId}/token/status`, { key: APP_KEY })).json
      expect(limited).toMatchObject({ status: "rate_limited", rate_limit: { remaining: 0 } })
      expect(limited.rate_limit.reset_at).toBe(new Date(resetAt * 1000).toISOString())
      const pools = (yield* call(url2, "GET", "/pools", { key: APP_KEY })).json
      expect(pools.find((p: any) => p.pool === "github")).toMatchObject({ total: 2, available: 1, rate_limited: 1 })
      const audit = (yield* call(url2, "GET", "/audit?limit=200", { key: ADMIN_KEY })).json as Array<any>
      expect(audit.some((e) => e.type === "acquired" && e.actor === "app")).toBe(true)
      expect(audit.some((e) => e.outcome === "denied" && e.actor === "app")).toBe(true)

      expect(yield* second.stop("SIGTERM")).toBe(0)
      const output = first.output() + second.output()
      for (const secret of [ADMIN_KEY, APP_KEY, ...GH_TOKENS, auth.account("acc-1")!.token, auth.account("acc-2")!.token]) {
        expect(output).not.toContain(secret)
      }
    }), { timeout: 90_000 })

  it.scopedLive("asked to listen beyond loopback without keys, it refuses with one line and a non-zero status", () =>
    Effect.gen(function*() {
      yield* requireBuild
      const cwd = yield* tempDir
      const refused = yield* serve(cwd, { TESSERA_HOST: "0.0.0.0" })
      yield* waitUntil(() => refused.exited(), 15_000)
      const code = yield* refused.stop("SIGTERM")
      expect(code).not.toBe(0)
      const lines = refused.output().trim().split("\n")
      expect(lines[lines.length - 1]).toBe(
        "tessera: refusing to listen on 0.0.0.0 without API keys: set TESSERA_API_KEYS (name:scope[+scope]:key) or TESSERA_HOST=127.0.0.1"
      )
    }), { timeout: 30_000 })
})
