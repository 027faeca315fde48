// HTTP benchmarks: requests per second and p50/p99 latency of the real `tessera serve` (the
// built `packages/cli/dist/bin.js`, in a child process) against a bare `node:http` server
// answering a JSON body of the same size (also a child process), on 127.0.0.1 only.
//
// Measured, each after a short warm-up, for a fixed duration at a fixed number of keep-alive
// connections (autocannon in this process, so the load generator does not share the
// servers' event loops):
//   bare      GET  /                                  `res.end(JSON.stringify({...}))`, ~490 B
//   status    GET  /accounts/{id}/token/status        read scope, cycling over the 100 accounts
//   acquire   POST /pools/github/acquire              token scope, a pool of 100 static tokens
// and Tessera ÷ bare for both routes (…Ratio, and …VsBarePct for the table). Latencies are
// in microseconds, measured per response. Every answer must be 2xx: `non2xx` and `errors`
// must be 0 (nothing reports rate limits, so the pool never runs dry).
//
// Tessera runs with a SQLite file in a temporary directory (`TESSERA_DB`), one API key with
// every scope (`TESSERA_API_KEYS`) and 100 static tokens in the pool `github`
// (`GITHUB_TOKENS`; `GITHUB_API_URL` points at a closed loopback port, so nothing can leave
// the machine). Children and the temporary directory are removed even on failure.
//
// Settings: BENCH_HTTP_DURATION (seconds, default 5), BENCH_HTTP_WARMUP (seconds, default 2),
// BENCH_HTTP_CONNECTIONS (default 32). BENCH_HTTP_PROFILE=<dir> runs the Tessera child with
// `--cpu-prof --cpu-prof-dir=<dir>` (the profile is written when it stops).
import autocannon from "autocannon"
import { spawn } from "node:child_process"
import { createHash } from "node:crypto"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"

const HOST = "127.0.0.1"
const DURATION = Number(process.env.BENCH_HTTP_DURATION ?? 5)
const WARMUP = Number(process.env.BENCH_HTTP_WARMUP ?? 2)
const CONNECTIONS = Number(process.env.BENCH_HTTP_CONNECTIONS ?? 32)
const PROFILE = process.env.BENCH_HTTP_PROFILE
const POOL_SIZE = 100
const STARTUP_TIMEOUT_MS = 30_000
const STOP_TIMEOUT_MS = 10_000

const BIN = fileURLToPath(new URL("../packages/cli/dist/bin.js", import.meta.url))
const SECRET = "bench-http-secret-0123456789abcdef"
const AUTH = { authorization: `Bearer ${SECRET}` }
const TOKENS = Array.from({ length: POOL_SIZE }, (_, i) => `ghp_bench_http_${String(i).padStart(26, "0")}`)
/** The id `tessera` gives a static GitHub token (see providers' Static.accountId). */
const accountIdOf = (token) => `github-${createHash("sha256").update(token).digest("hex").slice(0, 10)}`

/**
 * The bare baseline: parses nothing, answers every request with a JSON body shaped and sized
 * like Tessera's token status (a fresh timestamp each time, as Tessera formats its own).
 */
const BARE_SERVER = `
const http = require("node:http")
const server = http.createServer((req, res) => {
  const now = new Date().toISOString()
  const body = JSON.stringify({
    account_id: "github-d9e7449800", provider: "github", pool: "github", status: "available",
    has_token: true, token_preview: "ghp_…0000", expires_at: null, expires_at_local: null,
    expires_in_seconds: null, issued_at: now, issued_at_local: now.replace("Z", "+00:00"),
    source: "static", last_refreshed_at: null, last_refreshed_at_local: null,
    last_used_at: null, last_used_at_local: null, username: null, last_error: null,
    invalid_reason: null, rate_limit: null
  })
  res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(body) })
  res.end(body)
})
server.listen(0, ${JSON.stringify(HOST)}, () => console.log("listening on http://${HOST}:" + server.address().port))
process.on("SIGTERM", () => server.close(() => process.exit(0)))
`

// --- children -----------------------------------------------------------------------------

const running = new Set()
/** Last resort if this process goes away without its `finally`: no child outlives it. */
const killAll = () => {
  for (const child of running) if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL")
}

/** Starts `args` under node with only `env` (and PATH); resolves with its base URL once it listens. */
const startChild = (name, args, env) => {
  const child = spawn(process.execPath, args, {
    env: { PATH: process.env.PATH ?? "", ...env },
    stdio: ["ignore", "pipe", "pipe"]
  })
  running.add(child)
  let output = ""
  const keep = (chunk) => {
    output += String(chunk)
    if (output.length > 64_000) output = output.slice(-32_000)
  }
  child.stdout.on("data", keep)
  child.stderr.on("data", keep)
  const exited = new Promise((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })))
  const handle = {
    name,
    child,
    output: () => output,
    exited,
    url: undefined,
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill("SIGTERM")
        const timer = setTimeout(() => child.kill("SIGKILL"), STOP_TIMEOUT_MS)
        await exited
        clearTimeout(timer)
      }
      running.delete(child)
    }
  }
  const url = new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      reject(new Error(`${name} did not start within ${STARTUP_TIMEOUT_MS} ms:\n${output}`))
    }, STARTUP_TIMEOUT_MS)
    const check = () => {
      const found = /listening on (http:\/\/[^\s]+)/.exec(output)?.[1]
      if (found === undefined) return
      clearTimeout(timer)
      child.stdout.off("data", check)
      child.stderr.off("data", check)
      resolve(found)
    }
    child.stdout.on("data", check)
    child.stderr.on("data", check)
    exited.then(({ code, signal }) => {
      clearTimeout(timer)
      reject(new Error(`${name} exited (${code ?? signal}) before listening:\n${output}`))
    })
  })
  return url.then((found) => {
    const parsed = new URL(found)
    if (parsed.hostname !== HOST) throw new Error(`${name} listens on ${parsed.hostname}, not ${HOST}`)
    handle.url = `http://${HOST}:${parsed.port}`
    return handle
  }, async (error) => {
    await handle.stop()
    throw error
  })
}

// --- load ---------------------------------------------------------------------------------

const percentile = (sorted, p) => sorted.length === 0 ? NaN : sorted[Math.min(sorted.length - 1, Math.ceil(p * sorted.length) - 1)]

/**
 * One autocannon run against `url` with `requests` (cycled per connection). Latency is taken
 * from every response (autocannon's own histogram keeps whole milliseconds only). Stops by
 * itself after `seconds`; a guard stops it should it not.
 */
const load = (url, requests, seconds) =>
  new Promise((resolve, reject) => {
    let latencies = new Float64Array(1 << 18)
    let count = 0
    let guard
    let done = false
    const instance = autocannon({
      url,
      connections: CONNECTIONS,
      pipelining: 1,
      duration: seconds,
      timeout: 10,
      requests
    }, (error, result) => {
      done = true
      clearTimeout(guard)
      if (error) reject(error)
      else {
        const sorted = latencies.subarray(0, count).sort()
        resolve({ result, sorted })
      }
    })
    instance.on("response", (_client, statusCode, _bytes, responseTime) => {
      if (statusCode < 200 || statusCode >= 300) return
      if (count === latencies.length) {
        const bigger = new Float64Array(latencies.length * 2)
        bigger.set(latencies)
        latencies = bigger
      }
      latencies[count++] = responseTime
    })
    if (!done) guard = setTimeout(() => instance.stop(), (seconds + 15) * 1_000)
  })

/** Warm-up, then the timed run: requests/s, p50/p99 (µs), non-2xx answers and socket errors. */
const measure = async (label, url, requests, results) => {
  await load(url, requests, WARMUP)
  const { result, sorted } = await load(url, requests, DURATION)
  const completed = result["1xx"] + result["2xx"] + result["3xx"] + result["4xx"] + result["5xx"]
  const rps = completed / result.duration
  results[`${label}Rps`] = Math.round(rps)
  results[`${label}P50Us`] = Math.round(percentile(sorted, 0.5) * 1_000)
  results[`${label}P99Us`] = Math.round(percentile(sorted, 0.99) * 1_000)
  results[`${label}Requests`] = completed
  results[`${label}Non2xx`] = result.non2xx
  results[`${label}Errors`] = result.errors + result.timeouts
  if (result.non2xx > 0 || result.errors > 0 || result.timeouts > 0) {
    console.error(`http bench ${label}: status codes ${JSON.stringify(result.statusCodeStats)}, errors ${result.errors}, timeouts ${result.timeouts}`)
  }
  return rps
}

/** A request through fetch, for the checks before the load: the JSON answer or an error. */
const call = async (url, method, route) => {
  const response = await fetch(`${url}${route}`, { method, headers: AUTH })
  const text = await response.text()
  if (response.status !== 200) throw new Error(`${method} ${route}: ${response.status} ${text}`)
  return JSON.parse(text)
}

// --- the benchmark ------------------------------------------------------------------------

export const run = async () => {
  if (!fs.existsSync(BIN)) throw new Error(`build first: ${BIN} is missing (pnpm bench builds it)`)
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tessera-http-bench-"))
  process.on("exit", killAll)
  const children = []
  const results = { connections: CONNECTIONS, durationS: DURATION }
  try {
    // 1. the bare baseline, alone on the machine
    const bare = await startChild("bare node:http server", ["-e", BARE_SERVER], {})
    children.push(bare)
    const bareRps = await measure("bare", bare.url, [{ method: "GET", path: "/" }], results)
    await bare.stop()

    // 2 and 3. tessera serve
    const ids = TOKENS.map(accountIdOf)
    const tessera = await startChild("tessera serve", [...(PROFILE ? ["--cpu-prof", `--cpu-prof-dir=${PROFILE}`] : []), BIN, "serve"], {
      TESSERA_HOST: HOST,
      TESSERA_PORT: "0",
      TESSERA_DB: path.join(dir, "tessera.db"),
      TESSERA_API_KEYS: `bench:read+token+admin:${SECRET}`,
      GITHUB_TOKENS: TOKENS.join(","),
      GITHUB_API_URL: `http://${HOST}:9`
    })
    children.push(tessera)
    const listed = await call(tessera.url, "GET", "/pools/github/tokens")
    const available = new Set(listed.filter((info) => info.status === "available").map((info) => info.account_id))
    const missing = ids.filter((id) => !available.has(id))
    if (missing.length > 0) throw new Error(`${missing.length} of ${POOL_SIZE} pool accounts are not available: ${missing.slice(0, 3).join(", ")}…`)
    const status = await call(tessera.url, "GET", `/accounts/${ids[0]}/token/status`)
    if (status.account_id !== ids[0]) throw new Error(`unexpected status answer ${JSON.stringify(status)}`)
    const lease = await call(tessera.url, "POST", "/pools/github/acquire")
    if (!ids.includes(lease.account_id)) throw new Error(`unexpected lease ${JSON.stringify(lease)}`)

    const statusRps = await measure(
      "status",
      tessera.url,
      ids.map((id) => ({ method: "GET", path: `/accounts/${id}/token/status`, headers: AUTH })),
      results
    )
    const acquireRps = await measure(
      "acquire",
      tessera.url,
      [{ method: "POST", path: "/pools/github/acquire", headers: AUTH }],
      results
    )
    await tessera.stop()
    const exit = await tessera.exited
    if (exit.code !== 0) console.error(`http bench: tessera serve exited with ${exit.code ?? exit.signal}:\n${tessera.output().slice(-2_000)}`)

    results.statusRatio = Math.round((statusRps / bareRps) * 1_000) / 1_000
    results.acquireRatio = Math.round((acquireRps / bareRps) * 1_000) / 1_000
    results.statusVsBarePct = Math.round((statusRps / bareRps) * 100)
    results.acquireVsBarePct = Math.round((acquireRps / bareRps) * 100)
    results.non2xx = results.bareNon2xx + results.statusNon2xx + results.acquireNon2xx
    results.errors = results.bareErrors + results.statusErrors + results.acquireErrors
  } finally {
    for (const child of children) await child.stop().catch(() => undefined)
    killAll()
    process.off("exit", killAll)
    fs.rmSync(dir, { recursive: true, force: true })
  }
  return results
}
