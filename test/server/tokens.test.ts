/**
 * The token routes (SPEC §6) against the Upstox-style fakes: token info in snake_case with
 * local times, manual updates accepted and rejected (422, the old token stays), validation,
 * refreshes of the default account, raw tokens, clearing, health.
 */
import { describe, expect, it } from "@effect/vitest"
import { Errors } from "@tessera/core"
import { Effect, Option } from "effect"
import * as H from "./harness.js"

const TOKEN_INFO_FIELDS = [
  "account_id", "provider", "pool", "status", "has_token", "token_preview", "expires_at", "expires_at_local",
  "expires_in_seconds", "issued_at", "source", "last_refreshed_at", "last_used_at", "username", "last_error", "rate_limit"
]

describe("token routes", () => {
  it.scopedLive("token info: every field of the contract in snake_case, UTC beside local time with its offset, never the token", () =>
    Effect.gen(function*() {
      const running = yield* H.start()
      const answer = yield* H.call(running, "GET", "/accounts/acc-1/token/status", { key: running.keys.read })
      expect(answer.status).toBe(200)
      const info = answer.json
      for (const field of TOKEN_INFO_FIELDS) expect(info, field).toHaveProperty(field)
      expect(info).toMatchObject({ account_id: "acc-1", provider: "upstox", pool: "upstox", status: "available", has_token: true, last_error: null })
      const token = running.fakes.auth.account("acc-1")!.token
      expect(answer.text).not.toContain(token)
      expect(info.token_preview).toBe(`${token.slice(0, 4)}…${token.slice(-4)}`)
      expect(info.expires_at).toBe(running.fakes.auth.account("acc-1")!.expiresAt.toISOString())
      expect(info.expires_at_local).toMatch(/\+05:30$/)
      expect(Date.parse(info.expires_at_local)).toBe(Date.parse(info.expires_at))
      expect(info.expires_in_seconds).toBeGreaterThan(86_000)
    }))

  it.scopedLive("an update the upstream accepts replaces the token; one it rejects is 422 with its reason and the old token stays", () =>
    Effect.gen(function*() {
      const running = yield* H.start()
      const { upstox } = running.fakes
      const old = (yield* H.call(running, "GET", "/accounts/acc-1/token", { key: running.keys.token })).json.access_token

      const rejected = yield* H.call(running, "POST", "/accounts/acc-1/token/update", {
        key: running.keys.admin,
        body: { access_token: "ups_forged_token_00000000000" }
      })
      expect(H.isError(rejected, 422, "token_rejected")).toBe(true)
      expect(rejected.json.error.message).toContain("Invalid token used to access API")
      expect(rejected.json.upstream_status).toBe(401)
      expect(rejected.text).not.toContain("ups_forged_token_00000000000")
      expect((yield* H.call(running, "GET", "/accounts/acc-1/token", { key: running.keys.token })).json.access_token).toBe(old)

      upstox.allow("ups_manual_token_11111111111")
      const accepted = yield* H.call(running, "POST", "/accounts/acc-1/token/update", {
        key: running.keys.admin,
        body: { access_token: "ups_manual_token_11111111111", expires_at: "2099-01-02T08:00:00+05:30" }
      })
      expect(accepted.status).toBe(200)
      expect(accepted.json).toMatchObject({ source: "manual", expires_at: "2099-01-02T02:30:00.000Z", expires_at_local: "2099-01-02T08:00:00.000+05:30" })
      expect(accepted.text).not.toContain("ups_manual_token_11111111111")
      expect((yield* H.call(running, "GET", "/accounts/acc-1/token", { key: running.keys.token })).json.access_token)
        .toBe("ups_manual_token_11111111111")
    }))

  it.scopedLive("?validate=false skips the upstream; an expiry without an offset is read in the configured zone", () =>
    Effect.gen(function*() {
      const running = yield* H.start()
      const calls = running.fakes.upstox.calls("profile")
      const answer = yield* H.call(running, "POST", "/accounts/acc-2/token/update?validate=false", {
        key: running.keys.admin,
        body: { access_token: "ups_unchecked_token_2222222", expires_at: "2099-03-04T10:00:00" }
      })
      expect(answer.status).toBe(200)
      expect(answer.json.expires_at).toBe("2099-03-04T04:30:00.000Z")
      expect(running.fakes.upstox.calls("profile")).toBe(calls)
    }))

  it.scopedLive("validate asks the upstream: valid, and after the upstream revokes the token, invalid with its reason", () =>
    Effect.gen(function*() {
      const running = yield* H.start()
      const ok = yield* H.call(running, "GET", "/accounts/acc-1/token/validate", { key: running.keys.read })
      expect(ok.status).toBe(200)
      expect(ok.json).toMatchObject({ account_id: "acc-1", valid: true, upstream_status: 200 })
      expect(ok.json.checked_at_local).toMatch(/\+05:30$/)
      running.fakes.upstox.revoke(running.fakes.auth.account("acc-1")!.token)
      const bad = yield* H.call(running, "GET", "/accounts/acc-1/token/validate", { key: running.keys.read })
      expect(bad.json).toMatchObject({ account_id: "acc-1", valid: false, upstream_status: 401 })
      expect(bad.json.reason).toContain("Invalid token")
    }))

  it.scopedLive("/refresh-token and the unscoped routes act on INTERNAL_API_ACCOUNT_ID", () =>
    Effect.gen(function*() {
      const running = yield* H.start({ config: { defaultAccount: Option.some("acc-2") } })
      const { auth } = running.fakes
      const before = auth.account("acc-2")!.token
      const refreshed = yield* H.call(running, "POST", "/refresh-token", { key: running.keys.admin })
      expect(refreshed.status).toBe(200)
      expect(refreshed.json).toMatchObject({ account_id: "acc-2", source: "refresh", status: "available" })
      expect(auth.calls("refresh")).toBe(1)
      expect(auth.account("acc-2")!.token).not.toBe(before)
      expect((yield* H.call(running, "GET", "/token/status", { key: running.keys.read })).json.account_id).toBe("acc-2")
      expect((yield* H.call(running, "GET", "/token/validate", { key: running.keys.read })).json.account_id).toBe("acc-2")
      // the body may name another account
      const other = yield* H.call(running, "POST", "/token/update?validate=false", {
        key: running.keys.admin,
        body: { access_token: "ups_for_account_one_3333333", account_id: "acc-1" }
      })
      expect(other.json.account_id).toBe("acc-1")
    }))

  it.scopedLive("the default account is the only account, else the first declared one; with none the routes are 404", () =>
    Effect.gen(function*() {
      const none = yield* H.start({ accounts: false })
      expect(H.isError(yield* H.call(none, "GET", "/token/status", { key: none.keys.read }), 404, "no_accounts")).toBe(true)
      yield* Effect.orDie(none.lifecycle.add(H.remote("acc-2")))
      expect((yield* H.call(none, "GET", "/token/status", { key: none.keys.read })).json.account_id).toBe("acc-2")

      const declared = yield* H.start({ accounts: false, declared: [{ account: H.remote("acc-2") }, { account: H.remote("acc-1") }] })
      expect((yield* declared.lifecycle.accounts).length).toBe(2)
      expect((yield* H.call(declared, "GET", "/token/status", { key: declared.keys.read })).json.account_id).toBe("acc-2")
    }))

  it.scopedLive("GET /accounts/{id}/token hands out the raw token; DELETE clears it; the next GET obtains a new one", () =>
    Effect.gen(function*() {
      const running = yield* H.start()
      const { auth } = running.fakes
      const raw = yield* H.call(running, "GET", "/accounts/acc-1/token", { key: running.keys.token })
      expect(raw.json).toMatchObject({ account_id: "acc-1", access_token: auth.account("acc-1")!.token })
      expect(raw.json.expires_at_local).toMatch(/\+05:30$/)
      const cleared = yield* H.call(running, "DELETE", "/accounts/acc-1/token", { key: running.keys.admin })
      expect(cleared.json).toMatchObject({ status: "missing", has_token: false, token_preview: null })
      const health = yield* H.call(running, "GET", "/health")
      expect(health.json).toMatchObject({ status: "degraded", accounts: 5, tokens_available: 4 })
      const calls = auth.calls("token")
      const again = yield* H.call(running, "GET", "/accounts/acc-1/token", { key: running.keys.token })
      expect(again.status).toBe(200)
      expect(auth.calls("token")).toBe(calls + 1)
      expect((yield* H.call(running, "GET", "/health")).json.status).toBe("ok")
    }))

  it.scopedLive("a token the source cannot renew: refreshing a static account is 409; an auth service that is down is 502", () =>
    Effect.gen(function*() {
      const running = yield* H.start()
      expect(H.isError(yield* H.call(running, "POST", "/accounts/gh-1/token/refresh", { key: running.keys.admin }), 409, "operation_unsupported"))
        .toBe(true)
      running.fakes.auth.down("unavailable")
      const down = yield* H.call(running, "POST", "/accounts/acc-1/token/refresh", { key: running.keys.admin })
      expect(H.isError(down, 502, "upstream_error")).toBe(true)
      // the still-valid token is kept and served
      expect((yield* H.call(running, "GET", "/accounts/acc-1/token/status", { key: running.keys.read })).json.status).toBe("available")
    }), { timeout: 30_000 })

  it.scopedLive("GET /health: ok with counts and times, no key needed; 503 when the store cannot be used", () =>
    Effect.gen(function*() {
      let broken = false
      const running = yield* H.start({
        serverStore: (store) => ({
          ...store,
          ping: Effect.suspend(() => broken ? Effect.fail(new Errors.StoreError({ operation: "ping", detail: "disk I/O error" })) : store.ping)
        })
      })
      const ok = yield* H.call(running, "GET", "/health")
      expect(ok.json).toMatchObject({ status: "ok", accounts: 5, tokens_available: 5 })
      expect(ok.json.time_local).toMatch(/\+05:30$/)
      broken = true
      const down = yield* H.call(running, "GET", "/health")
      expect(down.status).toBe(503)
      expect(down.json).toMatchObject({ status: "unavailable", error: { code: "unhealthy" } })
      expect(down.text).not.toContain("disk I/O error")
    }))
})
