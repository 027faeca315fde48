/**
 * `tessera keys rotate` (the encryption key) and `tessera keys create|list|revoke` (API keys),
 * end to end on a local database.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import * as crypto from "node:crypto"
import * as fs from "node:fs"
import type { Wire } from "@tessera/server"
import type { RotationView } from "../../packages/cli/src/Backend.js"
import { makeCli, upstreams } from "./harness.js"

type TokenInfo = typeof Wire.TokenInfo.Encoded
type AccountView = typeof Wire.AccountView.Encoded
type AuditEntry = typeof Wire.AuditEntry.Encoded

/** What `keys rotate --json` prints: the CLI's own type, so the test cannot drift from it. */
type Rotation = RotationView

/** The keys of a key file, the current one first. */
const keysOf = (file: string) => fs.readFileSync(file, "utf8").split("\n").filter((line) => line.trim() !== "" && !line.startsWith("#"))

const keyId = (base64: string) => crypto.createHash("sha256").update(Buffer.from(base64, "base64")).digest("hex").slice(0, 16)

describe("tessera keys", () => {
  it.scopedLive("`keys rotate` re-encrypts everything under a new key and leaves only that key in the file (mode 0600)", () =>
    Effect.gen(function*() {
      const fakes = yield* upstreams
      const cli = yield* makeCli(fakes.env)
      yield* cli.json("accounts", "add", "amp", "--provider", "amp", "--username", "trader", "--password", "canary-amp-password-3e1f")
      yield* cli.json("pool", "add", "github", "--token", "ghp_rotation_token_0001")
      const token = fakes.amp.issued()[0]!.token
      const [oldKey] = keysOf(cli.keyFile)
      expect(keysOf(cli.keyFile).length).toBe(1)

      const rotation = yield* cli.json<Rotation>("keys", "rotate")
      expect(rotation).toMatchObject({
        key_source: "file",
        key_file: cli.keyFile,
        retired_key_ids: [keyId(oldKey!)],
        action: null
      })
      // two sources, two tokens and the key check
      expect(rotation.rewritten).toBe(5)
      const keys = keysOf(cli.keyFile)
      expect(keys.length).toBe(1)
      expect(keys[0]).not.toBe(oldKey)
      expect(keyId(keys[0]!)).toBe(rotation.key_id)
      expect(fs.statSync(cli.keyFile).mode & 0o777).toBe(0o600)

      // a new process reads everything with the new key alone: the same token, no new obtain
      expect((yield* cli.run("token", "get", "amp")).stdout).toBe(`${token}\n`)
      expect(fakes.amp.calls("obtain")).toBe(1)
      const accounts = yield* cli.json<Array<AccountView>>("accounts", "list")
      expect(accounts.map((account) => [account.account_id, account.token.status])).toEqual([
        ["amp", "available"],
        [accounts[1]!.account_id, "available"]
      ])
      // …and the old key no longer opens the database
      const old = yield* cli.runWith({ env: { TESSERA_ENCRYPTION_KEY: oldKey! } }, "token", "status", "amp")
      expect(old.code).toBe(8)
      expect(old.stderr).toMatch(/^tessera: stored value was encrypted with key [0-9a-f]{16}, which is not configured.*\n$/)
      expect(old.stderr).not.toContain(oldKey)

      const audit = yield* cli.json<Array<AuditEntry>>("audit")
      const rotated = audit.find((entry) => entry.type === "key_rotated")
      expect(rotated).toMatchObject({ actor: "cli", account_id: null, outcome: "success" })
      expect(rotated!.detail).toContain(rotation.key_id)

      // with TESSERA_ENCRYPTION_KEY the variable cannot be rewritten: re-encrypt under its first key, say what to drop
      const fresh = crypto.randomBytes(32).toString("base64")
      const env = yield* cli.runWith({ env: { TESSERA_ENCRYPTION_KEY: `${fresh},${keys[0]}` } }, "keys", "rotate", "--json")
      expect(env.code).toBe(0)
      const byVariable: Rotation = JSON.parse(env.stdout)
      expect(byVariable).toMatchObject({ key_source: "environment", key_file: null, key_id: keyId(fresh), retired_key_ids: [rotation.key_id] })
      expect(byVariable.action).toContain("remove every key but the first from TESSERA_ENCRYPTION_KEY")
      expect(env.stderr).toBe("")
      const human = yield* cli.runWith({ env: { TESSERA_ENCRYPTION_KEY: fresh } }, "keys", "rotate")
      expect(human.code).toBe(0)
      expect(human.stdout).toMatch(/re-encrypted\s+0 stored value\(s\)/)
      expect(human.stderr).toMatch(/^tessera: next: TESSERA_ENCRYPTION_KEY holds one key/)
      const status = yield* cli.runWith({ env: { TESSERA_ENCRYPTION_KEY: fresh } }, "token", "status", "amp", "--json")
      expect(JSON.parse(status.stdout)).toMatchObject({ account_id: "amp", status: "available" } satisfies Partial<TokenInfo>)
      for (const text of [env.stdout, env.stderr, human.stdout, human.stderr]) {
        expect(text).not.toContain(fresh)
        expect(text).not.toContain(keys[0])
      }
    }), { timeout: 120_000 })

  it.scopedLive("a database whose key file is missing is a clear error, and no new key file is made", () =>
    Effect.gen(function*() {
      const cli = yield* makeCli()
      yield* cli.json("pool", "add", "github", "--token", "ghp_missing_key_token_01")
      fs.renameSync(cli.keyFile, `${cli.keyFile}.bak`)
      const missing = yield* cli.run("pool", "list")
      expect(missing.code).toBe(8)
      expect(missing.stderr).toMatch(/^tessera: the database .* exists but its key file .*tessera\.key does not: .*\n$/)
      expect(fs.existsSync(cli.keyFile)).toBe(false)
      const rotate = yield* cli.run("keys", "rotate")
      expect(rotate.code).toBe(8)
      expect(fs.existsSync(cli.keyFile)).toBe(false)
    }), { timeout: 60_000 })

  it.scopedLive("`keys create` prints a new API key once; `keys list` never shows it; `keys revoke` ends it", () =>
    Effect.gen(function*() {
      const cli = yield* makeCli()
      const created = yield* cli.run("keys", "create", "ci", "--scope", "read", "--scope", "token")
      expect(created.code).toBe(0)
      expect(created.stdout).toMatch(/^tsr_[A-Za-z0-9_-]{43}\n$/)
      // (the first command on a new database also says it created the key file)
      expect(created.stderr).toMatch(/(^|\n)tessera: created API key 'ci' \(read\+token\); it is shown this once\n$/)
      const secret = created.stdout.trimEnd()

      const list = yield* cli.run("keys", "list")
      expect(list.stdout).toMatch(/^NAME\s+SCOPES\s+CREATED\s+REVOKED\n/)
      expect(list.stdout).toMatch(/\nci\s+read\+token\s+\S+ \S+\s+-\n/)
      expect(list.stdout).not.toContain(secret)

      const duplicate = yield* cli.run("keys", "create", "ci")
      expect(duplicate).toMatchObject({ code: 7, stderr: "tessera: an active API key named 'ci' already exists\n" })
      const badScope = yield* cli.run("keys", "create", "other", "--scope", "write")
      expect(badScope.code).toBe(2)

      const revoked = yield* cli.json<Array<{ name: string; revoked_at: string | null }> | { name: string; revoked_at: string | null }>("keys", "revoke", "ci")
      expect(revoked).toMatchObject({ name: "ci" })
      expect((revoked as { revoked_at: string | null }).revoked_at).not.toBeNull()
      const again = yield* cli.run("keys", "revoke", "ci")
      expect(again).toMatchObject({ code: 3, stderr: "tessera: there is no active API key named 'ci'\n" })
      const keys = yield* cli.json<Array<{ name: string; scopes: Array<string>; revoked_at: string | null }>>("keys", "list")
      expect(keys).toMatchObject([{ name: "ci", scopes: ["read", "token"] }])
      expect(keys[0]!.revoked_at).not.toBeNull()
    }), { timeout: 60_000 })
})
