import { describe, expect, it } from "@effect/vitest"
import { Account, Crypto, Events, Token, TokenStore } from "@tessera/core"
import { Effect, Layer, Option, Redacted, Schema } from "effect"
import { execFile } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import Database from "better-sqlite3"
import { tempDir } from "./utils/tempDir.js"

const accountId = Schema.decodeSync(Account.AccountId)

const storeLayer = (file: string, key: Crypto.EncryptionKey) =>
  TokenStore.layerSqlite(file).pipe(Layer.provide(Crypto.layerKeys([key])))

const withStore = <A, E>(file: string, key: Crypto.EncryptionKey, body: (store: TokenStore.TokenStoreService) => Effect.Effect<A, E>) =>
  Effect.scoped(Effect.flatMap(TokenStore.TokenStore, body).pipe(Effect.provide(storeLayer(file, key))))

const TOKEN = "ghp_SuperSecretTokenValue_0123456789"
const PASSWORD = "correct-horse-battery-staple"

const passwordAccount = new Account.Account({
  id: accountId("amp-main"),
  provider: "amp",
  pool: "amp",
  source: new Account.PasswordSource({ baseUrl: "http://127.0.0.1:9/", username: "trader", password: Redacted.make(PASSWORD) }),
  label: "main desk",
  createdAt: 1000
})

const fullState: Token.TokenState = {
  token: Option.some({ token: Redacted.make(TOKEN), expiresAt: Option.some(5_000_000), issuedAt: 2000, origin: "obtain" }),
  invalid: Option.none(),
  rateLimit: Option.some(new Token.RateLimit({ limit: 5000, remaining: 0, resetAt: 4_000_000, resource: "core", limited: true })),
  lastError: Option.some(new Token.LastError({ code: "timeout", message: "obtain failed: timeout", at: 3000 })),
  lastRefreshedAt: Option.some(2000),
  lastUsedAt: Option.some(2500),
  username: Option.some("octocat")
}

describe("TokenStore", () => {
  it.scoped("round-trips accounts, token state, rate limits, errors and the audit log across a restart", () =>
    Effect.gen(function*() {
      const file = path.join(yield* tempDir, "t.db")
      const key = yield* Crypto.generateKey
      const added = yield* Events.make({ type: "account_added", accountId: "amp-main", detail: "added" })
      yield* withStore(file, key, (store) =>
        Effect.gen(function*() {
          yield* store.addAccount(passwordAccount, Token.emptyState, [added])
          const updated = yield* Events.make({ type: "obtained", accountId: "amp-main", data: { origin: "obtain" } })
          yield* store.saveState(passwordAccount.id, fullState, [updated])
        }))
      const [loaded, audit] = yield* withStore(file, key, (store) => Effect.all([store.loadAll, store.audit({})]))
      expect(loaded).toHaveLength(1)
      const { account, state } = loaded[0]!
      expect(account.id).toBe("amp-main")
      expect(account.label).toBe("main desk")
      expect(account.source._tag).toBe("password")
      if (account.source._tag === "password") {
        expect(Redacted.value(account.source.password)).toBe(PASSWORD)
        expect(account.source.username).toBe("trader")
      }
      const record = Option.getOrThrow(state.token)
      expect(Redacted.value(record.token)).toBe(TOKEN)
      expect(record.expiresAt).toEqual(Option.some(5_000_000))
      expect(record.origin).toBe("obtain")
      expect(Option.getOrThrow(state.rateLimit)).toEqual(Option.getOrThrow(fullState.rateLimit))
      expect(Option.getOrThrow(state.lastError)).toEqual(Option.getOrThrow(fullState.lastError))
      expect(state.username).toEqual(Option.some("octocat"))
      expect(state.lastUsedAt).toEqual(Option.some(2500))
      expect(audit.map((entry) => entry.type)).toEqual(["obtained", "account_added"])
      expect(audit[0]!.data).toEqual({ origin: "obtain" })
    }))

  it.scoped("the database and WAL files never contain a plaintext token or password", () =>
    Effect.gen(function*() {
      const file = path.join(yield* tempDir, "t.db")
      const key = yield* Crypto.generateKey
      yield* withStore(file, key, (store) =>
        Effect.gen(function*() {
          yield* store.addAccount(passwordAccount, fullState, [])
          const raw = [file, `${file}-wal`].filter(fs.existsSync).map((f) => fs.readFileSync(f))
          for (const bytes of raw) {
            expect(bytes.includes(TOKEN)).toBe(false)
            expect(bytes.includes(PASSWORD)).toBe(false)
          }
        }))
      const raw = [file, `${file}-wal`].filter(fs.existsSync).map((f) => fs.readFileSync(f))
      for (const bytes of raw) {
        expect(bytes.includes(TOKEN)).toBe(false)
        expect(bytes.includes(PASSWORD)).toBe(false)
      }
    }))

  it.scoped("a flipped ciphertext byte is rejected with a typed error", () =>
    Effect.gen(function*() {
      const file = path.join(yield* tempDir, "t.db")
      const key = yield* Crypto.generateKey
      yield* withStore(file, key, (store) => store.addAccount(passwordAccount, fullState, []))
      const db = new Database(file)
      const row = db.prepare("SELECT token_enc FROM token_state WHERE account_id = 'amp-main'").get() as { token_enc: Buffer }
      const tampered = Buffer.from(row.token_enc)
      tampered[tampered.length - 20] ^= 0x01
      db.prepare("UPDATE token_state SET token_enc = ? WHERE account_id = 'amp-main'").run(tampered)
      db.close()
      const error = yield* Effect.flip(withStore(file, key, (store) => store.loadAll))
      expect(error._tag).toBe("DecryptionFailed")
      expect(error.message).not.toContain(TOKEN)
    }))

  it.scoped("a token moved to another account is rejected", () =>
    Effect.gen(function*() {
      const file = path.join(yield* tempDir, "t.db")
      const key = yield* Crypto.generateKey
      const other = new Account.Account({ ...passwordAccount, id: accountId("other") })
      yield* withStore(file, key, (store) =>
        Effect.zipRight(store.addAccount(passwordAccount, fullState, []), store.addAccount(other, Token.emptyState, [])))
      const db = new Database(file)
      db.prepare(
        "UPDATE token_state SET token_enc = (SELECT token_enc FROM token_state WHERE account_id = 'amp-main') WHERE account_id = 'other'"
      ).run()
      db.close()
      const error = yield* Effect.flip(withStore(file, key, (store) => store.load(other.id)))
      expect(error._tag).toBe("DecryptionFailed")
    }))

  it.scoped("opening the database with the wrong key is a clear startup error", () =>
    Effect.gen(function*() {
      const file = path.join(yield* tempDir, "t.db")
      const key = yield* Crypto.generateKey
      const wrong = yield* Crypto.generateKey
      yield* withStore(file, key, (store) => store.addAccount(passwordAccount, fullState, []))
      const error = yield* Effect.flip(withStore(file, wrong, (store) => store.loadAll))
      expect(error._tag).toBe("UnknownEncryptionKey")
      expect(error.message).toContain(key.id)
    }))

  it.scoped("a stored value of the wrong type is a typed error, not a crash", () =>
    Effect.gen(function*() {
      const file = path.join(yield* tempDir, "t.db")
      const key = yield* Crypto.generateKey
      yield* withStore(file, key, (store) => store.addAccount(passwordAccount, fullState, []))
      const db = new Database(file)
      db.prepare("UPDATE token_state SET token_enc = 'not a blob' WHERE account_id = 'amp-main'").run()
      db.close()
      const error = yield* Effect.flip(withStore(file, key, (store) => store.loadAll))
      expect(error._tag).toBe("DecryptionFailed")
    }))

  it.scoped("the audit log is append-only", () =>
    Effect.gen(function*() {
      const file = path.join(yield* tempDir, "t.db")
      const key = yield* Crypto.generateKey
      const event = yield* Events.make({ type: "cleared", accountId: "x" })
      yield* withStore(file, key, (store) => store.appendAudit([event]))
      const db = new Database(file)
      expect(() => db.prepare("UPDATE audit_log SET actor = 'mallory'").run()).toThrow(/append-only/)
      expect(() => db.prepare("DELETE FROM audit_log").run()).toThrow(/append-only/)
      db.close()
    }))

  it.scoped("adding an account twice fails with AccountExists and changes nothing", () =>
    Effect.gen(function*() {
      const file = path.join(yield* tempDir, "t.db")
      const key = yield* Crypto.generateKey
      const error = yield* withStore(file, key, (store) =>
        Effect.zipRight(store.addAccount(passwordAccount, fullState, []), Effect.flip(store.addAccount(passwordAccount, Token.emptyState, []))))
      expect(error._tag).toBe("AccountExists")
      const loaded = yield* withStore(file, key, (store) => store.loadAll)
      expect(Option.isSome(loaded[0]!.state.token)).toBe(true)
    }))

  it.scoped("re-encryption moves every stored secret to the new key; the old key can then go", () =>
    Effect.gen(function*() {
      const file = path.join(yield* tempDir, "t.db")
      const oldKey = yield* Crypto.generateKey
      const newKey = yield* Crypto.generateKey
      const other = new Account.Account({ ...passwordAccount, id: accountId("other") })
      yield* withStore(file, oldKey, (store) =>
        Effect.zipRight(store.addAccount(passwordAccount, fullState, []), store.addAccount(other, Token.emptyState, [])))
      const both = TokenStore.layerSqlite(file).pipe(Layer.provide(Crypto.layerKeys([newKey, oldKey])))
      const result = yield* Effect.scoped(Effect.flatMap(TokenStore.TokenStore, (store) =>
        Effect.all([store.reencrypt, store.keyUsage])).pipe(Effect.provide(both)))
      expect(result[0].rewritten).toBe(4) // two sources, one token, the key check
      expect([...result[1].keys()]).toEqual([newKey.id])
      const loaded = yield* withStore(file, newKey, (store) => store.loadAll)
      expect(Redacted.value(Option.getOrThrow(loaded.find((a) => a.account.id === "amp-main")!.state.token).token)).toBe(TOKEN)
    }))

  it.scoped("an interrupted re-encryption changes nothing", () =>
    Effect.gen(function*() {
      const file = path.join(yield* tempDir, "t.db")
      const oldKey = yield* Crypto.generateKey
      const newKey = yield* Crypto.generateKey
      const other = new Account.Account({ ...passwordAccount, id: accountId("zz-other") })
      yield* withStore(file, oldKey, (store) =>
        Effect.zipRight(store.addAccount(passwordAccount, fullState, []), store.addAccount(other, fullState, [])))
      const db = new Database(file)
      // the last row the rotation reaches is damaged: same key id, garbage after it
      const row = db.prepare("SELECT token_enc FROM token_state WHERE account_id = 'zz-other'").get() as { token_enc: Buffer }
      const damaged = Buffer.concat([row.token_enc.subarray(0, 9), Buffer.alloc(40, 7)])
      db.prepare("UPDATE token_state SET token_enc = ? WHERE account_id = 'zz-other'").run(damaged)
      db.close()
      const both = TokenStore.layerSqlite(file).pipe(Layer.provide(Crypto.layerKeys([newKey, oldKey])))
      const error = yield* Effect.flip(Effect.scoped(Effect.flatMap(TokenStore.TokenStore, (store) => store.reencrypt).pipe(Effect.provide(both))))
      expect(error._tag).toBe("DecryptionFailed")
      const usage = yield* withStore(file, oldKey, (store) => store.keyUsage)
      expect(usage.get(newKey.id)).toBeUndefined()
      expect(usage.get(oldKey.id)).toBe(5) // two sources, two tokens, the key check
    }))

  it.scoped("usage of 6,000 accounts and 6,000 audit records are saved in one call (beyond SQLite's parameter limit)", () =>
    Effect.gen(function*() {
      const file = path.join(yield* tempDir, "t.db")
      const key = yield* Crypto.generateKey
      const n = 6000
      const accounts = Array.from({ length: n }, (_, i) => new Account.Account({ ...passwordAccount, id: accountId(`u-${i}`) }))
      yield* withStore(file, key, (store) =>
        Effect.gen(function*() {
          yield* store.importAccounts(accounts.map((account) => ({ account, state: fullState })))
          const used = accounts.map((account, i) => ({ id: account.id, state: { ...fullState, lastUsedAt: Option.some(10_000 + i) } }))
          const events = yield* Effect.forEach(accounts, (account) => Events.make({ type: "acquired", accountId: account.id }))
          yield* store.saveUsage(used, events)
        }))
      const [loaded, audit] = yield* withStore(file, key, (store) => Effect.all([store.loadAll, store.audit({ limit: 10_000 })]))
      expect(loaded.every((entry) => Option.isSome(entry.state.lastUsedAt) && Option.getOrThrow(entry.state.lastUsedAt) >= 10_000)).toBe(true)
      expect(audit).toHaveLength(n)
    }), { timeout: 60_000 })

  it.scoped("two processes writing one database file concurrently lose nothing and never see SQLITE_BUSY", () =>
    Effect.gen(function*() {
      const file = path.join(yield* tempDir, "shared.db")
      const key = yield* Crypto.generateKey
      const keyText = Redacted.value(Crypto.toBase64(key))
      const writer = fileURLToPath(new URL("./fixtures/writer.mjs", import.meta.url))
      const perProcess = 300
      const run = (name: string) =>
        Effect.async<{ code: number | null; stderr: string }>((resume) => {
          execFile(process.execPath, [writer, file, keyText, name, String(perProcess)], (error, _stdout, stderr) =>
            resume(Effect.succeed({ code: error ? (typeof error.code === "number" ? error.code : 1) : 0, stderr })))
        })
      const results = yield* Effect.all([run("alpha"), run("beta")], { concurrency: 2 })
      for (const result of results) {
        expect(result.stderr).not.toContain("SQLITE_BUSY")
        expect(result.code).toBe(0)
      }
      const [accounts, audit] = yield* withStore(file, key, (store) => Effect.all([store.loadAll, store.audit({ limit: 10_000 })]))
      expect(accounts).toHaveLength(2 * perProcess)
      expect(accounts.every((a) => Option.isSome(a.state.token))).toBe(true)
      expect(audit).toHaveLength(4 * perProcess)
    }), { timeout: 120_000 })
})
