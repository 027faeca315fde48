/**
 * The account routes (SPEC §6): list, register with a source configuration (secrets accepted,
 * never shown again), remove.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import * as H from "./harness.js"

describe("account routes", () => {
  it.scopedLive("registering a remote account fetches its token; listing shows every account with its source and token info", () =>
    Effect.gen(function*() {
      const running = yield* H.start()
      running.fakes.auth.setAccount("acc-3")
      const added = yield* H.call(running, "POST", "/accounts", {
        key: running.keys.admin,
        body: { account_id: "acc-3", provider: "upstox", label: "third desk", source: { type: "remote" } }
      })
      expect(added.status).toBe(201)
      expect(added.json).toMatchObject({
        account_id: "acc-3",
        provider: "upstox",
        pool: "upstox",
        label: "third desk",
        source: { type: "remote", service_url: null },
        token: { status: "available", has_token: true }
      })
      expect(added.json.created_at_local).toMatch(/\+05:30$/)
      const listed = yield* H.call(running, "GET", "/accounts", { key: running.keys.read })
      expect(listed.json.map((a: any) => a.account_id)).toEqual(["acc-1", "acc-2", "acc-3", "gh-1", "gh-2", "gh-3"])
      expect(listed.json.find((a: any) => a.account_id === "gh-1")).toMatchObject({ source: { type: "static" }, token: { source: "static" } })
    }))

  it.scopedLive("a password account's password is accepted and never shown; a source that cannot be reached leaves it missing with the error", () =>
    Effect.gen(function*() {
      const running = yield* H.start()
      const password = "correct-horse-battery-staple-9"
      const added = yield* H.call(running, "POST", "/accounts", {
        key: running.keys.admin,
        body: {
          account_id: "amp-1",
          provider: "amp",
          source: { type: "password", base_url: "http://127.0.0.1:9", username: "trader", password }
        }
      })
      expect(added.status).toBe(201)
      expect(added.json.source).toEqual({ type: "password", base_url: "http://127.0.0.1:9", username: "trader" })
      expect(added.json.token).toMatchObject({ status: "missing", has_token: false })
      expect(added.json.token.last_error.code).toBe("connection")
      for (const path of ["/accounts", "/accounts/amp-1/token/status", "/audit?account_id=amp-1"]) {
        const answer = yield* H.call(running, "GET", path, { key: running.keys.admin })
        expect(answer.status).toBe(200)
        expect(answer.text).not.toContain(password)
      }
    }))

  it.scopedLive("a static account registered with its token is available at once; removing an account keeps its history", () =>
    Effect.gen(function*() {
      const running = yield* H.start()
      const added = yield* H.call(running, "POST", "/accounts", {
        key: running.keys.admin,
        body: { account_id: "gl-1", provider: "gitlab", pool: "gitlab-team", source: { type: "static" }, access_token: "glpat-registered-0123456" }
      })
      expect(added.json).toMatchObject({ pool: "gitlab-team", token: { status: "available", source: "static" } })
      expect(added.text).not.toContain("glpat-registered-0123456")
      const removed = yield* H.call(running, "DELETE", "/accounts/gl-1", { key: running.keys.admin })
      expect(removed.status).toBe(204)
      expect(removed.text).toBe("")
      expect(H.isError(yield* H.call(running, "GET", "/accounts/gl-1/token/status", { key: running.keys.read }), 404, "account_not_found"))
        .toBe(true)
      const history = yield* H.call(running, "GET", "/audit?account_id=gl-1", { key: running.keys.admin })
      expect(history.json.map((e: any) => e.type)).toEqual(["account_removed", "account_added"])
      expect(H.isError(yield* H.call(running, "DELETE", "/accounts/gl-1", { key: running.keys.admin }), 404)).toBe(true)
    }))
})
