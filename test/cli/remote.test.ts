/**
 * `--server URL`: the same commands against a running `tessera serve` (a child process on the
 * same database), with API keys: the same answers, reasons and exit statuses as locally.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import type { Wire } from "@tessera/server"
import { describe as explain, makeCli, serve, upstreams } from "./harness.js"

type TokenInfo = typeof Wire.TokenInfo.Encoded
type AccountView = typeof Wire.AccountView.Encoded
type Pool = typeof Wire.Pool.Encoded
type AuditEntry = typeof Wire.AuditEntry.Encoded

const ADMIN = "tsr_admin_key_for_cli_tests_0001"
const READER = "tsr_reader_key_for_cli_tests_0002"
const TOKENS = ["ghp_remote_pool_token_0001", "ghp_remote_pool_token_0002"]

/** What may differ between two reads of the same token: time passing, and how the reader came by it. */
const stable = (info: TokenInfo) => {
  const { expires_in_seconds: _e, last_used_at: _u, last_used_at_local: _ul, source: _s, ...rest } = info
  return rest
}

describe("tessera --server URL", () => {
  it.scopedLive("gives the same answers as the local database, through the server's API with an API key", () =>
    Effect.gen(function*() {
      const fakes = yield* upstreams
      for (const token of TOKENS) fakes.github.addToken(token)
      const cli = yield* makeCli({ ...fakes.env, TESSERA_TIMEZONE: "Asia/Kolkata" })
      yield* cli.json("accounts", "add", "acc-1", "--provider", "upstox")
      for (const token of TOKENS) yield* cli.json("pool", "add", "github", "--token", token)

      const server = yield* serve(cli, { TESSERA_API_KEYS: `admin:admin:${ADMIN},reader:read:${READER}` })
      const remote = (...args: ReadonlyArray<string>) =>
        cli.runWith({ env: { TESSERA_API_KEY: ADMIN } }, "--server", server.url, ...args)
      const remoteJson = <A>(...args: ReadonlyArray<string>) =>
        Effect.flatMap(remote(...args, "--json"), (result) =>
          result.code === 0 ? Effect.succeed(JSON.parse(result.stdout) as A) : Effect.die(new Error(explain(args, result))))

      // reads: the same JSON both ways
      const local = yield* cli.json<TokenInfo>("token", "status", "acc-1")
      const viaServer = yield* remoteJson<TokenInfo>("token", "status", "acc-1")
      expect(stable(viaServer)).toEqual(stable(local))
      expect(yield* remoteJson<Array<Pool>>("pool", "list")).toEqual(yield* cli.json<Array<Pool>>("pool", "list"))
      const accounts = (yield* remoteJson<Array<AccountView>>("accounts", "list")).map((a) => ({ ...a, token: stable(a.token) }))
      const localAccounts = (yield* cli.json<Array<AccountView>>("accounts", "list")).map((a) => ({ ...a, token: stable(a.token) }))
      expect(accounts).toEqual(localAccounts)
      // the default account, decided by the server
      expect((yield* remoteJson<TokenInfo>("token", "status")).account_id).toBe("acc-1")

      // tokens handed out: alone on stdout
      const get = yield* remote("token", "get", "acc-1")
      expect(get).toMatchObject({ code: 0, stdout: `${fakes.auth.account("acc-1")!.token}\n`, stderr: "" })
      const acquired = yield* remote("pool", "acquire", "github")
      expect(acquired.code).toBe(0)
      expect(TOKENS).toContain(acquired.stdout.trimEnd())

      // writes
      const added = yield* remoteJson<AccountView>("accounts", "add", "acc-2", "--provider", "upstox")
      expect(added).toMatchObject({ account_id: "acc-2", source: { type: "remote", service_url: null } })
      expect(added.token.status).toBe("available")
      const refreshed = yield* remoteJson<TokenInfo>("token", "refresh", "acc-2")
      expect(refreshed.source).toBe("refresh")
      const rejected = yield* cli.runWith(
        { env: { TESSERA_API_KEY: ADMIN }, stdin: "not-an-upstox-token-9999\n" },
        "--server", server.url, "token", "update", "acc-2", "--token", "-"
      )
      expect(rejected.code).toBe(4)
      expect(rejected.stderr).toMatch(/^tessera: token for account 'acc-2' was rejected upstream: .+\n$/)
      const check = yield* remote("pool", "check", "github", "--json")
      expect(check.code, explain(["pool", "check"], check)).toBe(0)
      expect(check.stderr).toBe("checking pool github: 2 items\n")
      expect(JSON.parse(check.stdout).map((c: { valid: boolean }) => c.valid)).toEqual([true, true])
      const cleared = yield* remoteJson<TokenInfo>("token", "clear", "acc-2")
      expect(cleared.status).toBe("missing")

      // the audit log names the API key
      const audit = yield* remoteJson<Array<AuditEntry>>("audit", "--account", "acc-2", "--limit", "10")
      expect(audit[0]).toMatchObject({ type: "cleared", actor: "admin" })

      // failures: the same reason and exit status as locally
      const missing = yield* remote("token", "status", "nope")
      const missingLocally = yield* cli.run("token", "status", "nope")
      expect(missing).toMatchObject({ code: 3, stderr: "tessera: account 'nope' does not exist\n" })
      expect(missingLocally).toMatchObject({ code: 3, stderr: missing.stderr })
      expect(yield* remote("pool", "acquire", "gitlab")).toMatchObject({ code: 3, stderr: "tessera: pool 'gitlab' does not exist\n" })
      const rotate = yield* remote("keys", "rotate")
      expect(rotate).toMatchObject({ code: 2 })
      expect(rotate.stderr).toContain("keys rotate works on the local database")

      // API keys: a wrong one, a missing scope
      const wrongKey = yield* cli.runWith({ env: { TESSERA_API_KEY: "tsr_not_a_key_0000000000" } }, "--server", server.url, "pool", "list")
      expect(wrongKey.code).toBe(8)
      expect(wrongKey.stderr).toMatch(/^tessera: the server refused the API key .*\n$/)
      expect(wrongKey.stderr).not.toContain("tsr_not_a_key")
      const reader = yield* cli.runWith({ env: { TESSERA_API_KEY: READER } }, "--server", server.url, "token", "get", "acc-1")
      expect(reader.code).toBe(8)
      expect(reader.stdout).toBe("")
      const readerStatus = yield* cli.runWith({ env: { TESSERA_API_KEY: READER } }, "token", "status", "acc-1", "--server", server.url)
      expect(readerStatus.code).toBe(0)

      const doctor = yield* remoteJson<{ ok: boolean; checks: Array<{ name: string; status: string; detail: string }> }>("doctor")
      expect(doctor.ok).toBe(true)
      // acc-2 has no token since it was cleared: the server says it is degraded
      expect(doctor.checks).toMatchObject([
        { name: `server ${server.url}`, status: "warn", detail: "degraded: 4 account(s), 3 token(s) available" },
        { name: "API key", status: "ok" }
      ])

      const all = [get, acquired, rejected, check, missing, wrongKey, reader].map((r) => r.stderr).join("\n")
      for (const secret of [ADMIN, READER, ...TOKENS]) expect(all).not.toContain(secret)
    }), { timeout: 180_000 })
})
