/**
 * The fast lane (`FastLane`): which requests it answers itself and which it hands to the
 * API untouched, and that its answers are the API's. The API's own answer to the same
 * request is had by adding a query the API ignores (`?via=api`): the lane takes no query.
 */
import { describe, expect, it } from "@effect/vitest"
import { Lifecycle } from "@tessera/core"
import { Auth, FastLane } from "@tessera/server"
import { Duration, Effect, Logger } from "effect"
import * as Http from "node:http"
import type { AddressInfo } from "node:net"
import * as H from "./harness.js"

/**
 * A Node server with only the lane in front of a `next` that answers 599 and counts: what
 * comes back 599 is what the lane did not take.
 */
const laneOnly = (
  running: H.Running,
  throttle = Auth.makeThrottle({ limit: 3, window: Duration.minutes(1), clients: 100 }),
  lifecycle: Lifecycle.LifecycleService = running.lifecycle,
  logged: Array<string> = []
) =>
  Effect.gen(function*() {
    const lane = yield* FastLane.make.pipe(
      Effect.provide(Logger.replace(Logger.defaultLogger, Logger.make(({ message }) => void logged.push(String(message))))),
      Effect.provideService(Lifecycle.Lifecycle, lifecycle),
      Effect.provide(running.context),
      Effect.provideService(Auth.Throttle, throttle)
    )
    let passed = 0
    const server = Http.createServer(lane((_, response) => {
      passed++
      response.writeHead(599).end()
    }))
    yield* Effect.acquireRelease(
      Effect.async<void>((resume) => void server.listen(0, "127.0.0.1", () => resume(Effect.void))),
      () => Effect.async<void>((resume) => void server.close(() => resume(Effect.void)))
    )
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
    return { url, passed: () => passed, throttle }
  })

const acquire = (url: string, key: string, query = "") => H.call({ url }, "POST", `/pools/github/acquire${query}`, { key })
const status = (url: string, key: string, id: string, query = "") =>
  H.call({ url }, "GET", `/accounts/${id}/token/status${query}`, { key })

/** The parts of an answer both lanes must agree on. */
const shape = (answer: H.Answer) => ({
  status: answer.status,
  type: answer.headers.get("content-type"),
  retryAfter: answer.headers.get("retry-after"),
  length: answer.headers.get("content-length") === String(Buffer.byteLength(answer.text))
})

describe("the fast lane", () => {
  it.scopedLive("answers status and acquire with a key of the right scope, and hands every other request on", () =>
    Effect.gen(function*() {
      const running = yield* H.start()
      const lane = yield* laneOnly(running)
      const { admin, read, token } = running.keys

      // taken: answered by the lane itself
      expect((yield* status(lane.url, read, "gh-1")).status).toBe(200)
      expect((yield* status(lane.url, admin, "acc-1")).status).toBe(200)
      expect((yield* acquire(lane.url, token)).status).toBe(200)
      expect((yield* acquire(lane.url, admin)).status).toBe(200)
      expect(H.isError(yield* H.call(lane, "POST", "/pools/nowhere/acquire", { key: token }), 404, "pool_not_found")).toBe(true)
      expect(lane.passed()).toBe(0)

      // handed on, each once: the API answers (and records) these
      const handedOn: ReadonlyArray<Effect.Effect<H.Answer>> = [
        status(lane.url, read, "no-such-account"),
        status(lane.url, read, "gh-1", "?via=api"),
        status(lane.url, read, "gh-1/"),
        status(lane.url, token, "gh-1"), // lacks read
        status(lane.url, "tsr_not_a_key_at_all_000000", "gh-1"),
        H.call(lane, "GET", "/accounts/gh-1/token/status"), // no key
        H.call(lane, "GET", "/accounts/gh-1/token/status", { headers: { authorization: `Basic ${read}` } }),
        H.call(lane, "HEAD", "/accounts/gh-1/token/status", { key: read }),
        H.call(lane, "GET", "/accounts/%20/token/status", { key: read }),
        acquire(lane.url, read), // lacks token
        acquire(lane.url, token, "?wait=1s"),
        H.call(lane, "POST", "/pools/github/acquire", { key: token, body: {} }),
        H.call(lane, "PUT", "/pools/github/acquire", { key: token }),
        H.call(lane, "GET", "/health"),
        H.call(lane, "GET", "/pools/github/tokens", { key: read })
      ]
      for (const [i, request] of handedOn.entries()) {
        expect([i, (yield* request).status]).toEqual([i, 599])
        expect(lane.passed()).toBe(i + 1)
      }
    }))

  it.scopedLive("an address shut out for failed authentications is handed on, even with a good key", () =>
    Effect.gen(function*() {
      const running = yield* H.start()
      const lane = yield* laneOnly(running)
      expect((yield* status(lane.url, running.keys.read, "gh-1")).status).toBe(200)
      for (let i = 0; i < 3; i++) yield* lane.throttle.failed("127.0.0.1")
      expect((yield* status(lane.url, running.keys.read, "gh-1")).status).toBe(599)
      expect((yield* acquire(lane.url, running.keys.token)).status).toBe(599)
    }))

  it.scopedLive("a revoked key is handed on at once (the API refuses it)", () =>
    Effect.gen(function*() {
      const running = yield* H.start()
      const lane = yield* laneOnly(running)
      expect((yield* acquire(lane.url, running.keys.token)).status).toBe(200)
      yield* Effect.orDie(running.apiKeys.revoke("tokens"))
      expect((yield* acquire(lane.url, running.keys.token)).status).toBe(599)
      expect(H.isError(yield* acquire(running.url, running.keys.token), 401, "unauthorized")).toBe(true)
    }))

  it.scopedLive("when the keys in memory are over a second old, it reads them again and answers as the key's actor", () =>
    Effect.gen(function*() {
      const running = yield* H.start()
      const lane = yield* laneOnly(running)
      yield* Effect.sleep(Duration.millis(1_100))
      expect((yield* acquire(lane.url, running.keys.token)).status).toBe(200)
      yield* Effect.sleep(Duration.millis(1_100))
      expect((yield* status(lane.url, running.keys.read, "gh-1")).status).toBe(200)
      expect(lane.passed()).toBe(0)
      yield* Effect.sleep(Duration.millis(100)) // one usage flush (20 ms here)
      const audit = yield* H.call(running, "GET", "/audit?limit=50", { key: running.keys.admin })
      expect(audit.json.filter((entry: any) => entry.type === "acquired").map((entry: any) => entry.actor)).toEqual(["tokens"])
    }))

  it.scopedLive("a failure while answering (a bug) is a logged 500, and the lane goes on serving", () =>
    Effect.gen(function*() {
      const running = yield* H.start()
      const broken: Lifecycle.LifecycleService = {
        ...running.lifecycle,
        unsafeInfo: (id, at) => {
          if (id === "gh-2") throw new Error("a bug")
          return running.lifecycle.unsafeInfo(id, at)
        }
      }
      const logged: Array<string> = []
      const lane = yield* laneOnly(running, undefined, broken, logged)
      expect((yield* status(lane.url, running.keys.read, "gh-1")).status).toBe(200) // the keys are read: answers come at once
      expect(H.isError(yield* status(lane.url, running.keys.read, "gh-2"), 500, "internal")).toBe(true)
      expect(logged).toEqual(["unexpected failure while answering a request"])
      expect((yield* status(lane.url, running.keys.read, "gh-1")).status).toBe(200)
      expect((yield* acquire(lane.url, running.keys.token)).status).toBe(200)
      expect(lane.passed()).toBe(0)
    }))

  it.scopedLive("answers exactly as the API does: status, acquire, unknown pool, exhausted pool (429, Retry-After), no usable token (503)", () =>
    Effect.gen(function*() {
      const running = yield* H.start()
      const { admin, read, token } = running.keys
      const both = (request: (query: string) => Effect.Effect<H.Answer>) =>
        Effect.gen(function*() {
          const fast = yield* request("")
          const api = yield* request("?via=api")
          expect(shape(fast)).toEqual(shape(api))
          return { fast, api }
        })

      for (const id of ["acc-1", "gh-1", "gh-2"]) {
        const { api, fast } = yield* both((query) => status(running.url, read, id, query))
        expect(fast.status).toBe(200)
        expect(fast.text).toBe(api.text)
      }

      // leases rotate across the lanes: one pool, least recently used first
      const { api, fast } = yield* both((query) => acquire(running.url, token, query))
      expect(fast.status).toBe(200)
      expect(Object.keys(fast.json)).toEqual(Object.keys(api.json))
      expect(fast.json.account_id).not.toBe(api.json.account_id)
      expect(H.GH_TOKENS).toContain(fast.json.access_token)

      const unknown = yield* both((query) => H.call(running, "POST", `/pools/nowhere/acquire${query}`, { key: token }))
      expect(unknown.fast.text).toBe(unknown.api.text)

      const resetAt = Math.ceil(Date.now() / 1000) + 3600
      for (const id of ["gh-1", "gh-2", "gh-3"]) {
        yield* H.call(running, "POST", "/pools/github/report", {
          key: token,
          body: { account_id: id, status: 403, headers: { "x-ratelimit-remaining": "0", "x-ratelimit-reset": String(resetAt) } }
        })
      }
      const limited = yield* both((query) => acquire(running.url, token, query))
      expect(H.isError(limited.fast, 429, "pool_exhausted")).toBe(true)
      expect(limited.fast.text).toBe(limited.api.text)

      for (const id of ["gh-1", "gh-2", "gh-3"]) {
        yield* H.call(running, "POST", "/pools/github/report", { key: admin, body: { account_id: id, status: 401, headers: {} } })
      }
      const none = yield* both((query) => acquire(running.url, token, query))
      expect(H.isError(none.fast, 503, "no_usable_token")).toBe(true)
      expect(none.fast.text).toBe(none.api.text)
    }))

  it.scopedLive("what it shows follows every change at once: a new token, a use, a limit", () =>
    Effect.gen(function*() {
      const running = yield* H.start()
      const { admin, read, token } = running.keys
      const leased = new Map<string, string>()
      for (let i = 0; i < 3; i++) {
        const answer = yield* acquire(running.url, token)
        leased.set(answer.json.account_id, answer.json.access_token)
      }
      expect(leased.get("gh-1")).toBe(H.GH_TOKENS[0])
      const before = (yield* status(running.url, read, "gh-1")).json
      yield* H.call(running, "POST", "/accounts/gh-1/token/update?validate=false", {
        key: admin,
        body: { access_token: "ghp_replaced_token_0123456789" }
      })
      const after = yield* status(running.url, read, "gh-1")
      expect(after.json.token_preview).toBe("ghp_…6789")
      expect(after.json.source).toBe("manual")
      expect(after.json.issued_at).not.toBe(before.issued_at)
      // gh-1 was used longest ago: it is next, with its new token
      const next = yield* acquire(running.url, token)
      expect([next.json.account_id, next.json.access_token]).toEqual(["gh-1", "ghp_replaced_token_0123456789"])
      expect((yield* status(running.url, read, "gh-1")).json.last_used_at).not.toBe(after.json.last_used_at)
      yield* H.call(running, "POST", "/pools/github/report", {
        key: token,
        body: { account_id: "gh-1", status: 429, headers: { "retry-after": "60" } }
      })
      expect((yield* status(running.url, read, "gh-1")).json.status).toBe("rate_limited")
    }))

  it.scopedLive("its acquires are counted and audited under the key's name like the API's", () =>
    Effect.gen(function*() {
      const running = yield* H.start()
      for (let i = 0; i < 3; i++) expect((yield* acquire(running.url, running.keys.token)).status).toBe(200)
      expect((yield* acquire(running.url, running.keys.token, "?via=api")).status).toBe(200)
      const metrics = yield* H.call(running, "GET", "/metrics", { key: running.keys.read })
      expect(metrics.text).toContain(`tessera_http_acquires_total{pool="github",outcome="success"} 4`)
      yield* Effect.sleep(Duration.millis(100)) // one usage flush (20 ms here)
      const audit = yield* H.call(running, "GET", "/audit?limit=50", { key: running.keys.admin })
      const acquired = audit.json.filter((entry: any) => entry.type === "acquired")
      // a record per hand-out, or one per flush that counts them (the library's default)
      expect(acquired.reduce((n: number, entry: any) => n + (entry.data.count ?? 1), 0)).toBe(4)
      expect(new Set(acquired.map((entry: any) => entry.actor))).toEqual(new Set(["tokens"]))
    }))
})
