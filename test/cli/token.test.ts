/**
 * `tessera accounts …` and `tessera token …` on a local database, end to end: the built
 * command line as a child process against fake AMP, auth-service and Upstox servers.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import * as fs from "node:fs"
import type { Wire } from "@tessera/server"
import { describe as explain, makeCli, upstreams } from "./harness.js"

type TokenInfo = typeof Wire.TokenInfo.Encoded
type AccountView = typeof Wire.AccountView.Encoded
type RawToken = typeof Wire.RawToken.Encoded
type Validation = typeof Wire.Validation.Encoded
type AuditEntry = typeof Wire.AuditEntry.Encoded

const PASSWORD = "canary-amp-password-3e1f"

describe("tessera accounts and token (local database)", () => {
  it.scopedLive("registers accounts, prints only the raw token for `token get`, and never a secret elsewhere", () =>
    Effect.gen(function*() {
      const fakes = yield* upstreams
      const cli = yield* makeCli({ ...fakes.env, TESSERA_TIMEZONE: "Asia/Kolkata" })

      const amp = yield* cli.runWith(
        { stdin: `${PASSWORD}\n` },
        "accounts", "add", "amp", "--provider", "amp", "--username", "trader", "--password", "-", "--json"
      )
      expect(amp.code, explain(["accounts", "add", "amp"], amp)).toBe(0)
      const added: AccountView = JSON.parse(amp.stdout)
      expect(added.source).toEqual({ type: "password", base_url: null, username: "trader" })
      // a renewable account fetches its first token when it is registered
      expect(added.token).toMatchObject({ status: "available", source: "obtain" })
      expect(fakes.amp.calls("obtain")).toBe(1)
      const ampToken = fakes.amp.issued()[0]!.token

      const upstox = yield* cli.json<AccountView>("accounts", "add", "acc-1", "--provider", "upstox")
      expect(upstox.source.type).toBe("remote")
      expect(upstox.token.status).toBe("available")

      const get = yield* cli.run("token", "get", "amp")
      expect(get.code).toBe(0)
      expect(get.stdout).toBe(`${ampToken}\n`)
      expect(get.stderr).toBe("")
      const grant = yield* cli.json<RawToken>("token", "get", "amp")
      expect(grant.account_id).toBe("amp")
      expect(grant.access_token).toBe(ampToken)
      expect(grant.expires_at_local).toMatch(/\+05:30$/)
      expect(fakes.amp.calls("obtain")).toBe(1)

      const status = yield* cli.json<TokenInfo>("token", "status", "amp")
      expect(status).toMatchObject({
        account_id: "amp",
        provider: "amp",
        pool: "amp",
        status: "available",
        has_token: true,
        token_preview: `${ampToken.slice(0, 4)}…${ampToken.slice(-4)}`,
        last_error: null,
        rate_limit: null
      })
      expect(Date.parse(status.expires_at!)).toBeGreaterThan(Date.now())
      expect(status.expires_at).toMatch(/Z$/)
      expect(status.expires_at_local).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+05:30$/)
      expect(Date.parse(status.expires_at_local!)).toBe(Date.parse(status.expires_at!))
      expect(status.last_used_at).not.toBeNull()

      const table = yield* cli.run("token", "status", "amp")
      expect(table.code).toBe(0)
      expect(table.stdout).toMatch(/status\s+available/)
      expect(table.stdout).toContain("+05:30")
      // not a terminal: no colours
      expect(table.stdout).not.toContain("\x1b[")

      const accounts = yield* cli.json<Array<AccountView>>("accounts", "list")
      expect(accounts.map((account) => account.account_id)).toEqual(["acc-1", "amp"])
      const list = yield* cli.run("accounts", "list")
      expect(list.stdout.split("\n")[0]).toMatch(/^ACCOUNT\s+PROVIDER\s+POOL\s+SOURCE\s+STATUS/)
      expect(list.stdout).toMatch(/amp\s+amp\s+amp\s+password\s+available/)

      const audit = yield* cli.json<Array<AuditEntry>>("audit")
      expect(audit.find((entry) => entry.type === "account_added" && entry.account_id === "amp")?.actor).toBe("cli")
      // (the first fetch of a new account is the lifecycle's own, whoever registered it)
      expect(audit.find((entry) => entry.type === "obtained" && entry.account_id === "amp")?.outcome).toBe("success")

      const outputs = [amp, table, list].map((result) => result.stdout + result.stderr).join("\n") +
        JSON.stringify([added, upstox, status, accounts, audit])
      const secrets = [PASSWORD, ampToken, fakes.auth.account("acc-1")!.token]
      for (const secret of secrets) expect(outputs).not.toContain(secret)
      for (const file of [cli.db, `${cli.db}-wal`].filter(fs.existsSync)) {
        const bytes = fs.readFileSync(file)
        for (const secret of secrets) expect(bytes.includes(secret)).toBe(false)
      }
    }), { timeout: 120_000 })

  it.scopedLive("acts on the default account: INTERNAL_API_ACCOUNT_ID, else the only one, else the first declared, else the oldest", () =>
    Effect.gen(function*() {
      const fakes = yield* upstreams
      const cli = yield* makeCli(fakes.env)
      yield* cli.json("accounts", "add", "acc-1", "--provider", "upstox")
      expect((yield* cli.json<TokenInfo>("token", "status")).account_id).toBe("acc-1")
      yield* cli.json("accounts", "add", "acc-2", "--provider", "upstox")
      expect((yield* cli.json<TokenInfo>("token", "status")).account_id).toBe("acc-1")

      const named = yield* cli.runWith({ env: { INTERNAL_API_ACCOUNT_ID: "acc-2" } }, "token", "get")
      expect(named.stdout).toBe(`${fakes.auth.account("acc-2")!.token}\n`)
      const declared = yield* cli.runWith({ env: { UPSTOX_ACCOUNT_IDS: "acc-2,acc-1" } }, "token", "status", "--json")
      expect(JSON.parse(declared.stdout).account_id).toBe("acc-2")
      const unknown = yield* cli.runWith({ env: { INTERNAL_API_ACCOUNT_ID: "acc-9" } }, "token", "status")
      expect(unknown.code).toBe(3)
      expect(unknown.stderr).toBe("tessera: account 'acc-9' does not exist\n")
    }), { timeout: 120_000 })

  it.scopedLive("validates, updates (refusing a token the upstream rejects), refreshes and clears a token", () =>
    Effect.gen(function*() {
      const fakes = yield* upstreams
      const cli = yield* makeCli(fakes.env)
      yield* cli.json("accounts", "add", "acc-1", "--provider", "upstox")
      const first = fakes.auth.account("acc-1")!.token

      const valid = yield* cli.json<Validation>("token", "validate", "acc-1")
      expect(valid).toMatchObject({ account_id: "acc-1", valid: true, upstream_status: 200 })

      const rejected = yield* cli.runWith({ stdin: "not-an-upstox-token-1234\n" }, "token", "update", "acc-1", "--token", "-")
      expect(rejected.code).toBe(4)
      expect(rejected.stdout).toBe("")
      expect(rejected.stderr).toMatch(/^tessera: token for account 'acc-1' was rejected upstream: .+\n$/)
      expect((yield* cli.json<TokenInfo>("token", "status", "acc-1")).token_preview).toBe(`${first.slice(0, 4)}…${first.slice(-4)}`)

      const inOneHour = new Date(Date.now() + 3_600_000).toISOString()
      const manual = yield* cli.json<TokenInfo>(
        "token", "update", "acc-1", "--token", "manual-token-5678abcd", "--no-validate", "--expires-at", inOneHour
      )
      expect(manual).toMatchObject({ source: "manual", token_preview: "manu…abcd", status: "available" })
      expect(Date.parse(manual.expires_at!)).toBe(Date.parse(inOneHour))

      const invalid = yield* cli.run("token", "validate", "acc-1", "--json")
      expect(invalid.code).toBe(4)
      expect(JSON.parse(invalid.stdout)).toMatchObject({ account_id: "acc-1", valid: false, upstream_status: 401 })
      expect(invalid.stderr).toMatch(/^tessera: the token of account 'acc-1' is not valid: /)

      const refreshes = fakes.auth.calls("refresh")
      const refreshed = yield* cli.json<TokenInfo>("token", "refresh", "acc-1")
      expect(refreshed.source).toBe("refresh")
      expect(fakes.auth.calls("refresh")).toBe(refreshes + 1)
      const current = fakes.auth.account("acc-1")!.token
      expect((yield* cli.run("token", "get", "acc-1")).stdout).toBe(`${current}\n`)

      const cleared = yield* cli.json<TokenInfo>("token", "clear", "acc-1")
      expect(cleared).toMatchObject({ status: "missing", has_token: false, token_preview: null })
      expect((yield* cli.json<Array<AccountView>>("accounts", "list")).map((a) => a.account_id)).toEqual(["acc-1"])

      const audit = yield* cli.json<Array<AuditEntry>>("audit", "--account", "acc-1", "--limit", "20")
      const types = audit.map((entry) => entry.type)
      expect(types[0]).toBe("cleared")
      expect(types).toEqual(expect.arrayContaining(["cleared", "refreshed", "updated", "validated", "account_added"]))
      expect(audit.every((entry) => entry.account_id === "acc-1")).toBe(true)
      expect(audit.filter((entry) => entry.type === "updated").map((entry) => entry.actor)).toEqual(["cli", "cli"])
      expect(audit.find((entry) => entry.type === "refreshed")?.actor).toBe("cli")
      const text = JSON.stringify(audit)
      for (const secret of [first, current, "not-an-upstox-token-1234", "manual-token-5678abcd"]) expect(text).not.toContain(secret)
      expect((yield* cli.json<Array<AuditEntry>>("audit", "--limit", "2")).length).toBe(2)
    }), { timeout: 120_000 })

  it.scopedLive("removes an account; a static token cannot be refreshed; bad dates are usage errors", () =>
    Effect.gen(function*() {
      const fakes = yield* upstreams
      const cli = yield* makeCli(fakes.env)
      const added = yield* cli.json<AccountView>("accounts", "add", "ci", "--provider", "github", "--token", "ghp_static_token_00001111", "--label", "ci bot")
      expect(added).toMatchObject({ account_id: "ci", pool: "github", label: "ci bot", source: { type: "static" } })
      expect(added.token).toMatchObject({ source: "static", expires_at: null, status: "available" })

      const refresh = yield* cli.run("token", "refresh", "ci")
      expect(refresh.code).toBe(4)
      expect(refresh.stderr).toBe("tessera: cannot refresh account 'ci': a static token is handed in, never obtained or refreshed\n")

      for (const [flag, value] of [["--expires-at", "tomorrow"], ["--expires-at", "2001-01-01T00:00:00Z"], ["--expires-in", "soon"]] as const) {
        const bad = yield* cli.run("token", "update", "ci", "--token", "ghp_other_token_22223333", "--no-validate", flag, value)
        expect(bad.code, explain([flag, value], bad)).toBe(2)
        expect(bad.stderr).toMatch(new RegExp(`^tessera: bad ${flag}.*\\n$`))
      }

      const removed = yield* cli.run("accounts", "remove", "ci")
      expect(removed).toMatchObject({ code: 0, stdout: "removed account ci\n" })
      const gone = yield* cli.run("token", "status", "ci")
      expect(gone).toMatchObject({ code: 3, stderr: "tessera: account 'ci' does not exist\n" })
      const again = yield* cli.run("accounts", "remove", "ci")
      expect(again.code).toBe(3)
      // the history stays
      const audit = yield* cli.json<Array<AuditEntry>>("audit", "--account", "ci")
      expect(audit[0]).toMatchObject({ type: "account_removed", actor: "cli" })
    }), { timeout: 120_000 })

  it.scopedLive("reads never call an upstream, and `token get` fetches only the account it is asked for", () =>
    Effect.gen(function*() {
      const fakes = yield* upstreams
      fakes.auth.setAccount("acc-3")
      const cli = yield* makeCli(fakes.env)
      for (const id of ["acc-1", "acc-2", "acc-3"]) yield* cli.json("accounts", "add", id, "--provider", "upstox")
      for (const id of ["acc-2", "acc-3"]) yield* cli.json("token", "clear", id)
      fakes.auth.resetCalls()
      fakes.upstox.resetCalls()

      for (const args of [["token", "status", "acc-2"], ["token", "status", "--all"], ["accounts", "list"], ["pool", "list"], ["audit"]]) {
        const result = yield* cli.run(...args)
        expect(result.code, explain(args, result)).toBe(0)
      }
      expect(fakes.auth.calls("token") + fakes.auth.calls("refresh") + fakes.upstox.calls("profile")).toBe(0)

      expect((yield* cli.run("token", "get", "acc-1")).code).toBe(0)
      expect(fakes.auth.calls("token")).toBe(0)
      const fetched = yield* cli.run("token", "get", "acc-2")
      expect(fetched.stdout).toBe(`${fakes.auth.account("acc-2")!.token}\n`)
      expect(fakes.auth.requests("token").map((request) => request.params["accountId"])).toEqual(["acc-2"])
      const infos = yield* cli.json<Array<TokenInfo>>("token", "status", "--all")
      expect(infos.map((info) => [info.account_id, info.status])).toEqual([
        ["acc-1", "available"],
        ["acc-2", "available"],
        ["acc-3", "missing"]
      ])
    }), { timeout: 120_000 })
})
