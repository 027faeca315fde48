/**
 * Single flight over HTTP (SPEC §2.4, issue 8 §3): the built `tessera serve` with an AMP
 * account whose token has just entered its refresh window, and 1,000 concurrent
 * `GET /accounts/amp/token` requests: one upstream refresh, and every caller served a token
 * the upstream accepts.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { Amp } from "../fakes/index.js"
import { tempDir, waitUntil } from "../lifecycle/harness.js"
import { call, requireBuild, serve } from "./harness.js"

const CALLERS = 1_000
const PASSWORD = "single-flight-password-0123"

describe("tessera serve: single flight", () => {
  it.scopedLive(`${CALLERS} concurrent callers of a token inside its window cause one upstream refresh`, () =>
    Effect.gen(function*() {
      yield* requireBuild
      const cwd = yield* tempDir
      const amp = yield* Amp.make({ users: { trader: PASSWORD } })
      const running = yield* serve(cwd, { AMP_API_URL: amp.url, AMP_USERNAME: "trader", AMP_PASSWORD: PASSWORD })
      const url = yield* running.url
      yield* waitUntil(() => running.output().includes("amp: available"), 15_000)
      const current = (yield* call(url, "GET", "/accounts/amp/token")).json.access_token as string

      // the same token, now said to expire in 90 s: inside the 5-minute window
      const update = yield* call(url, "POST", "/accounts/amp/token/update?validate=false", {
        body: { access_token: current, expires_at: new Date(Date.now() + 90_000).toISOString() }
      })
      expect(update.status, update.text).toBe(200)
      const before = amp.calls("refresh") + amp.calls("obtain")
      const refreshesBefore = amp.calls("refresh")
      const started = Date.now()
      const answers = yield* Effect.forEach(
        Array.from({ length: CALLERS }, () => call(url, "GET", "/accounts/amp/token")),
        (request) => request,
        { concurrency: "unbounded" }
      )
      // the scheduler may have started the renewal before the callers came: it is the same flight
      yield* waitUntil(() => amp.calls("refresh") + amp.calls("obtain") > before, 15_000)
      const upstreamCalls = amp.calls("refresh") + amp.calls("obtain") - before
      const served = answers.filter((answer) => answer.status === 200 && amp.isValid(answer.json.access_token)).length
      const tokens = new Set(answers.map((answer) => answer.json?.access_token))
      console.log(
        `single flight over HTTP: ${CALLERS} concurrent callers -> ${upstreamCalls} upstream call(s) ` +
          `(${amp.calls("refresh") - refreshesBefore} refresh), ${served}/${CALLERS} served a live token ` +
          `(${tokens.size} distinct), ${((Date.now() - started) / 1000).toFixed(1)} s`
      )
      expect(upstreamCalls).toBe(1)
      expect(amp.calls("obtain")).toBe(1) // the startup fetch only
      expect(served).toBe(CALLERS)
    }), { timeout: 120_000 })
})
