/**
 * `tessera serve` on PostgreSQL (`TESSERA_DATABASE_URL`, SPEC §9), end to end: the built
 * service as a child process on a fresh database of the machine's server, against fake AMP,
 * auth-service and GitHub servers on 127.0.0.1. It stores its accounts, tokens, pool usage
 * and API keys there (and nothing on disk: no SQLite file, no key file), restarts and
 * restores every token with 0 upstream calls, holds no plaintext secret in any row (the
 * bytea columns read back as bytes), never prints the URL's password, refuses to start
 * without a shared key, and two instances opening a fresh database at once both start. The
 * local command line works on the same database, and `doctor` says which one and whether it
 * answers.
 */
import { SqlClient } from "@effect/sql"
import { expect, it } from "@effect/vitest"
import { Effect } from "effect"
import * as crypto from "node:crypto"
import * as fs from "node:fs"
import * as path from "node:path"
import * as Cli from "../cli/harness.js"
import { Amp, AuthService, GitHub } from "../fakes/index.js"
import { tempDir, waitUntil } from "../lifecycle/harness.js"
import * as Postgres from "../postgres.js"
import { call, requireBuild, serve } from "./harness.js"

const AMP_PASSWORD = "canary-amp-password-pg-4e1d"
const DB_PASSWORD = "canary-db-password-7a0c"
const ADMIN_KEY = "pg-e2e-admin-key-0123456789abcdef"
const APP_KEY = "pg-e2e-app-key-0123456789abcdefgh"
const GH_TOKENS = ["ghp_pg_e2e_pool_token_one_0000", "ghp_pg_e2e_pool_token_two_0000"]

/** The URL as a user writes it: with a password (trust authentication ignores it). */
const withPassword = (url: string) => url.replace("postgres://postgres@", `postgres://postgres:${DB_PASSWORD}@`)

/** What the database holds (see `Postgres.contents`), and its stored tokens. */
const rowsOf = (url: string) =>
  Effect.gen(function*() {
    const { tables, values } = yield* Postgres.contents(url)
    const tokens = yield* Effect.scoped(Effect.provide(
      Effect.flatMap(SqlClient.SqlClient, (sql) =>
        sql<{ account_id: string; token_enc: Uint8Array }>`SELECT account_id, token_enc FROM token_state
          WHERE token_enc IS NOT NULL ORDER BY account_id`),
      Postgres.client(url)
    )).pipe(Effect.orDie)
    return { tables, values, tokens }
  })

/** How many accounts have a last use stored. */
const lastUses = (url: string) =>
  Effect.scoped(Effect.provide(
    Effect.flatMap(SqlClient.SqlClient, (sql) =>
      Effect.map(sql<{ n: number }>`SELECT COUNT(*)::int AS n FROM token_state WHERE last_used_at IS NOT NULL`, (rows) => rows[0]!.n)),
    Postgres.client(url)
  )).pipe(Effect.orDie)

/** Polls `check` (in real time) until it holds; dies with `what` after `timeoutMs`. */
const eventually = (what: string, check: Effect.Effect<boolean>, timeoutMs = 30_000) =>
  Effect.gen(function*() {
    const started = Date.now()
    while (!(yield* check)) {
      if (Date.now() - started > timeoutMs) return yield* Effect.die(new Error(`not within ${timeoutMs} ms: ${what}`))
      yield* Effect.promise(() => new Promise((resolve) => setTimeout(resolve, 50)))
    }
  })

/** Waits (longer than the harness: starting is slow on a busy machine) until `running` listens. */
const listening = (running: { readonly output: () => string; readonly url: Effect.Effect<string> }) =>
  Effect.zipRight(
    eventually("tessera serve listens", Effect.sync(() => /listening on|tessera: /.test(running.output())), 60_000),
    running.url
  )

const available = await Postgres.probe()

Postgres.describeWithPostgres("tessera serve on PostgreSQL", available, () => {
  it.scopedLive("stores everything in PostgreSQL, restarts with 0 upstream calls, and keeps no plaintext secret in any row", () =>
    Effect.gen(function*() {
      yield* requireBuild
      const cwd = yield* tempDir
      const url = withPassword(yield* Postgres.freshDatabase)
      const amp = yield* Amp.make({ users: { trader: AMP_PASSWORD } })
      const auth = yield* AuthService.make({ accounts: ["acc-1"] })
      const github = yield* GitHub.make()
      for (const token of GH_TOKENS) github.addToken(token)
      const env = {
        TESSERA_DATABASE_URL: url,
        TESSERA_ENCRYPTION_KEY: crypto.randomBytes(32).toString("base64"),
        AMP_API_URL: amp.url,
        AMP_USERNAME: "trader",
        AMP_PASSWORD: AMP_PASSWORD,
        TOKEN_REFRESH_SERVICE_URL: auth.url,
        UPSTOX_ACCOUNT_IDS: "acc-1",
        UPSTOX_API_URL: "http://127.0.0.1:9",
        GITHUB_TOKENS: GH_TOKENS.join(","),
        GITHUB_API_URL: github.url,
        TESSERA_FLUSH_INTERVAL: "100ms"
      }

      // --- first run: obtains, fetches, registers keys, hands out a pool token -------------
      const first = yield* serve(cwd, { ...env, TESSERA_API_KEYS: `ops:admin:${ADMIN_KEY},app:read+token:${APP_KEY}` })
      const base = yield* listening(first)
      yield* waitUntil(() => first.output().includes("acc-1: available"), 30_000)
      expect(first.output()).toContain("amp: available")
      expect(first.output()).toContain("tessera is running on postgres://postgres@127.0.0.1:")
      const lease = yield* call(base, "POST", "/pools/github/acquire", { key: APP_KEY })
      expect(lease.status).toBe(200)
      expect(GH_TOKENS).toContain(lease.json.access_token)
      const added = yield* call(base, "POST", "/pools/github/tokens", {
        key: ADMIN_KEY,
        body: { access_token: "ghp_pg_e2e_added_by_api_00000", account_id: "gh-added" }
      })
      expect(added.status).toBe(201)
      const before = yield* call(base, "GET", "/accounts", { key: APP_KEY })
      // the pool's last use is a coalesced write: it reaches the database within the flush interval
      yield* eventually("the acquired token's last use is stored", Effect.map(lastUses(url), (count) => count === 1))
      expect(yield* first.stop("SIGTERM")).toBe(0)
      const obtained = amp.issued().map((t) => t.token)
      const fetched = auth.account("acc-1")!.token
      const upstreamCalls = () => amp.calls("obtain") + amp.calls("refresh") + auth.calls("token") + auth.calls("refresh")
      const callsAfterFirst = upstreamCalls()
      expect(amp.calls("obtain")).toBe(1)
      expect(auth.calls("token")).toBe(1)

      // --- what the database holds ----------------------------------------------------------
      const stored = yield* rowsOf(url)
      expect(stored.tables).toEqual(expect.arrayContaining(["accounts", "token_state", "audit_log", "api_keys", "refresh_leases", "meta"]))
      const ids = stored.tokens.map((row) => row.account_id)
      expect(ids).toEqual(expect.arrayContaining(["acc-1", "amp", "gh-added"]))
      expect(ids).toHaveLength(5)
      const secrets = [...obtained, fetched, ...GH_TOKENS, "ghp_pg_e2e_added_by_api_00000", AMP_PASSWORD, ADMIN_KEY, APP_KEY]
      let scanned = 0
      for (const value of stored.values) {
        scanned += value.length
        for (const secret of secrets) expect(value.includes(secret)).toBe(false)
      }
      // the scan does read the ciphertexts it vouches for
      for (const row of stored.tokens) {
        expect(row.token_enc.length).toBeGreaterThan(37)
        expect(stored.values.some((value) => value.equals(Buffer.from(row.token_enc)))).toBe(true)
      }
      console.log(
        `postgres e2e: ${stored.values.length} stored values (${scanned} bytes) in ${stored.tables.length} tables scanned, ` +
          `0 of ${secrets.length} secrets in plaintext; ${stored.tokens.length} tokens stored as ciphertext`
      )
      // nothing on disk: no SQLite database, no generated key file
      expect(fs.existsSync(path.join(cwd, "data"))).toBe(false)

      // --- second run: restores every token without asking any upstream ---------------------
      const second = yield* serve(cwd, env)
      const again = yield* listening(second)
      yield* waitUntil(() => second.output().includes("acc-1: available"), 30_000)
      expect(second.output()).toContain("amp: available")
      expect(upstreamCalls()).toBe(callsAfterFirst)
      const after = yield* call(again, "GET", "/accounts", { key: APP_KEY })
      expect(after.status).toBe(200)
      const view = (answer: typeof before) =>
        (answer.json as Array<{ account_id: string; status: string; token_preview: string | null }>)
          .map((account) => [account.account_id, account.status, account.token_preview])
          .sort()
      expect(view(after)).toEqual(view(before))
      expect((yield* call(again, "GET", "/accounts/amp/token", { key: APP_KEY })).json.access_token).toBe(obtained[0])
      expect((yield* call(again, "GET", "/accounts/acc-1/token", { key: APP_KEY })).json.access_token).toBe(fetched)
      const used = (yield* call(again, "GET", "/pools/github/tokens", { key: APP_KEY })).json as Array<{ last_used_at: string | null }>
      expect(used.filter((token) => token.last_used_at !== null), JSON.stringify(used)).toHaveLength(1)
      const audit = (yield* call(again, "GET", "/audit?limit=500", { key: ADMIN_KEY })).json as Array<{ type: string }>
      expect(audit.map((entry) => entry.type)).toEqual(expect.arrayContaining(["obtained", "api_key_created", "acquired"]))
      expect(yield* second.stop("SIGINT")).toBe(0)
      expect(upstreamCalls()).toBe(callsAfterFirst)
      console.log(`postgres e2e: restart restored ${stored.tokens.length} tokens with ${upstreamCalls() - callsAfterFirst} upstream calls`)

      for (const secret of [...secrets, DB_PASSWORD]) {
        expect(first.output() + second.output()).not.toContain(secret)
      }
    }), { timeout: 180_000 })

  it.scopedLive("without TESSERA_ENCRYPTION_KEY or TESSERA_KEY_FILE it refuses to start, in one line, and creates no key file", () =>
    Effect.gen(function*() {
      yield* requireBuild
      const cwd = yield* tempDir
      const url = withPassword(yield* Postgres.freshDatabase)
      const run = yield* serve(cwd, { TESSERA_DATABASE_URL: url })
      yield* waitUntil(() => run.exited(), 60_000)
      const code = yield* run.stop("SIGTERM")
      expect(code).not.toBe(0)
      const lines = run.output().trim().split("\n").filter((line) => line.includes("TESSERA_ENCRYPTION_KEY"))
      expect(lines).toHaveLength(1)
      expect(lines[0]).toContain("PostgreSQL")
      expect(run.output()).not.toContain(DB_PASSWORD)
      expect(fs.existsSync(path.join(cwd, "data"))).toBe(false)
    }), { timeout: 120_000 })

  it.scopedLive("local commands, key rotation and doctor work on the PostgreSQL database", () =>
    Effect.gen(function*() {
      const url = withPassword(yield* Postgres.freshDatabase)
      const github = yield* GitHub.make()
      github.addToken(GH_TOKENS[0])
      const oldKey = crypto.randomBytes(32).toString("base64")
      const cli = yield* Cli.makeCli({ TESSERA_DATABASE_URL: url, TESSERA_ENCRYPTION_KEY: oldKey, GITHUB_API_URL: github.url })
      const ok = (result: Cli.Result, args: ReadonlyArray<string>) => expect(result.code, Cli.describe(args, result)).toBe(0)
      const add = ["pool", "add", "github", "--token", GH_TOKENS[0], "--account", "gh-one"]
      ok(yield* cli.run(...add), add)
      const accounts = yield* cli.json<Array<{ account_id: string; token: { status: string } }>>("accounts", "list")
      expect(accounts.map((account) => [account.account_id, account.token.status])).toEqual([["gh-one", "available"]])
      const created = yield* cli.json<{ key: string }>("keys", "create", "deploy", "--scope", "read")
      expect(created.key.startsWith("tsr_")).toBe(true)
      const checked = yield* cli.json<Array<{ valid: boolean | null }>>("pool", "check", "github")
      expect(checked.map((check) => check.valid)).toEqual([true])

      // rotation: the new key first, the old one after it; then the new key alone opens everything
      const newKey = crypto.randomBytes(32).toString("base64")
      const rotated = yield* Cli.run(cli.dir, { ...cli.env, TESSERA_ENCRYPTION_KEY: `${newKey},${oldKey}` }, ["keys", "rotate", "--json"])
      ok(rotated, ["keys", "rotate"])
      expect(JSON.parse(rotated.stdout)).toMatchObject({ key_source: "environment", rewritten: 3 })
      const doctor = yield* Cli.run(cli.dir, { ...cli.env, TESSERA_ENCRYPTION_KEY: newKey }, ["doctor", "--json"])
      ok(doctor, ["doctor"])
      const checks = JSON.parse(doctor.stdout).checks as Array<{ name: string; status: string; detail: string }>
      expect(checks.find((check) => check.name === "database")).toMatchObject({ status: "ok" })
      expect(checks.find((check) => check.name === "database")!.detail).toMatch(
        /^PostgreSQL postgres:\/\/postgres@127\.0\.0\.1:\d+\/tessera_test_\w+ answers and opens, 1 account\(s\) and 1 token\(s\)/
      )
      expect(checks.find((check) => check.name === "key opens the database")).toMatchObject({ status: "ok" })

      // a server that does not answer: doctor says so, without the password
      const down = withPassword(Postgres.url("nowhere")).replace(`:${Postgres.PORT}/`, ":1/")
      const unreachable = yield* Cli.run(cli.dir, { ...cli.env, TESSERA_DATABASE_URL: down }, ["doctor", "--json"])
      expect(unreachable.code).not.toBe(0)
      const failed = (JSON.parse(unreachable.stdout).checks as Array<{ name: string; status: string; detail: string }>)
        .find((check) => check.name === "database")!
      expect(failed.status).toBe("fail")
      expect(failed.detail).toContain("ECONNREFUSED")
      for (const result of [rotated, doctor, unreachable]) expect(result.stdout + result.stderr).not.toContain(DB_PASSWORD)
      expect(fs.existsSync(path.join(cli.dir, "data"))).toBe(false)
    }), { timeout: 180_000 })

  it.scopedLive("two instances opening a fresh database at once both start and see the same accounts", () =>
    Effect.gen(function*() {
      yield* requireBuild
      const url = withPassword(yield* Postgres.freshDatabase)
      const github = yield* GitHub.make()
      for (const token of GH_TOKENS) github.addToken(token)
      const env = {
        TESSERA_DATABASE_URL: url,
        TESSERA_ENCRYPTION_KEY: crypto.randomBytes(32).toString("base64"),
        GITHUB_TOKENS: GH_TOKENS.join(","),
        GITHUB_API_URL: github.url,
        TESSERA_API_KEYS: `app:read+token:${APP_KEY}`
      }
      const [a, b] = yield* Effect.all([serve(yield* tempDir, env), serve(yield* tempDir, env)])
      const [urlA, urlB] = yield* Effect.all([listening(a), listening(b)], { concurrency: 2 })
      const list = (base: string) =>
        Effect.map(call(base, "GET", "/accounts", { key: APP_KEY }), (answer) =>
          (answer.json as Array<{ account_id: string }>).map((account) => account.account_id).sort())
      const seenByA = yield* list(urlA)
      expect(seenByA).toHaveLength(2)
      expect(yield* list(urlB)).toEqual(seenByA)
      expect(yield* Effect.all([a.stop("SIGTERM"), b.stop("SIGTERM")])).toEqual([0, 0])
    }), { timeout: 120_000 })
})
