/**
 * What the service shows about itself (SPEC §6): the live event stream, Prometheus metrics,
 * the audit log, and the API's own description.
 */
import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect } from "effect"
import * as H from "./harness.js"

describe("events, metrics, audit", () => {
  it.scopedLive("GET /events streams a refresh as one data line of snake_case JSON, with keep-alive comments", () =>
    Effect.gen(function*() {
      const running = yield* H.start({ config: { keepAlive: Duration.millis(200) } })
      const stream = yield* H.openStream(running, "/events", running.keys.read)
      expect(stream.status).toBe(200)
      expect(stream.headers.get("content-type")).toContain("text/event-stream")
      yield* stream.until(": connected")
      const refreshed = yield* H.call(running, "POST", "/accounts/acc-1/token/refresh", { key: running.keys.admin })
      expect(refreshed.status).toBe(200)
      yield* stream.until("\"refreshed\"")
      const event = H.streamEvents(stream.received()).find((e) => e.type === "refreshed")
      expect(event).toMatchObject({ type: "refreshed", account_id: "acc-1", actor: "admin", outcome: "success", data: { origin: "refresh" } })
      expect(Object.keys(event).sort()).toEqual(["account_id", "actor", "at", "at_local", "data", "detail", "outcome", "type"])
      expect(event.at_local).toMatch(/\+05:30$/)
      expect(stream.received()).not.toContain(running.fakes.auth.account("acc-1")!.token)
      yield* stream.until(": keep-alive")
    }))

  it.scopedLive("metrics count the refresh and the acquires; tokens by status and seconds to expiry are current", () =>
    Effect.gen(function*() {
      const running = yield* H.start()
      yield* H.call(running, "POST", "/accounts/acc-1/token/refresh", { key: running.keys.admin })
      yield* H.call(running, "POST", "/pools/github/acquire", { key: running.keys.token })
      yield* H.call(running, "POST", "/pools/github/report", {
        key: running.keys.token,
        body: { account_id: "gh-2", status: 429, headers: { "retry-after": "600" } }
      })
      const metrics = yield* H.call(running, "GET", "/metrics", { key: running.keys.read })
      expect(metrics.status).toBe(200)
      expect(metrics.headers.get("content-type")).toContain("text/plain")
      const text = metrics.text
      expect(text).toContain(`tessera_token_events_total{type="refreshed",outcome="success"} 1`)
      expect(text).toContain(`tessera_token_events_total{type="obtained",outcome="success"} 2`)
      expect(text).toContain(`tessera_token_events_total{type="rate_limited",outcome="failure"} 1`)
      expect(text).toContain(`tessera_token_renewals_total{outcome="success"} 3`)
      expect(text).toContain(`tessera_http_acquires_total{pool="github",outcome="success"} 1`)
      // upstream calls are counted per process: the startup fetch and the refresh at least
      expect(text).toMatch(/tessera_upstream_calls_total\{operation="obtain",outcome="ok"\} [1-9]\d*/)
      expect(text).toMatch(/tessera_upstream_calls_total\{operation="refresh",outcome="ok"\} [1-9]\d*/)
      expect(text).toContain(`tessera_tokens{pool="github",status="rate_limited"} 1`)
      expect(text).toContain(`tessera_tokens{pool="github",status="available"} 2`)
      expect(text).toMatch(/tessera_token_expiry_seconds\{account_id="acc-1",pool="upstox",provider="upstox"\} 86\d{3}/)
      for (const token of H.GH_TOKENS) expect(text).not.toContain(token)
      // every sample line is "name{labels} number"
      for (const line of text.split("\n").filter((l) => l !== "" && !l.startsWith("#"))) {
        expect(line).toMatch(/^[a-z_]+(\{[^}]*\})? -?\d+(\.\d+)?$/)
      }
    }))

  it.scopedLive("GET /audit: newest first, by account, limited, paged with before; bad parameters are 400", () =>
    Effect.gen(function*() {
      const running = yield* H.start()
      yield* H.call(running, "POST", "/accounts/acc-1/token/refresh", { key: running.keys.admin })
      yield* H.call(running, "DELETE", "/accounts/acc-1/token", { key: running.keys.admin })
      const page = yield* H.call(running, "GET", "/audit?account_id=acc-1&limit=2", { key: running.keys.admin })
      expect(page.status).toBe(200)
      const entries = page.json as Array<any>
      expect(entries.map((e) => e.type)).toEqual(["cleared", "refreshed"])
      expect(entries[0].id).toBeGreaterThan(entries[1].id)
      expect(entries[0]).toMatchObject({ account_id: "acc-1", actor: "admin", outcome: "success" })
      expect(entries[0].at_local).toMatch(/\+05:30$/)
      const next = yield* H.call(running, "GET", `/audit?account_id=acc-1&limit=2&before=${entries[1].id}`, { key: running.keys.admin })
      expect(next.json.map((e: any) => e.type)).toEqual(["obtained", "account_added"])
      for (const bad of ["limit=0", "limit=abc", "limit=5000", "before=-1"]) {
        expect(H.isError(yield* H.call(running, "GET", `/audit?${bad}`, { key: running.keys.admin }), 400, "invalid_request")).toBe(true)
      }
    }))

  it.scopedLive("the API describes itself: OpenAPI at /openapi.json with every route, docs at /docs", () =>
    Effect.gen(function*() {
      const running = yield* H.start()
      const spec = yield* H.call(running, "GET", "/openapi.json")
      expect(spec.status).toBe(200)
      const paths = Object.keys(spec.json.paths)
      for (
        const path of [
          "/health",
          "/token/status",
          "/token/validate",
          "/token/update",
          "/refresh-token",
          "/accounts/{id}/token/status",
          "/accounts/{id}/token/validate",
          "/accounts/{id}/token/update",
          "/accounts/{id}/token/refresh",
          "/accounts/{id}/token",
          "/accounts",
          "/accounts/{id}",
          "/pools",
          "/pools/{pool}/tokens",
          "/pools/{pool}/acquire",
          "/pools/{pool}/report",
          "/events",
          "/metrics",
          "/audit"
        ]
      ) expect(paths).toContain(path)
      expect(spec.json.components.securitySchemes.bearer).toMatchObject({ type: "http", scheme: "bearer" })
      expect(spec.json.paths["/pools/{pool}/acquire"].post.responses).toHaveProperty("429")
      const docs = yield* H.call(running, "GET", "/docs")
      expect(docs.status).toBe(200)
      expect(docs.headers.get("content-type")).toContain("text/html")
    }))
})
