// PostgreSQL acquire benchmark (SPEC §9): requests per second and p50/p99 latency of
// `POST /pools/github/acquire` over a pool of 100 static tokens, side by side in one run:
//   sqlite   one `tessera serve` on a SQLite file (the baseline: the pool rotates in memory)
//   sqlite3  (rotation check only, the control) the baseline and two more instances on its file
//   pg1      one `tessera serve` on a fresh PostgreSQL database
//   pg3      three `tessera serve` on one fresh PostgreSQL database (same encryption key,
//            distinct TESSERA_INSTANCE_ID), loaded at once: one autocannon per instance, the
//            connections split over them, requests/s summed, latencies pooled
// On PostgreSQL every acquire is a claim in the database (core's Cluster.rotation: the pool's
// least recently used token across all instances, claims of a pool taking turns on an
// advisory lock), so three instances should rotate as one would. Two measures of that:
// - the rotation check, which each case runs first, before its warm-up: 2 × 100
//   acquires and nothing else, spread over the instances in turn, 32 at a time; a rotation
//   as one instance's hands each token out exactly twice (…RotationMin = …RotationMax = 2).
//   Instances sharing a SQLite file rotate each on its own: the control shows what the
//   check sees then;
// - the spread over the whole case, read back from the audit log once the instances have
//   stopped (each writes its `acquired` records, with counts, before it exits): the fewest
//   and most acquires of any token (…PerTokenMin/Max) against the even share. A request cut
//   off when the load generator stops can have claimed a token it never hands out: that
//   token misses one turn. The audited total must cover every 2xx answer (…Unaudited = 0).
// During the rotation check a trigger records the stamps claims write, in commit order:
// …RotationOutOfOrder counts the claims stamped earlier than the one before them (0 for a
// rotation as one instance's; a token stamped early comes round again before its turn).
//
// Every answer must be 2xx: `non2xx` and `errors` must be 0. The section is skipped, with a
// message, when PostgreSQL does not answer. Each PostgreSQL case gets a database of its own
// (`tessera_bench_<random>`), dropped WITH (FORCE) afterwards, even on failure; children and
// temporary directories are removed likewise.
//
// Settings: BENCH_PG_URL (an admin connection, default postgres://postgres@127.0.0.1:5432/postgres;
// the benchmark databases are created on the same server), BENCH_PG_ROUNDS (the rotation
// check's rounds, default 2), and BENCH_HTTP_DURATION, BENCH_HTTP_WARMUP, BENCH_HTTP_CONNECTIONS
// (see harness.mjs).
import pg from "pg"
import * as crypto from "node:crypto"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import {
  ACCOUNT_IDS,
  ACQUIRE,
  acquireRounds,
  checkPool,
  CONNECTIONS,
  DURATION,
  measure,
  POOL_SIZE,
  requireBuild,
  startTessera,
  stopTessera,
  tesseraEnv
} from "./harness.mjs"

const ADMIN_URL = process.env.BENCH_PG_URL ?? "postgres://postgres@127.0.0.1:5432/postgres"
const INSTANCES = 3
const ROUNDS = Number(process.env.BENCH_PG_ROUNDS ?? 2)

/** The URL of `database` on the admin URL's server, as the same user. */
const databaseUrl = (database) => {
  const url = new URL(ADMIN_URL)
  url.pathname = `/${database}`
  return url.toString()
}

/** Without the password, for messages. */
const shown = (url) => {
  const parsed = new URL(url)
  parsed.password = ""
  return parsed.toString()
}

/** Runs `body` with a client connected to `url`; closes it whatever happens. */
const withClient = async (url, body) => {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5_000 })
  client.on("error", () => undefined)
  try {
    await client.connect()
    return await body(client)
  } finally {
    await client.end().catch(() => undefined)
  }
}

/** Why PostgreSQL cannot be used, or undefined when it answers. */
const unreachable = async () => {
  try {
    await withClient(ADMIN_URL, (client) => client.query("SELECT 1"))
    return undefined
  } catch (error) {
    return error instanceof Error ? error.message || error.constructor.name : String(error)
  }
}

/** Runs `body` with the URL of a new, empty database, dropped (connections and all) afterwards. */
const withFreshDatabase = async (body) => {
  const name = `tessera_bench_${crypto.randomBytes(6).toString("hex")}`
  await withClient(ADMIN_URL, (client) => client.query(`CREATE DATABASE ${name}`))
  try {
    return await body(databaseUrl(name))
  } finally {
    await withClient(ADMIN_URL, (client) => client.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)).catch((error) => {
      console.error(`postgres acquire: could not drop the database ${name}: ${error.message}`)
    })
  }
}

/** Starts every `[name, env]` at once; stops those that started if any did not. */
const startAll = async (specs, children) => {
  const started = await Promise.allSettled(specs.map(([name, env]) => startTessera(name, env)))
  for (const result of started) if (result.status === "fulfilled") children.push(result.value)
  const failed = started.find((result) => result.status === "rejected")
  if (failed !== undefined) throw failed.reason
  return started.map((result) => result.value)
}

/**
 * Acquires per pool token from the audit log at `url` (a record per acquire, or one that
 * counts several): the fewest, the most, and all of them.
 */
const auditedSpread = (url) =>
  withClient(url, async (client) => {
    const { rows } = await client.query(
      `SELECT account_id, SUM(COALESCE((data::json->>'count')::int, 1))::int AS n FROM audit_log
        WHERE type = 'acquired' GROUP BY account_id`
    )
    const counts = new Map(rows.map((row) => [row.account_id, row.n]))
    const strangers = rows.filter((row) => !ACCOUNT_IDS.includes(row.account_id))
    if (strangers.length > 0) throw new Error(`acquires audited for accounts outside the pool: ${strangers.map((row) => row.account_id).join(", ")}`)
    const perToken = ACCOUNT_IDS.map((id) => counts.get(id) ?? 0)
    return { min: Math.min(...perToken), max: Math.max(...perToken), total: perToken.reduce((a, b) => a + b, 0) }
  })

/**
 * Records, while it runs, the last-use stamp each claim writes, in the order the claims
 * commit (a trigger on the benchmark's own database), so a rotation check can count claims
 * stamped earlier than the claim before them: such a token looks less recently used than
 * it is and comes round again early. `stop` removes it and gives that count.
 */
const traceClaims = async (url) => {
  await withClient(url, (client) =>
    client.query(`
      CREATE TABLE bench_claims (seq BIGSERIAL PRIMARY KEY, stamp BIGINT NOT NULL);
      CREATE FUNCTION bench_claim() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN INSERT INTO bench_claims (stamp) VALUES (NEW.last_used_at); RETURN NEW; END $$;
      CREATE TRIGGER bench_claims AFTER UPDATE OF last_used_at ON token_state
        FOR EACH ROW WHEN (NEW.last_used_at IS DISTINCT FROM OLD.last_used_at) EXECUTE FUNCTION bench_claim();`))
  return {
    stop: () =>
      withClient(url, async (client) => {
        await client.query("DROP TRIGGER bench_claims ON token_state; DROP FUNCTION bench_claim()")
        const { rows } = await client.query("SELECT stamp FROM bench_claims ORDER BY seq")
        let outOfOrder = 0
        for (let i = 1; i < rows.length; i++) if (Number(rows[i].stamp) < Number(rows[i - 1].stamp)) outOfOrder++
        return { claims: rows.length, outOfOrder }
      })
  }
}

/**
 * The rotation check: how many times each token was handed out in `ROUNDS` × 100 acquires
 * over `urls`, under `label…`. Returns its 2xx answers and its other answers.
 */
const rotationCheck = async (label, urls, results) => {
  const rotation = await acquireRounds(urls, ROUNDS)
  results[`${label}RotationMin`] = rotation.min
  results[`${label}RotationMax`] = rotation.max
  for (const failure of rotation.failures.slice(0, 5)) console.error(`postgres acquire ${label}, rotation check: ${failure}`)
  return { answered2xx: rotation.answered, failed: rotation.failures.length }
}

/** Warm-up and timed run, spread over `urls`. */
const timedRun = async (label, urls, results) => {
  const targets = urls.map((url) => ({ url, requests: ACQUIRE }))
  const measured = await measure(label, targets, results)
  if (urls.length > 1) results[`${label}InstanceRps`] = measured.perTarget.map((rps) => Math.round(rps).toLocaleString("en-US")).join(" / ")
  return measured
}

/**
 * Runs instances on a fresh database, loads them all at once, stops them, and reads back the
 * spread of acquires over the tokens: figures under `label…`.
 */
const postgresCase = (label, instances, key, results) =>
  withFreshDatabase(async (url) => {
    const specs = Array.from({ length: instances }, (_, i) => [
      `tessera serve ${i + 1}/${instances} on ${shown(url)}`,
      tesseraEnv({ TESSERA_DATABASE_URL: url, TESSERA_ENCRYPTION_KEY: key, TESSERA_INSTANCE_ID: `bench-${label}-${i + 1}` })
    ])
    // stopped before their database is dropped, whatever happens
    const children = []
    try {
      const started = await startAll(specs, children)
      for (const tessera of started) await checkPool(tessera.url)
      const urls = started.map((tessera) => tessera.url)
      const trace = await traceClaims(url)
      const rotation = await rotationCheck(label, urls, results)
      const traced = await trace.stop()
      results[`${label}RotationOutOfOrder`] = traced.outOfOrder
      results[`${label}RotationClaims`] = traced.claims
      const timed = await timedRun(label, urls, results)
      results[`${label}Non2xx`] += rotation.failed
      for (const tessera of started) await stopTessera(tessera)
      const spread = await auditedSpread(url)
      const answered = timed.answered2xx + rotation.answered2xx + instances // and the pool checks' acquires
      results[`${label}PerTokenMin`] = spread.min
      results[`${label}PerTokenMax`] = spread.max
      results[`${label}PerTokenEven`] = Math.round((spread.total / POOL_SIZE) * 10) / 10
      results[`${label}Audited`] = spread.total
      results[`${label}Answered2xx`] = answered
      // an acquire answered 2xx but not audited is a lost record; more audited than counted are
      // requests the server finished after the load generator stopped counting (≤ 1 per connection)
      results[`${label}Unaudited`] = Math.max(0, answered - spread.total)
      if (spread.total < answered) console.error(`postgres acquire ${label}: ${answered - spread.total} acquires answered 2xx but not in the audit log`)
    } finally {
      for (const child of children) await child.stop().catch(() => undefined)
    }
  })

export const run = async () => {
  requireBuild()
  const why = await unreachable()
  if (why !== undefined) {
    const message = `PostgreSQL at ${shown(ADMIN_URL)} does not answer (${why}): section skipped`
    console.log(`postgres acquire: ${message}`)
    return { skipped: message }
  }
  const started = Date.now()
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tessera-cluster-bench-"))
  const children = []
  const results = { connections: CONNECTIONS, durationS: DURATION, pool: POOL_SIZE }
  try {
    // (a) the baseline: one instance on SQLite
    const file = path.join(dir, "tessera.db")
    const sqlite = await startTessera("tessera serve on SQLite", tesseraEnv({ TESSERA_DB: file }))
    children.push(sqlite)
    await checkPool(sqlite.url)
    const sqliteRotation = await rotationCheck("sqlite", [sqlite.url], results)
    const { rps: sqliteRps } = await timedRun("sqlite", [sqlite.url], results)
    results.sqliteNon2xx += sqliteRotation.failed

    // the control: two more instances on the same file, where each rotates on its own; the
    // rotation check must see that (a check that cannot fail would vouch for nothing)
    const more = await startAll([2, 3].map((i) => [`tessera serve ${i}/3 on SQLite`, tesseraEnv({ TESSERA_DB: file })]), children)
    for (const tessera of more) await checkPool(tessera.url)
    const control = await rotationCheck("sqlite3", [sqlite.url, ...more.map((tessera) => tessera.url)], results)
    results.sqlite3RotationNon2xx = control.failed
    for (const tessera of [sqlite, ...more]) await stopTessera(tessera)

    // (b) and (c): one, then three instances, each time on a database of their own
    const key = crypto.randomBytes(32).toString("base64")
    await postgresCase("pg1", 1, key, results)
    await postgresCase("pg3", INSTANCES, key, results)

    results.pg1VsSqlitePct = Math.round((results.pg1Rps / sqliteRps) * 100)
    results.pg3VsPg1Pct = Math.round((results.pg3Rps / results.pg1Rps) * 100)
    results.non2xx = results.sqliteNon2xx + results.sqlite3RotationNon2xx + results.pg1Non2xx + results.pg3Non2xx
    results.errors = results.sqliteErrors + results.pg1Errors + results.pg3Errors
    results.sectionS = Math.round((Date.now() - started) / 1_000)
  } finally {
    for (const child of children) await child.stop().catch(() => undefined)
    fs.rmSync(dir, { recursive: true, force: true })
  }
  return results
}
