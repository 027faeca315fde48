// HTTP benchmarks: requests per second and p50/p99 latency of the real `tessera serve` (the
// built `packages/cli/dist/bin.js`, in a child process) against a bare `node:http` server
// answering a JSON body of the same size (also a child process), on 127.0.0.1 only.
//
// Measured, each after a short warm-up, for a fixed duration at a fixed number of keep-alive
// connections (autocannon in this process, so the load generator does not share the
// servers' event loops), in BENCH_HTTP_ROUNDS rounds (default 2) of the three in turn, each
// keeping its best round (every round's requests/s is reported too):
//   bare      GET  /                                  `res.end(JSON.stringify({...}))`, ~490 B
//   status    GET  /accounts/{id}/token/status        read scope, cycling over the 100 accounts
//   acquire   POST /pools/github/acquire              token scope, a pool of 100 static tokens
// and Tessera ÷ bare for both routes (…Ratio, and …VsBarePct for the table). Latencies are
// in microseconds, measured per response. Every answer must be 2xx, warm-ups included:
// `non2xx` and `errors` must be 0 (nothing reports rate limits, so the pool never runs dry).
//
// Tessera runs with a SQLite file in a temporary directory (`TESSERA_DB`), one API key with
// every scope (`TESSERA_API_KEYS`) and 100 static tokens in the pool `github`
// (`GITHUB_TOKENS`; `GITHUB_API_URL` points at a closed loopback port, so nothing can leave
// the machine). Children and the temporary directory are removed even on failure.
//
// Settings: BENCH_HTTP_DURATION, BENCH_HTTP_WARMUP, BENCH_HTTP_CONNECTIONS (see harness.mjs).
// BENCH_HTTP_PROFILE=<dir> runs the Tessera child with `--cpu-prof --cpu-prof-dir=<dir>` (the
// profile is written when it stops).
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import {
  ACCOUNT_IDS,
  ACQUIRE,
  AUTH,
  call,
  checkPool,
  CONNECTIONS,
  DURATION,
  HOST,
  measure,
  requireBuild,
  startChild,
  startTessera,
  stopTessera,
  tesseraEnv
} from "./harness.mjs"

const PROFILE = process.env.BENCH_HTTP_PROFILE
const ROUNDS = Number(process.env.BENCH_HTTP_ROUNDS ?? 2)

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

// --- the benchmark ------------------------------------------------------------------------

export const run = async () => {
  requireBuild()
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tessera-http-bench-"))
  const children = []
  const results = { connections: CONNECTIONS, durationS: DURATION }
  try {
    // the bare baseline and tessera serve, both started before any load
    const bare = await startChild("bare node:http server", ["-e", BARE_SERVER], {})
    children.push(bare)
    const tessera = await startTessera(
      "tessera serve",
      tesseraEnv({ TESSERA_DB: path.join(dir, "tessera.db") }),
      PROFILE ? ["--cpu-prof", `--cpu-prof-dir=${PROFILE}`] : []
    )
    children.push(tessera)
    await checkPool(tessera.url)
    const status = await call(tessera.url, "GET", `/accounts/${ACCOUNT_IDS[0]}/token/status`)
    if (status.account_id !== ACCOUNT_IDS[0]) throw new Error(`unexpected status answer ${JSON.stringify(status)}`)

    // ROUNDS rounds of bare, status, acquire (each alone on the machine), so a slow spell of
    // this shared machine does not land on one of them only; each keeps its best round
    const targets = {
      bare: { url: bare.url, requests: [{ method: "GET", path: "/" }] },
      status: {
        url: tessera.url,
        requests: ACCOUNT_IDS.map((id) => ({ method: "GET", path: `/accounts/${id}/token/status`, headers: AUTH }))
      },
      acquire: { url: tessera.url, requests: ACQUIRE }
    }
    const rounds = {}
    for (let round = 0; round < ROUNDS; round++) {
      for (const [label, target] of Object.entries(targets)) {
        const measured = {}
        await measure(label, target, measured)
        const best = rounds[label]
        if (best === undefined || measured[`${label}Rps`] > best[`${label}Rps`]) rounds[label] = measured
        results[`${label}RpsByRound`] = [...(results[`${label}RpsByRound`] ?? []), measured[`${label}Rps`]]
        for (const key of ["Non2xx", "Errors"]) results[`${label}${key}`] = (results[`${label}${key}`] ?? 0) + measured[`${label}${key}`]
      }
    }
    for (const [label, best] of Object.entries(rounds)) {
      for (const key of ["Rps", "P50Us", "P99Us", "Requests"]) results[`${label}${key}`] = best[`${label}${key}`]
      results[`${label}RpsByRound`] = results[`${label}RpsByRound`].join(" / ")
    }
    const bareRps = results.bareRps
    const statusRps = results.statusRps
    const acquireRps = results.acquireRps
    await stopTessera(tessera)

    results.statusRatio = Math.round((statusRps / bareRps) * 1_000) / 1_000
    results.acquireRatio = Math.round((acquireRps / bareRps) * 1_000) / 1_000
    results.statusVsBarePct = Math.round((statusRps / bareRps) * 100)
    results.acquireVsBarePct = Math.round((acquireRps / bareRps) * 100)
    results.non2xx = results.bareNon2xx + results.statusNon2xx + results.acquireNon2xx
    results.errors = results.bareErrors + results.statusErrors + results.acquireErrors
  } finally {
    for (const child of children) await child.stop().catch(() => undefined)
    fs.rmSync(dir, { recursive: true, force: true })
  }
  return results
}
