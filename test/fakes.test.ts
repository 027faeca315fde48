import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber, Option, TestClock, TestServices } from "effect"
import { Amp, AuthService, Bitbucket, FakeServer, GitHub, GitLab, OAuth2, Upstox } from "./fakes/index.js"

// --- talking to the fakes over real HTTP ------------------------------------------------------

interface Answer {
  readonly status: number
  readonly headers: Headers
  readonly text: string
  readonly json: unknown
}

const send = (url: string, init: RequestInit = {}): Effect.Effect<Answer> =>
  Effect.promise(async () => {
    const response = await fetch(url, init)
    const text = await response.text()
    return {
      status: response.status,
      headers: response.headers,
      text,
      json: Option.getOrUndefined(FakeServer.parseJson(text))
    }
  })

/** The error of a request that gets no answer. */
const sendFailure = (url: string, init: RequestInit = {}): Effect.Effect<unknown> =>
  Effect.tryPromise(() => fetch(url, init)).pipe(
    Effect.matchEffect({
      onFailure: (error) => Effect.succeed(error.error),
      onSuccess: (response) => Effect.dieMessage(`expected no answer, got ${response.status}`)
    })
  )

const errorName = (error: unknown) => (error instanceof Error ? error.name : typeof error)

const postJson = (body: unknown): RequestInit => ({
  method: "POST",
  headers: { "content-type": "application/json" },
  body: JSON.stringify(body)
})

const bearer = (token: string): RequestInit => ({ headers: { authorization: `Bearer ${token}` } })

const basic = (user: string, password: string) => `Basic ${Buffer.from(`${user}:${password}`).toString("base64")}`

const form = (fields: Record<string, string>, headers: Record<string, string> = {}): RequestInit => ({
  method: "POST",
  headers,
  body: new URLSearchParams(fields)
})

/** Waits in real time (the fakes' I/O is not driven by `TestClock`) until `condition` holds. */
const eventually = (condition: () => boolean): Effect.Effect<void> => {
  const poll: Effect.Effect<void> = Effect.suspend(() =>
    condition() ? Effect.void : Effect.zipRight(Effect.sleep("2 millis"), poll)
  )
  return poll.pipe(Effect.timeout("5 seconds"), Effect.orDie, TestServices.provideLive)
}

const field = (value: unknown, name: string): unknown =>
  typeof value === "object" && value !== null ? (value as Record<string, unknown>)[name] : undefined

const stringField = (value: unknown, name: string): string => {
  const found = field(value, name)
  expect(typeof found).toBe("string")
  return String(found)
}

const ampUsers = { alice: "wonderland" }
const obtain = (amp: Amp.AmpServer, password = "wonderland") =>
  send(`${amp.url}/user/obtain_token`, postJson({ username: "alice", password }))

// --- the shared core, through the AMP fake ------------------------------------------------------

describe("fake server core", () => {
  it.scoped("listens on 127.0.0.1 with an ephemeral port", () =>
    Effect.gen(function*() {
      const amp = yield* Amp.make()
      expect(amp.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/)
      expect(Number(new URL(amp.url).port)).toBeGreaterThan(0)
    }))

  it.scoped("counts every request per route, faults included, and resetCalls forgets them", () =>
    Effect.gen(function*() {
      const amp = yield* Amp.make({ users: ampUsers })
      amp.failNext("obtain", { status: 500 })
      yield* obtain(amp)
      yield* obtain(amp)
      yield* send(`${amp.url}/user/refresh-token`)
      expect(amp.calls("obtain")).toBe(2)
      expect(amp.calls("refresh")).toBe(1)
      expect(amp.requests()).toHaveLength(3)
      amp.resetCalls()
      expect(amp.calls("obtain")).toBe(0)
      expect(amp.requests()).toHaveLength(0)
    }))

  it.scoped("logs method, path, query, lower-cased headers, the parsed body and the fault served", () =>
    Effect.gen(function*() {
      const amp = yield* Amp.make({ users: ampUsers })
      amp.failNext("obtain", "empty-json")
      yield* send(`${amp.url}/user/obtain_token?x=1`, {
        ...postJson({ username: "alice", password: "wonderland" }),
        headers: { "Content-Type": "application/json", "X-Trace-Id": "t-1" }
      })
      const logged = amp.lastRequest("obtain")
      expect(logged?.method).toBe("POST")
      expect(logged?.path).toBe("/user/obtain_token")
      expect(logged?.query).toEqual({ x: "1" })
      expect(logged?.headers["x-trace-id"]).toBe("t-1")
      expect(logged?.body).toEqual({ username: "alice", password: "wonderland" })
      expect(logged?.fault).toBe("empty-json")
      expect(amp.lastRequest("refresh")).toBeUndefined()
    }))

  it.scoped("failNext serves the fault the given number of times, then the real reply", () =>
    Effect.gen(function*() {
      const amp = yield* Amp.make({ users: ampUsers })
      amp.failNext("obtain", { status: 503 }, 2)
      expect((yield* obtain(amp)).status).toBe(503)
      expect((yield* obtain(amp)).status).toBe(503)
      expect((yield* obtain(amp)).status).toBe(200)
    }))

  it.scoped("failAlways serves the fault until it is cleared, after any queued faults", () =>
    Effect.gen(function*() {
      const amp = yield* Amp.make({ users: ampUsers })
      amp.failAlways("obtain", { status: 502 })
      amp.failNext("obtain", { status: 401 })
      expect((yield* obtain(amp)).status).toBe(401)
      expect((yield* obtain(amp)).status).toBe(502)
      expect((yield* obtain(amp)).status).toBe(502)
      amp.failAlways("obtain", undefined)
      expect((yield* obtain(amp)).status).toBe(200)
      amp.failAlways("obtain", { status: 403 })
      amp.clearFaults()
      expect((yield* obtain(amp)).status).toBe(200)
    }))

  it.scoped("status faults answer with the reason phrase or the given body", () =>
    Effect.gen(function*() {
      const amp = yield* Amp.make({ users: ampUsers })
      amp.failNext("obtain", { status: 404 })
      amp.failNext("obtain", { status: 500, body: "{\"detail\":\"boom\"}" })
      amp.failNext("obtain", { status: 502, body: "Bad Gateway from nginx" })
      const notFound = yield* obtain(amp)
      expect(notFound.status).toBe(404)
      expect(notFound.json).toEqual({ message: "Not Found" })
      const boom = yield* obtain(amp)
      expect(boom.json).toEqual({ detail: "boom" })
      expect(boom.headers.get("content-type")).toBe("application/json")
      const gateway = yield* obtain(amp)
      expect(gateway.text).toBe("Bad Gateway from nginx")
      expect(gateway.headers.get("content-type")).toMatch(/^text\/plain/)
    }))

  it.scoped("429 faults send Retry-After exactly as given, seconds or an HTTP date, or none", () =>
    Effect.gen(function*() {
      const amp = yield* Amp.make({ users: ampUsers })
      const date = "Wed, 21 Oct 2015 07:28:00 GMT"
      amp.failNext("obtain", { status: 429, retryAfter: "7" })
      amp.failNext("obtain", { status: 429, retryAfter: date })
      amp.failNext("obtain", { status: 429 })
      const seconds = yield* obtain(amp)
      expect(seconds.status).toBe(429)
      expect(seconds.headers.get("retry-after")).toBe("7")
      expect((yield* obtain(amp)).headers.get("retry-after")).toBe(date)
      expect((yield* obtain(amp)).headers.get("retry-after")).toBeNull()
    }))

  it.scoped("body faults: garbage HTML, truncated JSON, empty JSON and any literal JSON", () =>
    Effect.gen(function*() {
      const amp = yield* Amp.make({ users: ampUsers })
      amp.failNext("obtain", "garbage-html")
      amp.failNext("obtain", "truncated-json")
      amp.failNext("obtain", "empty-json")
      amp.failNext("obtain", { json: { token: null } })
      amp.failNext("obtain", { json: ["teapot"], status: 418 })
      const html = yield* obtain(amp)
      expect([html.status, html.text]).toEqual([200, "<html>oops</html>"])
      expect(html.headers.get("content-type")).toMatch(/^text\/html/)
      const truncated = yield* obtain(amp)
      expect([truncated.status, truncated.text]).toEqual([200, "{\"access_token\": \"abc"])
      expect(truncated.headers.get("content-type")).toBe("application/json")
      expect(truncated.json).toBeUndefined()
      expect((yield* obtain(amp)).json).toEqual({})
      expect((yield* obtain(amp)).json).toEqual({ token: null })
      const teapot = yield* obtain(amp)
      expect([teapot.status, teapot.json]).toEqual([418, ["teapot"]])
    }))

  it.scoped("a timeout fault hangs until the client gives up", () =>
    Effect.gen(function*() {
      const amp = yield* Amp.make({ users: ampUsers })
      amp.failNext("obtain", "timeout")
      const started = Date.now()
      const error = yield* sendFailure(`${amp.url}/user/obtain_token`, {
        ...postJson({ username: "alice", password: "wonderland" }),
        signal: AbortSignal.timeout(300)
      })
      expect(errorName(error)).toBe("TimeoutError")
      expect(Date.now() - started).toBeGreaterThanOrEqual(250)
      expect(amp.calls("obtain")).toBe(1)
      expect((yield* obtain(amp)).status).toBe(200)
    }))

  it.scoped("a reset fault drops the connection", () =>
    Effect.gen(function*() {
      const amp = yield* Amp.make({ users: ampUsers })
      amp.failNext("obtain", "reset")
      const error = yield* sendFailure(`${amp.url}/user/obtain_token`, postJson({ username: "alice", password: "x" }))
      expect(error).toBeInstanceOf(TypeError)
      expect(amp.calls("obtain")).toBe(1)
      expect((yield* obtain(amp)).status).toBe(200)
    }))

  it.scoped("closing the scope ends a hanging request", () =>
    Effect.gen(function*() {
      const pending = yield* Effect.scoped(
        Effect.gen(function*() {
          const amp = yield* Amp.make()
          amp.failAlways("obtain", "timeout")
          const fiber = yield* Effect.fork(sendFailure(`${amp.url}/user/obtain_token`, { method: "POST" }))
          yield* eventually(() => amp.calls("obtain") === 1)
          return fiber
        })
      )
      expect(yield* Fiber.join(pending)).toBeInstanceOf(TypeError)
    }))

  it.scoped("unknown paths get 404 and wrong methods 405, counted nowhere", () =>
    Effect.gen(function*() {
      const amp = yield* Amp.make()
      const missing = yield* send(`${amp.url}/nowhere`)
      expect(missing.status).toBe(404)
      expect(missing.json).toEqual({ message: "Not Found", path: "/nowhere" })
      expect((yield* send(`${amp.url}/user/obtain_token`)).status).toBe(405)
      expect(amp.requests()).toHaveLength(0)
    }))

  it.scoped("bodies over the size cap get 413", () =>
    Effect.gen(function*() {
      const amp = yield* Amp.make({ users: ampUsers })
      const answer = yield* send(`${amp.url}/user/obtain_token`, postJson({ username: "alice", password: "x".repeat(2 * 1024 * 1024) }))
      expect(answer.status).toBe(413)
      expect(amp.calls("obtain")).toBe(1)
    }))
})

// --- AMP ---------------------------------------------------------------------------------------

describe("AMP fake", () => {
  it.scoped("obtains a token for the right credentials, with expires_in", () =>
    Effect.gen(function*() {
      const amp = yield* Amp.make({ users: ampUsers, tokenLifetimeSeconds: 600 })
      const answer = yield* obtain(amp)
      expect(answer.status).toBe(200)
      const token = stringField(answer.json, "token")
      expect(token).toMatch(/^amp_[A-Z2-7]{24}$/)
      expect(field(answer.json, "expires_in")).toBe(600)
      expect(amp.isValid(token)).toBe(true)
    }))

  it.scoped("refuses wrong credentials and malformed bodies", () =>
    Effect.gen(function*() {
      const amp = yield* Amp.make({ users: ampUsers })
      const wrong = yield* obtain(amp, "guess")
      expect([wrong.status, wrong.json]).toEqual([401, { detail: "Invalid credentials" }])
      const malformed = yield* send(`${amp.url}/user/obtain_token`, postJson({ username: "alice" }))
      expect(malformed.status).toBe(422)
      amp.addUser("bob", "builder")
      const bob = yield* send(`${amp.url}/user/obtain_token`, postJson({ username: "bob", password: "builder" }))
      expect(bob.status).toBe(200)
    }))

  it.scoped("can answer with access_token and expires_at, or with no expiry at all", () =>
    Effect.gen(function*() {
      const at = yield* Amp.make({ users: ampUsers, tokenField: "access_token", expiry: "expires_at", now: () => 1_700_000_000_000 })
      const answer = yield* obtain(at)
      expect(stringField(answer.json, "access_token")).toMatch(/^amp_/)
      expect(field(answer.json, "expires_at")).toBe(new Date(1_700_000_000_000 + 3600_000).toISOString())
      const none = yield* Amp.make({ users: ampUsers, expiry: "none" })
      expect((yield* obtain(none)).json).toEqual({ token: expect.any(String) })
    }))

  it.scoped("refreshes a valid bearer token; the old one stays valid unless configured to be revoked", () =>
    Effect.gen(function*() {
      for (const revokeOnRefresh of [false, true]) {
        const amp = yield* Amp.make({ users: ampUsers, revokeOnRefresh })
        const first = stringField((yield* obtain(amp)).json, "token")
        const refreshed = yield* send(`${amp.url}/user/refresh-token`, bearer(first))
        expect(refreshed.status).toBe(200)
        const second = stringField(refreshed.json, "token")
        expect(second).not.toBe(first)
        expect(amp.lastRequest("refresh")?.headers["authorization"]).toBe(`Bearer ${first}`)
        expect(amp.isValid(first)).toBe(!revokeOnRefresh)
        expect(amp.isValid(second)).toBe(true)
        expect(amp.issued().map((issued) => issued.token)).toEqual([first, second])
      }
    }))

  it.scoped("refuses to refresh an expired, revoked or unknown token", () =>
    Effect.gen(function*() {
      const now = yield* FakeServer.clockNow
      const amp = yield* Amp.make({ users: ampUsers, tokenLifetimeSeconds: 60, now })
      const token = stringField((yield* obtain(amp)).json, "token")
      yield* TestClock.adjust("61 seconds")
      expect(amp.isValid(token)).toBe(false)
      expect((yield* send(`${amp.url}/user/refresh-token`, bearer(token))).status).toBe(401)
      const fresh = stringField((yield* obtain(amp)).json, "token")
      amp.revoke(fresh)
      expect((yield* send(`${amp.url}/user/refresh-token`, bearer(fresh))).status).toBe(401)
      const unknown = yield* send(`${amp.url}/user/refresh-token`, bearer("amp_NOTAREALTOKEN"))
      expect(unknown.status).toBe(401)
      expect((yield* send(`${amp.url}/user/refresh-token`)).status).toBe(401)
    }))
})

// --- auth service and Upstox -------------------------------------------------------------------

describe("auth service fake", () => {
  it.scoped("serves a known account's token with an ISO-8601 UTC expiry, 404 for others", () =>
    Effect.gen(function*() {
      const auth = yield* AuthService.make({ accounts: ["acc-1"] })
      const answer = yield* send(`${auth.url}/accounts/acc-1/token`)
      expect(answer.status).toBe(200)
      expect(stringField(answer.json, "access_token")).toBe(auth.account("acc-1")?.token)
      expect(stringField(answer.json, "expires_at")).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/)
      const unknown = yield* send(`${auth.url}/accounts/nobody/token`)
      expect([unknown.status, unknown.json]).toEqual([404, { detail: "unknown account" }])
      expect(auth.calls("token")).toBe(2)
    }))

  it.scoped("setAccount sets the token and expiry; expires_at can be epoch seconds", () =>
    Effect.gen(function*() {
      const auth = yield* AuthService.make({ expiresAtFormat: "epoch-seconds" })
      auth.setAccount("acc-2", { token: "tok-2", expiresAt: new Date("2030-01-01T03:30:00Z") })
      expect(auth.knownAccounts()).toEqual(["acc-2"])
      const answer = yield* send(`${auth.url}/accounts/acc-2/token`)
      expect(answer.json).toEqual({ access_token: "tok-2", expires_at: Date.parse("2030-01-01T03:30:00Z") / 1000 })
      auth.removeAccount("acc-2")
      expect((yield* send(`${auth.url}/accounts/acc-2/token`)).status).toBe(404)
    }))

  it.scoped("refresh replaces the account's token", () =>
    Effect.gen(function*() {
      const auth = yield* AuthService.make({ accounts: ["acc-1"], tokenLifetimeSeconds: 120, now: () => 1_000_000 })
      const before = auth.account("acc-1")?.token
      const answer = yield* send(`${auth.url}/accounts/acc-1/refresh`, { method: "POST" })
      expect(answer.status).toBe(200)
      expect(answer.json).toEqual({ access_token: auth.account("acc-1")?.token, expires_at: new Date(1_120_000).toISOString() })
      expect(auth.account("acc-1")?.token).not.toBe(before)
      expect(auth.calls("refresh")).toBe(1)
      expect((yield* send(`${auth.url}/accounts/nobody/refresh`, { method: "POST" })).status).toBe(404)
    }))

  it.scoped("while down, every request is reset or answered 503, and counted", () =>
    Effect.gen(function*() {
      const auth = yield* AuthService.make({ accounts: ["acc-1"] })
      auth.down()
      expect(yield* sendFailure(`${auth.url}/accounts/acc-1/token`)).toBeInstanceOf(TypeError)
      auth.down("unavailable")
      expect((yield* send(`${auth.url}/accounts/acc-1/refresh`, { method: "POST" })).status).toBe(503)
      auth.up()
      expect((yield* send(`${auth.url}/accounts/acc-1/token`)).status).toBe(200)
      expect([auth.calls("token"), auth.calls("refresh")]).toEqual([2, 1])
    }))
})

describe("Upstox fake", () => {
  it.scoped("answers the profile for an allowed token and UDAPI100050 otherwise", () =>
    Effect.gen(function*() {
      const upstox = yield* Upstox.make({ tokens: ["good"] })
      const ok = yield* send(`${upstox.url}/v2/user/profile`, bearer("good"))
      expect(ok.status).toBe(200)
      expect(ok.json).toEqual({
        status: "success",
        data: { user_id: "AB1234", user_name: "Test User", email: "test.user@example.com" }
      })
      const rejected = yield* send(`${upstox.url}/v2/user/profile`, bearer("bad"))
      expect(rejected.status).toBe(401)
      expect(rejected.json).toEqual({
        status: "error",
        errors: [{ errorCode: "UDAPI100050", message: "Invalid token used to access API" }]
      })
      upstox.revoke("good")
      expect((yield* send(`${upstox.url}/v2/user/profile`, bearer("good"))).status).toBe(401)
      upstox.allow("bad")
      expect((yield* send(`${upstox.url}/v2/user/profile`, bearer("bad"))).status).toBe(200)
      expect(upstox.calls("profile")).toBe(4)
    }))

  it.scoped("linked to the auth service, accepts its live tokens until they expire", () =>
    Effect.gen(function*() {
      const now = yield* FakeServer.clockNow
      const auth = yield* AuthService.make({ accounts: ["acc-1"], tokenLifetimeSeconds: 3600, now })
      const upstox = yield* Upstox.make()
      Upstox.linkAuthService(upstox, auth)
      const issued = stringField((yield* send(`${auth.url}/accounts/acc-1/refresh`, { method: "POST" })).json, "access_token")
      expect((yield* send(`${upstox.url}/v2/user/profile`, bearer(issued))).status).toBe(200)
      upstox.revoke(issued)
      expect((yield* send(`${upstox.url}/v2/user/profile`, bearer(issued))).status).toBe(401)
      const other = auth.setAccount("acc-2").token
      expect(upstox.isValid(other)).toBe(true)
      yield* TestClock.adjust("2 hours")
      expect((yield* send(`${upstox.url}/v2/user/profile`, bearer(other))).status).toBe(401)
    }))
})

// --- GitHub ------------------------------------------------------------------------------------

describe("GitHub fake", () => {
  it.scoped("reports the core quota at /rate_limit without using it", () =>
    Effect.gen(function*() {
      const github = yield* GitHub.make({ now: () => 1_700_000_000_000 })
      github.addToken("ghp_a", { limit: 5000, remaining: 4990, resetAt: new Date(1_700_000_600_000) })
      for (let n = 0; n < 2; n++) {
        const answer = yield* send(`${github.url}/rate_limit`, { headers: { authorization: "token ghp_a" } })
        const core = { limit: 5000, used: 10, remaining: 4990, reset: 1_700_000_600, resource: "core" }
        expect(answer.json).toEqual({ resources: { core }, rate: core })
        expect(answer.headers.get("x-ratelimit-remaining")).toBe("4990")
      }
      expect(github.quota("ghp_a")?.remaining).toBe(4990)
      expect(github.calls("rate_limit")).toBe(2)
    }))

  it.scoped("uses one request per GET and reports it in x-ratelimit-* headers", () =>
    Effect.gen(function*() {
      const github = yield* GitHub.make({ now: () => 1_700_000_000_000 })
      github.addToken("ghp_a", { limit: 60, login: "octocat" })
      const user = yield* send(`${github.url}/user`, bearer("ghp_a"))
      expect(field(user.json, "login")).toBe("octocat")
      expect({
        limit: user.headers.get("x-ratelimit-limit"),
        remaining: user.headers.get("x-ratelimit-remaining"),
        reset: user.headers.get("x-ratelimit-reset"),
        used: user.headers.get("x-ratelimit-used"),
        resource: user.headers.get("x-ratelimit-resource")
      }).toEqual({ limit: "60", remaining: "59", reset: String(1_700_000_000 + 3600), used: "1", resource: "core" })
      const repo = yield* send(`${github.url}/repos/octo/hello`, { headers: { authorization: "token ghp_a" } })
      expect(field(repo.json, "full_name")).toBe("octo/hello")
      expect(repo.headers.get("x-ratelimit-remaining")).toBe("58")
      expect([github.calls("user"), github.calls("api")]).toEqual([1, 1])
    }))

  it.scoped("an exhausted quota answers 403 until the injected clock passes the reset", () =>
    Effect.gen(function*() {
      const now = yield* FakeServer.clockNow
      const github = yield* GitHub.make({ now })
      github.addToken("ghp_a", { limit: 2, id: 1 })
      expect((yield* send(`${github.url}/repos/o/r`, bearer("ghp_a"))).status).toBe(200)
      expect((yield* send(`${github.url}/repos/o/r`, bearer("ghp_a"))).status).toBe(200)
      const limited = yield* send(`${github.url}/repos/o/r`, bearer("ghp_a"))
      expect(limited.status).toBe(403)
      expect(field(limited.json, "message")).toBe("API rate limit exceeded for user ID 1.")
      expect(typeof field(limited.json, "documentation_url")).toBe("string")
      expect(limited.headers.get("x-ratelimit-remaining")).toBe("0")
      expect(limited.headers.get("x-ratelimit-reset")).toBe("3600")
      yield* TestClock.adjust("59 minutes")
      expect((yield* send(`${github.url}/repos/o/r`, bearer("ghp_a"))).status).toBe(403)
      yield* TestClock.adjust("1 minute")
      const recovered = yield* send(`${github.url}/repos/o/r`, bearer("ghp_a"))
      expect(recovered.status).toBe(200)
      expect(recovered.headers.get("x-ratelimit-remaining")).toBe("1")
      expect(github.quota("ghp_a")).toEqual({ limit: 2, used: 1, remaining: 1, reset: 7200, resource: "core" })
    }))

  it.scoped("can answer an exhausted quota with 429", () =>
    Effect.gen(function*() {
      const github = yield* GitHub.make({ exhaustedStatus: 429 })
      github.addToken("ghp_a", { limit: 10, remaining: 0 })
      expect((yield* send(`${github.url}/user`, bearer("ghp_a"))).status).toBe(429)
    }))

  it.scoped("injects secondary limits with retry-after, without using the quota", () =>
    Effect.gen(function*() {
      const github = yield* GitHub.make()
      github.addToken("ghp_a", { limit: 10 })
      github.addToken("ghp_b", { limit: 10 })
      github.secondaryLimit("ghp_a", { retryAfterSeconds: 60 })
      const limited = yield* send(`${github.url}/repos/o/r`, bearer("ghp_a"))
      expect(limited.status).toBe(403)
      expect(limited.headers.get("retry-after")).toBe("60")
      expect(String(field(limited.json, "message"))).toMatch(/^You have exceeded a secondary rate limit/)
      expect(limited.headers.get("x-ratelimit-remaining")).toBe("10")
      expect((yield* send(`${github.url}/repos/o/r`, bearer("ghp_b"))).status).toBe(200)
      expect((yield* send(`${github.url}/repos/o/r`, bearer("ghp_a"))).status).toBe(200)
    }))

  it.scoped("answers 401 Bad credentials to unknown and revoked tokens", () =>
    Effect.gen(function*() {
      const github = yield* GitHub.make()
      github.addToken("ghp_a", { limit: 10 })
      github.revoke("ghp_a")
      for (const token of ["ghp_a", "ghp_unknown"]) {
        const answer = yield* send(`${github.url}/user`, bearer(token))
        expect(answer.status).toBe(401)
        expect(field(answer.json, "message")).toBe("Bad credentials")
      }
      expect(github.quota("ghp_a")).toBeUndefined()
    }))
})

// --- GitLab ------------------------------------------------------------------------------------

describe("GitLab fake", () => {
  it.scoped("answers /api/v4/user with RateLimit-* headers, by PRIVATE-TOKEN or Bearer", () =>
    Effect.gen(function*() {
      const gitlab = yield* GitLab.make({ now: () => 1_700_000_000_000 })
      gitlab.addToken("glpat-a", { limit: 100, username: "tanuki" })
      const user = yield* send(`${gitlab.url}/api/v4/user`, { headers: { "private-token": "glpat-a" } })
      expect(user.status).toBe(200)
      expect(field(user.json, "id")).toBe(1)
      expect(field(user.json, "username")).toBe("tanuki")
      expect(user.headers.get("ratelimit-limit")).toBe("100")
      expect(user.headers.get("ratelimit-remaining")).toBe("99")
      expect(user.headers.get("ratelimit-reset")).toBe(String(1_700_000_000 + 60))
      expect(user.headers.get("ratelimit-observed")).toBe("1")
      const project = yield* send(`${gitlab.url}/api/v4/projects/1`, bearer("glpat-a"))
      expect(project.headers.get("ratelimit-remaining")).toBe("98")
      expect([gitlab.calls("user"), gitlab.calls("api")]).toEqual([1, 1])
    }))

  it.scoped("an exhausted quota answers 429 with Retry-After until the reset", () =>
    Effect.gen(function*() {
      const now = yield* FakeServer.clockNow
      const gitlab = yield* GitLab.make({ now })
      gitlab.addToken("glpat-a", { limit: 1 })
      yield* send(`${gitlab.url}/api/v4/projects`, bearer("glpat-a"))
      yield* TestClock.adjust("20 seconds")
      const limited = yield* send(`${gitlab.url}/api/v4/projects`, bearer("glpat-a"))
      expect(limited.status).toBe(429)
      expect(limited.headers.get("retry-after")).toBe("40")
      expect(limited.headers.get("ratelimit-remaining")).toBe("0")
      yield* TestClock.adjust("40 seconds")
      expect((yield* send(`${gitlab.url}/api/v4/projects`, bearer("glpat-a"))).status).toBe(200)
    }))

  it.scoped("answers 401 to unknown tokens", () =>
    Effect.gen(function*() {
      const gitlab = yield* GitLab.make()
      const answer = yield* send(`${gitlab.url}/api/v4/user`, { headers: { "private-token": "nope" } })
      expect([answer.status, answer.json]).toEqual([401, { message: "401 Unauthorized" }])
    }))
})

// --- Bitbucket ---------------------------------------------------------------------------------

describe("Bitbucket fake", () => {
  it.scoped("answers /2.0/user by Bearer or Basic app password, 401 otherwise", () =>
    Effect.gen(function*() {
      const bitbucket = yield* Bitbucket.make()
      bitbucket.addToken("bb-a", { username: "bucky", displayName: "Bucky" })
      const user = yield* send(`${bitbucket.url}/2.0/user`, bearer("bb-a"))
      expect(field(user.json, "username")).toBe("bucky")
      expect(field(user.json, "display_name")).toBe("Bucky")
      expect(stringField(user.json, "uuid")).toMatch(/^\{[0-9a-f-]{36}\}$/)
      expect(user.headers.get("x-ratelimit-limit")).toBeNull()
      const basicAuth = yield* send(`${bitbucket.url}/2.0/user`, { headers: { authorization: basic("bucky", "bb-a") } })
      expect(basicAuth.status).toBe(200)
      expect((yield* send(`${bitbucket.url}/2.0/user`, bearer("nope"))).status).toBe(401)
    }))

  it.scoped("an exhausted quota answers 429, with Retry-After unless switched off", () =>
    Effect.gen(function*() {
      const bitbucket = yield* Bitbucket.make({ now: () => 1_700_000_000_000 })
      bitbucket.addToken("bb-a", { limit: 5, remaining: 0, resetAt: new Date(1_700_000_030_000) })
      const limited = yield* send(`${bitbucket.url}/2.0/repositories/w/r`, bearer("bb-a"))
      expect(limited.status).toBe(429)
      expect(limited.headers.get("retry-after")).toBe("30")
      bitbucket.configure({ retryAfter: false })
      expect((yield* send(`${bitbucket.url}/2.0/repositories/w/r`, bearer("bb-a"))).headers.get("retry-after")).toBeNull()
      expect(bitbucket.calls("api")).toBe(2)
    }))

  it.scoped("sends X-RateLimit-* headers when switched on", () =>
    Effect.gen(function*() {
      const bitbucket = yield* Bitbucket.make({ rateLimitHeaders: true, now: () => 1_700_000_000_000 })
      bitbucket.addToken("bb-a", { limit: 5 })
      const answer = yield* send(`${bitbucket.url}/2.0/repositories/w/r`, bearer("bb-a"))
      expect(answer.headers.get("x-ratelimit-limit")).toBe("5")
      expect(answer.headers.get("x-ratelimit-remaining")).toBe("4")
      expect(answer.headers.get("x-ratelimit-reset")).toBe(String(1_700_000_000 + 3600))
      expect(bitbucket.quota("bb-a")?.remaining).toBe(4)
    }))
})

// --- OAuth2 ------------------------------------------------------------------------------------

describe("OAuth2 fake", () => {
  const refresh = (oauth: OAuth2.OAuth2Server, refreshToken: string) =>
    send(`${oauth.url}/oauth/token`, form({ grant_type: "refresh_token", refresh_token: refreshToken }, { authorization: basic("app", "s3cret") }))

  it.scoped("rotates the refresh token on every refresh", () =>
    Effect.gen(function*() {
      const oauth = yield* OAuth2.make({ clients: { app: "s3cret" }, accessTokenLifetimeSeconds: 900 })
      const { refreshToken } = oauth.issueGrant("app")
      const answer = yield* refresh(oauth, refreshToken)
      expect(answer.status).toBe(200)
      expect(field(answer.json, "token_type")).toBe("Bearer")
      expect(field(answer.json, "expires_in")).toBe(900)
      const rotated = stringField(answer.json, "refresh_token")
      expect(rotated).not.toBe(refreshToken)
      expect(oauth.isValidAccessToken(stringField(answer.json, "access_token"))).toBe(true)
      expect(oauth.isValidRefreshToken(rotated)).toBe(true)
      expect(oauth.isValidRefreshToken(refreshToken)).toBe(false)
      expect(oauth.lastRequest("token")?.body).toEqual({ grant_type: "refresh_token", refresh_token: refreshToken })
      expect(oauth.refreshes()).toBe(1)
    }))

  it.scoped("presenting a used refresh token revokes the whole grant", () =>
    Effect.gen(function*() {
      const oauth = yield* OAuth2.make({ clients: { app: "s3cret" } })
      const { refreshToken } = oauth.issueGrant("app")
      const first = yield* refresh(oauth, refreshToken)
      const accessToken = stringField(first.json, "access_token")
      const rotated = stringField(first.json, "refresh_token")
      const reused = yield* refresh(oauth, refreshToken)
      expect(reused.status).toBe(400)
      expect(field(reused.json, "error")).toBe("invalid_grant")
      expect(typeof field(reused.json, "error_description")).toBe("string")
      expect(oauth.reuseRevocations()).toBe(1)
      expect(oauth.isValidAccessToken(accessToken)).toBe(false)
      const afterRevocation = yield* refresh(oauth, rotated)
      expect([afterRevocation.status, field(afterRevocation.json, "error")]).toEqual([400, "invalid_grant"])
      expect(oauth.reuseRevocations()).toBe(1)
      expect(oauth.refreshes()).toBe(1)
      expect(oauth.calls("token")).toBe(3)
    }))

  it.scoped("serves client_credentials without a refresh token, client authenticated by form fields", () =>
    Effect.gen(function*() {
      const oauth = yield* OAuth2.make()
      oauth.addClient("svc", "pw")
      const answer = yield* send(`${oauth.url}/oauth/token`, form({ grant_type: "client_credentials", client_id: "svc", client_secret: "pw" }))
      expect(answer.status).toBe(200)
      expect(field(answer.json, "refresh_token")).toBeUndefined()
      expect(oauth.isValidAccessToken(stringField(answer.json, "access_token"))).toBe(true)
      expect(answer.headers.get("cache-control")).toBe("no-store")
    }))

  it.scoped("refuses bad clients with 401 invalid_client and non-form bodies with 400", () =>
    Effect.gen(function*() {
      const oauth = yield* OAuth2.make({ clients: { app: "s3cret" } })
      const { refreshToken } = oauth.issueGrant("app")
      const wrongSecret = yield* send(
        `${oauth.url}/oauth/token`,
        form({ grant_type: "refresh_token", refresh_token: refreshToken }, { authorization: basic("app", "wrong") })
      )
      expect([wrongSecret.status, wrongSecret.json]).toEqual([401, { error: "invalid_client" }])
      expect(wrongSecret.headers.get("www-authenticate")).toMatch(/^Basic/)
      const noClient = yield* send(`${oauth.url}/oauth/token`, form({ grant_type: "client_credentials" }))
      expect(noClient.status).toBe(401)
      const json = yield* send(`${oauth.url}/oauth/token`, postJson({ grant_type: "client_credentials" }))
      expect([json.status, field(json.json, "error")]).toEqual([400, "invalid_request"])
      expect(oauth.isValidRefreshToken(refreshToken)).toBe(true)
    }))

  it.scoped("access tokens expire on the injected clock", () =>
    Effect.gen(function*() {
      const now = yield* FakeServer.clockNow
      const oauth = yield* OAuth2.make({ clients: { app: "s3cret" }, accessTokenLifetimeSeconds: 60, now })
      const answer = yield* refresh(oauth, oauth.issueGrant("app").refreshToken)
      const accessToken = stringField(answer.json, "access_token")
      yield* TestClock.adjust("1 minute")
      expect(oauth.isValidAccessToken(accessToken)).toBe(false)
    }))
})
