/**
 * API keys and scopes on every route (SPEC §4.5): no key 401, a key without the scope 403,
 * the right scope (or admin) 2xx; denials change nothing and are audited; an address that
 * keeps failing is answered 429; without keys the service is open on loopback only.
 */
import { describe, expect, it } from "@effect/vitest"
import { ApiKeys } from "@tessera/core"
import { Duration, Effect, Exit, Layer, Redacted, Schema } from "effect"
import * as H from "./harness.js"

type Scope = "read" | "token" | "admin"

interface Route {
  readonly method: string
  readonly path: string
  readonly scope: Scope
  readonly ok: number
  readonly body?: unknown
  /** A stream that stays open: only its status is read. */
  readonly stream?: boolean
}

/** Every route of SPEC §6 that needs a key, with a request that succeeds. */
const routes: ReadonlyArray<Route> = [
  { method: "GET", path: "/token/status", scope: "read", ok: 200 },
  { method: "GET", path: "/accounts/acc-1/token/status", scope: "read", ok: 200 },
  { method: "GET", path: "/token/validate", scope: "read", ok: 200 },
  { method: "GET", path: "/accounts/acc-1/token/validate", scope: "read", ok: 200 },
  { method: "POST", path: "/token/update?validate=false", scope: "admin", ok: 200, body: { access_token: "manual_token_for_default_0001" } },
  { method: "POST", path: "/accounts/acc-2/token/update?validate=false", scope: "admin", ok: 200, body: { access_token: "manual_token_for_acc2_00002" } },
  { method: "POST", path: "/refresh-token", scope: "admin", ok: 200 },
  { method: "POST", path: "/accounts/acc-1/token/refresh", scope: "admin", ok: 200 },
  { method: "GET", path: "/accounts/acc-1/token", scope: "token", ok: 200 },
  { method: "DELETE", path: "/accounts/acc-2/token", scope: "admin", ok: 200 },
  { method: "GET", path: "/accounts", scope: "read", ok: 200 },
  {
    method: "POST",
    path: "/accounts",
    scope: "admin",
    ok: 201,
    body: { account_id: "gh-new", provider: "github", source: { type: "static" }, access_token: "ghp_new_account_token_0123" }
  },
  { method: "DELETE", path: "/accounts/gh-3", scope: "admin", ok: 204 },
  { method: "GET", path: "/pools", scope: "read", ok: 200 },
  { method: "GET", path: "/pools/github/tokens", scope: "read", ok: 200 },
  { method: "POST", path: "/pools/github/tokens", scope: "admin", ok: 201, body: { access_token: "ghp_added_to_pool_0123456" } },
  { method: "POST", path: "/pools/github/acquire", scope: "token", ok: 200 },
  { method: "POST", path: "/pools/github/report", scope: "token", ok: 200, body: { account_id: "gh-1", status: 200, headers: {} } },
  { method: "GET", path: "/events", scope: "read", ok: 200, stream: true },
  { method: "GET", path: "/metrics", scope: "read", ok: 200 },
  { method: "GET", path: "/audit", scope: "admin", ok: 200 }
]

const keyFor = (keys: H.Keys, scope: Scope) => scope === "admin" ? keys.admin : scope === "read" ? keys.read : keys.token

/** The keys that lack `scope`. */
const wrongKeys = (keys: H.Keys, scope: Scope) =>
  (["read", "token", "admin"] as const).filter((s) => s !== scope && s !== "admin").map((s) => keyFor(keys, s))

const send = (running: H.Running, route: Route, key?: string) =>
  route.stream === true
    ? Effect.scoped(Effect.map(H.openStream(running, route.path, key), (stream) => ({ status: stream.status, json: undefined, text: "" })))
    : H.call(running, route.method, route.path, { key, body: route.body })

/** What a denial must leave as it was. */
const snapshot = (running: H.Running) =>
  Effect.gen(function*() {
    const infos = yield* running.lifecycle.list
    return infos.map((i) => `${i.accountId}:${i.status}:${i.tokenPreview}`).sort()
  })

describe("API keys and scopes", () => {
  it.scopedLive("every route: no key 401, a key without the scope 403, the right scope 2xx; denials change nothing", () =>
    Effect.gen(function*() {
      // the matrix fails to authenticate on purpose, far more often than the throttle allows
      const running = yield* H.start({ config: { authFailureLimit: 1000 } })
      const before = yield* snapshot(running)
      for (const route of routes) {
        const anonymous = yield* send(running, route)
        expect(anonymous.status, `${route.method} ${route.path} without a key`).toBe(401)
        if (!route.stream) expect(H.isError(anonymous as H.Answer, 401, "unauthorized")).toBe(true)
        const unknown = yield* send(running, route, "tsr_not_a_key_of_this_service_000")
        expect(unknown.status, `${route.method} ${route.path} with an unknown key`).toBe(401)
        for (const key of wrongKeys(running.keys, route.scope)) {
          const denied = yield* send(running, route, key)
          expect(denied.status, `${route.method} ${route.path} with a key lacking ${route.scope}`).toBe(403)
          if (!route.stream) expect(H.isError(denied as H.Answer, 403, "forbidden")).toBe(true)
        }
      }
      expect(yield* snapshot(running)).toEqual(before)

      for (const route of routes) {
        const allowed = yield* send(running, route, keyFor(running.keys, route.scope))
        expect(allowed.status, `${route.method} ${route.path} with a ${route.scope} key: ${allowed.text}`).toBe(route.ok)
      }
      // admin may do what read and token may
      for (const route of routes.filter((r) => r.scope !== "admin" && r.method === "GET")) {
        expect((yield* send(running, route, running.keys.admin)).status).toBe(route.ok)
      }
      expect((yield* H.call(running, "POST", "/pools/github/acquire", { key: running.keys.admin })).status).toBe(200)
      // /health needs no key
      expect((yield* H.call(running, "GET", "/health")).status).toBe(200)
    }), { timeout: 60_000 })

  it.scopedLive("denied requests are audited with the key's name (never the key), and the rest with the key as actor", () =>
    Effect.gen(function*() {
      const running = yield* H.start({ config: { authFailureLimit: 100 } })
      yield* H.call(running, "POST", "/accounts/acc-1/token/refresh")
      yield* H.call(running, "POST", "/accounts/acc-1/token/refresh", { key: running.keys.read })
      const refreshed = yield* H.call(running, "POST", "/accounts/acc-1/token/refresh", { key: running.keys.admin })
      expect(refreshed.status).toBe(200)
      const audit = yield* H.call(running, "GET", "/audit?account_id=acc-1&limit=10", { key: running.keys.admin })
      const entries = audit.json as Array<any>
      const denied = entries.filter((e) => e.outcome === "denied")
      expect(denied.map((e) => e.actor).sort()).toEqual(["anonymous", "reader"])
      expect(denied.find((e) => e.actor === "reader").detail).toContain("POST /accounts/acc-1/token/refresh refused (403)")
      expect(denied.find((e) => e.actor === "anonymous").data).toMatchObject({ status: 401, scope: "admin" })
      const done = entries.find((e) => e.type === "refreshed")
      expect(done).toMatchObject({ actor: "admin", outcome: "success", account_id: "acc-1" })
      for (const key of Object.values(running.keys)) expect(audit.text).not.toContain(key)
    }))

  it.scopedLive("acquiring through a key records the key's name as who acquired", () =>
    Effect.gen(function*() {
      const running = yield* H.start()
      expect((yield* H.call(running, "POST", "/pools/github/acquire", { key: running.keys.token })).status).toBe(200)
      yield* Effect.sleep("100 millis")
      const audit = yield* H.call(running, "GET", "/audit?limit=50", { key: running.keys.admin })
      expect((audit.json as Array<any>).find((e) => e.type === "acquired")).toMatchObject({ actor: "tokens", account_id: "gh-1" })
    }))

  it.scopedLive("a revoked key and a non-bearer scheme are refused", () =>
    Effect.gen(function*() {
      const running = yield* H.start()
      const basic = yield* H.call(running, "GET", "/accounts", {
        headers: { authorization: `Basic ${Buffer.from(`x:${running.keys.read}`).toString("base64")}` }
      })
      expect(H.isError(basic, 401, "unauthorized")).toBe(true)
      expect((yield* H.call(running, "GET", "/accounts", { key: running.keys.read })).status).toBe(200)
      yield* running.apiKeys.revoke("reader")
      expect(H.isError(yield* H.call(running, "GET", "/accounts", { key: running.keys.read }), 401)).toBe(true)
    }))

  it.scopedLive("an address that keeps failing is answered 429 with Retry-After, even with a good key, until the window passes", () =>
    Effect.gen(function*() {
      const running = yield* H.start({ config: { authFailureLimit: 3, authFailureWindow: Duration.seconds(1) } })
      for (let i = 0; i < 3; i++) {
        expect((yield* H.call(running, "GET", "/accounts", { key: `tsr_guess_number_${i}_0000000000` })).status).toBe(401)
      }
      const throttled = yield* H.call(running, "GET", "/accounts", { key: running.keys.read })
      expect(H.isError(throttled, 429, "too_many_attempts")).toBe(true)
      expect(Number(throttled.headers.get("retry-after"))).toBeGreaterThanOrEqual(1)
      expect(Date.parse(throttled.json.retry_at)).toBeGreaterThan(Date.now() - 1000)
      yield* Effect.sleep("1100 millis")
      expect((yield* H.call(running, "GET", "/accounts", { key: running.keys.read })).status).toBe(200)
      const metrics = yield* H.call(running, "GET", "/metrics", { key: running.keys.read })
      expect(metrics.text).toContain(`tessera_http_denied_total{status="401"} 3`)
      expect(metrics.text).toContain(`tessera_http_denied_total{status="429"} 1`)
    }))

  it.scopedLive("without any key the API is open on loopback and the caller is 'local'", () =>
    Effect.gen(function*() {
      const running = yield* H.start({ keys: false })
      expect((yield* H.call(running, "GET", "/accounts/acc-1/token/status")).status).toBe(200)
      expect((yield* H.call(running, "POST", "/accounts/acc-1/token/refresh")).status).toBe(200)
      const audit = yield* H.call(running, "GET", "/audit?account_id=acc-1&limit=1")
      expect(audit.json[0]).toMatchObject({ type: "refreshed", actor: "local" })
      // a key created while it runs closes it
      const created = yield* running.apiKeys.create(Schema.decodeSync(ApiKeys.ApiKeyName)("late"), ["read"])
      expect((yield* H.call(running, "GET", "/accounts")).status).toBe(401)
      expect((yield* H.call(running, "GET", "/accounts", { key: Redacted.value(created.secret) })).status).toBe(200)
    }))

  it.scoped("refuses to listen beyond loopback without keys, and does with them", () =>
    Effect.gen(function*() {
      const fakes = yield* H.upstreams
      const refused = yield* Effect.exit(Layer.build(H.layer(fakes, { config: { host: "0.0.0.0" } })))
      expect(Exit.isFailure(refused)).toBe(true)
      expect(String(Exit.isFailure(refused) ? refused.cause : "")).toContain("refusing to listen on 0.0.0.0 without API keys")
      const withKeys = yield* Effect.exit(Layer.build(H.layer(fakes, {
        config: {
          host: "0.0.0.0",
          apiKeys: [{
            name: Schema.decodeSync(ApiKeys.ApiKeyName)("ops"),
            scopes: ["admin"],
            secret: Redacted.make("ops-secret-0123456789abcdef")
          }]
        }
      })))
      expect(Exit.isSuccess(withKeys)).toBe(true)
    }))
})
