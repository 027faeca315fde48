import { NodeContext } from "@effect/platform-node"
import { describe, expect, it, layer } from "@effect/vitest"
import { Crypto } from "@tessera/core"
import { Array as Arr, ConfigProvider, Effect, Either, FastCheck, Logger, Redacted } from "effect"
import * as NodeCrypto from "node:crypto"
import * as fs from "node:fs"
import * as path from "node:path"
import { inspect } from "node:util"
import { tempDir } from "./utils/tempDir.js"

const TOKEN_AAD = Crypto.associatedData("accounts", "acme", "token")
const SECRET = "ghp_SuperSecretTokenValue_0123456789"

const bytesOf = (text: string) => Buffer.from(text, "utf8")
const nonceOf = (blob: Uint8Array) => Buffer.from(blob.subarray(9, 21)).toString("hex")

const keyring = (...keys: Arr.NonEmptyReadonlyArray<Crypto.EncryptionKey>) => Crypto.make(keys)

/** Runs `effect` and returns what it logged at warning level. */
const warningsOf = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.gen(function*() {
    const warnings: Array<string> = []
    const capture = Logger.make(({ logLevel, message }) => {
      if (logLevel._tag === "Warning") warnings.push(Arr.ensure(message).map(String).join(" "))
    })
    const result = yield* Effect.provide(effect, Logger.add(capture))
    return [result, warnings] as const
  })

/** The keyring `layerConfig` builds from `env`. */
const loadKeyring = (env: Record<string, string>) =>
  Crypto.Keyring.pipe(
    Effect.provide(Crypto.layerConfig),
    Effect.provide(NodeContext.layer),
    Effect.withConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(env))))
  )

const base64Of = (key: Crypto.EncryptionKey) => Redacted.value(Crypto.toBase64(key))

describe("EncryptionKey", () => {
  it.effect("has as id the first 8 bytes of the key's SHA-256, in hex", () =>
    Effect.gen(function*() {
      const key = yield* Crypto.generateKey
      const digest = NodeCrypto.createHash("sha256").update(Redacted.value(key.material)).digest()
      expect(key.id).toBe(digest.subarray(0, 8).toString("hex"))
      expect(key.id).toMatch(/^[0-9a-f]{16}$/)
    }))

  it.effect("round-trips through toBase64 and fromBase64", () =>
    Effect.gen(function*() {
      const key = yield* Crypto.generateKey
      const again = yield* Crypto.EncryptionKey.fromBase64(Crypto.toBase64(key))
      expect(again.id).toBe(key.id)
      expect(Redacted.value(again.material)).toEqual(Redacted.value(key.material))
    }))

  it.effect("rejects text that is not base64 of exactly 32 bytes without quoting it", () =>
    Effect.gen(function*() {
      const texts = [
        "not base64 at all!!",
        Buffer.alloc(16, 7).toString("base64"),
        Buffer.alloc(33, 7).toString("base64"),
        "   "
      ]
      for (const text of texts) {
        const error = yield* Effect.flip(Crypto.EncryptionKey.fromBase64(text))
        expect(error._tag).toBe("InvalidEncryptionKey")
        if (text.trim() !== "") expect(error.message).not.toContain(text)
      }
      const short = yield* Effect.flip(Crypto.EncryptionKey.fromBase64(Buffer.alloc(16).toString("base64")))
      expect(short.message).toContain("exactly 32 bytes")
    }))

  it.effect("never shows its material when printed, inspected or serialized", () =>
    Effect.gen(function*() {
      const key = yield* Crypto.generateKey
      const secret = base64Of(key)
      const hexSecret = Buffer.from(Redacted.value(key.material)).toString("hex")
      for (const shown of [String(key), inspect(key, { depth: 5 }), JSON.stringify(key), inspect(Crypto.toBase64(key))]) {
        expect(shown).not.toContain(secret)
        expect(shown).not.toContain(hexSecret)
      }
    }))
})

layer(Crypto.layerRandom)("Keyring", (it) => {
  it.effect.prop(
    "round-trips any string, including the empty string and non-ASCII text",
    [FastCheck.oneof(FastCheck.string({ unit: "grapheme" }), FastCheck.string({ unit: "grapheme", maxLength: 2000 }))],
    ([text]) =>
      Effect.gen(function*() {
        const keyring = yield* Crypto.Keyring
        const blob = yield* keyring.encrypt(Redacted.make(text), TOKEN_AAD)
        expect(Redacted.value(yield* keyring.decrypt(blob, TOKEN_AAD))).toBe(text)
      }),
    { fastCheck: { numRuns: 300, examples: [[""], ["🔑 clé ключ 鍵 ✓"], ["a\u0000b"]] } }
  )

  it.effect.prop(
    "never writes the plaintext's bytes into the blob",
    [FastCheck.string({ unit: "grapheme", minLength: 4, maxLength: 200 })],
    ([text]) =>
      Effect.gen(function*() {
        const keyring = yield* Crypto.Keyring
        const blob = yield* keyring.encrypt(Redacted.make(text), TOKEN_AAD)
        expect(Buffer.from(blob).indexOf(bytesOf(text))).toBe(-1)
      }),
    { fastCheck: { numRuns: 300, examples: [[SECRET], ["aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"]] } }
  )

  it.effect("lays a blob out as version 1, key id, 12-byte nonce, ciphertext and 16-byte tag", () =>
    Effect.gen(function*() {
      const keyring = yield* Crypto.Keyring
      const blob = yield* keyring.encrypt(Redacted.make(SECRET), TOKEN_AAD)
      expect(blob).toBeInstanceOf(Uint8Array)
      expect(blob.length).toBe(1 + 8 + 12 + bytesOf(SECRET).length + 16)
      expect(blob[0]).toBe(0x01)
      expect(Buffer.from(blob.subarray(1, 9)).toString("hex")).toBe(keyring.primary.id)
      expect(keyring.keyIdOf(blob)).toBe(keyring.primary.id)
      expect(Crypto.keyIdOf(blob)).toBe(keyring.primary.id)
      expect(Crypto.keyIdOf(new Uint8Array(10))).toBeUndefined()
    }))

  it.effect("rejects 1,000 of 1,000 single-bit flips across version, key id, nonce, ciphertext and tag", () =>
    Effect.gen(function*() {
      const keyring = yield* Crypto.Keyring
      // 1 + 8 + 12 + 88 + 16 = 125 bytes: every one of the blob's 1,000 bits is flipped once.
      const plaintext = "t".repeat(88)
      const blob = yield* keyring.encrypt(Redacted.make(plaintext), TOKEN_AAD)
      expect(blob.length * 8).toBe(1000)
      const outcomes = yield* Effect.forEach(Arr.range(0, 999), (bit) => {
        const tampered = Uint8Array.from(blob)
        tampered[bit >> 3]! ^= 1 << (bit & 7)
        return Effect.map(Effect.either(keyring.decrypt(tampered, TOKEN_AAD)), (result) => ({ byte: bit >> 3, result }))
      })
      const rejected = outcomes.filter(({ result }) => Either.isLeft(result))
      expect(rejected).toHaveLength(1000)
      for (const { byte, result } of outcomes) {
        if (Either.isRight(result)) continue
        // Bytes 1–8 are the key id: a flipped id names a key this keyring does not hold.
        expect(result.left._tag).toBe(byte >= 1 && byte <= 8 ? "UnknownEncryptionKey" : "DecryptionFailed")
        expect(result.left.message).not.toContain(plaintext)
      }
    }))

  it.effect("rejects every truncation of a blob with DecryptionFailed", () =>
    Effect.gen(function*() {
      const keyring = yield* Crypto.Keyring
      const blob = yield* keyring.encrypt(Redacted.make(SECRET), TOKEN_AAD)
      for (let length = 0; length < blob.length; length++) {
        const error = yield* Effect.flip(keyring.decrypt(blob.subarray(0, length), TOKEN_AAD))
        expect(error._tag).toBe("DecryptionFailed")
      }
    }))

  it.effect("rejects a blob read with another row's, field's or table's associated data", () =>
    Effect.gen(function*() {
      const keyring = yield* Crypto.Keyring
      const blob = yield* keyring.encrypt(Redacted.make(SECRET), TOKEN_AAD)
      const elsewhere = [
        Crypto.associatedData("accounts", "other", "token"),
        Crypto.associatedData("accounts", "acme", "source"),
        Crypto.associatedData("token_state", "acme", "token")
      ]
      for (const aad of elsewhere) {
        const error = yield* Effect.flip(keyring.decrypt(blob, aad))
        expect(error).toBeInstanceOf(Crypto.DecryptionFailed)
        expect(error.message).not.toContain(SECRET)
      }
      const error = yield* Effect.flip(keyring.decrypt(blob, Crypto.associatedData("accounts", "other", "token")))
      expect(error.message).toBe(
        `stored value for accounts/other/token could not be decrypted with key ${keyring.primary.id}: wrong key or tampered data`
      )
    }))

  it.effect("open and openWith answer as decrypt does, openWith handing the plaintext to its function only", () =>
    Effect.gen(function*() {
      const keyring = yield* Crypto.Keyring
      const blob = yield* keyring.encrypt(Redacted.make(SECRET), TOKEN_AAD)
      expect(Redacted.value(Either.getOrThrow(keyring.open(blob, TOKEN_AAD)))).toBe(SECRET)
      expect(keyring.openWith(blob, TOKEN_AAD, (text) => text.length)).toEqual(Either.right(SECRET.length))
      const tampered = Uint8Array.from(blob)
      tampered[tampered.length - 1]! ^= 1
      const other = Crypto.associatedData("accounts", "other", "token")
      for (const [input, aad] of [[tampered, TOKEN_AAD], [blob, other]] as const) {
        const expected = yield* Effect.flip(keyring.decrypt(input, aad))
        let called = false
        const withUse = keyring.openWith(input, aad, () => (called = true))
        expect(called).toBe(false)
        expect(Either.flip(withUse)).toEqual(Either.right(expected))
        expect(Either.flip(keyring.open(input, aad))).toEqual(Either.right(expected))
      }
    }))

  it.effect("gives 10,000 encryptions of the same plaintext 10,000 distinct nonces", () =>
    Effect.gen(function*() {
      const keyring = yield* Crypto.Keyring
      const nonces = new Set<string>()
      for (let i = 0; i < 10_000; i++) nonces.add(nonceOf(yield* keyring.encrypt(Redacted.make(SECRET), TOKEN_AAD)))
      expect(nonces.size).toBe(10_000)
    }))
})

describe("Keyring keys", () => {
  it.effect("fails with UnknownEncryptionKey naming the key id when the keyring lacks the blob's key", () =>
    Effect.gen(function*() {
      const writer = keyring(yield* Crypto.generateKey)
      const reader = keyring(yield* Crypto.generateKey)
      const blob = yield* writer.encrypt(Redacted.make(SECRET), TOKEN_AAD)
      const error = yield* Effect.flip(reader.decrypt(blob, TOKEN_AAD))
      expect(error).toBeInstanceOf(Crypto.UnknownEncryptionKey)
      expect(error.keyId).toBe(writer.primary.id)
      expect(error.message).toContain(writer.primary.id)
    }))

  it.effect("a keyring with two keys decrypts blobs from both and always encrypts with the primary", () =>
    Effect.gen(function*() {
      const newKey = yield* Crypto.generateKey
      const oldKey = yield* Crypto.generateKey
      const old = yield* Effect.provide(Crypto.Keyring, Crypto.layerKeys([oldKey]))
      const both = yield* Effect.provide(Crypto.Keyring, Crypto.layerKeys([newKey, oldKey]))
      expect(both.primary.id).toBe(newKey.id)
      expect([...both.keys.keys()]).toEqual([newKey.id, oldKey.id])
      const fromOld = yield* old.encrypt(Redacted.make("old secret"), TOKEN_AAD)
      const fromNew = yield* both.encrypt(Redacted.make("new secret"), TOKEN_AAD)
      expect(Redacted.value(yield* both.decrypt(fromOld, TOKEN_AAD))).toBe("old secret")
      expect(Redacted.value(yield* both.decrypt(fromNew, TOKEN_AAD))).toBe("new secret")
      for (let i = 0; i < 100; i++) {
        expect(both.keyIdOf(yield* both.encrypt(Redacted.make(SECRET), TOKEN_AAD))).toBe(newKey.id)
      }
    }))
})

describe("layerConfig", () => {
  it.scoped("uses the key in TESSERA_ENCRYPTION_KEY and creates no key file", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const key = yield* Crypto.generateKey
      const ring = yield* loadKeyring({
        TESSERA_ENCRYPTION_KEY: base64Of(key),
        TESSERA_DB: path.join(dir, "tessera.db")
      })
      expect(ring.primary.id).toBe(key.id)
      expect([...ring.keys.keys()]).toEqual([key.id])
      expect(fs.readdirSync(dir)).toEqual([])
    }))

  it.effect("takes 'new,old' from TESSERA_ENCRYPTION_KEY as primary and older key", () =>
    Effect.gen(function*() {
      const newKey = yield* Crypto.generateKey
      const oldKey = yield* Crypto.generateKey
      const ring = yield* loadKeyring({ TESSERA_ENCRYPTION_KEY: `${base64Of(newKey)}, ${base64Of(oldKey)}` })
      expect(ring.primary.id).toBe(newKey.id)
      expect([...ring.keys.keys()]).toEqual([newKey.id, oldKey.id])
      const fromOld = yield* keyring(oldKey).encrypt(Redacted.make(SECRET), TOKEN_AAD)
      expect(Redacted.value(yield* ring.decrypt(fromOld, TOKEN_AAD))).toBe(SECRET)
    }))

  it.effect("fails with InvalidEncryptionKey, without quoting it, for a TESSERA_ENCRYPTION_KEY that is not base64 of 32 bytes", () =>
    Effect.gen(function*() {
      const good = base64Of(yield* Crypto.generateKey)
      const bad = ["definitely*not*base64", Buffer.alloc(24, 9).toString("base64"), `${good},${"%%%%"}`, ""]
      for (const value of bad) {
        const error = yield* Effect.flip(loadKeyring({ TESSERA_ENCRYPTION_KEY: value }))
        expect(error._tag).toBe("InvalidEncryptionKey")
        expect(error.message).toContain("TESSERA_ENCRYPTION_KEY")
        for (const part of value.split(",").filter((text) => text !== "")) expect(error.message).not.toContain(part)
      }
      const second = yield* Effect.flip(loadKeyring({ TESSERA_ENCRYPTION_KEY: `${good},%%%%` }))
      expect(second.message).toContain("entry 2 of 2")
    }))

  it.scoped("creates the default key file beside the database with mode 0600 and reuses it on the next start", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const env = { TESSERA_DB: path.join(dir, "data", "tessera.db") }
      const file = path.join(dir, "data", "tessera.key")
      const [first, created] = yield* warningsOf(loadKeyring(env))
      expect(fs.statSync(file).mode & 0o777).toBe(0o600)
      expect(created).toHaveLength(1)
      expect(created[0]).toContain(file)
      expect(created[0]).toContain("unreadable")
      expect(created[0]).not.toContain(base64Of(first.primary))
      expect(fs.readdirSync(path.join(dir, "data"))).toEqual(["tessera.key"])

      const blob = yield* first.encrypt(Redacted.make(SECRET), TOKEN_AAD)
      const [second, reused] = yield* warningsOf(loadKeyring(env))
      expect(second.primary.id).toBe(first.primary.id)
      expect(reused).toEqual([])
      expect(Redacted.value(yield* second.decrypt(blob, TOKEN_AAD))).toBe(SECRET)
    }))

  it.scoped("gives concurrent first starts one and the same default key", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const env = { TESSERA_DB: path.join(dir, "tessera.db") }
      const [rings, warnings] = yield* warningsOf(
        Effect.all(Arr.replicate(loadKeyring(env), 16), { concurrency: "unbounded" })
      )
      expect(new Set(rings.map((ring) => ring.primary.id)).size).toBe(1)
      expect(warnings.filter((warning) => warning.includes("created"))).toHaveLength(1)
      expect(fs.readdirSync(dir)).toEqual(["tessera.key"])
    }))

  it.scoped("fails with InvalidEncryptionKey and creates nothing when TESSERA_KEY_FILE does not exist", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const file = path.join(dir, "keys", "missing.key")
      const error = yield* Effect.flip(loadKeyring({ TESSERA_KEY_FILE: file, TESSERA_DB: path.join(dir, "tessera.db") }))
      expect(error._tag).toBe("InvalidEncryptionKey")
      expect(error.message).toContain(file)
      expect(fs.readdirSync(dir)).toEqual([])
    }))

  it.scoped("reads TESSERA_KEY_FILE with the first key as primary, skipping blank lines and comments", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const newKey = yield* Crypto.generateKey
      const oldKey = yield* Crypto.generateKey
      const file = path.join(dir, "keys.txt")
      fs.writeFileSync(file, `# rotated today\n\n  ${base64Of(newKey)}  \r\n# previous\n${base64Of(oldKey)}\n\n`, { mode: 0o600 })
      const [ring, warnings] = yield* warningsOf(loadKeyring({ TESSERA_KEY_FILE: file }))
      expect([...ring.keys.keys()]).toEqual([newKey.id, oldKey.id])
      expect(warnings).toEqual([])
    }))

  it.scoped("fails naming the file and line, without quoting it, for a bad key in a key file", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const file = path.join(dir, "keys.txt")
      const short = Buffer.alloc(31, 1).toString("base64")
      fs.writeFileSync(file, `# keys\n${base64Of(yield* Crypto.generateKey)}\n${short}\n`, { mode: 0o600 })
      const error = yield* Effect.flip(loadKeyring({ TESSERA_KEY_FILE: file }))
      expect(error._tag).toBe("InvalidEncryptionKey")
      expect(error.message).toContain(`${file}, line 3`)
      expect(error.message).not.toContain(short)
      fs.writeFileSync(file, "# nothing here\n\n")
      const empty = yield* Effect.flip(loadKeyring({ TESSERA_KEY_FILE: file }))
      expect(empty.message).toContain("holds no key")
    }))

  it.scoped("warns when the key file can be read by group or others", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const file = path.join(dir, "tessera.key")
      fs.writeFileSync(file, `${base64Of(yield* Crypto.generateKey)}\n`)
      fs.chmodSync(file, 0o644)
      const [, warnings] = yield* warningsOf(loadKeyring({ TESSERA_KEY_FILE: file }))
      expect(warnings).toHaveLength(1)
      expect(warnings[0]).toContain(file)
      expect(warnings[0]).toContain("chmod 600")
    }))
})

describe("writeKeyFile", () => {
  it.scoped("replaces a key file with mode 0600 that reads back the same keys in order", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const file = path.join(dir, "tessera.key")
      fs.writeFileSync(file, "stale\n")
      fs.chmodSync(file, 0o644)
      const keys = [yield* Crypto.generateKey, yield* Crypto.generateKey] as const
      yield* Crypto.writeKeyFile(file, keys).pipe(Effect.provide(NodeContext.layer))
      expect(fs.statSync(file).mode & 0o777).toBe(0o600)
      expect(fs.readdirSync(dir)).toEqual(["tessera.key"])
      const read = yield* Crypto.readKeyFile(file).pipe(Effect.provide(NodeContext.layer))
      expect(read.map((key) => key.id)).toEqual(keys.map((key) => key.id))
    }))
})
