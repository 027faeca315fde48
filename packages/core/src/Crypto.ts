/**
 * Encryption at rest for the tokens and credentials Tessera keeps in SQLite: AES-256-GCM with
 * a random 12-byte nonce per value, bound to its row and field by associated data (so a value
 * copied to another account or column does not decrypt), and tagged with the id of the key
 * that wrote it so keys can be rotated. A blob is `0x01 | key id (8) | nonce (12) |
 * ciphertext | tag (16)`; the key id is the first 8 bytes of the key's SHA-256. The `Keyring`
 * service encrypts with its primary key and decrypts with whichever of its keys wrote the
 * blob. `layerConfig` takes the keys from `TESSERA_ENCRYPTION_KEY`, else `TESSERA_KEY_FILE`,
 * else `tessera.key` beside the SQLite database (created on first start; a PostgreSQL database
 * that several instances share needs one of the first two). Key material is `Redacted`
 * throughout and never appears in an error or a log line.
 */
import { FileSystem, Path } from "@effect/platform"
import type { PlatformError } from "@effect/platform/Error"
import { Array as Arr, Config, ConfigError, Context, Effect, Either, Encoding, Layer, Option, Redacted, Schema } from "effect"
import * as NodeCrypto from "node:crypto"
import * as Databases from "./internal/database.js"
import * as KeyFile from "./internal/keyfile.js"

const VERSION = 0x01
const KEY_BYTES = 32
const KEY_ID_BYTES = 8
const NONCE_BYTES = 12
const TAG_BYTES = 16
const NONCE_OFFSET = 1 + KEY_ID_BYTES
const HEADER_BYTES = NONCE_OFFSET + NONCE_BYTES
const MIN_BLOB_BYTES = HEADER_BYTES + TAG_BYTES
const ALGORITHM = "aes-256-gcm"
const AAD_PREFIX = "tessera:v1:"

// -----------------------------------------------------------------------------
// Errors
// -----------------------------------------------------------------------------

/** `tessera:v1:accounts:acme:source` reads as `accounts/acme/source` in messages. */
const describeContext = (aad: string): string => {
  if (!aad.startsWith(AAD_PREFIX)) return aad
  const parts = aad.slice(AAD_PREFIX.length).split(":")
  if (parts.length < 3) return aad
  return `${parts[0]}/${parts.slice(1, -1).join(":")}/${parts[parts.length - 1]}`
}

/** A stored value failed authentication: wrong key, wrong row or field, or tampered data. */
export class DecryptionFailed extends Schema.TaggedError<DecryptionFailed>()("DecryptionFailed", {
  /** The key id the blob names, or "" when the blob is too short to name one. */
  keyId: Schema.String,
  /** The associated data the value was read with; it names a row and field, never a secret. */
  context: Schema.String,
  reason: Schema.String
}) {
  override get message() {
    const key = this.keyId === "" ? "" : ` with key ${this.keyId}`
    return `stored value for ${describeContext(this.context)} could not be decrypted${key}: ${this.reason}`
  }
}

/** A stored value names a key the keyring does not hold. */
export class UnknownEncryptionKey extends Schema.TaggedError<UnknownEncryptionKey>()("UnknownEncryptionKey", {
  keyId: Schema.String
}) {
  override get message() {
    return `stored value was encrypted with key ${this.keyId}, which is not configured: add that key ` +
      `(after the current one) to TESSERA_ENCRYPTION_KEY or the key file, or the data is corrupted`
  }
}

/** A key is malformed or cannot be loaded. The reason never contains key text. */
export class InvalidEncryptionKey extends Schema.TaggedError<InvalidEncryptionKey>()("InvalidEncryptionKey", {
  reason: Schema.String
}) {
  override get message() {
    return `invalid encryption key: ${this.reason}`
  }
}

// -----------------------------------------------------------------------------
// Keys
// -----------------------------------------------------------------------------

const hex = (bytes: Uint8Array): string => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("hex")

const keyIdOfMaterial = (material: Uint8Array): string =>
  hex(NodeCrypto.createHash("sha256").update(material).digest().subarray(0, KEY_ID_BYTES))

/** A 32-byte AES-256 key and its id (the first 8 bytes of its SHA-256, as 16 hex characters). */
export class EncryptionKey {
  readonly id: string
  readonly material: Redacted.Redacted<Uint8Array>

  private constructor(material: Uint8Array) {
    this.id = keyIdOfMaterial(material)
    this.material = Redacted.make(material)
  }

  /** A key from its raw bytes (copied), which must be exactly 32. */
  static fromBytes(bytes: Uint8Array): Either.Either<EncryptionKey, InvalidEncryptionKey> {
    return bytes.length === KEY_BYTES
      ? Either.right(new EncryptionKey(Uint8Array.from(bytes)))
      : Either.left(
        new InvalidEncryptionKey({
          reason: `a key must be exactly ${KEY_BYTES} bytes but this one has ${bytes.length} ` +
            `(generate one with: openssl rand -base64 32)`
        })
      )
  }

  /** A key from base64 (standard or URL-safe) of exactly 32 bytes. */
  static fromBase64(text: string | Redacted.Redacted<string>): Either.Either<EncryptionKey, InvalidEncryptionKey> {
    const trimmed = (Redacted.isRedacted(text) ? Redacted.value(text) : text).trim()
    if (trimmed === "") return Either.left(new InvalidEncryptionKey({ reason: "the key is empty" }))
    return Either.match(Either.orElse(Encoding.decodeBase64(trimmed), () => Encoding.decodeBase64Url(trimmed)), {
      // The decoder's own error quotes the input, so it is not passed on.
      onLeft: () => Either.left(new InvalidEncryptionKey({ reason: "the key is not valid base64" })),
      onRight: (bytes) => {
        const key = EncryptionKey.fromBytes(bytes)
        bytes.fill(0)
        return key
      }
    })
  }
}

/** A fresh random key. */
export const generateKey: Effect.Effect<EncryptionKey> = Effect.suspend(() => {
  const bytes = NodeCrypto.randomBytes(KEY_BYTES)
  const key = EncryptionKey.fromBytes(bytes)
  bytes.fill(0)
  return key
}).pipe(Effect.orDie)

/** The key as base64, for a key file or `TESSERA_ENCRYPTION_KEY`. */
export const toBase64 = (key: EncryptionKey): Redacted.Redacted<string> =>
  Redacted.make(Encoding.encodeBase64(Redacted.value(key.material)))

// -----------------------------------------------------------------------------
// Blobs
// -----------------------------------------------------------------------------

/**
 * The associated data binding a value to its row and field. `table` and `field` are names
 * chosen in code and must not contain `:`; `rowId` may.
 */
export const associatedData = (table: string, rowId: string, field: string): string =>
  `${AAD_PREFIX}${table}:${rowId}:${field}`

/** The id of the key that wrote `blob`, or `undefined` if it is not a blob of this format. */
export const keyIdOf = (blob: Uint8Array): string | undefined =>
  blob.length >= MIN_BLOB_BYTES && blob[0] === VERSION ? hex(blob.subarray(1, NONCE_OFFSET)) : undefined

/** A key made ready for GCM once, so each call only sets up its nonce. */
interface Cipher {
  readonly key: EncryptionKey
  readonly id: Uint8Array
  readonly secret: NodeCrypto.KeyObject
}

const makeCipher = (key: EncryptionKey): Cipher => ({
  key,
  id: Buffer.from(key.id, "hex"),
  secret: NodeCrypto.createSecretKey(Redacted.value(key.material))
})

const seal = (cipher: Cipher, plaintext: Redacted.Redacted<string>, aad: string): Uint8Array => {
  const bytes = Buffer.from(Redacted.value(plaintext), "utf8")
  const blob = new Uint8Array(HEADER_BYTES + bytes.length + TAG_BYTES)
  blob[0] = VERSION
  blob.set(cipher.id, 1)
  const nonce = blob.subarray(NONCE_OFFSET, HEADER_BYTES)
  NodeCrypto.randomFillSync(nonce)
  const gcm = NodeCrypto.createCipheriv(ALGORITHM, cipher.secret, nonce, { authTagLength: TAG_BYTES })
  gcm.setAAD(Buffer.from(aad, "utf8"))
  const body = gcm.update(bytes)
  const rest = gcm.final()
  blob.set(body, HEADER_BYTES)
  blob.set(rest, HEADER_BYTES + body.length)
  blob.set(gcm.getAuthTag(), HEADER_BYTES + bytes.length)
  bytes.fill(0)
  return blob
}

/** Whether `blob` names `cipher`'s key (compared in place: restoring reads 200,000 blobs). */
const names = (blob: Uint8Array, cipher: Cipher) => {
  for (let i = 0; i < cipher.id.length; i++) if (blob[1 + i] !== cipher.id[i]) return false
  return true
}

/** The plaintext of `blob`, bare: callers wrap it (`Redacted`) or use it at once (`openWith`). */
const unseal = (
  ciphers: ReadonlyMap<string, Cipher>,
  primary: Cipher,
  blob: Uint8Array,
  aad: string
): Either.Either<string, DecryptionFailed | UnknownEncryptionKey> => {
  // Values come from disk: a column that holds text or a number is damage, not a crash.
  if (!(blob instanceof Uint8Array)) {
    return Either.left(new DecryptionFailed({ keyId: "", context: aad, reason: "the stored value is not binary data" }))
  }
  const keyIdOfBlob = () => blob.length >= NONCE_OFFSET ? hex(blob.subarray(1, NONCE_OFFSET)) : ""
  const failed = (reason: string) => Either.left(new DecryptionFailed({ keyId: keyIdOfBlob(), context: aad, reason }))
  if (blob.length < MIN_BLOB_BYTES) {
    return failed(`it is ${blob.length} bytes, shorter than the ${MIN_BLOB_BYTES} of any encrypted value`)
  }
  if (blob[0] !== VERSION) {
    return failed(`unknown format version ${blob[0]} (expected ${VERSION}): not written by Tessera, or tampered data`)
  }
  const cipher = names(blob, primary) ? primary : ciphers.get(keyIdOfBlob())
  if (cipher === undefined) return Either.left(new UnknownEncryptionKey({ keyId: keyIdOfBlob() }))
  const tagAt = blob.length - TAG_BYTES
  let text: string
  try {
    const gcm = NodeCrypto.createDecipheriv(ALGORITHM, cipher.secret, blob.subarray(NONCE_OFFSET, HEADER_BYTES), {
      authTagLength: TAG_BYTES
    })
    gcm.setAAD(Buffer.from(aad, "utf8"))
    gcm.setAuthTag(blob.subarray(tagAt))
    const body = gcm.update(blob.subarray(HEADER_BYTES, tagAt))
    const rest = gcm.final()
    const bytes = rest.length === 0 ? body : Buffer.concat([body, rest])
    text = bytes.toString("utf8")
    body.fill(0)
    bytes.fill(0)
  } catch {
    return failed("wrong key or tampered data")
  }
  return Either.right(text)
}

// -----------------------------------------------------------------------------
// Keyring
// -----------------------------------------------------------------------------

export interface KeyringService {
  /** The key every new value is encrypted with. */
  readonly primary: EncryptionKey
  /** Every key by id, the primary first, then older keys kept to read values written before a rotation. */
  readonly keys: ReadonlyMap<string, EncryptionKey>
  /** Encrypts with the primary key, bound to `aad` (see `associatedData`). */
  readonly encrypt: (plaintext: Redacted.Redacted<string>, aad: string) => Effect.Effect<Uint8Array>
  /** Decrypts with the key the blob names; fails unless `aad` is the one it was encrypted with. */
  readonly decrypt: (
    blob: Uint8Array,
    aad: string
  ) => Effect.Effect<Redacted.Redacted<string>, DecryptionFailed | UnknownEncryptionKey>
  /** `decrypt` without an effect, for decoding many rows in one loop. */
  readonly open: (
    blob: Uint8Array,
    aad: string
  ) => Either.Either<Redacted.Redacted<string>, DecryptionFailed | UnknownEncryptionKey>
  /**
   * `open`, the plaintext handed to `use` and not kept: for a value decoded at once (a source
   * configuration, whose secrets the decoding wraps itself), without the cost of a `Redacted`.
   */
  readonly openWith: <A>(
    blob: Uint8Array,
    aad: string,
    use: (plaintext: string) => A
  ) => Either.Either<A, DecryptionFailed | UnknownEncryptionKey>
  /** The id of the key that wrote `blob` (to find values still under an old key). */
  readonly keyIdOf: (blob: Uint8Array) => string | undefined
}

export class Keyring extends Context.Tag("@tessera/core/Crypto/Keyring")<Keyring, KeyringService>() {}

/** A keyring over `keys`; the first is the primary. A key listed twice counts once. */
export const make = (keys: Arr.NonEmptyReadonlyArray<EncryptionKey>): KeyringService => {
  const primary = makeCipher(keys[0])
  const ciphers = new Map<string, Cipher>([[primary.key.id, primary]])
  for (const key of keys) if (!ciphers.has(key.id)) ciphers.set(key.id, makeCipher(key))
  return {
    primary: primary.key,
    keys: new Map(Array.from(ciphers, ([id, cipher]) => [id, cipher.key])),
    encrypt: (plaintext, aad) => Effect.sync(() => seal(primary, plaintext, aad)),
    decrypt: (blob, aad) => Effect.suspend(() => Either.map(unseal(ciphers, primary, blob, aad), Redacted.make)),
    open: (blob, aad) => Either.map(unseal(ciphers, primary, blob, aad), Redacted.make),
    openWith: (blob, aad, use) => Either.map(unseal(ciphers, primary, blob, aad), use),
    keyIdOf
  }
}

/** A keyring over the given keys, the first being the primary: for tests and embedding apps. */
export const layerKeys = (keys: Arr.NonEmptyReadonlyArray<EncryptionKey>): Layer.Layer<Keyring> =>
  Layer.sync(Keyring, () => make(keys))

/** A keyring over one fresh random key: for in-memory stores in tests. */
export const layerRandom: Layer.Layer<Keyring> = Layer.effect(Keyring, Effect.map(generateKey, (key) => make([key])))

// -----------------------------------------------------------------------------
// Key files and configuration
// -----------------------------------------------------------------------------

interface KeyText {
  /** Where the key came from, for messages: "TESSERA_ENCRYPTION_KEY entry 2", "key file x, line 4". */
  readonly where: string
  readonly text: Redacted.Redacted<string>
}

const decodeKeys = (
  texts: ReadonlyArray<KeyText>,
  whenEmpty: string
): Either.Either<Arr.NonEmptyReadonlyArray<EncryptionKey>, InvalidEncryptionKey> =>
  Either.flatMap(
    Either.all(texts.map(({ text, where }) =>
      Either.mapLeft(EncryptionKey.fromBase64(text), (error) => new InvalidEncryptionKey({ reason: `${where}: ${error.reason}` }))
    )),
    (keys) => Arr.isNonEmptyReadonlyArray(keys) ? Either.right(keys) : Either.left(new InvalidEncryptionKey({ reason: whenEmpty }))
  )

const parseKeyFile = (path: string, content: string) =>
  decodeKeys(
    KeyFile.parse(content).map(({ line, text }) => ({ where: `key file ${path}, line ${line}`, text })),
    `key file ${path} holds no key (it needs one base64 key per line, the current one first)`
  )

/** The key file's text, or none if there is no such file; warns if others may read it. */
const readKeyFileText = (path: string): Effect.Effect<Option.Option<string>, InvalidEncryptionKey, FileSystem.FileSystem> =>
  Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    const cannotRead = (error: PlatformError) => new InvalidEncryptionKey({ reason: `cannot read key file ${path}: ${error.message}` })
    const info = yield* fs.stat(path).pipe(
      Effect.map(Option.some),
      Effect.catchIf(KeyFile.isNotFound, () => Effect.succeed(Option.none())),
      Effect.mapError(cannotRead)
    )
    if (Option.isNone(info)) return Option.none()
    if (KeyFile.isShared(info.value.mode)) {
      yield* Effect.logWarning(
        `key file ${path} can be read by other users (mode ${(info.value.mode & 0o777).toString(8)}); ` +
          `restrict it with: chmod 600 ${path}`
      )
    }
    return Option.some(yield* Effect.mapError(fs.readFileString(path), cannotRead))
  })

/** The keys of a key file, the current one first. */
export const readKeyFile = (
  path: string
): Effect.Effect<Arr.NonEmptyReadonlyArray<EncryptionKey>, InvalidEncryptionKey, FileSystem.FileSystem> =>
  Effect.flatMap(
    readKeyFileText(path),
    Option.match({
      onNone: () => Effect.fail(new InvalidEncryptionKey({ reason: `key file ${path} does not exist` })),
      onSome: (content) => parseKeyFile(path, content)
    })
  )

/** Writes (or atomically replaces) a key file with mode 0600, the first key being the current one. */
export const writeKeyFile = (
  path: string,
  keys: Arr.NonEmptyReadonlyArray<EncryptionKey>
): Effect.Effect<void, PlatformError, FileSystem.FileSystem | Path.Path> =>
  Effect.asVoid(KeyFile.write(path, KeyFile.format(keys.map(toBase64)), "replace"))

/** Reads the default key file, creating it with one fresh key if it does not exist yet. */
const readOrCreateKeyFile = (path: string) =>
  Effect.gen(function*() {
    const existing = yield* readKeyFileText(path)
    if (Option.isSome(existing)) return yield* parseKeyFile(path, existing.value)
    const key = yield* generateKey
    const created = yield* KeyFile.write(path, KeyFile.format([toBase64(key)]), "create").pipe(
      Effect.mapError((error) => new InvalidEncryptionKey({ reason: `cannot create key file ${path}: ${error.message}` }))
    )
    // Another process starting at the same time created it first: use its key.
    if (!created) return yield* readKeyFile(path)
    yield* Effect.logWarning(
      `created encryption key file ${path}. Keep it and back it up: losing it makes the stored tokens ` +
        `and credentials unreadable. Set TESSERA_KEY_FILE or TESSERA_ENCRYPTION_KEY to use another key.`
    )
    return [key] as const
  })

interface KeyFileLocation {
  readonly path: string
  /** Named by TESSERA_KEY_FILE, rather than the default beside the database. */
  readonly explicit: boolean
}

/** `TESSERA_KEY_FILE`, resolved, if set. */
const namedKeyFile: Effect.Effect<Option.Option<string>, ConfigError.ConfigError, Path.Path> = Effect.gen(function*() {
  const path = yield* Path.Path
  return Option.map(yield* Config.option(Config.string("TESSERA_KEY_FILE")), (named) => path.resolve(named))
})

/**
 * Every instance sharing a PostgreSQL database must use the same key, and there is no
 * directory beside the database to keep one in: the key has to be given.
 */
const noKeyForPostgres = ConfigError.MissingData(
  ["TESSERA_ENCRYPTION_KEY"],
  "TESSERA_DATABASE_URL names a PostgreSQL database, which every instance shares, so no key file is " +
    "created beside it: set TESSERA_ENCRYPTION_KEY (or TESSERA_KEY_FILE) to the key all instances use " +
    "(make one with: openssl rand -base64 32)"
)

const keyFileLocation: Effect.Effect<KeyFileLocation, ConfigError.ConfigError, Path.Path> = Effect.gen(function*() {
  const path = yield* Path.Path
  const named = yield* namedKeyFile
  if (Option.isSome(named)) return { path: named.value, explicit: true }
  const database = yield* Databases.databaseConfig
  if (database._tag === "postgres") return yield* Effect.fail(noKeyForPostgres)
  return { path: path.resolve(path.dirname(database.filename), "tessera.key"), explicit: false }
})

/**
 * The key file used when `TESSERA_ENCRYPTION_KEY` is not set: `TESSERA_KEY_FILE`, else
 * `tessera.key` beside `TESSERA_DB` (on PostgreSQL there is none: a configuration error).
 */
export const keyFilePath: Effect.Effect<string, ConfigError.ConfigError, Path.Path> = Effect.map(
  keyFileLocation,
  (location) => location.path
)

const keysFromVariable = (value: Redacted.Redacted<string>) => {
  const entries = Redacted.value(value).split(",")
  return decodeKeys(
    entries.map((text, index) => ({
      where: entries.length === 1 ? "TESSERA_ENCRYPTION_KEY" : `TESSERA_ENCRYPTION_KEY entry ${index + 1} of ${entries.length}`,
      text: Redacted.make(text)
    })),
    "TESSERA_ENCRYPTION_KEY is empty"
  )
}

/**
 * The configured keys, the primary first: `TESSERA_ENCRYPTION_KEY` ("new,old,…"), else the
 * key file `TESSERA_KEY_FILE` (which must exist), else `tessera.key` beside `TESSERA_DB`
 * (created with one fresh key if absent). With PostgreSQL (`TESSERA_DATABASE_URL`) there is
 * no default: one of the first two must be set.
 */
export const loadKeys: Effect.Effect<
  Arr.NonEmptyReadonlyArray<EncryptionKey>,
  InvalidEncryptionKey | ConfigError.ConfigError,
  FileSystem.FileSystem | Path.Path
> = Effect.gen(function*() {
  const fromVariable = yield* Config.option(Config.redacted("TESSERA_ENCRYPTION_KEY"))
  if (Option.isSome(fromVariable)) {
    const named = yield* namedKeyFile
    if (Option.isSome(named)) {
      yield* Effect.logWarning(`TESSERA_KEY_FILE (${named.value}) is ignored because TESSERA_ENCRYPTION_KEY is set`)
    }
    return yield* keysFromVariable(fromVariable.value)
  }
  const location = yield* keyFileLocation
  if (!location.explicit) return yield* readOrCreateKeyFile(location.path)
  const content = yield* readKeyFileText(location.path)
  if (Option.isNone(content)) {
    return yield* new InvalidEncryptionKey({
      reason: `TESSERA_KEY_FILE is ${location.path}, which does not exist (a key file is only created ` +
        `automatically in the default place, beside the database)`
    })
  }
  return yield* parseKeyFile(location.path, content.value)
})

/** The keyring from the environment (see `loadKeys`). */
export const layerConfig: Layer.Layer<
  Keyring,
  InvalidEncryptionKey | ConfigError.ConfigError,
  FileSystem.FileSystem | Path.Path
> = Layer.effect(Keyring, Effect.map(loadKeys, make))
