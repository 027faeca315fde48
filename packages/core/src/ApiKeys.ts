/**
 * API keys for the HTTP service (SPEC §4.5): named keys with scopes (`read`, `token`,
 * `admin`, where `admin` implies the others), kept in the store's database. A key is
 * shown once, when it is created; the database holds only its SHA-256, and a presented key is
 * compared with every active hash in constant time. Revoked keys stay listed (with the time
 * they were revoked) and never become valid again. `TESSERA_API_KEYS`
 * (`name:scope[+scope]:key,…`) declares keys that `bootstrap` registers idempotently at
 * startup.
 */
import { SqlClient } from "@effect/sql"
import type { SqlError } from "@effect/sql"
import { Config, ConfigError, Context, Effect, Either, Layer, Option, Redacted, Schema } from "effect"
import * as crypto from "node:crypto"
import type * as Crypto from "./Crypto.js"
import { StoreError } from "./Errors.js"
import * as Events from "./Events.js"
import * as TokenStore from "./TokenStore.js"

export const Scope = Schema.Literal("read", "token", "admin")
export type Scope = typeof Scope.Type

/** A key's name: what audit records show as the actor. */
export const ApiKeyName = Schema.String.pipe(
  Schema.pattern(/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/, {
    message: () => "API key name must be 1-64 characters of letters, digits and . _ -, starting with a letter or digit"
  }),
  Schema.brand("ApiKeyName")
)
export type ApiKeyName = typeof ApiKeyName.Type

export const Scopes = Schema.NonEmptyArray(Scope).pipe(
  Schema.filter((scopes) => new Set(scopes).size === scopes.length || "a scope is listed twice")
)

/** An API key as listed: never the key itself. */
export class ApiKey extends Schema.Class<ApiKey>("@tessera/core/ApiKey")({
  name: ApiKeyName,
  scopes: Schema.Array(Scope),
  createdAt: Schema.Number,
  revokedAt: Schema.NullOr(Schema.Number)
}) {}

/** A new key and its secret, which is shown this once. */
export interface Created {
  readonly key: ApiKey
  readonly secret: Redacted.Redacted<string>
}

/** A key the configuration declares. */
export interface Declared {
  readonly name: ApiKeyName
  readonly scopes: ReadonlyArray<Scope>
  readonly secret: Redacted.Redacted<string>
}

export interface BootstrapSummary {
  readonly created: ReadonlyArray<string>
  readonly updated: ReadonlyArray<string>
  /** Declared keys whose secret was revoked: they stay revoked. */
  readonly revoked: ReadonlyArray<string>
}

export class ApiKeyExists extends Schema.TaggedError<ApiKeyExists>()("ApiKeyExists", {
  name: Schema.String
}) {
  override get message() {
    return `an active API key named '${this.name}' already exists`
  }
}

export class ApiKeyNotFound extends Schema.TaggedError<ApiKeyNotFound>()("ApiKeyNotFound", {
  name: Schema.String
}) {
  override get message() {
    return `there is no active API key named '${this.name}'`
  }
}

/** A key that cannot be registered (too short, or its secret is already in use). Never holds the secret. */
export class InvalidApiKey extends Schema.TaggedError<InvalidApiKey>()("InvalidApiKey", {
  name: Schema.String,
  reason: Schema.String
}) {
  override get message() {
    return `API key '${this.name}': ${this.reason}`
  }
}

export interface ApiKeysService {
  /** Creates a key with a fresh random secret (`tsr_…`), or the given one. */
  readonly create: (
    name: ApiKeyName,
    scopes: ReadonlyArray<Scope>,
    secret?: Redacted.Redacted<string>
  ) => Effect.Effect<Created, ApiKeyExists | InvalidApiKey | StoreError>
  /** Every key, revoked ones included, oldest first. */
  readonly list: Effect.Effect<ReadonlyArray<ApiKey>, StoreError>
  readonly revoke: (name: string) => Effect.Effect<ApiKey, ApiKeyNotFound | StoreError>
  /** The active key with this secret, if there is one. */
  readonly verify: (secret: Redacted.Redacted<string>) => Effect.Effect<Option.Option<ApiKey>, StoreError>
  /** Whether any key is active: without one the service runs open on loopback. */
  readonly hasActive: Effect.Effect<boolean, StoreError>
  /**
   * `hasActive` and `verify` at once and without an effect, for a server's hot path: answered
   * only from the active keys read within the last `ACTIVE_KEYS_TTL_MS` of `now`, else
   * undefined (then ask `verify`, which reads them again). Without a secret, only whether any
   * key is active.
   */
  readonly unsafeVerifyCached: (
    secret: string | undefined,
    now: number
  ) => { readonly anyActive: boolean; readonly key: Option.Option<ApiKey> } | undefined
  /**
   * Registers declared keys: a new name is created, a known one with another secret is
   * replaced (the old secret revoked), changed scopes are updated. Running it again changes
   * nothing.
   */
  readonly bootstrap: (declared: ReadonlyArray<Declared>) => Effect.Effect<BootstrapSummary, InvalidApiKey | StoreError>
}

export class ApiKeys extends Context.Tag("@tessera/core/ApiKeys")<ApiKeys, ApiKeysService>() {}

/** Whether a key grants `scope`: `admin` grants everything. */
export const allows = (key: { readonly scopes: ReadonlyArray<Scope> }, scope: Scope): boolean =>
  key.scopes.includes("admin") || key.scopes.includes(scope)

export const PREFIX = "tsr_"
const MIN_SECRET_LENGTH = 16

/** How long the active keys read for checking requests are used before they are read again. */
export const ACTIVE_KEYS_TTL_MS = 1_000

/** A new random secret: `tsr_` and 32 random bytes in base64url. */
export const generateSecret = (): Redacted.Redacted<string> =>
  Redacted.make(`${PREFIX}${crypto.randomBytes(32).toString("base64url")}`)

const hash = (secret: Redacted.Redacted<string>): Buffer => hashText(Redacted.value(secret))
// one call, without a Hash stream object: half the cost of createHash on every request (Node >= 20.12)
const hashText = (secret: string): Buffer => crypto.hash("sha256", secret, "buffer")

/**
 * The active key whose hash is `presented`'s. Every active hash is compared, whatever matched
 * before: the time taken says nothing about which key (or how much of one) was right.
 */
const matching = (rows: ReadonlyArray<ActiveKey>, presented: Buffer): Option.Option<ApiKey> => {
  let match: ApiKey | undefined
  for (const row of rows) {
    if (row.hash.length === presented.length && crypto.timingSafeEqual(row.hash, presented) && match === undefined) {
      match = row.key
    }
  }
  return Option.fromNullable(match)
}

/** Why a secret cannot be a key, if it cannot. */
const secretProblem = (secret: Redacted.Redacted<string>): Option.Option<string> => {
  const value = Redacted.value(secret)
  if (value.length < MIN_SECRET_LENGTH) return Option.some(`the key must be at least ${MIN_SECRET_LENGTH} characters long`)
  if (!/^[\x21-\x7e]+$/.test(value)) return Option.some("the key must be printable ASCII without spaces")
  return Option.none()
}

interface KeyRow {
  readonly name: string
  readonly scopes: string
  readonly key_hash: Uint8Array
  readonly created_at: number
  readonly revoked_at: number | null
}

/** An active key as `verify` holds it. */
interface ActiveKey {
  readonly hash: Buffer
  readonly key: ApiKey
}

const toApiKey = (row: Omit<KeyRow, "key_hash">): ApiKey =>
  new ApiKey({
    name: row.name as ApiKeyName,
    scopes: row.scopes.split(" ").filter((scope): scope is Scope => Schema.is(Scope)(scope)),
    createdAt: row.created_at,
    revokedAt: row.revoked_at
  }, true)

const sameScopes = (a: ReadonlyArray<Scope>, b: ReadonlyArray<Scope>) =>
  a.length === b.length && a.every((scope) => b.includes(scope))

const storeError = (operation: string) => (error: SqlError.SqlError): StoreError =>
  new StoreError({ operation, detail: error.cause instanceof Error ? error.cause.message : error.message })

/**
 * The keys in the store's database. Needs the `SqlClient` the store was opened with, and the
 * store itself: opening it runs the migration that creates the keys' table.
 */
export const make: Effect.Effect<ApiKeysService, never, SqlClient.SqlClient | TokenStore.TokenStore> = Effect.gen(
  function*() {
    const store = yield* TokenStore.TokenStore
    const sql = yield* SqlClient.SqlClient
    const now = Effect.clockWith((clock) => clock.currentTimeMillis)

    // The store's write-locked transaction: two processes sharing the file never meet
    // SQLITE_BUSY_SNAPSHOT, and the audit record commits with the change it describes.
    const immediate = store.writeTransaction

    /** The audit record of a key's creation or revocation: its name and scopes, never the secret. */
    const audited = (type: "api_key_created" | "api_key_revoked", name: string, scopes: ReadonlyArray<Scope>) =>
      Effect.flatMap(
        Events.make({ type, accountId: null, detail: `API key '${name}' (${scopes.join("+")})`, data: { name } }),
        (event) => store.appendAudit([event])
      )

    const readActive = sql<KeyRow>`SELECT name, scopes, key_hash, created_at, revoked_at FROM api_keys
      WHERE revoked_at IS NULL ORDER BY id`

    // Every request is checked against the active keys, so they are read at most once per
    // ACTIVE_KEYS_TTL_MS rather than per request. A change made here is seen at once; one
    // made by another process sharing the database (the CLI, another instance), within that.
    // They are kept decoded: the stored hash as bytes, the key as `verify` answers it.
    // A plain variable rather than a Ref, so the hot path can read it without an effect.
    let cache: { readonly rows: ReadonlyArray<ActiveKey>; readonly at: number } | undefined
    const fresh = (at: number) =>
      cache !== undefined && at - cache.at < ACTIVE_KEYS_TTL_MS && at >= cache.at ? cache.rows : undefined
    const activeRows = Effect.gen(function*() {
      const at = yield* now
      const cached = fresh(at)
      if (cached !== undefined) return cached
      const rows = (yield* readActive).map((row) => ({ hash: Buffer.from(row.key_hash), key: toApiKey(row) }))
      cache = { rows, at }
      return rows
    })
    const forgetActive = Effect.sync(() => {
      cache = undefined
    })

    /** The key a secret's hash belongs to, revoked or not. */
    const holderOf = (digest: Buffer) =>
      Effect.map(
        sql<Omit<KeyRow, "key_hash">>`SELECT name, scopes, created_at, revoked_at FROM api_keys WHERE key_hash = ${digest}`,
        (rows) => Option.map(Option.fromNullable(rows[0]), toApiKey)
      )

    const insert = (name: string, scopes: ReadonlyArray<Scope>, digest: Buffer, at: number) =>
      sql`INSERT INTO api_keys ${sql.insert({ name, scopes: scopes.join(" "), key_hash: digest, created_at: at })}`

    const checkSecret = (name: string, secret: Redacted.Redacted<string>) =>
      Option.match(secretProblem(secret), {
        onNone: () => Effect.void,
        onSome: (reason) => Effect.fail(new InvalidApiKey({ name, reason }))
      })

    const inUse = (name: string) => new InvalidApiKey({ name, reason: "this key is already registered (perhaps revoked)" })

    const service: ApiKeysService = {
      create: (name, scopes, given) =>
        Effect.gen(function*() {
          const secret = given ?? generateSecret()
          yield* checkSecret(name, secret)
          if (scopes.length === 0) return yield* new InvalidApiKey({ name, reason: "a key needs at least one scope" })
          const unique = Array.from(new Set(scopes))
          const digest = hash(secret)
          const at = yield* now
          yield* immediate(Effect.gen(function*() {
            const existing = yield* sql`SELECT 1 FROM api_keys WHERE name = ${name} AND revoked_at IS NULL`
            if (existing.length > 0) return yield* new ApiKeyExists({ name })
            if (Option.isSome(yield* holderOf(digest))) return yield* inUse(name)
            yield* insert(name, unique, digest, at)
            yield* audited("api_key_created", name, unique)
          })).pipe(Effect.ensuring(forgetActive))
          return { key: new ApiKey({ name, scopes: unique, createdAt: at, revokedAt: null }), secret }
        }),

      list: sql<Omit<KeyRow, "key_hash">>`SELECT name, scopes, created_at, revoked_at FROM api_keys ORDER BY id`.pipe(
        Effect.map((rows) => rows.map(toApiKey)),
        Effect.mapError(storeError("list API keys"))
      ),

      revoke: (name) =>
        Effect.gen(function*() {
          const at = yield* now
          return yield* immediate(Effect.gen(function*() {
            const rows = yield* sql<Omit<KeyRow, "key_hash">>`SELECT name, scopes, created_at, revoked_at FROM api_keys
              WHERE name = ${name} AND revoked_at IS NULL`
            const row = rows[0]
            if (row === undefined) return yield* new ApiKeyNotFound({ name })
            yield* sql`UPDATE api_keys SET revoked_at = ${at} WHERE name = ${name} AND revoked_at IS NULL`
            const revoked = toApiKey({ ...row, revoked_at: at })
            yield* audited("api_key_revoked", name, revoked.scopes)
            return revoked
          })).pipe(Effect.ensuring(forgetActive))
        }),

      verify: (secret) =>
        Effect.map(activeRows, (rows) => matching(rows, hash(secret))).pipe(Effect.mapError(storeError("verify API key"))),

      hasActive: activeRows.pipe(
        Effect.map((rows) => rows.length > 0),
        Effect.mapError(storeError("count API keys"))
      ),

      unsafeVerifyCached: (secret, at) => {
        const rows = fresh(at)
        if (rows === undefined) return undefined
        const key = secret === undefined || rows.length === 0 ? Option.none() : matching(rows, hashText(secret))
        return { anyActive: rows.length > 0, key }
      },

      bootstrap: (declared) =>
        Effect.gen(function*() {
          for (const entry of declared) yield* checkSecret(entry.name, entry.secret)
          const at = yield* now
          const created: Array<string> = []
          const updated: Array<string> = []
          const revoked: Array<string> = []
          yield* immediate(Effect.gen(function*() {
            for (const { name, scopes, secret } of declared) {
              const digest = hash(secret)
              const unique = Array.from(new Set(scopes))
              const holder = yield* holderOf(digest)
              if (Option.isSome(holder)) {
                if (holder.value.name !== name) return yield* inUse(name)
                if (holder.value.revokedAt !== null) {
                  revoked.push(name)
                  continue
                }
                if (!sameScopes(holder.value.scopes, unique)) {
                  yield* sql`UPDATE api_keys SET scopes = ${unique.join(" ")} WHERE key_hash = ${digest}`
                  updated.push(name)
                }
                continue
              }
              // A declared name whose secret changed: the old secret stops working.
              const replaced = yield* sql`SELECT 1 FROM api_keys WHERE name = ${name} AND revoked_at IS NULL`
              yield* sql`UPDATE api_keys SET revoked_at = ${at} WHERE name = ${name} AND revoked_at IS NULL`
              yield* insert(name, unique, digest, at)
              if (replaced.length > 0) yield* audited("api_key_revoked", name, unique)
              yield* audited("api_key_created", name, unique)
              ;(replaced.length > 0 ? updated : created).push(name)
            }
          })).pipe(Effect.ensuring(forgetActive))
          return { created, updated, revoked }
        }).pipe(Events.withActor("config"))
    }
    return service
  }
)

export const layer: Layer.Layer<ApiKeys, never, SqlClient.SqlClient | TokenStore.TokenStore> = Layer.effect(ApiKeys, make)

/** The store and its keys, on whichever database `SqlClient` is. */
const layerWithStore = layer.pipe(Layer.provideMerge(TokenStore.layer))

/**
 * The store and the keys on `database` (a SQLite file, created with its directory, in WAL
 * mode, or a PostgreSQL database), through one client, which is in the output too.
 */
export const layerOn = (
  database: TokenStore.Database
): Layer.Layer<ApiKeys | TokenStore.TokenStore | SqlClient.SqlClient, StoreError | TokenStore.CryptoError, Crypto.Keyring> =>
  TokenStore.onDatabase(database, layerWithStore)

/** The store and the keys on one SQLite database file (created with its directory), in WAL mode. */
export const layerSqlite = (filename: string) => layerOn({ _tag: "sqlite", filename })

/** The store and the keys on a PostgreSQL database, through one pool (its `PgClient` in the output too). */
export const layerPg = (url: Redacted.Redacted<string>) => TokenStore.onPostgres(url, layerWithStore)

/** An in-memory store with its keys: for tests. */
export const layerMemory = layerSqlite(":memory:")

/**
 * The store and keys on the configured database: `TESSERA_DATABASE_URL` (PostgreSQL) if set,
 * else `TESSERA_DB` (default `./data/tessera.db`). What the service runs on.
 */
export const layerConfig: Layer.Layer<
  ApiKeys | TokenStore.TokenStore | SqlClient.SqlClient,
  StoreError | TokenStore.CryptoError | ConfigError.ConfigError,
  Crypto.Keyring
> = Layer.unwrapEffect(Effect.map(TokenStore.databaseConfig, layerOn))

/**
 * Parses `name:scope[+scope]:key,…`. Errors name the entry by its name or position, never
 * by its key.
 */
export const parseDeclared = (text: Redacted.Redacted<string>): Either.Either<ReadonlyArray<Declared>, string> => {
  const declared: Array<Declared> = []
  const entries = Redacted.value(text).split(",").map((entry) => entry.trim()).filter((entry) => entry.length > 0)
  for (const [index, entry] of entries.entries()) {
    const first = entry.indexOf(":")
    const second = first < 0 ? -1 : entry.indexOf(":", first + 1)
    if (second < 0) return Either.left(`entry ${index + 1} is not name:scope[+scope]:key`)
    const rawName = entry.slice(0, first)
    const name = Schema.decodeUnknownEither(ApiKeyName)(rawName)
    if (Either.isLeft(name)) return Either.left(`entry ${index + 1}: ${name.left.message}`)
    const scopes = Schema.decodeUnknownEither(Scopes)(entry.slice(first + 1, second).split("+"))
    if (Either.isLeft(scopes)) {
      return Either.left(`key '${rawName}': scopes must be read, token or admin joined with + (e.g. read+token)`)
    }
    const secret = Redacted.make(entry.slice(second + 1))
    const problem = secretProblem(secret)
    if (Option.isSome(problem)) return Either.left(`key '${rawName}': ${problem.value}`)
    if (declared.some((other) => other.name === name.right)) return Either.left(`key '${rawName}' is declared twice`)
    declared.push({ name: name.right, scopes: scopes.right, secret })
  }
  return Either.right(declared)
}

/** The keys `TESSERA_API_KEYS` declares (none when it is unset). */
export const declaredConfig: Config.Config<ReadonlyArray<Declared>> = Config.option(Config.redacted("TESSERA_API_KEYS")).pipe(
  Config.mapOrFail((text) =>
    Option.match(text, {
      onNone: () => Either.right([]),
      onSome: (value) =>
        Either.mapLeft(parseDeclared(value), (reason) => ConfigError.InvalidData(["TESSERA_API_KEYS"], reason))
    })
  )
)
