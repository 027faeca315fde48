/**
 * Encryption at rest under attack (issue 6, part 4): what someone with write access to the
 * database file can and cannot do. Every stored ciphertext is authenticated (a flipped byte
 * anywhere is a typed error, never garbage), bound to its row and field (a blob copied to
 * another account or column does not decrypt), sealed with a fresh nonce each time, and
 * `keys rotate` leaves nothing under the retired key and nothing unreadable, secrets in
 * account sources (passwords, client secrets, refresh tokens) included. The blob format
 * parsed here is Crypto.ts's: `0x01 | key id (8) | nonce (12) | ciphertext | tag (16)`.
 */
import { describe, expect, it } from "@effect/vitest"
import { Account, Crypto, Token, TokenStore } from "@tessera/core"
import Database from "better-sqlite3"
import { Context, Effect, Either, Layer, Option, Redacted, Schema } from "effect"
import * as crypto from "node:crypto"
import * as fs from "node:fs"
import * as path from "node:path"
import { makeCli } from "../cli/harness.js"
import { tempDir } from "../lifecycle/harness.js"

const accountId = Schema.decodeSync(Account.AccountId)

/** 10000 as "10,000", for the figures the tests print. */
const n = (value: number) => value.toLocaleString("en-US")

// --- the blob format (Crypto.ts) -------------------------------------------------------------

const VERSION = 0x01
const KEY_ID_BYTES = 8
const NONCE_BYTES = 12
const TAG_BYTES = 16
const HEADER_BYTES = 1 + KEY_ID_BYTES + NONCE_BYTES

interface Blob {
  readonly version: number
  readonly keyId: string
  readonly nonce: string
  readonly ciphertext: Buffer
  readonly tag: Buffer
}

/** Splits a stored value into its parts; throws on anything that is not of the format. */
const parseBlob = (bytes: Uint8Array): Blob => {
  const blob = Buffer.from(bytes)
  if (blob.length < HEADER_BYTES + TAG_BYTES) throw new Error(`a ${blob.length}-byte value is not an encrypted blob`)
  return {
    version: blob[0]!,
    keyId: blob.subarray(1, 1 + KEY_ID_BYTES).toString("hex"),
    nonce: blob.subarray(1 + KEY_ID_BYTES, HEADER_BYTES).toString("hex"),
    ciphertext: blob.subarray(HEADER_BYTES, blob.length - TAG_BYTES),
    tag: blob.subarray(blob.length - TAG_BYTES)
  }
}

// The store's associated data (TokenStore.ts): row and field, never a secret.
const tokenAad = (id: string) => Crypto.associatedData("token_state", id, "token")
const sourceAad = (id: string) => Crypto.associatedData("accounts", id, "source")
const KEY_CHECK_AAD = Crypto.associatedData("meta", "key_check", "value")

// --- canaries and accounts ---------------------------------------------------------------------

/** A distinctive random secret: found in a file or a message, it can only have come from here. */
const canary = (label: string) => `cnry-${label}-${crypto.randomBytes(12).toString("hex")}`

const secrets = {
  password: canary("password"),
  clientSecret: canary("client-secret"),
  refreshToken: canary("refresh-token"),
  customSecret: canary("custom-secret"),
  ampToken: canary("amp-token"),
  oauthToken: canary("oauth-token"),
  upstoxToken: canary("upstox-token"),
  staticToken: canary("static-token")
}

const withToken = (token: string, at: number): Token.TokenState => ({
  ...Token.emptyState,
  token: Option.some({ token: Redacted.make(token), expiresAt: Option.some(at + 3_600_000), issuedAt: at, origin: "obtain" })
})

/** One account of every source kind that holds a secret, each with a token. */
const everyKind = (at: number): ReadonlyArray<TokenStore.StoredAccount> => [
  {
    account: new Account.Account({
      id: accountId("amp"),
      provider: "amp",
      pool: "amp",
      source: new Account.PasswordSource({ baseUrl: "http://127.0.0.1:9", username: "trader", password: Redacted.make(secrets.password) }),
      createdAt: at
    }),
    state: withToken(secrets.ampToken, at)
  },
  {
    account: new Account.Account({
      id: accountId("oauth"),
      provider: "oauth2",
      pool: "oauth2",
      source: new Account.OAuth2Source({
        tokenUrl: "http://127.0.0.1:9/oauth/token",
        clientId: "tessera-client",
        clientSecret: Redacted.make(secrets.clientSecret),
        grant: "refresh_token",
        refreshToken: Redacted.make(secrets.refreshToken)
      }),
      createdAt: at
    }),
    state: withToken(secrets.oauthToken, at)
  },
  {
    account: new Account.Account({
      id: accountId("custom"),
      provider: "acme",
      pool: "acme",
      source: new Account.CustomSource({ kind: "acme-sso", options: { realm: "prod" }, secrets: { api_secret: Redacted.make(secrets.customSecret) } }),
      createdAt: at
    }),
    state: Token.emptyState
  },
  {
    account: new Account.Account({ id: accountId("acc-1"), provider: "upstox", pool: "upstox", source: new Account.RemoteSource({}), createdAt: at }),
    state: withToken(secrets.upstoxToken, at)
  },
  {
    account: new Account.Account({ id: accountId("gh-1"), provider: "github", pool: "github", source: new Account.StaticSource(), createdAt: at }),
    state: withToken(secrets.staticToken, at)
  }
]

/** `count` more static accounts with random tokens: volume for the rotation and the nonces. */
const manyStatic = (count: number, at: number, prefix = "bulk"): Array<TokenStore.StoredAccount> =>
  Array.from({ length: count }, (_, i) => ({
    account: new Account.Account({
      id: accountId(`${prefix}-${i}`),
      provider: "github",
      pool: "bulk",
      source: new Account.StaticSource(),
      createdAt: at
    }),
    state: withToken(`ghp_${crypto.randomBytes(15).toString("hex")}`, at)
  }))

// --- the store on a file ------------------------------------------------------------------------

const storeOn = (file: string, keys: readonly [Crypto.EncryptionKey, ...Array<Crypto.EncryptionKey>]) =>
  TokenStore.layerSqlite(file).pipe(Layer.provide(Crypto.layerKeys(keys)))

/** Runs `body` with the store opened on `file` under `keys`, then closes it. */
const withStore = <A, E>(
  file: string,
  keys: readonly [Crypto.EncryptionKey, ...Array<Crypto.EncryptionKey>],
  body: (store: TokenStore.TokenStoreService) => Effect.Effect<A, E>
) => Effect.scoped(Effect.flatMap(Layer.build(storeOn(file, keys)), (context) => body(Context.get(context, TokenStore.TokenStore))))

/** Every encrypted value in the file with the associated data the store reads it with. */
const storedValues = (file: string) => {
  const db = new Database(file, { readonly: true })
  try {
    const values: Array<{ readonly where: string; readonly aad: string; readonly blob: Buffer }> = []
    for (const row of db.prepare("SELECT account_id, source_enc FROM accounts").all() as Array<{ account_id: string; source_enc: Buffer }>) {
      values.push({ where: `accounts/${row.account_id}/source`, aad: sourceAad(row.account_id), blob: row.source_enc })
    }
    for (
      const row of db.prepare("SELECT account_id, token_enc FROM token_state WHERE token_enc IS NOT NULL").all() as Array<
        { account_id: string; token_enc: Buffer }
      >
    ) {
      values.push({ where: `token_state/${row.account_id}/token`, aad: tokenAad(row.account_id), blob: row.token_enc })
    }
    for (const row of db.prepare("SELECT value FROM meta WHERE key = 'key_check'").all() as Array<{ value: Buffer }>) {
      values.push({ where: "meta/key_check", aad: KEY_CHECK_AAD, blob: row.value })
    }
    return values
  } finally {
    db.close()
  }
}

/** The secrets of a source configuration, as plain strings. */
const sourceSecrets = (source: Account.SourceConfig): Array<string> => {
  switch (source._tag) {
    case "password":
      return [Redacted.value(source.password)]
    case "oauth2":
      return [Redacted.value(source.clientSecret), ...(source.refreshToken === undefined ? [] : [Redacted.value(source.refreshToken)])]
    case "custom":
      return Object.values(source.secrets).map(Redacted.value)
    default:
      return []
  }
}

/** What each account holds, secrets in clear: to compare before and after a rotation. */
const contents = (loaded: ReadonlyArray<TokenStore.StoredAccount>) =>
  new Map(loaded.map(({ account, state }) => [
    account.id as string,
    {
      source: sourceSecrets(account.source),
      token: Option.getOrNull(Option.map(state.token, (record) => Redacted.value(record.token)))
    }
  ]))

/**
 * Re-reads every stored value with `keyring`: how many are under each key id, and how many
 * cannot be read (wrong key, tampered, or not a blob at all).
 */
const audit = (file: string, keyring: Crypto.KeyringService) => {
  const byKey = new Map<string, number>()
  const unreadable: Array<string> = []
  for (const { aad, blob, where } of storedValues(file)) {
    const id = keyring.keyIdOf(blob) ?? "not-a-blob"
    byKey.set(id, (byKey.get(id) ?? 0) + 1)
    if (Either.isLeft(keyring.open(blob, aad))) unreadable.push(where)
  }
  return { byKey, unreadable, total: [...byKey.values()].reduce((a, b) => a + b, 0) }
}

// --- tests --------------------------------------------------------------------------------------

describe("encryption at rest", () => {
  it.scoped("1,000 single-byte flips of real stored ciphertexts: 1,000 rejected with a typed error, never garbage", () =>
    Effect.gen(function*() {
      const file = path.join(yield* tempDir, "flips.db")
      const key = yield* Crypto.generateKey
      const at = Date.now()
      const [amp] = everyKind(at)
      yield* withStore(file, [key], (store) => store.addAccount(amp!.account, amp!.state, []))

      const db = new Database(file)
      yield* Effect.addFinalizer(() => Effect.sync(() => db.close()))
      const read = (column: "source_enc" | "token_enc") => {
        const table = column === "source_enc" ? "accounts" : "token_state"
        return Buffer.from((db.prepare(`SELECT ${column} AS blob FROM ${table} WHERE account_id = 'amp'`).get() as { blob: Buffer }).blob)
      }
      const write = (column: "source_enc" | "token_enc", blob: Buffer) => {
        const table = column === "source_enc" ? "accounts" : "token_state"
        db.prepare(`UPDATE ${table} SET ${column} = ? WHERE account_id = 'amp'`).run(blob)
      }
      const originals = { source_enc: read("source_enc"), token_enc: read("token_enc") }
      for (const blob of Object.values(originals)) {
        const parsed = parseBlob(blob)
        expect(parsed.version).toBe(VERSION)
        expect(parsed.keyId).toBe(key.id)
      }

      // Every byte position of both blobs (version, key id, nonce, ciphertext, tag) with one
      // pattern, then again with the next, until there are 1,000 flips.
      const patterns = [0x01, 0x80, 0xff, 0x5a, 0x02, 0x40, 0x10, 0xa5]
      const flips: Array<{ readonly column: "source_enc" | "token_enc"; readonly position: number; readonly pattern: number }> = []
      for (const pattern of patterns) {
        for (const column of ["token_enc", "source_enc"] as const) {
          for (let position = 0; position < originals[column].length; position++) flips.push({ column, position, pattern })
        }
      }
      expect(flips.length).toBeGreaterThanOrEqual(1000)
      flips.length = 1000
      const covered = new Set(flips.filter((flip) => flip.pattern === patterns[0]).map((flip) => `${flip.column}:${flip.position}`))
      expect(covered.size).toBe(originals.token_enc.length + originals.source_enc.length)

      const outcomes = new Map<string, number>()
      let leaked = 0
      yield* withStore(file, [key], (store) =>
        Effect.gen(function*() {
          const control = yield* store.load(accountId("amp"))
          expect(Option.isSome(control)).toBe(true)
          for (const { column, pattern, position } of flips) {
            const tampered = Buffer.from(originals[column])
            tampered[position] = tampered[position]! ^ pattern
            write(column, tampered)
            const result = yield* Effect.either(store.load(accountId("amp")))
            write(column, originals[column])
            const outcome = Either.match(result, { onLeft: (error) => error._tag, onRight: () => "ACCEPTED" })
            outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1)
            if (Either.isLeft(result)) {
              const shown = `${result.left.message} ${JSON.stringify(result.left)}`
              if (shown.includes(secrets.password) || shown.includes(secrets.ampToken)) leaked++
            }
          }
          // the untouched row still loads, with its secrets: the rejections were the flips' doing
          const restored = Option.getOrThrow(yield* store.load(accountId("amp")))
          expect(contents([restored]).get("amp")).toEqual({ source: [secrets.password], token: secrets.ampToken })
        }))
      const rejected = (outcomes.get("DecryptionFailed") ?? 0) + (outcomes.get("UnknownEncryptionKey") ?? 0)
      console.log(
        `encryption: ${n(flips.length)} single-byte flips over every byte of a ${originals.token_enc.length}-byte token blob and a ` +
          `${originals.source_enc.length}-byte source blob, ${patterns.length} bit patterns: ${n(rejected)} rejected ` +
          `(${[...outcomes].map(([tag, n]) => `${tag} ${n}`).join(", ")}), ${leaked} error messages quoting a secret`
      )
      expect(outcomes.get("ACCEPTED") ?? 0).toBe(0)
      expect(rejected).toBe(1000)
      expect(leaked).toBe(0)
    }), { timeout: 120_000 })

  it.scoped("a ciphertext copied to another account's row, or to another field, is rejected on load", () =>
    Effect.gen(function*() {
      const file = path.join(yield* tempDir, "copies.db")
      const key = yield* Crypto.generateKey
      const at = Date.now()
      const all = everyKind(at)
      yield* withStore(file, [key], (store) => store.importAccounts(all))

      const copies = [
        { what: "amp's token into acc-1's token", sql: "UPDATE token_state SET token_enc = (SELECT token_enc FROM token_state WHERE account_id = 'amp') WHERE account_id = 'acc-1'", victim: "acc-1" },
        { what: "oauth's source into amp's source", sql: "UPDATE accounts SET source_enc = (SELECT source_enc FROM accounts WHERE account_id = 'oauth') WHERE account_id = 'amp'", victim: "amp" },
        { what: "gh-1's token into oauth's source", sql: "UPDATE accounts SET source_enc = (SELECT token_enc FROM token_state WHERE account_id = 'gh-1') WHERE account_id = 'oauth'", victim: "oauth" },
        { what: "the key check into gh-1's token", sql: "UPDATE token_state SET token_enc = (SELECT value FROM meta WHERE key = 'key_check') WHERE account_id = 'gh-1'", victim: "gh-1" },
        { what: "oauth's token into custom's empty token", sql: "UPDATE token_state SET token_enc = (SELECT token_enc FROM token_state WHERE account_id = 'oauth') WHERE account_id = 'custom'", victim: "custom" }
      ] as const
      const results: Array<string> = []
      for (const copy of copies) {
        // each copy on a fresh copy of the database, so one tampering does not hide another
        const tampered = path.join(path.dirname(file), `copy-${results.length}.db`)
        const source = new Database(file)
        yield* Effect.promise(() => source.backup(tampered))
        source.close()
        const db = new Database(tampered)
        expect(db.prepare(copy.sql).run().changes).toBe(1)
        db.close()
        const [victim, others] = yield* withStore(tampered, [key], (store) =>
          Effect.all([
            Effect.either(store.load(accountId(copy.victim))),
            Effect.forEach(all.filter((entry) => entry.account.id !== copy.victim), (entry) => store.load(entry.account.id))
          ]))
        results.push(Either.match(victim, { onLeft: (error) => error._tag, onRight: () => "ACCEPTED" }))
        // the rows left alone still load
        expect(others.every(Option.isSome)).toBe(true)
        if (Either.isLeft(victim)) expect(victim.left.message).toContain(copy.victim)
      }
      console.log(
        `encryption: ${results.filter((r) => r === "DecryptionFailed").length} of ${copies.length} ciphertexts copied to another ` +
          `account or field rejected on load (${copies.map((copy, i) => `${copy.what}: ${results[i]}`).join("; ")})`
      )
      expect(results).toEqual(copies.map(() => "DecryptionFailed"))
    }), { timeout: 60_000 })

  it.scoped("10,000 encryptions carry 10,000 distinct nonces (keyring, and 10,000 values stored by the store)", () =>
    Effect.gen(function*() {
      const key = yield* Crypto.generateKey
      const keyring = Crypto.make([key])
      const plaintext = Redacted.make(secrets.staticToken)
      const aad = tokenAad("same-row")
      const nonces = new Set<string>()
      const ciphertexts = new Set<string>()
      let wellFormed = 0
      let readable = 0
      for (let i = 0; i < 10_000; i++) {
        // the worst case for a nonce scheme: the same key, plaintext and associated data every time
        const blob = yield* keyring.encrypt(plaintext, aad)
        const parsed = parseBlob(blob)
        if (
          parsed.version === VERSION && parsed.keyId === key.id && parsed.tag.length === TAG_BYTES &&
          parsed.ciphertext.length === Buffer.byteLength(secrets.staticToken)
        ) wellFormed++
        nonces.add(parsed.nonce)
        ciphertexts.add(parsed.ciphertext.toString("hex"))
        if (Either.isRight(keyring.open(blob, aad))) readable++
      }
      console.log(
        `encryption: 10,000 encryptions of one plaintext under one key and row: ${n(nonces.size)} distinct nonces, ` +
          `${n(ciphertexts.size)} distinct ciphertexts, ${n(wellFormed)} well-formed blobs, ${n(readable)} decrypt`
      )
      expect(wellFormed).toBe(10_000)
      expect(readable).toBe(10_000)
      expect(nonces.size).toBe(10_000)
      expect(ciphertexts.size).toBe(10_000)

      // the same through the store: 5,000 accounts, each with an encrypted source and token
      const file = path.join(yield* tempDir, "nonces.db")
      yield* withStore(file, [key], (store) => store.importAccounts(manyStatic(5_000, Date.now())))
      const stored = storedValues(file).filter((value) => value.where !== "meta/key_check")
      const storedNonces = new Set(stored.map((value) => parseBlob(value.blob).nonce))
      console.log(`encryption: ${n(stored.length)} values stored for 5,000 accounts: ${n(storedNonces.size)} distinct nonces`)
      expect(stored.length).toBe(10_000)
      expect(storedNonces.size).toBe(10_000)
    }), { timeout: 120_000 })

  it.scoped("TokenStore.reencrypt: 0 values left under the retired key, 0 unreadable, every secret intact", () =>
    Effect.gen(function*() {
      const file = path.join(yield* tempDir, "rotate.db")
      const retired = yield* Crypto.generateKey
      const primary = yield* Crypto.generateKey
      const at = Date.now()
      yield* withStore(file, [retired], (store) => store.importAccounts([...everyKind(at), ...manyStatic(1_000, at)]))
      const before = yield* withStore(file, [retired], (store) => Effect.map(store.loadAll, contents))
      const beforeAudit = audit(file, Crypto.make([primary, retired]))
      expect(beforeAudit.byKey.get(retired.id)).toBe(beforeAudit.total)

      const { rewritten } = yield* withStore(file, [primary, retired], (store) => store.reencrypt)
      const usage = yield* withStore(file, [primary], (store) => store.keyUsage)
      const after = audit(file, Crypto.make([primary]))
      const loaded = yield* withStore(file, [primary], (store) => Effect.map(store.loadAll, contents))
      // the retired key alone no longer opens the database: a clear, typed startup error
      const stale = yield* Effect.flip(withStore(file, [retired], (store) => store.loadAll))
      console.log(
        `encryption: TokenStore.reencrypt rewrote ${n(rewritten)} of ${n(beforeAudit.total)} values (sources with passwords, client ` +
          `secrets, refresh tokens and custom secrets, tokens, key check): ${after.byKey.get(retired.id) ?? 0} under the retired ` +
          `key (keyUsage: ${usage.get(retired.id) ?? 0}), ${after.unreadable.length} unreadable, ` +
          `${[...before].filter(([id, value]) => JSON.stringify(loaded.get(id)) !== JSON.stringify(value)).length} secrets changed`
      )
      expect(rewritten).toBe(beforeAudit.total)
      expect(usage.get(retired.id) ?? 0).toBe(0)
      expect(usage.get(primary.id)).toBe(beforeAudit.total)
      expect(after.byKey.get(retired.id) ?? 0).toBe(0)
      expect(after.unreadable).toEqual([])
      expect(loaded).toEqual(before)
      expect(loaded.get("oauth")).toEqual({ source: [secrets.clientSecret, secrets.refreshToken], token: secrets.oauthToken })
      expect(loaded.get("custom")).toEqual({ source: [secrets.customSecret], token: null })
      expect(stale._tag).toBe("UnknownEncryptionKey")

      // a second rotation with nothing left to do rewrites nothing
      const again = yield* withStore(file, [primary, retired], (store) => store.reencrypt)
      expect(again.rewritten).toBe(0)
    }), { timeout: 120_000 })

  it.scoped("`tessera keys rotate` on a key-file database: 0 values under the retired key, 0 unreadable, secrets intact", () =>
    Effect.gen(function*() {
      const cli = yield* makeCli()
      const retired = yield* Crypto.generateKey
      fs.mkdirSync(path.dirname(cli.keyFile), { recursive: true })
      const keyText = Redacted.value(Crypto.toBase64(retired))
      fs.writeFileSync(cli.keyFile, `${keyText}\n`, { mode: 0o600 })
      const at = Date.now()
      yield* withStore(cli.db, [retired], (store) => store.importAccounts([...everyKind(at), ...manyStatic(200, at)]))
      const before = yield* withStore(cli.db, [retired], (store) => Effect.map(store.loadAll, contents))
      const total = audit(cli.db, Crypto.make([retired])).total

      const result = yield* cli.run("keys", "rotate", "--json")
      expect(result.code, result.stderr).toBe(0)
      const rotation = JSON.parse(result.stdout) as { key_id: string; retired_key_ids: Array<string>; rewritten: number }
      const fileKeys = fs.readFileSync(cli.keyFile, "utf8").split("\n").filter((line) => line.trim() !== "" && !line.startsWith("#"))
      expect(fileKeys.length).toBe(1)
      const primary = Either.getOrThrow(Crypto.EncryptionKey.fromBase64(fileKeys[0]!))
      expect(primary.id).toBe(rotation.key_id)
      expect(rotation.retired_key_ids).toEqual([retired.id])

      const after = audit(cli.db, Crypto.make([primary]))
      const loaded = yield* withStore(cli.db, [primary], (store) => Effect.map(store.loadAll, contents))
      const auditRows = new Database(cli.db, { readonly: true })
      const rotations = auditRows.prepare("SELECT actor, outcome, detail FROM audit_log WHERE type = 'key_rotated'").all() as Array<
        { actor: string; outcome: string; detail: string }
      >
      auditRows.close()
      const outputs = [result.stdout, result.stderr, JSON.stringify(rotations)].join("\n")
      const quoted = [keyText, Redacted.value(Crypto.toBase64(primary)), ...Object.values(secrets)].filter((s) => outputs.includes(s))
      console.log(
        `encryption: tessera keys rotate rewrote ${rotation.rewritten} of ${total} values: ${after.byKey.get(retired.id) ?? 0} under ` +
          `the retired key, ${after.unreadable.length} unreadable, ` +
          `${[...before].filter(([id, value]) => JSON.stringify(loaded.get(id)) !== JSON.stringify(value)).length} secrets changed, ` +
          `${rotations.length} key_rotated audit record(s), ${quoted.length} keys or secrets in its output`
      )
      expect(rotation.rewritten).toBe(total)
      expect(after.byKey.get(retired.id) ?? 0).toBe(0)
      expect(after.byKey.get(primary.id)).toBe(total)
      expect(after.unreadable).toEqual([])
      expect(loaded).toEqual(before)
      expect(rotations).toMatchObject([{ actor: "cli", outcome: "success" }])
      expect(quoted).toEqual([])
    }), { timeout: 120_000 })
})
