/**
 * Bad input of every kind (SPEC §4.6): malformed JSON, wrong types, unknown accounts, bad
 * dates, oversized bodies, unknown routes and parameters. Each is a 4xx with
 * `{"error":{"code","message"}}`, nothing stored changes, and the server keeps serving.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import * as http from "node:http"
import * as H from "./harness.js"

interface Case {
  readonly name: string
  readonly method: string
  readonly path: string
  readonly body?: unknown
  readonly headers?: Record<string, string>
  readonly status: number
  readonly code: string
  /** Text the message must contain. */
  readonly says?: string
}

const update = "/accounts/acc-1/token/update"
const token = { access_token: "ups_some_token_value_000000" }

const cases: ReadonlyArray<Case> = [
  { name: "malformed JSON", method: "POST", path: update, body: "{\"access_token\": ", status: 400, code: "malformed_json" },
  { name: "JSON of the wrong shape", method: "POST", path: update, body: "[1,2,3]", status: 400, code: "invalid_request" },
  { name: "an empty body", method: "POST", path: update, body: "", headers: { "content-type": "application/json" }, status: 400, code: "invalid_request" },
  { name: "a token of the wrong type", method: "POST", path: update, body: { access_token: 12345 }, status: 400, code: "invalid_request", says: "access_token" },
  { name: "an empty token", method: "POST", path: update, body: { access_token: "" }, status: 400, code: "invalid_request" },
  { name: "a token with spaces", method: "POST", path: `${update}?validate=false`, body: { access_token: "has spaces in it" }, status: 400, code: "invalid_token" },
  { name: "a body as text", method: "POST", path: update, body: "access_token=x", headers: { "content-type": "text/plain" }, status: 400, code: "invalid_request" },
  { name: "an unknown account", method: "GET", path: "/accounts/nobody/token/status", status: 404, code: "account_not_found", says: "nobody" },
  { name: "an update of an unknown account", method: "POST", path: "/accounts/nobody/token/update?validate=false", body: token, status: 404, code: "account_not_found" },
  { name: "a raw token of an unknown account", method: "GET", path: "/accounts/nobody/token", status: 404, code: "account_not_found" },
  { name: "removing an unknown account", method: "DELETE", path: "/accounts/nobody", status: 404, code: "account_not_found" },
  { name: "an account id that cannot be one", method: "GET", path: "/accounts/bad%20id!/token/status", status: 400, code: "invalid_request", says: "account id" },
  { name: "a date that is not one", method: "POST", path: update, body: { ...token, expires_at: "tomorrow" }, status: 400, code: "invalid_expires_at" },
  { name: "a month 13", method: "POST", path: update, body: { ...token, expires_at: "2030-13-01T00:00:00Z" }, status: 400, code: "invalid_expires_at" },
  { name: "a 31st of February", method: "POST", path: update, body: { ...token, expires_at: "2030-02-31T00:00:00Z" }, status: 400, code: "invalid_expires_at" },
  { name: "a date in the past", method: "POST", path: update, body: { ...token, expires_at: "2001-01-01T00:00:00Z" }, status: 400, code: "invalid_expires_at", says: "future" },
  { name: "a negative epoch", method: "POST", path: update, body: { ...token, expires_at: -5 }, status: 400, code: "invalid_expires_at" },
  { name: "an epoch beyond year 9999", method: "POST", path: update, body: { ...token, expires_at: 1e20 }, status: 400, code: "invalid_expires_at" },
  { name: "a date of the wrong type", method: "POST", path: update, body: { ...token, expires_at: true }, status: 400, code: "invalid_request" },
  { name: "validate that is not a boolean", method: "POST", path: `${update}?validate=maybe`, body: token, status: 400, code: "invalid_request", says: "validate" },
  { name: "a body naming another account", method: "POST", path: update, body: { ...token, account_id: "acc-2" }, status: 400, code: "account_mismatch" },
  { name: "a wait that is not a duration", method: "POST", path: "/pools/github/acquire?wait=forever", status: 400, code: "invalid_request", says: "wait" },
  { name: "a wait too long", method: "POST", path: "/pools/github/acquire?wait=2h", status: 400, code: "invalid_request", says: "10m" },
  { name: "a report status that is not one", method: "POST", path: "/pools/github/report", body: { account_id: "gh-1", status: "ok" }, status: 400, code: "invalid_request", says: "status" },
  { name: "report headers that are not strings", method: "POST", path: "/pools/github/report", body: { account_id: "gh-1", status: 200, headers: { a: { b: 1 } } }, status: 400, code: "invalid_request" },
  {
    name: "an account of an unknown source type",
    method: "POST",
    path: "/accounts",
    body: { account_id: "x-1", provider: "github", source: { type: "magic" } },
    status: 400,
    code: "invalid_request"
  },
  {
    name: "a password account without its password",
    method: "POST",
    path: "/accounts",
    body: { account_id: "amp-2", provider: "amp", source: { type: "password", username: "trader" } },
    status: 400,
    code: "invalid_request",
    says: "password"
  },
  {
    name: "an account with a base URL that is not one",
    method: "POST",
    path: "/accounts",
    body: { account_id: "amp-3", provider: "amp", source: { type: "password", username: "u", password: "p", base_url: "ftp://x" } },
    status: 400,
    code: "invalid_request"
  },
  {
    name: "an account that exists",
    method: "POST",
    path: "/accounts",
    body: { account_id: "acc-1", provider: "upstox", source: { type: "remote" } },
    status: 409,
    code: "account_exists"
  },
  { name: "an unknown route", method: "GET", path: "/nowhere", status: 404, code: "not_found" },
  { name: "an unknown method on a route", method: "PUT", path: "/accounts", body: {}, status: 404, code: "not_found" },
  { name: "an unknown pool", method: "GET", path: "/pools/nope/tokens", status: 404, code: "pool_not_found" }
]

/** Everything a mistake must leave alone. */
const state = (running: H.Running) =>
  Effect.gen(function*() {
    const infos = yield* running.lifecycle.list
    const audit = yield* Effect.orDie(running.store.audit({ limit: 10_000 }))
    return {
      tokens: infos.map((i) => `${i.accountId}:${i.status}:${i.tokenPreview}:${i.expiresAt}`).sort(),
      changes: audit.filter((e) => e.outcome === "success" && e.type !== "acquired").length
    }
  })

/** A POST whose body is sent in chunks without a Content-Length. */
const chunked = (url: string, path: string, key: string, bytes: number) =>
  Effect.promise(() =>
    new Promise<{ status: number; body: string } | "reset">((resolve) => {
      const request = http.request(`${url}${path}`, {
        method: "POST",
        headers: { authorization: `Bearer ${key}`, "content-type": "application/json", "transfer-encoding": "chunked" }
      }, (response) => {
        let body = ""
        response.on("data", (chunk) => (body += String(chunk)))
        response.on("end", () => resolve({ status: response.statusCode ?? 0, body }))
      })
      request.on("error", () => resolve("reset"))
      const piece = Buffer.alloc(8192, "a")
      request.write("{\"access_token\":\"")
      for (let sent = 0; sent < bytes; sent += piece.length) request.write(piece)
      request.end("\"}")
    })
  )

describe("bad input", () => {
  it.scopedLive("every mistake is a 4xx JSON error, nothing changes, and the server keeps serving", () =>
    Effect.gen(function*() {
      const running = yield* H.start()
      const before = yield* state(running)
      for (const c of cases) {
        const answer = yield* H.call(running, c.method, c.path, { key: running.keys.admin, body: c.body, headers: c.headers })
        expect(answer.status, `${c.name}: ${answer.text}`).toBe(c.status)
        expect(H.isError(answer, c.status, c.code), c.name).toBe(true)
        if (c.says !== undefined) expect(answer.json.error.message, c.name).toContain(c.says)
      }
      expect(yield* state(running)).toEqual(before)
      expect((yield* H.call(running, "GET", "/health")).status).toBe(200)
    }))

  it.scopedLive("a body over 64 KiB is 413, whether it says its length or not, and nothing changes", () =>
    Effect.gen(function*() {
      const running = yield* H.start()
      const before = yield* state(running)
      const declared = yield* H.call(running, "POST", "/accounts/acc-1/token/update?validate=false", {
        key: running.keys.admin,
        body: { access_token: "x".repeat(70_000) }
      })
      expect(H.isError(declared, 413, "payload_too_large")).toBe(true)
      const streamed = yield* chunked(running.url, "/accounts/acc-1/token/update?validate=false", running.keys.admin, 100_000)
      expect(streamed).not.toBe("reset")
      if (streamed !== "reset") {
        expect(streamed.status).toBe(413)
        expect(JSON.parse(streamed.body).error.code).toBe("payload_too_large")
      }
      expect(yield* state(running)).toEqual(before)
      // a chunked body within the limit is read as any other
      const small = yield* chunked(running.url, "/accounts/acc-1/token/update?validate=false", running.keys.admin, 8000)
      expect(small !== "reset" && small.status).toBe(200)
    }))

  it.scopedLive("secrets in a bad request are never echoed in the error", () =>
    Effect.gen(function*() {
      const running = yield* H.start()
      const secret = "hunter2-super-secret-password"
      const answers = [
        yield* H.call(running, "POST", "/accounts", {
          key: running.keys.admin,
          body: { account_id: "amp-9", provider: "amp", source: { type: "password", username: "u", password: [secret] } }
        }),
        yield* H.call(running, "POST", "/accounts/acc-1/token/update", { key: running.keys.admin, body: { access_token: [secret] } }),
        yield* H.call(running, "POST", "/accounts/acc-1/token/update", { key: running.keys.admin, body: { access_token: { value: secret } } })
      ]
      for (const answer of answers) {
        expect(answer.status).toBe(400)
        expect(answer.text).not.toContain(secret)
      }
    }))
})
