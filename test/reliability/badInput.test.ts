/**
 * Issue 6, "Bad input" (SPEC §4.6): at least 10,000 generated bad requests per route that
 * takes input (and as many to no route at all), sent over keep-alive connections to the real
 * server on 127.0.0.1 with a valid admin key, so the input and not the key is what is judged.
 * Every answer must be a 4xx with `{"error":{"code","message"}}`, none a 5xx, none a stack
 * trace or a secret; afterwards the stored state is the same, `/health` answers 200 and the
 * heap has not grown without bound. Bodies of several megabytes, and requests that are not
 * HTTP at all, are sent too, a handful of each. The figures are printed.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, FastCheck as fc, Redacted } from "effect"
import { createHash } from "node:crypto"
import * as http from "node:http"
import * as net from "node:net"
import * as v8 from "node:v8"
import * as vm from "node:vm"
import * as H from "../server/harness.js"
import { type BadRequest, endpoints, MARK } from "./badInputGen.js"

/**
 * Requests per endpoint: the 10,000, so 160,000 in all, which take minutes (most of it
 * the server's own work per request; the test's timeout allows for a busy machine).
 * `TESSERA_BAD_INPUT_RUNS` changes it for a quicker look.
 */
const RUNS = Number(process.env["TESSERA_BAD_INPUT_RUNS"] ?? 10_000)
/** The generators' seed: printed, and `TESSERA_BAD_INPUT_SEED` replays a run. */
const SEED = Number(process.env["TESSERA_BAD_INPUT_SEED"] ?? 20_261_123)
const CONCURRENCY = 16

// --- sending ----------------------------------------------------------------------------------

interface Answer {
  readonly status: number
  readonly contentType: string
  readonly text: string
}

/** One request over a keep-alive connection; a failure to get an answer is status 0. */
const send = (agent: http.Agent, port: number, key: string, request: BadRequest): Promise<Answer> =>
  new Promise((resolve) => {
    const body = request.body === undefined ? undefined : Buffer.from(request.body)
    const headers: Record<string, string> = { authorization: `Bearer ${key}`, ...request.headers }
    if (body !== undefined) headers["content-length"] = String(body.length)
    let req: http.ClientRequest
    try {
      req = http.request({ host: "127.0.0.1", port, method: request.method, path: request.path, headers, agent }, (res) => {
        const chunks: Array<Buffer> = []
        res.on("data", (chunk: Buffer) => chunks.push(chunk))
        res.on("end", () =>
          resolve({ status: res.statusCode ?? 0, contentType: String(res.headers["content-type"] ?? ""), text: Buffer.concat(chunks).toString("utf8") }))
        res.on("error", (error) => resolve({ status: 0, contentType: "", text: `response failed: ${error.message}` }))
      })
    } catch (error) {
      // The client refused to send it: a generator bug, counted apart.
      return resolve({ status: -1, contentType: "", text: `not sent: ${(error as Error).message}` })
    }
    req.setTimeout(20_000, () => req.destroy(new Error("no answer within 20 s")))
    req.on("error", (error) => resolve({ status: 0, contentType: "", text: `request failed: ${error.message}` }))
    req.end(body)
  })

/** Sends every request, `CONCURRENCY` at a time, and hands each answer to `check`. */
const sendAll = (port: number, key: string, requests: ReadonlyArray<BadRequest>, check: (request: BadRequest, answer: Answer) => void) =>
  Effect.promise(async () => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: CONCURRENCY })
    let next = 0
    const worker = async () => {
      while (next < requests.length) {
        const request = requests[next++]!
        check(request, await send(agent, port, key, request))
      }
    }
    await Promise.all(Array.from({ length: CONCURRENCY }, worker))
    agent.destroy()
  })

// --- judging an answer ------------------------------------------------------------------------

/** What a stack trace or an internal leak looks like in a body. */
const STACK = /\n\s+at |\bat [\w.<>$]+ \(|node_modules|\/work\/|file:\/\/|\.[cm]?[jt]s:\d+|\b(Range|Type|Syntax|Reference)Error\b|\bError: /

const isErrorShape = (text: string): boolean => {
  try {
    const json = JSON.parse(text) as { error?: { code?: unknown; message?: unknown } }
    return typeof json.error?.code === "string" && typeof json.error.message === "string"
  } catch {
    return false
  }
}

/** The counts of one group of requests, and one example of each kind of failure. */
class Tally {
  sent = 0
  clientErrors = 0
  serverErrors = 0
  other = 0
  noAnswer = 0
  notSent = 0
  notJson = 0
  stackTraces = 0
  secrets = 0
  largest = 0
  readonly statuses = new Map<number, number>()
  /** One example per kind of request and problem. */
  readonly failures = new Map<string, string>()

  /** `known`: the secrets no answer may contain. */
  constructor(readonly known: ReadonlyArray<string>) {}

  record(request: BadRequest, answer: Answer) {
    this.sent++
    const problems: Array<string> = []
    if (answer.status === -1) {
      this.notSent++
      problems.push("not sent")
    } else if (answer.status === 0) {
      this.noAnswer++
      problems.push("no answer")
    } else {
      this.statuses.set(answer.status, (this.statuses.get(answer.status) ?? 0) + 1)
      this.largest = Math.max(this.largest, Buffer.byteLength(answer.text))
      if (answer.status >= 400 && answer.status < 500) this.clientErrors++
      else if (answer.status >= 500) this.serverErrors++
      else this.other++
      if (answer.status < 400 || answer.status >= 500) problems.push(`status ${answer.status}`)
      // No generator sends HEAD, so every answer has a body.
      if (!answer.contentType.startsWith("application/json") || !isErrorShape(answer.text)) {
        this.notJson++
        problems.push("not the JSON error shape")
      }
      if (STACK.test(answer.text)) {
        this.stackTraces++
        problems.push("stack trace")
      }
      if (this.known.some((secret) => answer.text.includes(secret))) {
        this.secrets++
        problems.push("secret echoed")
      }
    }
    const key = `${problems.join(", ")}: ${request.kind}`
    if (problems.length > 0 && !this.failures.has(key) && this.failures.size < 12) {
      const body = request.body === undefined ? "" : ` body ${JSON.stringify(String(request.body).slice(0, 160))}`
      this.failures.set(
        key,
        `[${key}] ${request.method} ${request.path.slice(0, 160)} ${JSON.stringify(request.headers)}${body} -> ${answer.status} ${answer.text.slice(0, 300)}`
      )
    }
  }

  get ok() {
    return this.sent > 0 && this.clientErrors === this.sent && this.notJson === 0 && this.stackTraces === 0 && this.secrets === 0
  }

  summary(name: string, seconds: number) {
    const statuses = [...this.statuses].sort(([a], [b]) => a - b).map(([status, n]) => `${status}×${n}`).join(" ")
    return `${name}: ${this.sent} sent, ${this.clientErrors} 4xx (${statuses}), ${this.serverErrors} 5xx, ${this.other} other, ` +
      `${this.noAnswer} unanswered, ${this.notSent} not sent, ${this.notJson} non-JSON, ${this.stackTraces} stack traces, ${this.secrets} secrets, ` +
      `largest body ${this.largest} B, ${seconds.toFixed(1)} s`
  }
}

// --- the state that must not change -----------------------------------------------------------

/** A value with every `Redacted` opened, so two snapshots compare the secrets too. */
const reveal = (value: unknown): unknown => {
  if (Redacted.isRedacted(value)) return { redacted: Redacted.value(value) }
  if (Array.isArray(value)) return value.map(reveal)
  if (typeof value === "object" && value !== null) return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, reveal(v)]))
  return value
}

const withoutClock = (value: unknown): unknown =>
  JSON.parse(JSON.stringify(value, (key, v) => (key === "expires_in_seconds" || key === "expiresInSeconds" ? undefined : v)))

/** Every stored row (decrypted), every token's info, every pool, the audit log, and the same over HTTP. */
const snapshotNow = (running: H.Running) =>
  Effect.gen(function*() {
    const stored = yield* Effect.orDie(running.store.loadAll)
    const rows = stored.map((row) => JSON.stringify(reveal({ account: row.account, state: row.state }))).sort()
    const audit = yield* Effect.orDie(running.store.audit({ limit: 1000 }))
    const accounts = yield* H.call(running, "GET", "/accounts", { key: running.keys.admin })
    const pools = yield* H.call(running, "GET", "/pools", { key: running.keys.admin })
    return {
      rows,
      accounts: stored.length,
      tokens: withoutClock((yield* running.lifecycle.list).map(reveal)),
      pools: yield* running.pool.pools,
      auditEntries: audit.length,
      lastAuditId: audit[0]?.id ?? 0,
      http: withoutClock({ accounts: accounts.json, pools: pools.json })
    }
  })

/**
 * A snapshot once the store has settled: usage (the fixture's own first `get`s) is written a
 * moment after it happens, so two snapshots in a row must agree.
 */
const snapshot = (running: H.Running) =>
  Effect.gen(function*() {
    let last = yield* snapshotNow(running)
    for (let i = 0; i < 50; i++) {
      yield* Effect.sleep("100 millis")
      const next = yield* snapshotNow(running)
      if (JSON.stringify(next) === JSON.stringify(last)) return next
      last = next
    }
    return last
  })

/** Every value held as `Redacted` inside `value`. */
const secretsIn = (value: unknown): Array<string> => {
  if (Redacted.isRedacted(value)) return [String(Redacted.value(value))]
  if (typeof value === "object" && value !== null) return Object.values(value).flatMap(secretsIn)
  return []
}

/** Every secret the fixture holds (API keys, stored tokens and credentials), and the generators' mark. */
const fixtureSecrets = (running: H.Running) =>
  Effect.map(Effect.orDie(running.store.loadAll), (stored) => [
    MARK,
    running.keys.admin,
    running.keys.read,
    running.keys.token,
    ...H.GH_TOKENS,
    ...stored.flatMap((row) => secretsIn(row))
  ])

/** Nothing stored has changed since `before`, and the server still answers `/health`. */
const expectUnharmed = (running: H.Running, before: Effect.Effect.Success<ReturnType<typeof snapshot>>) =>
  Effect.gen(function*() {
    expect(yield* snapshot(running)).toEqual(before)
    expect((yield* H.call(running, "GET", "/health")).status).toBe(200)
  })

// --- memory -----------------------------------------------------------------------------------

v8.setFlagsFromString("--expose-gc")
const gc = vm.runInNewContext("gc") as () => void

const memory = () => {
  gc()
  gc()
  const usage = process.memoryUsage()
  return { heap: usage.heapUsed, rss: usage.rss }
}
const mb = (bytes: number) => `${(bytes / 1024 / 1024).toFixed(1)} MB`

const portOf = (running: H.Running) => Number(new URL(running.url).port)

/** A short fingerprint of the stored rows, for the printed figures. */
const fingerprint = (rows: ReadonlyArray<string>) => createHash("sha256").update(rows.join("\n")).digest("hex").slice(0, 16)

// --- bodies of megabytes, and requests that are not HTTP ---------------------------------------

/** A body of `bytes`, sent with its length or in chunks (with backpressure); the answer, however the connection ends. */
const sendHuge = (port: number, key: string, options: {
  readonly path: string
  readonly contentType: string
  readonly bytes: number
  readonly chunked: boolean
  readonly fill: string
}) =>
  Effect.promise(() =>
    new Promise<Answer>((resolve) => {
      let answered = false
      const answer = (a: Answer) => {
        if (!answered) (answered = true), resolve(a)
      }
      const headers: Record<string, string> = { authorization: `Bearer ${key}`, "content-type": options.contentType }
      if (!options.chunked) headers["content-length"] = String(options.bytes)
      const req = http.request({ host: "127.0.0.1", port, method: "POST", path: options.path, headers, agent: false }, (res) => {
        const chunks: Array<Buffer> = []
        res.on("data", (chunk: Buffer) => chunks.push(chunk))
        res.on("end", () => answer({ status: res.statusCode ?? 0, contentType: String(res.headers["content-type"] ?? ""), text: Buffer.concat(chunks).toString("utf8") }))
        res.on("error", () => answer({ status: res.statusCode ?? 0, contentType: String(res.headers["content-type"] ?? ""), text: Buffer.concat(chunks).toString("utf8") }))
      })
      req.setTimeout(60_000, () => req.destroy(new Error("no answer within 60 s")))
      req.on("error", (error) => answer({ status: 0, contentType: "", text: `request failed: ${error.message}` }))
      const piece = Buffer.alloc(64 * 1024, options.fill)
      let sent = 0
      const write = () => {
        while (sent < options.bytes) {
          const n = Math.min(piece.length, options.bytes - sent)
          sent += n
          if (!req.write(n === piece.length ? piece : piece.subarray(0, n))) return void req.once("drain", write)
        }
        req.end()
      }
      write()
    })
  )

/** Raw bytes on a fresh connection: what comes back before the server closes it (or 10 s pass). */
const sendRaw = (port: number, bytes: string | Buffer) =>
  Effect.promise(() =>
    new Promise<Answer>((resolve) => {
      const socket = net.connect(port, "127.0.0.1")
      const chunks: Array<Buffer> = []
      const done = () => {
        socket.destroy()
        const raw = Buffer.concat(chunks).toString("utf8")
        const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(raw)?.[1] ?? 0)
        const split = raw.indexOf("\r\n\r\n")
        const head = split < 0 ? raw : raw.slice(0, split)
        resolve({
          status,
          contentType: /\r\ncontent-type: ([^\r]*)/i.exec(head)?.[1] ?? "",
          text: split < 0 ? "" : raw.slice(split + 4)
        })
      }
      socket.on("data", (chunk: Buffer) => chunks.push(chunk))
      socket.on("end", done)
      socket.on("error", done)
      socket.setTimeout(10_000, done)
      socket.write(bytes)
    })
  )

const CRLF = "\r\n"

/** Requests Node's HTTP parser refuses: bad methods, targets, versions, headers, lengths, chunks, sizes. */
const unparsable = (key: string): fc.Arbitrary<{ readonly kind: string; readonly bytes: string }> => {
  const auth = `Authorization: Bearer ${key}${CRLF}`
  const line = (method: string, target: string, version = "HTTP/1.1") => `${method} ${target} ${version}${CRLF}Host: 127.0.0.1${CRLF}`
  const token = fc.string({ unit: fc.constantFrom(..."ABCDEFGHIJKLMNOPQRSTUVWXYZ"), minLength: 3, maxLength: 12 })
  return fc.oneof(
    token.filter((m) => !http.METHODS.includes(m)).map((m) => ({ kind: "unknown method", bytes: `${line(m, "/accounts")}${auth}${CRLF}` })),
    fc.constantFrom("/accounts/a b/token", "/accounts/\u00e9/token", "/pools/\u65e5/tokens", "/audit?limit=\u0000", "/accounts/\x7f", "/a\tb")
      .map((target) => ({ kind: "raw characters in the target", bytes: `${line("GET", target)}${auth}${CRLF}` })),
    fc.constantFrom("HTTP/9.9", "HTTP/1.1x", "HTTP/", "HTTX/1.1", "http/1.1", "HTTP/1.1 extra")
      .map((version) => ({ kind: "bad version", bytes: `${line("GET", "/health", version)}${CRLF}` })),
    fc.constantFrom("Bad Header: x", "NoColon", ": empty-name", "X-\u00e9: y", "X-A\u0000: y", "X-B: a\u0000b", "(x): y")
      .map((header) => ({ kind: "malformed header", bytes: `${line("GET", "/accounts")}${auth}${header}${CRLF}${CRLF}` })),
    fc.constantFrom("abc", "-1", "1 2", "0x10", "1e3", "99999999999999999999999")
      .map((length) => ({ kind: "bad Content-Length", bytes: `${line("POST", "/accounts")}${auth}Content-Length: ${length}${CRLF}${CRLF}{}` })),
    fc.constant({ kind: "two Content-Lengths", bytes: `${line("POST", "/accounts")}${auth}Content-Length: 2${CRLF}Content-Length: 3${CRLF}${CRLF}{}x` }),
    fc.constant({ kind: "Content-Length and chunked", bytes: `${line("POST", "/accounts")}${auth}Content-Length: 2${CRLF}Transfer-Encoding: chunked${CRLF}${CRLF}2${CRLF}{}${CRLF}0${CRLF}${CRLF}` }),
    fc.constantFrom("zz", "-1", "ffffffffffffffffff", "2;\u0000")
      .map((size) => ({ kind: "bad chunk", bytes: `${line("POST", "/accounts")}${auth}Transfer-Encoding: chunked${CRLF}${CRLF}${size}${CRLF}{}${CRLF}0${CRLF}${CRLF}` })),
    fc.integer({ min: 20_000, max: 60_000 }).map((n) => ({ kind: "headers too large", bytes: `${line("GET", "/health")}X-Big: ${"b".repeat(n)}${CRLF}${CRLF}` })),
    fc.uint8Array({ minLength: 8, maxLength: 64 }).map((bytes) => ({ kind: "binary noise", bytes: `\x16\x03\x01${Buffer.from(bytes).toString("latin1")}${CRLF}${CRLF}` }))
  )
}

// --- the suite --------------------------------------------------------------------------------

describe("bad input (SPEC §4.6)", () => {
  it.scopedLive(`${RUNS.toLocaleString("en")} generated bad requests per endpoint: all 4xx JSON errors, no 5xx, no stack trace, nothing changes`, () =>
    Effect.gen(function*() {
      const running = yield* H.start()
      const port = portOf(running)
      const secrets = yield* fixtureSecrets(running)
      const before = yield* snapshot(running)
      const memoryBefore = memory()
      console.log(`bad input: seed ${SEED}, ${RUNS} requests per endpoint, ${endpoints.length} endpoints, concurrency ${CONCURRENCY}`)

      const tallies: Array<[string, Tally]> = []
      const started = performance.now()
      for (const [i, endpoint] of endpoints.entries()) {
        const requests = fc.sample(endpoint.requests, { numRuns: RUNS, seed: SEED + i })
        const tally = new Tally(secrets)
        const t0 = performance.now()
        yield* sendAll(port, running.keys.admin, requests, (request, answer) => tally.record(request, answer))
        console.log(tally.summary(endpoint.name, (performance.now() - t0) / 1000))
        tallies.push([endpoint.name, tally])
      }
      const seconds = (performance.now() - started) / 1000
      const total = tallies.reduce((n, [, t]) => n + t.sent, 0)
      const sum = (f: (t: Tally) => number) => tallies.reduce((n, [, t]) => n + f(t), 0)
      console.log(
        `bad input: ${total} requests in ${seconds.toFixed(1)} s (${Math.round(total / seconds)} req/s): ` +
          `${sum((t) => t.clientErrors)} 4xx, ${sum((t) => t.serverErrors)} 5xx, ${sum((t) => t.other)} other, ` +
          `${sum((t) => t.noAnswer)} unanswered, ${sum((t) => t.notJson)} non-JSON, ${sum((t) => t.stackTraces)} stack traces, ${sum((t) => t.secrets)} secrets echoed`
      )

      const after = yield* snapshot(running)
      const health = yield* H.call(running, "GET", "/health")
      const memoryAfter = memory()
      console.log(
        `bad input: stored state ${fingerprint(after.rows) === fingerprint(before.rows) ? "unchanged" : "CHANGED"} ` +
          `(${after.accounts} accounts, sha256 ${fingerprint(before.rows)}… before, ${fingerprint(after.rows)}… after; ` +
          `${before.auditEntries} audit entries before, ${after.auditEntries} after), /health ${health.status}, ` +
          `heap ${mb(memoryBefore.heap)} -> ${mb(memoryAfter.heap)}, rss ${mb(memoryBefore.rss)} -> ${mb(memoryAfter.rss)}`
      )

      const broken = tallies.filter(([, tally]) => !tally.ok)
        .map(([name, tally]) => `${name}:\n  ${[...tally.failures.values()].join("\n  ")}`)
      expect(broken.join("\n")).toBe("")
      for (const [name, tally] of tallies) expect(tally.sent, name).toBeGreaterThanOrEqual(RUNS)
      expect(after).toEqual(before)
      expect(health.status).toBe(200)
      expect(memoryAfter.heap - memoryBefore.heap).toBeLessThan(100 * 1024 * 1024)
    }), { timeout: 1_800_000 })

  it.scopedLive("bodies of several megabytes are 413 JSON errors, with or without a length, and change nothing", () =>
    Effect.gen(function*() {
      const running = yield* H.start()
      const port = portOf(running)
      const before = yield* snapshot(running)
      const cases = [
        { path: "/token/update?validate=false", contentType: "application/json", bytes: 5 * 1024 * 1024, chunked: false, fill: "a" },
        { path: "/accounts", contentType: "text/plain", bytes: 8 * 1024 * 1024, chunked: false, fill: "x" },
        { path: "/pools/github/tokens", contentType: "application/json", bytes: 2 * 1024 * 1024, chunked: false, fill: "[" },
        { path: "/pools/github/report", contentType: "application/json", bytes: 5 * 1024 * 1024, chunked: true, fill: "a" },
        { path: "/accounts/acc-1/token/update?validate=false", contentType: "application/json", bytes: 3 * 1024 * 1024, chunked: true, fill: "[" },
        { path: "/accounts", contentType: "multipart/form-data; boundary=x", bytes: 4 * 1024 * 1024, chunked: true, fill: "-" }
      ]
      const tally = new Tally([MARK, running.keys.admin])
      const t0 = performance.now()
      for (const c of cases) {
        const answer = yield* sendHuge(port, running.keys.admin, c)
        tally.record({ method: "POST", path: c.path, headers: { "content-type": c.contentType }, kind: `${c.bytes / 1024 / 1024} MiB${c.chunked ? " chunked" : ""}` }, answer)
        expect(answer.status, `${c.path} ${c.chunked ? "chunked" : "with a length"}: ${answer.text}`).toBe(413)
      }
      console.log(tally.summary("bodies of 2-8 MiB", (performance.now() - t0) / 1000))
      expect(tally.ok, [...tally.failures.values()].join("\n")).toBe(true)
      yield* expectUnharmed(running, before)
    }), { timeout: 120_000 })

  it.scopedLive("requests that are not HTTP get a JSON 4xx too, and the server keeps serving", () =>
    Effect.gen(function*() {
      const running = yield* H.start()
      const port = portOf(running)
      const before = yield* snapshot(running)
      const requests = fc.sample(unparsable(running.keys.admin), { numRuns: 300, seed: SEED })
      const tally = new Tally([MARK, running.keys.admin])
      const t0 = performance.now()
      yield* Effect.forEach(requests, (request) =>
        Effect.map(sendRaw(port, request.bytes), (answer) =>
          tally.record({ method: "RAW", path: JSON.stringify(request.bytes.slice(0, 80)), headers: {}, kind: request.kind }, answer)), { concurrency: 8 })
      console.log(tally.summary("not HTTP (raw sockets)", (performance.now() - t0) / 1000))
      expect(tally.ok, [...tally.failures.values()].join("\n")).toBe(true)
      yield* expectUnharmed(running, before)
    }), { timeout: 120_000 })
})
