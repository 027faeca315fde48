import { SqlClient } from "@effect/sql"
import { expect, it } from "@effect/vitest"
import { Account, Crypto, Events, Token, TokenStore } from "@tessera/core"
import { Context, Deferred, Effect, Layer, Option, Redacted, Schema, Stream } from "effect"
import { execFile, spawn } from "node:child_process"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { describeEachDatabase, storeLayer } from "./utils/databases.js"
import type { TestDatabase } from "./utils/databases.js"
import * as Scripted from "./utils/scriptedServer.js"
import { tempDir } from "./utils/tempDir.js"

const accountId = Schema.decodeSync(Account.AccountId)

const withStore = <A, E>(db: TestDatabase, key: Crypto.EncryptionKey, body: (store: TokenStore.TokenStoreService) => Effect.Effect<A, E>) =>
  withKeys(db, [key], body)

const withKeys = <A, E>(
  db: TestDatabase,
  keys: readonly [Crypto.EncryptionKey, ...Array<Crypto.EncryptionKey>],
  body: (store: TokenStore.TokenStoreService) => Effect.Effect<A, E>
) => Effect.scoped(Effect.flatMap(TokenStore.TokenStore, body).pipe(Effect.provide(storeLayer(db.database, keys))))

/** The stored token of `id`, as bytes. */
const tokenBlob = (db: TestDatabase, id: string) =>
  db.raw(Effect.map(
    Effect.flatMap(SqlClient.SqlClient, (sql) => sql<{ token_enc: Uint8Array }>`SELECT token_enc FROM token_state WHERE account_id = ${id}`),
    (rows) => Buffer.from(rows[0]!.token_enc)
  ))

const setTokenBlob = (db: TestDatabase, id: string, blob: Uint8Array) =>
  db.raw(Effect.flatMap(SqlClient.SqlClient, (sql) => sql`UPDATE token_state SET token_enc = ${blob} WHERE account_id = ${id}`))

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

describeEachDatabase("TokenStore", (backend) => {
  it.scoped("round-trips accounts, token state, rate limits, errors and the audit log across a restart", () =>
    Effect.gen(function*() {
      const db = yield* backend.fresh
      const key = yield* Crypto.generateKey
      const added = yield* Events.make({ type: "account_added", accountId: "amp-main", detail: "added" })
      yield* withStore(db, key, (store) =>
        Effect.gen(function*() {
          yield* store.addAccount(passwordAccount, Token.emptyState, [added])
          const updated = yield* Events.make({ type: "obtained", accountId: "amp-main", data: { origin: "obtain" } })
          yield* store.saveState(passwordAccount.id, fullState, [updated])
        }))
      const [loaded, audit] = yield* withStore(db, key, (store) => Effect.all([store.loadAll, store.audit({})]))
      expect(loaded).toHaveLength(1)
      const { account, state } = loaded[0]!
      expect(account.id).toBe("amp-main")
      expect(account.label).toBe("main desk")
      expect(account.createdAt).toBe(1000)
      expect(account.source._tag).toBe("password")
      if (account.source._tag === "password") {
        expect(Redacted.value(account.source.password)).toBe(PASSWORD)
        expect(account.source.username).toBe("trader")
      }
      const record = Option.getOrThrow(state.token)
      expect(Redacted.value(record.token)).toBe(TOKEN)
      expect(record.expiresAt).toEqual(Option.some(5_000_000))
      expect(record.issuedAt).toBe(2000)
      expect(record.origin).toBe("obtain")
      expect(Option.getOrThrow(state.rateLimit)).toEqual(Option.getOrThrow(fullState.rateLimit))
      expect(Option.getOrThrow(state.lastError)).toEqual(Option.getOrThrow(fullState.lastError))
      expect(state.username).toEqual(Option.some("octocat"))
      expect(state.lastUsedAt).toEqual(Option.some(2500))
      expect(audit.map((entry) => entry.type)).toEqual(["obtained", "account_added"])
      expect(audit[0]!.data).toEqual({ origin: "obtain" })
      expect(typeof audit[0]!.id).toBe("number")
    }))

  it.scoped("epoch-millisecond times beyond 32 bits come back as the same numbers", () =>
    Effect.gen(function*() {
      const db = yield* backend.fresh
      const key = yield* Crypto.generateKey
      const far = 4_102_444_800_000 // 2100-01-01
      const state: Token.TokenState = {
        ...fullState,
        token: Option.some({ token: Redacted.make(TOKEN), expiresAt: Option.some(far), issuedAt: far - 1, origin: "refresh" }),
        rateLimit: Option.some(new Token.RateLimit({ limit: 5000, remaining: 12, resetAt: far + 1, limited: false }))
      }
      const at = yield* Events.make({ type: "refreshed", accountId: "amp-main" })
      yield* withStore(db, key, (store) =>
        store.importAccounts([{ account: new Account.Account({ ...passwordAccount, createdAt: far - 2 }), state }], [at]))
      const [loaded, audit] = yield* withStore(db, key, (store) => Effect.all([store.load(passwordAccount.id), store.audit({})]))
      const restored = Option.getOrThrow(loaded)
      expect(restored.account.createdAt).toBe(far - 2)
      expect(Option.getOrThrow(restored.state.token).expiresAt).toEqual(Option.some(far))
      expect(Option.getOrThrow(restored.state.token).issuedAt).toBe(far - 1)
      expect(Option.getOrThrow(restored.state.rateLimit).resetAt).toBe(far + 1)
      expect(audit[0]!.at).toBe(at.at)
    }))

  it.scoped("the database never holds a plaintext token or password", () =>
    Effect.gen(function*() {
      const db = yield* backend.fresh
      const key = yield* Crypto.generateKey
      const check = Effect.gen(function*() {
        const contents = yield* db.contents
        expect(contents.length).toBeGreaterThan(0)
        for (const bytes of contents) {
          expect(bytes.includes(TOKEN)).toBe(false)
          expect(bytes.includes(PASSWORD)).toBe(false)
        }
      })
      yield* withStore(db, key, (store) => Effect.zipRight(store.addAccount(passwordAccount, fullState, []), check))
      yield* check
      // the check can fail: what it reads does hold the ciphertext and the plain columns
      const contents = Buffer.concat(yield* db.contents)
      expect(contents.includes("octocat")).toBe(true)
      expect(contents.includes(yield* tokenBlob(db, "amp-main"))).toBe(true)
    }))

  it.scoped("a flipped ciphertext byte is rejected with a typed error", () =>
    Effect.gen(function*() {
      const db = yield* backend.fresh
      const key = yield* Crypto.generateKey
      yield* withStore(db, key, (store) => store.addAccount(passwordAccount, fullState, []))
      const tampered = yield* tokenBlob(db, "amp-main")
      tampered[tampered.length - 20] ^= 0x01
      yield* setTokenBlob(db, "amp-main", tampered)
      const error = yield* Effect.flip(withStore(db, key, (store) => store.loadAll))
      expect(error._tag).toBe("DecryptionFailed")
      expect(error.message).not.toContain(TOKEN)
    }))

  it.scoped("a token moved to another account is rejected", () =>
    Effect.gen(function*() {
      const db = yield* backend.fresh
      const key = yield* Crypto.generateKey
      const other = new Account.Account({ ...passwordAccount, id: accountId("other") })
      yield* withStore(db, key, (store) =>
        Effect.zipRight(store.addAccount(passwordAccount, fullState, []), store.addAccount(other, Token.emptyState, [])))
      yield* setTokenBlob(db, "other", yield* tokenBlob(db, "amp-main"))
      const error = yield* Effect.flip(withStore(db, key, (store) => store.load(other.id)))
      expect(error._tag).toBe("DecryptionFailed")
    }))

  it.scoped("opening the database with the wrong key is a clear startup error", () =>
    Effect.gen(function*() {
      const db = yield* backend.fresh
      const key = yield* Crypto.generateKey
      const wrong = yield* Crypto.generateKey
      yield* withStore(db, key, (store) => store.addAccount(passwordAccount, fullState, []))
      const error = yield* Effect.flip(withStore(db, wrong, (store) => store.loadAll))
      expect(error._tag).toBe("UnknownEncryptionKey")
      expect(error.message).toContain(key.id)
    }))

  it.scoped("a stored value of the wrong type is a typed error, not a crash", () =>
    Effect.gen(function*() {
      const db = yield* backend.fresh
      const key = yield* Crypto.generateKey
      yield* withStore(db, key, (store) => store.addAccount(passwordAccount, fullState, []))
      yield* db.raw(Effect.flatMap(SqlClient.SqlClient, (sql) =>
        sql`UPDATE token_state SET token_enc = 'not a blob' WHERE account_id = 'amp-main'`))
      const error = yield* Effect.flip(withStore(db, key, (store) => store.loadAll))
      expect(error._tag).toBe("DecryptionFailed")
    }))

  it.scoped("the audit log is append-only", () =>
    Effect.gen(function*() {
      const db = yield* backend.fresh
      const key = yield* Crypto.generateKey
      const event = yield* Events.make({ type: "cleared", accountId: "x" })
      yield* withStore(db, key, (store) => store.appendAudit([event]))
      const refused = (statement: string) =>
        db.raw(Effect.flatMap(SqlClient.SqlClient, (sql) => sql.unsafe(statement))).pipe(
          Effect.flip,
          Effect.map((error) => String(error.cause))
        )
      expect(yield* refused("UPDATE audit_log SET actor = 'mallory'")).toMatch(/append-only/)
      expect(yield* refused("DELETE FROM audit_log")).toMatch(/append-only/)
      // PostgreSQL's TRUNCATE skips row triggers: it has a trigger of its own
      if (backend.kind === "postgres") expect(yield* refused("TRUNCATE audit_log")).toMatch(/append-only/)
      const audit = yield* withStore(db, key, (store) => store.audit({}))
      expect(audit.map((entry) => [entry.actor, entry.type])).toEqual([[event.actor, "cleared"]])
    }))

  it.scoped("adding an account twice fails with AccountExists and changes nothing", () =>
    Effect.gen(function*() {
      const db = yield* backend.fresh
      const key = yield* Crypto.generateKey
      const error = yield* withStore(db, key, (store) =>
        Effect.zipRight(store.addAccount(passwordAccount, fullState, []), Effect.flip(store.addAccount(passwordAccount, Token.emptyState, []))))
      expect(error._tag).toBe("AccountExists")
      const loaded = yield* withStore(db, key, (store) => store.loadAll)
      expect(Option.isSome(loaded[0]!.state.token)).toBe(true)
    }))

  it.scoped("re-encryption moves every stored secret to the new key; the old key can then go", () =>
    Effect.gen(function*() {
      const db = yield* backend.fresh
      const oldKey = yield* Crypto.generateKey
      const newKey = yield* Crypto.generateKey
      const other = new Account.Account({ ...passwordAccount, id: accountId("other") })
      yield* withStore(db, oldKey, (store) =>
        Effect.zipRight(store.addAccount(passwordAccount, fullState, []), store.addAccount(other, Token.emptyState, [])))
      const result = yield* withKeys(db, [newKey, oldKey], (store) => Effect.all([store.reencrypt, store.keyUsage]))
      expect(result[0].rewritten).toBe(4) // two sources, one token, the key check
      expect([...result[1].keys()]).toEqual([newKey.id])
      const loaded = yield* withStore(db, newKey, (store) => store.loadAll)
      expect(Redacted.value(Option.getOrThrow(loaded.find((a) => a.account.id === "amp-main")!.state.token).token)).toBe(TOKEN)
    }))

  it.scoped("an interrupted re-encryption changes nothing", () =>
    Effect.gen(function*() {
      const db = yield* backend.fresh
      const oldKey = yield* Crypto.generateKey
      const newKey = yield* Crypto.generateKey
      const other = new Account.Account({ ...passwordAccount, id: accountId("zz-other") })
      yield* withStore(db, oldKey, (store) =>
        Effect.zipRight(store.addAccount(passwordAccount, fullState, []), store.addAccount(other, fullState, [])))
      // the last row the rotation reaches is damaged: same key id, garbage after it
      const blob = yield* tokenBlob(db, "zz-other")
      yield* setTokenBlob(db, "zz-other", Buffer.concat([blob.subarray(0, 9), Buffer.alloc(40, 7)]))
      const error = yield* Effect.flip(withKeys(db, [newKey, oldKey], (store) => store.reencrypt))
      expect(error._tag).toBe("DecryptionFailed")
      const usage = yield* withStore(db, oldKey, (store) => store.keyUsage)
      expect(usage.get(newKey.id)).toBeUndefined()
      expect(usage.get(oldKey.id)).toBe(5) // two sources, two tokens, the key check
    }))

  it.scoped("usage of 6,000 accounts and 6,000 audit records are saved in one call (beyond SQLite's parameter limit)", () =>
    Effect.gen(function*() {
      const db = yield* backend.fresh
      const key = yield* Crypto.generateKey
      const n = 6000
      const accounts = Array.from({ length: n }, (_, i) => new Account.Account({ ...passwordAccount, id: accountId(`u-${i}`) }))
      yield* withStore(db, key, (store) =>
        Effect.gen(function*() {
          yield* store.importAccounts(accounts.map((account) => ({ account, state: fullState })))
          const used = accounts.map((account, i) => ({
            id: account.id,
            state: {
              ...fullState,
              lastUsedAt: Option.some(10_000 + i),
              rateLimit: i % 2 === 0 ? Option.none() : Option.some(new Token.RateLimit({ limit: 60, remaining: i % 60, resetAt: 20_000 + i, resource: "core", limited: false }))
            }
          }))
          const events = yield* Effect.forEach(accounts, (account) => Events.make({ type: "acquired", accountId: account.id }))
          yield* store.saveUsage(used, events)
        }))
      const [loaded, audit] = yield* withStore(db, key, (store) => Effect.all([store.loadAll, store.audit({ limit: 10_000 })]))
      const byId = new Map(loaded.map((entry) => [entry.account.id as string, entry.state]))
      expect(byId.size).toBe(n)
      for (let i = 0; i < n; i++) {
        const state = byId.get(`u-${i}`)!
        expect(state.lastUsedAt).toEqual(Option.some(10_000 + i))
        expect(Option.getOrUndefined(state.rateLimit)?.resetAt).toBe(i % 2 === 0 ? undefined : 20_000 + i)
      }
      expect(audit).toHaveLength(n)
    }), { timeout: 120_000 })

  it.scoped("a large write of last uses and audit records lets the event loop turn between its batches", () =>
    Effect.gen(function*() {
      const db = yield* backend.fresh
      const key = yield* Crypto.generateKey
      const accounts = Array.from({ length: 3 }, (_, i) => new Account.Account({ ...passwordAccount, id: accountId(`b-${i}`) }))
      // 25,000 rows of each kind: the accounts beyond the three stored match no row, as removed ones do
      const ids = Array.from({ length: 25_000 }, (_, i) => accountId(`b-${i}`))
      yield* withStore(db, key, (store) =>
        Effect.gen(function*() {
          yield* store.importAccounts(accounts.map((account) => ({ account, state: fullState })))
          const events = yield* Effect.forEach(ids, (id) => Events.make({ type: "acquired", accountId: id }))
          // counts the event loop's turns while the write runs (SQLite's driver is synchronous)
          let turns = 0
          let counting = true
          const tick = () => {
            if (!counting) return
            turns++
            setImmediate(tick)
          }
          setImmediate(tick)
          yield* store.saveUsage([], events, ids.map((id, i) => ({ id, at: 50_000 + i })))
          counting = false
          // three batches of last uses and three of audit records: a turn between each two of a kind
          expect(turns).toBeGreaterThanOrEqual(4)
          const loaded = yield* store.loadAll
          expect(loaded.map((entry) => Option.getOrUndefined(entry.state.lastUsedAt)).sort()).toEqual([50_000, 50_001, 50_002])
          expect(yield* store.audit({ limit: 10_000 })).toHaveLength(10_000)
        }))
    }), { timeout: 120_000 })

  it.scoped("a static source is restored without decrypting it; a source that changes type is stored with its new type", () =>
    Effect.gen(function*() {
      const db = yield* backend.fresh
      const key = yield* Crypto.generateKey
      const staticAccount = new Account.Account({ ...passwordAccount, id: accountId("static-1"), source: new Account.StaticSource() })
      const columns = (id: string) =>
        db.raw(Effect.flatMap(SqlClient.SqlClient, (sql) =>
          sql<{ source_type: string; source_enc: Uint8Array; static_source_enc: Uint8Array | null }>`SELECT source_type,
            source_enc, static_source_enc FROM accounts WHERE account_id = ${id}`)).pipe(Effect.map((rows) => rows[0]!))
      const hasCopy = (row: { source_enc: Uint8Array; static_source_enc: Uint8Array | null }) =>
        row.static_source_enc !== null && Buffer.from(row.static_source_enc).equals(Buffer.from(row.source_enc))
      const sources = withStore(db, key, (store) =>
        Effect.map(store.loadAll, (all) => Object.fromEntries(all.map((entry) => [entry.account.id, entry.account.source]))))
      yield* withStore(db, key, (store) =>
        store.importAccounts([{ account: staticAccount, state: fullState }, { account: passwordAccount, state: fullState }]))
      expect(hasCopy(yield* columns("static-1"))).toBe(true)
      expect((yield* columns("amp-main")).static_source_enc).toBeNull()

      // a change of source type is stored with the type, both ways
      yield* withStore(db, key, (store) => store.saveState(passwordAccount.id, fullState, [], new Account.StaticSource()))
      expect((yield* columns("amp-main")).source_type).toBe("static")
      expect(hasCopy(yield* columns("amp-main"))).toBe(true)
      expect((yield* sources)["amp-main"]?._tag).toBe("static")
      yield* withStore(db, key, (store) => store.saveState(passwordAccount.id, fullState, [], passwordAccount.source))
      expect((yield* columns("amp-main")).source_type).toBe("password")
      expect((yield* columns("amp-main")).static_source_enc).toBeNull()
      expect((yield* sources)["amp-main"]).toEqual(passwordAccount.source)

      // the copy is what spares the decryption: bytes no key opens still restore as static...
      const garbage = new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8])
      yield* db.raw(Effect.flatMap(SqlClient.SqlClient, (sql) =>
        sql`UPDATE accounts SET source_enc = ${garbage}, static_source_enc = ${garbage} WHERE account_id = 'static-1'`))
      expect((yield* sources)["static-1"]?._tag).toBe("static")
      // ...and a writer that knows nothing of it (an older version) changing the source is heard
      const passwordBlob = yield* Effect.flatMap(Crypto.Keyring, (keyring) =>
        keyring.encrypt(
          Redacted.make(Schema.encodeSync(Schema.parseJson(Account.SourceConfig))(passwordAccount.source)),
          Crypto.associatedData("accounts", "static-1", "source")
        )).pipe(Effect.provide(Crypto.layerKeys([key])))
      yield* db.raw(Effect.flatMap(SqlClient.SqlClient, (sql) =>
        sql`UPDATE accounts SET source_enc = ${passwordBlob} WHERE account_id = 'static-1'`))
      expect((yield* sources)["static-1"]).toEqual(passwordAccount.source)

      // re-encryption under a new key keeps the copy of a static source in step
      yield* withStore(db, key, (store) => store.saveState(staticAccount.id, fullState, [], new Account.StaticSource()))
      const newKey = yield* Crypto.generateKey
      yield* withKeys(db, [newKey, key], (store) => store.reencrypt)
      expect(hasCopy(yield* columns("static-1"))).toBe(true)
      expect((yield* columns("amp-main")).static_source_enc).toBeNull()
      expect(yield* withKeys(db, [newKey], (store) => Effect.map(store.loadAll, (all) => all.map((entry) => entry.account.source._tag).sort())))
        .toEqual(["password", "static"])
    }))

  it.scoped("a stored last use never goes back, whichever write comes late; audit records keep their order", () =>
    Effect.gen(function*() {
      const db = yield* backend.fresh
      const key = yield* Crypto.generateKey
      const id = passwordAccount.id
      yield* withStore(db, key, (store) =>
        Effect.gen(function*() {
          yield* store.importAccounts([{ account: passwordAccount, state: fullState }])
          const lastUsed = Effect.map(store.load(id), (stored) => Option.getOrThrow(stored).state.lastUsedAt)
          const events = yield* Effect.forEach(["first", "second", "third"], (detail) =>
            Events.make({ type: "acquired", accountId: id, detail }))
          yield* store.saveUsage([], events, [{ id, at: 50_000 }])
          expect(yield* lastUsed).toEqual(Option.some(50_000))
          // a flush of older uses (another instance's, say), a usage row, commits of states read before
          yield* store.saveUsage([], [], [{ id, at: 40_000 }])
          yield* store.saveUsage([{ id, state: { ...fullState, lastUsedAt: Option.some(45_000) } }], [])
          yield* store.saveState(id, { ...fullState, lastUsedAt: Option.some(30_000) }, [])
          yield* store.saveState(id, { ...fullState, lastUsedAt: Option.none() }, [])
          expect(yield* lastUsed).toEqual(Option.some(50_000))
          // later ones land, through each path
          yield* store.saveState(id, { ...fullState, lastUsedAt: Option.some(60_000) }, [])
          expect(yield* lastUsed).toEqual(Option.some(60_000))
          yield* store.saveUsage([{ id, state: { ...fullState, lastUsedAt: Option.some(65_000) } }], [])
          expect(yield* lastUsed).toEqual(Option.some(65_000))
          yield* store.saveUsage([], [], [{ id, at: 70_000 }])
          expect(yield* lastUsed).toEqual(Option.some(70_000))
          // the other columns of a commit are written as given
          const stored = Option.getOrThrow(yield* store.load(id)).state
          expect(stored.rateLimit).toEqual(fullState.rateLimit)
          const audited = yield* store.audit({ accountId: id })
          expect(audited.map((entry) => entry.detail)).toEqual(["third", "second", "first"])
        }))
    }))

  it.scoped("a refresh lease has one holder at a time: 50 concurrent takers, one wins; it passes on when it expires or is released", () =>
    Effect.gen(function*() {
      const db = yield* backend.fresh
      const key = yield* Crypto.generateKey
      yield* withStore(db, key, (store) =>
        Effect.gen(function*() {
          yield* store.addAccount(passwordAccount, fullState, [])
          const id = passwordAccount.id
          const taken = yield* Effect.forEach(
            Array.from({ length: 50 }, (_, i) => `owner-${i}`),
            (owner) => Effect.map(store.takeLease(id, { owner, now: 1000, expiresAt: 61_000 }), (won) => won ? owner : null),
            { concurrency: "unbounded" }
          )
          const winners = taken.filter((owner) => owner !== null)
          console.log(`refresh lease on ${backend.title}: 50 concurrent takers, ${winners.length} holder(s)`)
          expect(winners).toHaveLength(1)
          const holder = winners[0]!
          const other = holder === "owner-0" ? "owner-1" : "owner-0"
          // the holder extends it; nobody else gets it before it expires
          expect(yield* store.takeLease(id, { owner: holder, now: 30_000, expiresAt: 90_000 })).toBe(true)
          expect(yield* store.takeLease(id, { owner: other, now: 89_999, expiresAt: 150_000 })).toBe(false)
          // someone else's release does nothing; an expired lease goes to the next taker
          yield* store.releaseLease(id, other)
          expect(yield* store.takeLease(id, { owner: other, now: 60_000, expiresAt: 120_000 })).toBe(false)
          expect(yield* store.takeLease(id, { owner: other, now: 90_000, expiresAt: 150_000 })).toBe(true)
          // released by its holder, it is free at once
          yield* store.releaseLease(id, other)
          expect(yield* store.takeLease(id, { owner: holder, now: 90_001, expiresAt: 150_000 })).toBe(true)
          // and it goes with its account
          yield* store.removeAccount(id, [])
          yield* store.addAccount(passwordAccount, fullState, [])
          expect(yield* store.takeLease(id, { owner: other, now: 90_002, expiresAt: 150_000 })).toBe(true)
        }))
    }))

  it.scopedLive("the client the store runs on is in its layer: PostgreSQL's carries LISTEN/NOTIFY, SQLite has none", () =>
    Effect.gen(function*() {
      const db = yield* backend.fresh
      const key = yield* Crypto.generateKey
      const client = yield* TokenStore.postgresClient.pipe(Effect.provide(storeLayer(db.database, [key])))
      expect(Option.isSome(client)).toBe(backend.kind === "postgres")
      if (Option.isNone(client)) return
      // the same pool the store writes through: it sees the store's rows and delivers notifications
      yield* Effect.scoped(Effect.gen(function*() {
        const context = yield* Layer.build(storeLayer(db.database, [key]))
        const store = Context.get(context, TokenStore.TokenStore)
        const pg = Option.getOrThrow(yield* TokenStore.postgresClient.pipe(Effect.provide(context)))
        yield* store.addAccount(passwordAccount, fullState, [])
        expect(yield* pg`SELECT account_id FROM accounts`).toEqual([{ account_id: "amp-main" }])
        const received = yield* Deferred.make<string>()
        yield* pg.listen("tessera_test").pipe(
          Stream.runForEach((payload) => Deferred.succeed(received, payload)),
          Effect.forkScoped
        )
        // LISTEN is set up asynchronously: notify until it arrives. (`pg.notify` of @effect/sql-pg
        // 0.53 sends `NOTIFY channel, $1`, which PostgreSQL refuses: pg_notify takes parameters.)
        yield* pg`SELECT pg_notify(${"tessera_test"}, ${"hello"})`.pipe(
          Effect.zipRight(Effect.sleep("50 millis")),
          Effect.zipRight(Deferred.isDone(received)),
          Effect.repeat({ until: (done) => done, times: 200 })
        )
        expect(yield* Deferred.await(received)).toBe("hello")
      }))
    }))

  it.scoped("the integrity check finds a sound database sound", () =>
    Effect.gen(function*() {
      const db = yield* backend.fresh
      const key = yield* Crypto.generateKey
      expect(yield* withStore(db, key, (store) => store.integrityCheck)).toEqual(["ok"])
      if (backend.kind === "postgres") {
        // and says what is wrong when the audit log lost its protection
        yield* db.raw(Effect.flatMap(SqlClient.SqlClient, (sql) => sql`DROP TRIGGER audit_log_no_delete ON audit_log`))
        const problems = yield* withStore(db, key, (store) => store.integrityCheck)
        expect(problems).toEqual(["trigger audit_log_no_delete is missing: the audit log is not protected against changes"])
      }
    }))

  it.scoped("two processes writing one database concurrently lose nothing and never fail on a busy database", () =>
    Effect.gen(function*() {
      const db = yield* backend.fresh
      const key = yield* Crypto.generateKey
      const keyText = Redacted.value(Crypto.toBase64(key))
      const writer = fileURLToPath(new URL("./fixtures/writer.mjs", import.meta.url))
      const target = db.database._tag === "sqlite" ? db.database.filename : Redacted.value(db.database.url)
      const perProcess = 300
      const run = (name: string) =>
        Effect.async<{ code: number | null; stderr: string }>((resume) => {
          execFile(process.execPath, [writer, target, keyText, name, String(perProcess)], (error, _stdout, stderr) =>
            resume(Effect.succeed({ code: error ? (typeof error.code === "number" ? error.code : 1) : 0, stderr })))
        })
      const results = yield* Effect.all([run("alpha"), run("beta")], { concurrency: 2 })
      for (const result of results) {
        expect(result.stderr).not.toContain("SQLITE_BUSY")
        expect(result.stderr).toBe("")
        expect(result.code).toBe(0)
      }
      const [accounts, audit] = yield* withStore(db, key, (store) => Effect.all([store.loadAll, store.audit({ limit: 10_000 })]))
      expect(accounts).toHaveLength(2 * perProcess)
      expect(accounts.every((a) => Option.isSome(a.state.token))).toBe(true)
      expect(audit).toHaveLength(4 * perProcess)
    }), { timeout: 120_000 })
})

it.scopedLive("on SQLite, opening waits for another process that holds the database, past better-sqlite3's 5-second default", () =>
  Effect.gen(function*() {
    const filename = path.join(yield* tempDir, "tessera.db")
    const holder = fileURLToPath(new URL("./fixtures/holder.mjs", import.meta.url))
    const HOLD_MS = 6_500
    // a reader in the old journal mode keeps its shared lock: turning the file to WAL must wait
    const child = spawn(process.execPath, [holder, filename, String(HOLD_MS)], { stdio: ["ignore", "pipe", "pipe"] })
    let output = ""
    child.stdout.on("data", (chunk) => (output += chunk))
    child.stderr.on("data", (chunk) => (output += chunk))
    const exited = Effect.async<number | null>((resume) => {
      if (child.exitCode !== null) return resume(Effect.succeed(child.exitCode))
      child.once("exit", (code) => resume(Effect.succeed(code)))
    })
    yield* Effect.addFinalizer(() => Effect.sync(() => child.kill("SIGKILL")))
    yield* Scripted.waitUntil(() => output.includes("held") || child.exitCode !== null)
    expect(output).toBe("held\n")
    const started = Date.now()
    const key = yield* Crypto.generateKey
    const accounts = yield* Effect.scoped(Effect.flatMap(TokenStore.TokenStore, (store) => store.loadAll).pipe(
      Effect.provide(TokenStore.layerSqlite(filename).pipe(Layer.provide(Crypto.layerKeys([key]))))
    ))
    expect(accounts).toEqual([])
    expect(Date.now() - started).toBeGreaterThan(5_000)
    expect(yield* exited).toBe(0)
  }), 30_000)
