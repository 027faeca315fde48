/**
 * Bad input of every kind (SPEC §4.6): malformed JSON, wrong types, unknown accounts, bad
 * dates, oversized bodies, unknown routes and parameters. Each is a 4xx with
 * `{"error":{"code","message"}}`, nothing stored changes, and the server keeps serving.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import * as http from "node:http"
import * as net from "node:net"
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
  { name: "a body as text", method: "POST", path: update, body: "access_token=x", headers: { "content-type": "text/plain" }, status: 415, code: "unsupported_media_type" },
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
  { name: "an audit filter that cannot be an account id", method: "GET", path: "/audit?account_id=%3Cscript%3E", status: 400, code: "invalid_request", says: "account_id" },
  { name: "a negative wait", method: "POST", path: "/pools/github/acquire?wait=-5%20seconds", status: 400, code: "invalid_request", says: "wait" },
  // The API reads JSON only: the platform would otherwise read forms (and accept them), and hang or fail on multipart.
  { name: "a form body", method: "POST", path: `${update}?validate=false`, body: "access_token=ups_form_token_0000", headers: { "content-type": "application/x-www-form-urlencoded" }, status: 415, code: "unsupported_media_type" },
  { name: "JSON under another media type", method: "POST", path: `${update}?validate=false`, body: token, headers: { "content-type": "application/json-patch+json" }, status: 415, code: "unsupported_media_type" },
  { name: "multipart without a boundary", method: "POST", path: "/accounts", body: "{}", headers: { "content-type": "multipart/form-data" }, status: 415, code: "unsupported_media_type" },
  { name: "a multipart body cut short", method: "POST", path: "/accounts", body: "--x\r\nbroken", headers: { "content-type": "multipart/form-data; boundary=x" }, status: 415, code: "unsupported_media_type" },
  { name: "no body, said to be multipart", method: "POST", path: update, body: "", headers: { "content-type": "multipart/form-data; boundary=x" }, status: 400, code: "invalid_request" },
  { name: "JSON nested 30,000 deep", method: "POST", path: update, body: `${"[".repeat(30_000)}${"]".repeat(30_000)}`, status: 400, code: "invalid_request", says: "deeper" },
  {
    name: "a report header nested 5,000 deep",
    method: "POST",
    path: "/pools/github/report",
    body: `{"account_id":"gh-1","status":200,"headers":{"x":${"{\"a\":".repeat(5000)}1${"}".repeat(5000)}}}`,
    status: 400,
    code: "invalid_request"
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

  it.scopedLive("a body over 64 KiB is 413, whether it says its length or not (even at 5 MiB), and nothing changes", () =>
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
      // Far past the limit the answer goes out before the body ends, so the client sees it rather than a reset.
      const huge = yield* chunked(running.url, "/accounts/acc-1/token/update?validate=false", running.keys.admin, 5 * 1024 * 1024)
      expect(huge !== "reset" && huge.status).toBe(413)
      expect(yield* state(running)).toEqual(before)
      // a chunked body within the limit is read as any other
      const small = yield* chunked(running.url, "/accounts/acc-1/token/update?validate=false", running.keys.admin, 8000)
      expect(small !== "reset" && small.status).toBe(200)
    }))

  it.scopedLive("secrets in a bad request are never echoed in the error", () =>
    Effect.gen(function*() {
      const running = yield* H.start()
      const secret = "hunter2-super-secret-password"
      const update = "/accounts/acc-1/token/update"
      const answers = [
        // the whole body, an array, a string, text cut short: decoding errors never quote the input
        yield* H.call(running, "POST", update, { key: running.keys.admin, body: [secret] }),
        yield* H.call(running, "POST", update, { key: running.keys.admin, body: JSON.stringify(secret) }),
        yield* H.call(running, "POST", update, { key: running.keys.admin, body: `{"access_token": "${secret}" x}` }),
        yield* H.call(running, "POST", update, { key: running.keys.admin, body: `{"access_token": "${secret}` }),
        yield* H.call(running, "POST", "/pools/github/report", {
          key: running.keys.admin,
          body: { access_token: "ghp_x", status: 200, headers: { authorization: [secret] } }
        }),
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
        expect(answer.text).not.toContain("hunter2")
      }
    }))

  it.scopedLive("an error message says where the input is wrong, briefly, never with the input", () =>
    Effect.gen(function*() {
      const running = yield* H.start()
      const big = yield* H.call(running, "POST", "/accounts", { key: running.keys.admin, body: Array.from({ length: 5000 }, (_, i) => `item-${i}`) })
      expect(H.isError(big, 400, "invalid_request")).toBe(true)
      expect(big.json.error.message).toBe("the request body must be a JSON object")
      const fields = yield* H.call(running, "POST", "/accounts", {
        key: running.keys.admin,
        body: { account_id: "x y", provider: "GitHub", source: { type: "magic" }, label: 7 }
      })
      expect(H.isError(fields, 400, "invalid_request")).toBe(true)
      expect(fields.json.error.message).toContain("account id must be")
      expect(fields.json.error.message.length).toBeLessThan(1000)
      const malformed = yield* H.call(running, "POST", "/accounts", { key: running.keys.admin, body: "{\"account_id\": nope}" })
      expect(H.isError(malformed, 400, "malformed_json")).toBe(true)
      expect(malformed.text).not.toContain("nope")
    }))

  it.scopedLive("a request that is not HTTP is answered with the JSON error too: 400, or 431 for headers too large", () =>
    Effect.gen(function*() {
      const running = yield* H.start()
      const port = Number(new URL(running.url).port)
      const raw = (bytes: string) =>
        Effect.promise(() =>
          new Promise<string>((resolve) => {
            const socket = net.connect(port, "127.0.0.1")
            let text = ""
            socket.on("data", (chunk) => (text += String(chunk)))
            socket.on("close", () => resolve(text))
            socket.write(bytes)
          })
        )
      const auth = `Authorization: Bearer ${running.keys.admin}\r\n`
      for (const [bytes, status, code] of [
        [`FOO /accounts HTTP/1.1\r\nHost: x\r\n${auth}\r\n`, 400, "malformed_request"],
        [`GET /accounts/a b/token HTTP/1.1\r\nHost: x\r\n${auth}\r\n`, 400, "malformed_request"],
        [`POST /accounts HTTP/1.1\r\nHost: x\r\n${auth}Content-Length: abc\r\n\r\n{}`, 400, "malformed_request"],
        [`GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ${"b".repeat(20_000)}\r\n\r\n`, 431, "headers_too_large"]
      ] as const) {
        const answer = yield* raw(bytes)
        expect(answer, bytes.slice(0, 40)).toMatch(new RegExp(`^HTTP/1.1 ${status} `))
        expect(answer.toLowerCase()).toContain("content-type: application/json")
        expect(JSON.parse(answer.slice(answer.indexOf("\r\n\r\n") + 4)).error.code).toBe(code)
      }
      expect((yield* H.call(running, "GET", "/health")).status).toBe(200)
    }))

  it.scopedLive("a denied request names in the audit log only an account id that can be one", () =>
    Effect.gen(function*() {
      const running = yield* H.start()
      const denied = yield* H.call(running, "GET", "/accounts/%3Cscript%3Ealert(1)%3C%2Fscript%3E/token/status")
      expect(H.isError(denied, 401, "unauthorized")).toBe(true)
      const [entry] = yield* Effect.orDie(running.store.audit({ limit: 1 }))
      expect([entry?.type, entry?.accountId]).toEqual(["access_denied", null])
      yield* H.call(running, "GET", "/accounts/acc-1/token/status")
      const [named] = yield* Effect.orDie(running.store.audit({ limit: 1 }))
      expect([named?.type, named?.accountId]).toEqual(["access_denied", "acc-1"])
    }))
})
