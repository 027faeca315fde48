// What the HTTP benchmarks share: `tessera serve` (the built `packages/cli/dist/bin.js`) and
// other servers as child processes on 127.0.0.1, and autocannon load against one or several
// of them at once, with latency taken per response.
//
// Settings: BENCH_HTTP_DURATION (seconds, default 5), BENCH_HTTP_WARMUP (seconds, default 2),
// BENCH_HTTP_CONNECTIONS (default 32, split over the servers of a run).
import autocannon from "autocannon"
import { spawn } from "node:child_process"
import { createHash } from "node:crypto"
import * as fs from "node:fs"
import { fileURLToPath } from "node:url"

export const HOST = "127.0.0.1"
export const DURATION = Number(process.env.BENCH_HTTP_DURATION ?? 5)
export const WARMUP = Number(process.env.BENCH_HTTP_WARMUP ?? 2)
export const CONNECTIONS = Number(process.env.BENCH_HTTP_CONNECTIONS ?? 32)
export const POOL_SIZE = 100
/** Generous: several services start at once on a busy 2-core machine. */
const STARTUP_TIMEOUT_MS = 60_000
const STOP_TIMEOUT_MS = 10_000

export const BIN = fileURLToPath(new URL("../packages/cli/dist/bin.js", import.meta.url))
const SECRET = "bench-http-secret-0123456789abcdef"
export const AUTH = { authorization: `Bearer ${SECRET}` }
export const TOKENS = Array.from({ length: POOL_SIZE }, (_, i) => `ghp_bench_http_${String(i).padStart(26, "0")}`)
/** The id `tessera` gives a static GitHub token (see providers' Static.accountId). */
export const accountIdOf = (token) => `github-${createHash("sha256").update(token).digest("hex").slice(0, 10)}`
export const ACCOUNT_IDS = TOKENS.map(accountIdOf)

/**
 * The environment of a benchmarked `tessera serve`: one API key with every scope and the 100
 * static tokens in the pool `github`, whose API URL is a closed loopback port (nothing can
 * leave the machine). `database` adds where it keeps its state (`TESSERA_DB` or
 * `TESSERA_DATABASE_URL`, …).
 */
export const tesseraEnv = (database) => ({
  TESSERA_HOST: HOST,
  TESSERA_PORT: "0",
  TESSERA_API_KEYS: `bench:read+token+admin:${SECRET}`,
  GITHUB_TOKENS: TOKENS.join(","),
  GITHUB_API_URL: `http://${HOST}:9`,
  ...database
})

export const requireBuild = () => {
  if (!fs.existsSync(BIN)) throw new Error(`build first: ${BIN} is missing (pnpm bench builds it)`)
}

// --- children -----------------------------------------------------------------------------

const running = new Set()
/** Last resort if this process goes away without its `finally`: no child outlives it. */
const killAll = () => {
  for (const child of running) if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL")
}
process.on("exit", killAll)

/** Starts `args` under node with only `env` (and PATH); resolves with its base URL once it listens. */
export const startChild = (name, args, env) => {
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

/** Starts `tessera serve` with `env` (see `tesseraEnv`); `node` are extra node options. */
export const startTessera = (name, env, node = []) => startChild(name, [...node, BIN, "serve"], env)

/** Stops a `tessera serve` and says so if it did not exit cleanly (with the end of its output). */
export const stopTessera = async (tessera) => {
  await tessera.stop()
  const exit = await tessera.exited
  if (exit.code !== 0) console.error(`${tessera.name} exited with ${exit.code ?? exit.signal}:\n${tessera.output().slice(-2_000)}`)
  return exit
}

// --- load ---------------------------------------------------------------------------------

const percentile = (sorted, p) => sorted.length === 0 ? NaN : sorted[Math.min(sorted.length - 1, Math.ceil(p * sorted.length) - 1)]

/**
 * One autocannon run against `url` with `requests` (cycled per connection). Latency is taken
 * from every response (autocannon's own histogram keeps whole milliseconds only). Stops by
 * itself after `seconds`; a guard stops it should it not.
 */
const load = (url, requests, seconds, connections) =>
  new Promise((resolve, reject) => {
    let latencies = new Float64Array(1 << 18)
    let count = 0
    let guard
    let done = false
    const instance = autocannon({
      url,
      connections,
      pipelining: 1,
      duration: seconds,
      timeout: 10,
      requests
    }, (error, result) => {
      done = true
      clearTimeout(guard)
      if (error) reject(error)
      else resolve({ result, latencies: latencies.subarray(0, count) })
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

/** `CONNECTIONS` split over `n` servers, as evenly as can be (at least one each). */
const split = (n) => Array.from({ length: n }, (_, i) => Math.max(1, Math.floor(CONNECTIONS / n) + (i < CONNECTIONS % n ? 1 : 0)))

/** One load on every target at once (`CONNECTIONS` split over them): the autocannon results and all latencies. */
const loadAll = async (targets, seconds) => {
  const connections = split(targets.length)
  const runs = await Promise.all(targets.map(({ url, requests }, i) => load(url, requests, seconds, connections[i])))
  const latencies = new Float64Array(runs.reduce((n, run) => n + run.latencies.length, 0))
  let at = 0
  for (const run of runs) {
    latencies.set(run.latencies, at)
    at += run.latencies.length
  }
  return { results: runs.map((run) => run.result), sorted: latencies.sort() }
}

const completedOf = (result) => result["1xx"] + result["2xx"] + result["3xx"] + result["4xx"] + result["5xx"]

/**
 * Warm-up, then the timed run, against one target `{ url, requests }` or several at once
 * (their load summed): requests/s, p50/p99 (µs), non-2xx answers and socket errors, under
 * `label…` in `results`. Returns the requests/s, each target's, and how many 2xx answers the
 * targets gave in both runs.
 */
export const measure = async (label, targets, results) => {
  const all = Array.isArray(targets) ? targets : [targets]
  const warm = (await loadAll(all, WARMUP)).results
  const { results: timed, sorted } = await loadAll(all, DURATION)
  const perTarget = timed.map((result) => completedOf(result) / result.duration)
  const rps = perTarget.reduce((a, b) => a + b, 0)
  const sum = (runs, f) => runs.reduce((n, result) => n + f(result), 0)
  results[`${label}Rps`] = Math.round(rps)
  results[`${label}P50Us`] = Math.round(percentile(sorted, 0.5) * 1_000)
  results[`${label}P99Us`] = Math.round(percentile(sorted, 0.99) * 1_000)
  results[`${label}Requests`] = sum(timed, completedOf)
  results[`${label}Non2xx`] = sum([...timed, ...warm], (result) => result.non2xx)
  results[`${label}Errors`] = sum([...timed, ...warm], (result) => result.errors + result.timeouts)
  timed.concat(warm).forEach((result, i) => {
    if (result.non2xx > 0 || result.errors > 0 || result.timeouts > 0) {
      const run = i < timed.length ? "timed run" : "warm-up"
      console.error(`bench ${label} (${run}, ${all[i % all.length].url}): status codes ${JSON.stringify(result.statusCodeStats)}, errors ${result.errors}, timeouts ${result.timeouts}`)
    }
  })
  return { rps, perTarget, answered2xx: sum([...timed, ...warm], (result) => result["2xx"]) }
}

/**
 * `rounds` × the pool's size acquires and nothing else, spread over `urls` in turn,
 * `CONNECTIONS` at a time, each awaited: how many times each pool token was handed out. A
 * rotation that serves the least recently used token hands every token out exactly `rounds`
 * times, however the acquires interleave. Also the answers that were not 200 (with the
 * first few, for the report).
 */
export const acquireRounds = async (urls, rounds) => {
  const total = rounds * POOL_SIZE
  const counts = new Map(ACCOUNT_IDS.map((id) => [id, 0]))
  const failures = []
  let next = 0
  const worker = async () => {
    while (next < total) {
      const url = urls[next++ % urls.length]
      try {
        const response = await fetch(`${url}/pools/github/acquire`, { method: "POST", headers: AUTH })
        const text = await response.text()
        const id = response.status === 200 ? JSON.parse(text).account_id : undefined
        if (counts.has(id)) counts.set(id, counts.get(id) + 1)
        else failures.push(`${url}: ${response.status} ${text.slice(0, 200)}`)
      } catch (error) {
        failures.push(`${url}: ${error.message}`)
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(CONNECTIONS, total) }, worker))
  const perToken = [...counts.values()]
  return { min: Math.min(...perToken), max: Math.max(...perToken), answered: perToken.reduce((a, b) => a + b, 0), failures }
}

/** A request through fetch, for the checks before the load: the JSON answer or an error. */
export const call = async (url, method, route) => {
  const response = await fetch(`${url}${route}`, { method, headers: AUTH })
  const text = await response.text()
  if (response.status !== 200) throw new Error(`${method} ${route}: ${response.status} ${text}`)
  return JSON.parse(text)
}

/** Checks that a started Tessera has the whole pool available and hands out one of its tokens. */
export const checkPool = async (url) => {
  const listed = await call(url, "GET", "/pools/github/tokens")
  const available = new Set(listed.filter((info) => info.status === "available").map((info) => info.account_id))
  const missing = ACCOUNT_IDS.filter((id) => !available.has(id))
  if (missing.length > 0) throw new Error(`${missing.length} of ${POOL_SIZE} pool accounts are not available: ${missing.slice(0, 3).join(", ")}…`)
  const lease = await call(url, "POST", "/pools/github/acquire")
  if (!ACCOUNT_IDS.includes(lease.account_id)) throw new Error(`unexpected lease ${JSON.stringify(lease)}`)
}

export const ACQUIRE = [{ method: "POST", path: "/pools/github/acquire", headers: AUTH }]
