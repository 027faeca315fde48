import { HttpClientRequest } from "@effect/platform"
import { NodeHttpClient } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { Errors, Upstream } from "@tessera/core"
import { Chunk, Duration, Effect, Either, Fiber, Option, Schedule, Schema, TestClock } from "effect"
import * as Scripted from "./utils/scriptedServer.js"

const TokenBody = Schema.Struct({ access_token: Schema.String })
const ok = { status: 200, body: { access_token: "tok-1" } } as const

const call = (server: Scripted.ScriptedServer) =>
  Upstream.call("obtain", HttpClientRequest.get(`${server.url}/token`), TokenBody).pipe(
    Effect.provide(NodeHttpClient.layerUndici)
  )

/** Runs `call` in the background, letting `TestClock` time pass whenever the server is waiting on us. */
const runWithClock = (server: Scripted.ScriptedServer, steps: ReadonlyArray<readonly [expectedCalls: number, advance: Duration.DurationInput]>) =>
  Effect.gen(function*() {
    const fiber = yield* Effect.fork(Effect.either(call(server)))
    for (const [expected, advance] of steps) {
      yield* Scripted.waitUntil(() => server.calls() >= expected)
      yield* Scripted.settle
      yield* TestClock.adjust(advance)
    }
    return yield* Fiber.join(fiber)
  })

describe("SPEC §2.5 upstream retry policy", () => {
  it.scoped("retries a 429 and honours its Retry-After", () =>
    Effect.gen(function*() {
      const server = yield* Scripted.make([{ status: 429, headers: { "retry-after": "7" }, body: { message: "slow down" } }, ok])
      const fiber = yield* Effect.fork(call(server))
      yield* Scripted.waitUntil(() => server.calls() === 1)
      yield* Scripted.settle
      yield* TestClock.adjust("6999 millis")
      yield* Scripted.settle
      expect(server.calls()).toBe(1)
      yield* TestClock.adjust("1 millis")
      const result = yield* Fiber.join(fiber)
      expect(result.access_token).toBe("tok-1")
      expect(server.calls()).toBe(2)
    }))

  it.scoped("retries 5xx, 408, timeouts and connection resets with backoff", () =>
    Effect.gen(function*() {
      const server = yield* Scripted.make([{ status: 503 }, { status: 408 }, ok])
      const result = yield* runWithClock(server, [[1, "2 seconds"], [2, "3 seconds"]])
      expect(Either.isRight(result)).toBe(true)
      expect(server.calls()).toBe(3)
    }))

  it.scoped("gives up after API_RETRY_MAX_ATTEMPTS attempts", () =>
    Effect.gen(function*() {
      const server = yield* Scripted.make([{ status: 500, body: { message: "boom" } }])
      const result = yield* runWithClock(server, [[1, "2 seconds"], [2, "3 seconds"], [3, "10 seconds"]])
      expect(server.calls()).toBe(3)
      const error = Either.getLeft(result).pipe(Option.getOrThrow)
      expect(error.kind).toBe("server")
      expect(error.status).toBe(500)
      expect(error.detail).toBe("boom")
    }))

  it.scoped("a configured maximum of 5 attempts makes 5 calls", () =>
    Effect.gen(function*() {
      const server = yield* Scripted.make([{ status: 502 }])
      const policy = { ...Upstream.RetryPolicy.defaultValue(), maxAttempts: 5 }
      const fiber = yield* Effect.fork(Effect.either(call(server).pipe(Effect.provideService(Upstream.RetryPolicy, policy))))
      for (let n = 1; n < 5; n++) {
        yield* Scripted.waitUntil(() => server.calls() >= n)
        yield* Scripted.settle
        yield* TestClock.adjust("30 seconds")
      }
      const result = yield* Fiber.join(fiber)
      expect(Either.isLeft(result)).toBe(true)
      expect(server.calls()).toBe(5)
    }))

  it.scoped("4xx other than 401/408/429 are not retried", () =>
    Effect.gen(function*() {
      for (const status of [400, 403, 404, 422]) {
        const server = yield* Scripted.make([{ status, body: { detail: "nope" } }, ok])
        const error = yield* Effect.flip(call(server))
        expect(error.kind).toBe("rejected")
        expect(server.calls()).toBe(1)
      }
    }))

  it.scoped("a request that gets no answer times out after API_REQUEST_TIMEOUT_MS and is retried", () =>
    Effect.gen(function*() {
      const server = yield* Scripted.make(["hang", ok])
      const fiber = yield* Effect.fork(call(server))
      yield* Scripted.waitUntil(() => server.calls() === 1)
      yield* TestClock.adjust("10 seconds")
      yield* Scripted.settle
      yield* TestClock.adjust("2 seconds")
      const result = yield* Fiber.join(fiber)
      expect(result.access_token).toBe("tok-1")
      expect(server.calls()).toBe(2)
    }))

  it.scoped("a connection reset is retried", () =>
    Effect.gen(function*() {
      const server = yield* Scripted.make(["reset", ok])
      const result = yield* runWithClock(server, [[1, "2 seconds"]])
      expect(Either.isRight(result)).toBe(true)
    }))

  it.scoped("a Retry-After longer than the maximum delay is not waited for: the error carries it", () =>
    Effect.gen(function*() {
      const server = yield* Scripted.make([{ status: 429, headers: { "retry-after": "3600" } }, ok])
      const error = yield* Effect.flip(call(server))
      expect(error.kind).toBe("rate_limited")
      expect(error.retryAfterMs).toBe(3_600_000)
      expect(server.calls()).toBe(1)
    }))

  it.scoped("garbage bodies are malformed, not retried, and never echo the body", () =>
    Effect.gen(function*() {
      for (const body of ["<html>oops</html>", "{\"access_token\": \"abc", "{}", { access_token: 12345678901 }]) {
        const server = yield* Scripted.make([{ status: 200, body }])
        const error = yield* Effect.flip(call(server))
        expect(error.kind).toBe("malformed")
        expect(error.message).not.toContain("12345678901")
        expect(server.calls()).toBe(1)
      }
    }))
})

describe("the retry schedule", () => {
  it.effect("delays grow exponentially from the base, jittered within ±20%, capped at the maximum", () =>
    Effect.gen(function*() {
      const policy = { ...Upstream.RetryPolicy.defaultValue(), maxAttempts: 10 }
      const failure = new Errors.UpstreamError({ kind: "server", operation: "x", status: 503, detail: "", retryAfterMs: null })
      const delays = yield* Schedule.run(Schedule.delays(Upstream.retrySchedule(policy)), 0, Array(12).fill(failure)).pipe(
        // the run also reports the step that stops the schedule: the 9 waits of 10 attempts come first
        Effect.map((chunk) => Chunk.toReadonlyArray(chunk).slice(0, 9).map(Duration.toMillis))
      )
      delays.forEach((delay, n) => {
        const step = 1000 * 2 ** n
        expect(delay).toBeGreaterThanOrEqual(Math.min(0.8 * step, 30_000))
        expect(delay).toBeLessThanOrEqual(Math.min(1.2 * step, 30_000))
      })
      expect(delays.some((delay, n) => delay !== Math.min(1000 * 2 ** n, 30_000))).toBe(true)
    }))
})

describe("Retry-After parsing", () => {
  it("reads delay-seconds and HTTP dates", () => {
    const now = Date.parse("2026-11-23T10:00:00Z")
    expect(Upstream.parseRetryAfter("120", now)).toEqual(Option.some(120_000))
    expect(Upstream.parseRetryAfter("Mon, 23 Nov 2026 10:01:30 GMT", now)).toEqual(Option.some(90_000))
    expect(Upstream.parseRetryAfter("soon", now)).toEqual(Option.none())
    expect(Upstream.parseRetryAfter(undefined, now)).toEqual(Option.none())
  })

  it("classifies statuses", () => {
    const classify = (status: number) => Upstream.classifyStatus("x", status, {}, "", 0).kind
    expect([401, 408, 429, 500, 503, 400, 404].map(classify)).toEqual([
      "unauthorized", "timeout", "rate_limited", "server", "server", "rejected", "rejected"
    ])
    expect(Errors.isRetryable(Upstream.classifyStatus("x", 429, {}, "", 0))).toBe(true)
    expect(Errors.isRetryable(Upstream.classifyStatus("x", 401, {}, "", 0))).toBe(false)
  })
})
