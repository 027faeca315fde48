/**
 * The store: accounts, their tokens and token state, and the append-only audit log, in
 * SQLite (SPEC §4.1) or, for several instances sharing one database, PostgreSQL (SPEC §9).
 * One implementation serves both: the statements are shared, and the few differences
 * (SQLite's session settings, how opening is serialized, rows bound as one JSON value, the
 * integrity check) are a small `Dialect` record. Tokens and source configurations (which
 * hold passwords, client secrets and refresh tokens) are encrypted with the keyring, bound
 * to their row. Every change is written together with its audit records in one transaction
 * that takes the write lock first (a row lock in both databases), so two processes sharing
 * the database never see `SQLITE_BUSY` and an acknowledged change always has its audit trail.
 */
import { Migrator, SqlClient } from "@effect/sql"
import type { SqlError, Statement } from "@effect/sql"
import { PgClient } from "@effect/sql-pg"
import { SqliteClient } from "@effect/sql-sqlite-node"
import { Config, ConfigError, Context, Effect, Either, Layer, Option, Redacted, Schedule, Schema } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import * as PgTypes from "pg-types"
import { Account, SourceConfig, StaticSource } from "./Account.js"
import type { AccountId } from "./Account.js"
import * as Crypto from "./Crypto.js"
import { AccountExists, StoreError } from "./Errors.js"
import { TokenEvent } from "./Events.js"
import * as Databases from "./internal/database.js"
import { auditTriggers, createMetaTable, expectedTables, migrations } from "./internal/migrations.js"
import { LastError, RateLimit } from "./Token.js"
import type { TokenOrigin, TokenRecord, TokenState } from "./Token.js"

export interface StoredAccount {
  readonly account: Account
  readonly state: TokenState
}

export interface AuditQuery {
  readonly accountId?: string | undefined
  readonly limit?: number | undefined
  /** Entries with an id below this one (paging backwards). */
  readonly before?: number | undefined
}

export class AuditEntry extends Schema.Class<AuditEntry>("@tessera/core/AuditEntry")({
  id: Schema.Number,
  ...TokenEvent.fields
}) {}

export type CryptoError = Crypto.DecryptionFailed | Crypto.UnknownEncryptionKey

export interface TokenStoreService {
  readonly loadAll: Effect.Effect<ReadonlyArray<StoredAccount>, StoreError | CryptoError>
  readonly load: (id: AccountId) => Effect.Effect<Option.Option<StoredAccount>, StoreError | CryptoError>
  readonly addAccount: (
    account: Account,
    state: TokenState,
    events: ReadonlyArray<TokenEvent>
  ) => Effect.Effect<void, AccountExists | StoreError>
  /**
   * Adds many accounts in one transaction: all or none, or, with `skipExisting`, all that are
   * not there yet (another process may have added the same declared accounts first).
   */
  readonly importAccounts: (
    entries: ReadonlyArray<StoredAccount>,
    events?: ReadonlyArray<TokenEvent>,
    options?: { readonly skipExisting?: boolean }
  ) => Effect.Effect<void, AccountExists | StoreError>
  /** Removes an account and its token; the audit log keeps its history. */
  readonly removeAccount: (id: AccountId, events: ReadonlyArray<TokenEvent>) => Effect.Effect<boolean, StoreError>
  /** Writes an account's whole token state, a new source configuration if given, and the events. */
  readonly saveState: (
    id: AccountId,
    state: TokenState,
    events: ReadonlyArray<TokenEvent>,
    source?: SourceConfig
  ) => Effect.Effect<void, StoreError>
  /**
   * Records usage — last use and rate-limit state, which need no encryption — for many
   * accounts, with the events, in one transaction: the coalesced write of busy pools.
   * `lastUses` are accounts whose last use alone changed. A stored last use never goes back,
   * here or in `saveState`: instances sharing the database, and a flush racing a commit,
   * may write them out of order.
   */
  readonly saveUsage: (
    usage: ReadonlyArray<{ readonly id: AccountId; readonly state: TokenState }>,
    events: ReadonlyArray<TokenEvent>,
    lastUses?: ReadonlyArray<{ readonly id: AccountId; readonly at: number }>
  ) => Effect.Effect<void, StoreError>
  /**
   * Takes (or extends) the refresh lease of an account for `owner` until `expiresAt`, unless
   * another owner holds an unexpired one (`now` is the caller's clock). One statement, so two
   * processes can never both hold it. False when someone else holds it.
   */
  readonly takeLease: (
    id: AccountId,
    lease: { readonly owner: string; readonly now: number; readonly expiresAt: number }
  ) => Effect.Effect<boolean, StoreError>
  /** Gives the lease back, if `owner` still holds it. */
  readonly releaseLease: (id: AccountId, owner: string) => Effect.Effect<void, StoreError>
  readonly appendAudit: (events: ReadonlyArray<TokenEvent>) => Effect.Effect<void, StoreError>
  readonly audit: (query: AuditQuery) => Effect.Effect<ReadonlyArray<AuditEntry>, StoreError>
  /**
   * Re-encrypts every stored secret that is not under the keyring's primary key, in one
   * transaction: interrupted, nothing changes; done, no value needs an older key any more.
   */
  readonly reencrypt: Effect.Effect<{ readonly rewritten: number }, StoreError | CryptoError>
  /** How many stored values each key id protects. */
  readonly keyUsage: Effect.Effect<ReadonlyMap<string, number>, StoreError>
  /**
   * Runs `effect` in a transaction that holds the write lock from its start (`BEGIN
   * IMMEDIATE` semantics): for other services that keep tables in the same database. Store
   * calls made inside it join the transaction.
   */
  readonly writeTransaction: <A, E, R>(
    effect: Effect.Effect<A, E, R>
  ) => Effect.Effect<A, Exclude<E, SqlError.SqlError> | StoreError, R>
  /**
   * `["ok"]` for a sound database, else what is wrong. On SQLite its own `PRAGMA
   * integrity_check`; on PostgreSQL, which checks its own pages, that every table of the
   * store and the audit log's append-only triggers are there.
   */
  readonly integrityCheck: Effect.Effect<ReadonlyArray<string>, StoreError>
  /** Whether the database answers: for health checks. */
  readonly ping: Effect.Effect<void, StoreError>
}

export class TokenStore extends Context.Tag("@tessera/core/TokenStore")<TokenStore, TokenStoreService>() {}

const storeError = (operation: string) => (error: SqlError.SqlError): StoreError => {
  const cause = error.cause
  const detail = cause instanceof Error ? cause.message : error.message
  return new StoreError({ operation, detail })
}

const tokenAad = (id: string) => Crypto.associatedData("token_state", id, "token")
const sourceAad = (id: string) => Crypto.associatedData("accounts", id, "source")
const KEY_CHECK_AAD = Crypto.associatedData("meta", "key_check", "value")
const KEY_CHECK_TEXT = "tessera key check"

const encodeSource = Schema.encodeSync(Schema.parseJson(SourceConfig))
const STATIC_SOURCE = new StaticSource()
/** `static_source_enc` for a source encrypted as `sourceEnc`: the same bytes when it is static. */
const staticCopy = (source: SourceConfig, sourceEnc: Uint8Array) => source._tag === "static" ? sourceEnc : null
/** Whether a row's source is static as its copy says: only while the copy is still `source_enc`'s bytes. */
const hasStaticCopy = (row: { readonly source_enc: Uint8Array; readonly static_source_enc: Uint8Array | null }) =>
  row.static_source_enc !== null && Buffer.compare(row.static_source_enc, row.source_enc) === 0
const decodeSource = Schema.decodeUnknownSync(Schema.parseJson(SourceConfig))

interface AccountRow {
  readonly account_id: string
  readonly provider: string
  readonly pool: string
  readonly source_enc: Uint8Array
  readonly label: string | null
  readonly created_at: number
  readonly token_enc: Uint8Array | null
  readonly expires_at: number | null
  readonly issued_at: number | null
  readonly origin: string | null
  readonly invalid_reason: string | null
  readonly invalid_at: number | null
  readonly last_error_code: string | null
  readonly last_error_message: string | null
  readonly last_error_at: number | null
  readonly last_refreshed_at: number | null
  readonly last_used_at: number | null
  readonly username: string | null
  readonly rl_limit: number | null
  readonly rl_remaining: number | null
  readonly rl_reset_at: number | null
  readonly rl_resource: string | null
  readonly rl_limited: number | null
  readonly static_source_enc: Uint8Array | null
}

const opt = <A>(value: A | null | undefined): Option.Option<A> => Option.fromNullable(value)
const orUndefined = <A>(value: A | null): A | undefined => value === null ? undefined : value

const rowToRateLimit = (row: AccountRow): Option.Option<RateLimit> =>
  row.rl_limit === null && row.rl_remaining === null && row.rl_reset_at === null && !row.rl_limited
    ? Option.none()
    : Option.some(
      new RateLimit({
        limit: orUndefined(row.rl_limit),
        remaining: orUndefined(row.rl_remaining),
        resetAt: orUndefined(row.rl_reset_at),
        resource: orUndefined(row.rl_resource),
        limited: row.rl_limited === 1
      }, true)
    )

const rowToState = (row: AccountRow, token: Option.Option<TokenRecord>): TokenState => ({
  token,
  invalid: row.invalid_reason === null ? Option.none() : Option.some({ reason: row.invalid_reason, at: row.invalid_at ?? 0 }),
  rateLimit: rowToRateLimit(row),
  lastError: row.last_error_code === null
    ? Option.none()
    : Option.some(
      new LastError({ code: row.last_error_code, message: row.last_error_message ?? "", at: row.last_error_at ?? 0 }, true)
    ),
  lastRefreshedAt: opt(row.last_refreshed_at),
  lastUsedAt: opt(row.last_used_at),
  username: opt(row.username)
})

const stateColumns = (state: TokenState) => {
  const token = Option.getOrUndefined(state.token)
  const rl = Option.getOrUndefined(state.rateLimit)
  const error = Option.getOrUndefined(state.lastError)
  const invalid = Option.getOrUndefined(state.invalid)
  return {
    expires_at: token ? Option.getOrNull(token.expiresAt) : null,
    issued_at: token?.issuedAt ?? null,
    origin: token?.origin ?? null,
    invalid_reason: invalid?.reason ?? null,
    invalid_at: invalid?.at ?? null,
    last_error_code: error?.code ?? null,
    last_error_message: error?.message ?? null,
    last_error_at: error?.at ?? null,
    last_refreshed_at: Option.getOrNull(state.lastRefreshedAt),
    last_used_at: Option.getOrNull(state.lastUsedAt),
    username: Option.getOrNull(state.username),
    rl_limit: rl?.limit ?? null,
    rl_remaining: rl?.remaining ?? null,
    rl_reset_at: rl?.resetAt ?? null,
    rl_resource: rl?.resource ?? null,
    rl_limited: rl?.limited ? 1 : 0
  }
}

/** The audit log's columns, in the order of `eventRow`. */
const AUDIT_COLUMNS: Columns = [
  ["at", "BIGINT"],
  ["actor", "TEXT"],
  ["type", "TEXT"],
  ["account_id", "TEXT"],
  ["outcome", "TEXT"],
  ["detail", "TEXT"],
  ["data", "TEXT"]
]
const eventRow = (event: TokenEvent) => [
  event.at,
  event.actor,
  event.type,
  event.accountId,
  event.outcome,
  event.detail,
  JSON.stringify(event.data)
]

/** The columns `saveUsage` writes, in the order of `usageRow`. */
const USAGE_COLUMNS: Columns = [
  ["account_id", "TEXT"],
  ["last_used_at", "BIGINT"],
  ["rl_limit", "BIGINT"],
  ["rl_remaining", "BIGINT"],
  ["rl_reset_at", "BIGINT"],
  ["rl_resource", "TEXT"],
  ["rl_limited", "BIGINT"]
]
const usageRow = (id: string, state: TokenState) => {
  const columns = stateColumns(state)
  return [
    id,
    columns.last_used_at,
    columns.rl_limit,
    columns.rl_remaining,
    columns.rl_reset_at,
    columns.rl_resource,
    columns.rl_limited
  ]
}
const LAST_USE_COLUMNS: Columns = [["account_id", "TEXT"], ["last_used_at", "BIGINT"]]

const decodeAuditRow = Schema.decodeUnknownSync(AuditEntry)

const isSqlError = (error: unknown): error is SqlError.SqlError =>
  typeof error === "object" && error !== null && "_tag" in error && error._tag === "SqlError"

/** Rows per statement in bulk writes (well under SQLite's parameter limit). */
const CHUNK = 500
/** Rows per statement in bulk writes that bind one JSON value (`Dialect.jsonRows`): some 10–25 ms of work each. */
const JSON_CHUNK = 5_000

/**
 * Lets Node's event loop turn. SQLite's driver is synchronous, so without it a write of
 * 100,000 rows would hold every request the process serves outside Effect (the HTTP fast
 * lane) until it is done. `setImmediate` runs after pending I/O, whatever the clock.
 */
const eventLoopTurn = Effect.async<void>((resume) => {
  const immediate = setImmediate(() => resume(Effect.void))
  return Effect.sync(() => clearImmediate(immediate))
})

/** Runs `write` for each batch of `JSON_CHUNK` items, letting the event loop turn between batches. */
const inBatches = <A, E, R>(items: ReadonlyArray<A>, write: (batch: ReadonlyArray<A>) => Effect.Effect<unknown, E, R>) =>
  Effect.forEach(
    chunksOf(items, JSON_CHUNK),
    (batch, i) => i === 0 ? write(batch) : Effect.zipRight(eventLoopTurn, write(batch)),
    { discard: true }
  )

type Columns = ReadonlyArray<readonly [name: string, type: "BIGINT" | "TEXT"]>

const chunksOf = <A>(items: ReadonlyArray<A>, size: number): Array<ReadonlyArray<A>> => {
  const chunks: Array<ReadonlyArray<A>> = []
  for (let i = 0; i < items.length; i += size) chunks.push(items.slice(i, i + size))
  return chunks
}

/** What differs between SQLite and PostgreSQL, beyond the column types of the migrations. */
interface Dialect {
  /**
   * Prepares the database and runs `migrate` in a transaction that holds the write lock, so
   * that processes opening the database at the same time wait for each other.
   */
  readonly open: <A, E, R>(migrate: Effect.Effect<A, E, R>) => Effect.Effect<A, E | SqlError.SqlError, R>
  /**
   * Rows given as one JSON array of arrays, as a subquery with these columns (in array
   * order, `n` numbering them): a bulk write binds one value, not one per field. Building
   * the statement and binding took most of a 100,000-row write when each field was bound.
   */
  readonly jsonRows: (rows: ReadonlyArray<ReadonlyArray<unknown>>, columns: Columns) => Statement.Fragment
  /** `["ok"]` for a sound database, else what is wrong, one line each. */
  readonly integrityCheck: Effect.Effect<ReadonlyArray<string>, SqlError.SqlError>
}

/**
 * PostgreSQL's transaction-scoped advisory lock that serializes opening the database (its
 * `CREATE TABLE IF NOT EXISTS` is not safe against a concurrent one). Other advisory locks
 * must use other keys.
 */
export const OPEN_LOCK_KEY = 0x7e55e4a

const makeDialect = (sql: SqlClient.SqlClient): Dialect => {
  // The lock row: `UPDATE meta SET value = value WHERE key = 'write_lock'` as a transaction's
  // first statement makes it wait for every other writer (see `make`).
  const lockRow = sql`INSERT INTO meta (key, value) VALUES ('write_lock', NULL) ON CONFLICT (key) DO NOTHING`
  const writeLock = sql`UPDATE meta SET value = value WHERE key = 'write_lock'`
  return sql.onDialectOrElse<Dialect, never, Dialect>({
    pg: () => ({
      open: (migrate) =>
        sql.withTransaction(Effect.gen(function*() {
          yield* sql`SELECT pg_advisory_xact_lock(${OPEN_LOCK_KEY})`
          yield* createMetaTable(sql)
          yield* lockRow
          yield* writeLock
          // The Migrator probes for its table with a statement that fails when it is missing,
          // which would abort this transaction: it is created here first, as the Migrator would.
          yield* sql`CREATE TABLE IF NOT EXISTS effect_sql_migrations (
            migration_id integer primary key,
            created_at timestamp with time zone not null default now(),
            name text not null
          )`
          return yield* migrate
        })),
      jsonRows: (rows, columns) =>
        sql`(SELECT ${sql.literal(columns.map(([name, type], i) => `CAST(e.value ->> ${i} AS ${type}) AS ${name}`).join(", "))}, e.n
          FROM json_array_elements(CAST(${JSON.stringify(rows)} AS json)) WITH ORDINALITY AS e(value, n))`,
      // PostgreSQL keeps its own pages consistent (and checksums them where enabled); there is
      // no SQL-level equivalent of SQLite's check without extensions. What can go wrong at
      // this level is a schema that is not the store's: a missing table, or an audit log
      // whose append-only triggers were dropped.
      integrityCheck: Effect.gen(function*() {
        const tables = new Set((yield* sql<{ name: string }>`SELECT table_name AS name FROM information_schema.tables
          WHERE table_schema = current_schema()`).map((row) => row.name))
        const triggers = new Set((yield* sql<{ name: string }>`SELECT tgname AS name FROM pg_trigger
          WHERE NOT tgisinternal AND tgrelid = to_regclass('audit_log')`).map((row) => row.name))
        const problems = [
          ...expectedTables.filter((table) => !tables.has(table)).map((table) => `table ${table} is missing`),
          ...auditTriggers.filter((trigger) => !triggers.has(trigger)).map((trigger) =>
            `trigger ${trigger} is missing: the audit log is not protected against changes`
          )
        ]
        return problems.length === 0 ? ["ok"] : problems
      })
    }),
    orElse: () => ({
      open: (migrate) =>
        Effect.gen(function*() {
          yield* sql.unsafe(`PRAGMA busy_timeout = ${SQLITE_BUSY_TIMEOUT_MS}`)
          yield* sql`PRAGMA foreign_keys = ON`
          yield* sql`PRAGMA synchronous = FULL`
          yield* createMetaTable(sql)
          yield* lockRow
          return yield* sql.withTransaction(Effect.zipRight(writeLock, migrate))
        }),
      jsonRows: (rows, columns) =>
        sql`(SELECT ${sql.literal(columns.map(([name], i) => `value ->> ${i} AS ${name}`).join(", "))}, key AS n
          FROM json_each(${JSON.stringify(rows)}))`,
      integrityCheck: Effect.map(
        sql<{ integrity_check: string }>`PRAGMA integrity_check`,
        (rows) => rows.map((row) => row.integrity_check)
      )
    })
  })
}

/** The store. Requires a `SqlClient` for SQLite or PostgreSQL, and the keyring. */
export const make: Effect.Effect<TokenStoreService, StoreError | CryptoError, SqlClient.SqlClient | Crypto.Keyring> =
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const keyring = yield* Crypto.Keyring
    const dialect = makeDialect(sql)

    // A read-then-write transaction must own the write lock from its first statement:
    // a deferred transaction that reads first fails with SQLITE_BUSY_SNAPSHOT when another
    // process writes in between, and no busy timeout helps. The client always says plain
    // BEGIN, so the first statement is a write to a lock row: `BEGIN IMMEDIATE` semantics.
    // On PostgreSQL the same statement takes the row's lock until the transaction ends, so
    // read-then-write transactions of every instance run one at a time there too.
    const writeLock = sql`UPDATE meta SET value = value WHERE key = 'write_lock'`
    const immediate = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
      sql.withTransaction(Effect.zipRight(writeLock, effect))

    yield* dialect.open(Migrator.make({})({ loader: Migrator.fromRecord(migrations) })).pipe(
      Effect.mapError((error) =>
        error._tag === "SqlError" ? storeError("migrate")(error) : new StoreError({ operation: "migrate", detail: error.message })
      )
    )

    // A wrong key is a startup error, never garbage later: the database remembers a value
    // encrypted under the key it was first opened with.
    const keyCheck = yield* immediate(Effect.gen(function*() {
      const rows = yield* sql<{ value: Uint8Array }>`SELECT value FROM meta WHERE key = 'key_check'`
      if (rows.length > 0) return Option.some(rows[0].value)
      const blob = yield* keyring.encrypt(Redacted.make(KEY_CHECK_TEXT), KEY_CHECK_AAD)
      yield* sql`INSERT INTO meta (key, value) VALUES ('key_check', ${blob})`
      return Option.none<Uint8Array>()
    })).pipe(Effect.mapError(storeError("open")))
    if (Option.isSome(keyCheck)) yield* keyring.decrypt(keyCheck.value, KEY_CHECK_AAD)

    /**
     * Decodes rows without per-row effects: restoring 100,000 accounts must be quick. Rows were
     * validated when written, so classes are built without validating again, identical
     * source configurations (every `remote` account's, say) are decoded once per load, and a
     * static source, which holds nothing, is not decrypted (`static_source_enc`).
     */
    const decodeRows = (rows: ReadonlyArray<AccountRow>): Effect.Effect<Array<StoredAccount>, CryptoError> =>
      Effect.suspend(() => {
        const sources = new Map<string, SourceConfig>()
        const out: Array<StoredAccount> = []
        const decodeOnce = (json: string) => {
          let source = sources.get(json)
          if (source === undefined) {
            source = decodeSource(json)
            sources.set(json, source)
          }
          return source
        }
        for (const row of rows) {
          const decoded = hasStaticCopy(row)
            ? Either.right(STATIC_SOURCE)
            : keyring.openWith(row.source_enc, sourceAad(row.account_id), decodeOnce)
          if (Either.isLeft(decoded)) return Effect.fail(decoded.left)
          const source = decoded.right
          let token: Option.Option<TokenRecord> = Option.none()
          if (row.token_enc !== null) {
            const value = keyring.open(row.token_enc, tokenAad(row.account_id))
            if (Either.isLeft(value)) return Effect.fail(value.left)
            token = Option.some({
              token: value.right,
              expiresAt: opt(row.expires_at),
              issuedAt: row.issued_at ?? row.created_at,
              origin: (row.origin ?? "restored") as TokenOrigin
            })
          }
          const account = new Account({
            id: row.account_id as AccountId,
            provider: row.provider,
            pool: row.pool,
            source,
            label: orUndefined(row.label),
            createdAt: row.created_at
          }, true)
          out.push({ account, state: rowToState(row, token) })
        }
        return Effect.succeed(out)
      })

    // Read as arrays, in this order, and made into `AccountRow`s by `accountRow`: the driver's
    // own objects (23 keys built one by one for each of 100,000 rows) took longer than all the
    // rest of a restore but the decryption.
    const selectAccounts = sql.literal(`SELECT a.account_id, a.provider, a.pool, a.source_enc, a.label, a.created_at,
      t.token_enc, t.expires_at, t.issued_at, t.origin, t.invalid_reason, t.invalid_at,
      t.last_error_code, t.last_error_message, t.last_error_at, t.last_refreshed_at, t.last_used_at,
      t.username, t.rl_limit, t.rl_remaining, t.rl_reset_at, t.rl_resource, t.rl_limited, a.static_source_enc
      FROM accounts a LEFT JOIN token_state t ON t.account_id = a.account_id`)
    const accountRow = (v: ReadonlyArray<unknown>): AccountRow => ({
      account_id: v[0] as string,
      provider: v[1] as string,
      pool: v[2] as string,
      source_enc: v[3] as Uint8Array,
      label: v[4] as string | null,
      created_at: v[5] as number,
      token_enc: v[6] as Uint8Array | null,
      expires_at: v[7] as number | null,
      issued_at: v[8] as number | null,
      origin: v[9] as string | null,
      invalid_reason: v[10] as string | null,
      invalid_at: v[11] as number | null,
      last_error_code: v[12] as string | null,
      last_error_message: v[13] as string | null,
      last_error_at: v[14] as number | null,
      last_refreshed_at: v[15] as number | null,
      last_used_at: v[16] as number | null,
      username: v[17] as string | null,
      rl_limit: v[18] as number | null,
      rl_remaining: v[19] as number | null,
      rl_reset_at: v[20] as number | null,
      rl_resource: v[21] as string | null,
      rl_limited: v[22] as number | null,
      static_source_enc: v[23] as Uint8Array | null
    })
    const accountRows = (rows: ReadonlyArray<ReadonlyArray<unknown>>) => rows.map(accountRow)

    const encryptToken = (id: string, state: TokenState) =>
      Option.match(state.token, {
        onNone: () => Effect.succeed(null),
        onSome: (record) => keyring.encrypt(record.token, tokenAad(id))
      })

    const insertEvents = (events: ReadonlyArray<TokenEvent>) =>
      inBatches(events, (batch) =>
        sql`INSERT INTO audit_log (at, actor, type, account_id, outcome, detail, data)
          SELECT at, actor, type, account_id, outcome, detail, data
          FROM ${dialect.jsonRows(batch.map(eventRow), AUDIT_COLUMNS)} AS v ORDER BY n`)

    /** Keeps the later of the stored last use and the one written (`v`), which may be older or absent. */
    const laterUse = (written: string) =>
      sql.literal(`CASE WHEN token_state.last_used_at IS NULL OR ${written}.last_used_at > token_state.last_used_at
        THEN ${written}.last_used_at ELSE token_state.last_used_at END`)

    const upsertState = (id: string, state: TokenState, tokenEnc: Uint8Array | null, now: number) => {
      const row = { account_id: id, token_enc: tokenEnc, ...stateColumns(state), updated_at: now }
      return sql`INSERT INTO token_state ${sql.insert(row)}
        ON CONFLICT (account_id) DO UPDATE SET ${sql.update(row, ["account_id", "last_used_at"])},
          last_used_at = ${laterUse("excluded")}, version = token_state.version + 1`
    }

    const now = Effect.clockWith((clock) => clock.currentTimeMillis)

    const service: TokenStoreService = {
      loadAll: sql`${selectAccounts}`.values.pipe(
        Effect.mapError(storeError("load accounts")),
        Effect.flatMap((rows) => decodeRows(accountRows(rows)))
      ),
      load: (id) =>
        sql`${selectAccounts} WHERE a.account_id = ${id}`.values.pipe(
          Effect.mapError(storeError("load account")),
          Effect.map(accountRows),
          Effect.flatMap((rows) =>
            rows.length === 0 ? Effect.succeedNone : Effect.map(decodeRows(rows), (decoded) => Option.some(decoded[0]!))
          )
        ),
      addAccount: (account, state, events) => service.importAccounts([{ account, state }], events),
      importAccounts: (entries, events = [], options = {}) =>
        Effect.gen(function*() {
          const at = yield* now
          const rows = yield* Effect.forEach(entries, ({ account, state }) =>
            Effect.all({
              account: Effect.map(
                keyring.encrypt(Redacted.make(encodeSource(account.source)), sourceAad(account.id)),
                (sourceEnc) => ({
                  account_id: account.id,
                  provider: account.provider,
                  pool: account.pool,
                  source_type: account.source._tag,
                  source_enc: sourceEnc,
                  static_source_enc: staticCopy(account.source, sourceEnc),
                  label: account.label ?? null,
                  created_at: account.createdAt
                })
              ),
              state: Effect.map(encryptToken(account.id, state), (tokenEnc) => ({
                account_id: account.id,
                token_enc: tokenEnc,
                ...stateColumns(state),
                updated_at: at
              }))
            }))
          const skipped = new Set<string>()
          yield* immediate(Effect.gen(function*() {
            for (const chunk of chunksOf(rows, CHUNK)) {
              const ids = chunk.map((row) => row.account.account_id)
              const existing = yield* sql<{ account_id: string }>`SELECT account_id FROM accounts WHERE ${sql.in("account_id", ids)}`
              if (existing.length > 0 && options.skipExisting !== true) {
                return yield* new AccountExists({ accountId: existing[0]!.account_id })
              }
              const skip = new Set(existing.map((row) => row.account_id))
              const fresh = chunk.filter((row) => !skip.has(row.account.account_id))
              skip.forEach((id) => skipped.add(id))
              if (fresh.length === 0) continue
              yield* sql`INSERT INTO accounts ${sql.insert(fresh.map((row) => row.account))}`
              yield* sql`INSERT INTO token_state ${sql.insert(fresh.map((row) => row.state))}`
            }
            yield* insertEvents(events.filter((event) => event.accountId === null || !skipped.has(event.accountId)))
          }))
        }).pipe(Effect.catchTag("SqlError", (error) => Effect.fail(storeError("import accounts")(error)))),
      removeAccount: (id, events) =>
        immediate(Effect.gen(function*() {
          const existing = yield* sql`SELECT 1 FROM accounts WHERE account_id = ${id}`
          if (existing.length === 0) return false
          yield* sql`DELETE FROM accounts WHERE account_id = ${id}`
          yield* insertEvents(events)
          return true
        })).pipe(Effect.mapError(storeError("remove account"))),
      saveState: (id, state, events, source) =>
        Effect.gen(function*() {
          const tokenEnc = yield* encryptToken(id, state)
          const sourceEnc = source === undefined
            ? undefined
            : yield* keyring.encrypt(Redacted.make(encodeSource(source)), sourceAad(id))
          const at = yield* now
          yield* immediate(Effect.gen(function*() {
            if (source !== undefined && sourceEnc !== undefined) {
              yield* sql`UPDATE accounts SET source_type = ${source._tag}, source_enc = ${sourceEnc},
                static_source_enc = ${staticCopy(source, sourceEnc)} WHERE account_id = ${id}`
            }
            yield* upsertState(id, state, tokenEnc, at)
            yield* insertEvents(events)
          }))
        }).pipe(Effect.mapError(storeError("save token state"))),
      takeLease: (id, { expiresAt, now: at, owner }) =>
        sql<{ owner: string }>`INSERT INTO refresh_leases (account_id, owner, expires_at)
          VALUES (${id}, ${owner}, ${expiresAt})
          ON CONFLICT (account_id) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at
          WHERE refresh_leases.owner = excluded.owner OR refresh_leases.expires_at <= ${at}
          RETURNING owner`.pipe(
          Effect.map((rows) => rows.length > 0),
          Effect.mapError(storeError("take a refresh lease"))
        ),
      releaseLease: (id, owner) =>
        sql`DELETE FROM refresh_leases WHERE account_id = ${id} AND owner = ${owner}`.pipe(
          Effect.asVoid,
          Effect.mapError(storeError("release a refresh lease"))
        ),
      saveUsage: (usage, events, lastUses = []) =>
        immediate(Effect.gen(function*() {
          // accounts removed meanwhile simply match no row
          yield* inBatches(lastUses, (batch) =>
            sql`UPDATE token_state SET last_used_at = v.last_used_at
              FROM ${dialect.jsonRows(batch.map(({ at, id }) => [id, at]), LAST_USE_COLUMNS)} AS v
              WHERE token_state.account_id = v.account_id
                AND (token_state.last_used_at IS NULL OR v.last_used_at > token_state.last_used_at)`)
          yield* inBatches(usage, (batch) =>
            sql`UPDATE token_state SET last_used_at = ${laterUse("v")},
              rl_limit = v.rl_limit, rl_remaining = v.rl_remaining,
              rl_reset_at = v.rl_reset_at, rl_resource = v.rl_resource, rl_limited = v.rl_limited
              FROM ${dialect.jsonRows(batch.map(({ id, state }) => usageRow(id, state)), USAGE_COLUMNS)} AS v
              WHERE token_state.account_id = v.account_id`)
          yield* insertEvents(events)
        })).pipe(Effect.mapError(storeError("save usage"))),
      appendAudit: (events) => insertEvents(events).pipe(Effect.mapError(storeError("append audit"))),
      audit: (query) =>
        Effect.gen(function*() {
          const limit = Math.min(Math.max(query.limit ?? 100, 1), 10_000)
          const conditions = [
            ...(query.accountId === undefined ? [] : [sql`account_id = ${query.accountId}`]),
            ...(query.before === undefined ? [] : [sql`id < ${query.before}`])
          ]
          const rows = yield* sql<Record<string, unknown>>`SELECT id, at, actor, type, account_id, outcome, detail, data
            FROM audit_log WHERE ${sql.and(conditions)} ORDER BY id DESC LIMIT ${limit}`
          return rows.map((row) =>
            decodeAuditRow({
              id: row["id"],
              at: row["at"],
              actor: row["actor"],
              type: row["type"],
              accountId: row["account_id"],
              outcome: row["outcome"],
              detail: row["detail"],
              data: JSON.parse(String(row["data"]))
            })
          )
        }).pipe(Effect.mapError(storeError("read audit"))),
      reencrypt: immediate(Effect.gen(function*() {
        const primary = keyring.primary.id
        /** The value under the primary key, or nothing when it is there already. */
        const rewrap = (blob: Uint8Array, aad: string) =>
          keyring.keyIdOf(blob) === primary
            ? Effect.succeedNone
            : Effect.asSome(Effect.flatMap(keyring.decrypt(blob, aad), (plain) => keyring.encrypt(plain, aad)))
        let rewritten = 0
        const sources = yield* sql<{ account_id: string; source_enc: Uint8Array; static_source_enc: Uint8Array | null }>`SELECT account_id, source_enc, static_source_enc FROM accounts`
        for (const row of sources) {
          const blob = yield* rewrap(row.source_enc, sourceAad(row.account_id))
          if (Option.isNone(blob)) continue
          yield* sql`UPDATE accounts SET source_enc = ${blob.value}, static_source_enc = ${hasStaticCopy(row) ? blob.value : null}
            WHERE account_id = ${row.account_id}`
          rewritten++
        }
        const tokens = yield* sql<{ account_id: string; token_enc: Uint8Array }>`SELECT account_id, token_enc FROM token_state WHERE token_enc IS NOT NULL`
        for (const row of tokens) {
          const blob = yield* rewrap(row.token_enc, tokenAad(row.account_id))
          if (Option.isNone(blob)) continue
          yield* sql`UPDATE token_state SET token_enc = ${blob.value} WHERE account_id = ${row.account_id}`
          rewritten++
        }
        const check = yield* sql<{ value: Uint8Array }>`SELECT value FROM meta WHERE key = 'key_check'`
        if (check.length > 0) {
          const blob = yield* rewrap(check[0]!.value, KEY_CHECK_AAD)
          if (Option.isSome(blob)) {
            yield* sql`UPDATE meta SET value = ${blob.value} WHERE key = 'key_check'`
            rewritten++
          }
        }
        return { rewritten }
      })).pipe(Effect.catchTag("SqlError", (error) => Effect.fail(storeError("re-encrypt")(error)))),
      keyUsage: Effect.gen(function*() {
        const usage = new Map<string, number>()
        const count = (blob: Uint8Array | null) => {
          if (blob === null) return
          const id = keyring.keyIdOf(blob) ?? "unreadable"
          usage.set(id, (usage.get(id) ?? 0) + 1)
        }
        for (const row of yield* sql<{ blob: Uint8Array }>`SELECT source_enc AS blob FROM accounts`) count(row.blob)
        for (const row of yield* sql<{ blob: Uint8Array | null }>`SELECT token_enc AS blob FROM token_state`) count(row.blob)
        for (const row of yield* sql<{ blob: Uint8Array }>`SELECT value AS blob FROM meta WHERE key = 'key_check'`) count(row.blob)
        return usage as ReadonlyMap<string, number>
      }).pipe(Effect.mapError(storeError("key usage"))),
      writeTransaction: <A, E, R>(effect: Effect.Effect<A, E, R>) =>
        immediate(effect).pipe(
          Effect.mapError((error) =>
            isSqlError(error) ? storeError("transaction")(error) : error as Exclude<E, SqlError.SqlError>
          )
        ),
      integrityCheck: dialect.integrityCheck.pipe(Effect.mapError(storeError("integrity check"))),
      ping: sql`SELECT 1`.pipe(Effect.asVoid, Effect.mapError(storeError("ping")))
    }
    return service
  })

export const layer: Layer.Layer<TokenStore, StoreError | CryptoError, SqlClient.SqlClient | Crypto.Keyring> = Layer
  .effect(TokenStore, make)

/** Which database the store lives in: a SQLite file, or a PostgreSQL database several instances share. */
export type Database = Databases.Database

/** `TESSERA_DATABASE_URL` (a `postgres://` or `postgresql://` URL) if set, else the SQLite file `TESSERA_DB`. */
export const databaseConfig: Config.Config<Database> = Databases.databaseConfig

/** The database file from `TESSERA_DB` (default `./data/tessera.db`). */
export const dbPathConfig: Config.Config<string> = Databases.dbPathConfig

/** The database as logs and messages may show it: never a PostgreSQL password. */
export const describeDatabase: (database: Database) => string = Databases.describe

type OpenError<E> = StoreError | Exclude<E, { readonly _tag: "SqlError" | "ConfigError" }>

/**
 * `layers` with `client` provided and kept in the output, for whoever coordinates through the
 * same database; a failure to open, or any `SqlError` while building, is a `StoreError`.
 */
const openedWith = <A, E extends { readonly _tag: string }, R, C>(
  database: Database,
  client: Layer.Layer<C, { readonly _tag: string }>,
  layers: Layer.Layer<A, E, R>
): Layer.Layer<A | C, OpenError<E>, Exclude<R, C>> =>
  layers.pipe(
    Layer.provideMerge(client),
    Layer.catchAll((error: { readonly _tag: string }) =>
      Layer.fail(
        error._tag === "SqlError" || error._tag === "ConfigError"
          ? new StoreError({ operation: "open", detail: Databases.scrub(database, openFailure(database, error)) })
          : error as Exclude<E, { readonly _tag: "SqlError" | "ConfigError" }>
      )
    )
  )

const openFailure = (database: Database, error: { readonly _tag: string }): string => {
  if (database._tag === "sqlite") return String(error)
  const message = "message" in error && typeof error.message === "string" ? error.message : String(error)
  const cause = "cause" in error && error.cause instanceof Error ? error.cause.message : ""
  return cause === "" || cause === message ? message : `${message}: ${cause}`
}

/** How long a statement waits for another connection's lock before it fails with SQLITE_BUSY. */
const SQLITE_BUSY_TIMEOUT_MS = 15_000

/**
 * Puts the connection in WAL mode, waiting as long as any other statement would for another
 * process that holds the database. `SqliteClient` would set the mode the moment it opens, under
 * better-sqlite3's 5-second default timeout: a process that opened the file while another held
 * it longer failed with "database is locked" (once in CI). Should SQLite answer busy anyway, the
 * mode is asked for again until the same limit.
 */
const walMode = (sql: SqlClient.SqlClient) =>
  Effect.zipRight(
    sql.unsafe(`PRAGMA busy_timeout = ${SQLITE_BUSY_TIMEOUT_MS}`),
    sql`PRAGMA journal_mode = WAL`.pipe(Effect.retry({
      schedule: Schedule.spaced("10 millis").pipe(Schedule.jittered, Schedule.upTo(SQLITE_BUSY_TIMEOUT_MS)),
      while: (error) => /SQLITE_BUSY|database is locked/.test(`${error.message} ${String(error.cause)}`)
    }))
  )

/**
 * Opens `layers` (the store, and whatever else keeps tables in the same database) on one
 * SQLite file, created with its directory, in WAL mode; a failure to open is a `StoreError`.
 * The `SqlClient` is in the output too.
 */
export const onSqliteFile = <A, E extends { readonly _tag: string }, R>(
  filename: string,
  layers: Layer.Layer<A, E, R>
): Layer.Layer<A | SqlClient.SqlClient, OpenError<E>, Exclude<R, SqlClient.SqlClient>> =>
  openedWith(
    { _tag: "sqlite", filename },
    Layer.unwrapEffect(
      Effect.sync(() => {
        if (filename !== ":memory:") fs.mkdirSync(path.dirname(path.resolve(filename)), { recursive: true })
        const client = SqliteClient.layer({ filename, disableWAL: true })
        return Layer.provideMerge(Layer.effectDiscard(Effect.flatMap(SqlClient.SqlClient, walMode)), client)
      })
    ),
    layers
  )

const INT8_OID = 20

/**
 * `pg` answers BIGINT (and `COUNT(*)`) as strings, to be exact beyond 2^53; the store's
 * integers (epoch milliseconds, ids, counts) are far below that, so they come back as numbers.
 */
const pgTypes = {
  getTypeParser: (oid: number, format?: "text" | "binary") =>
    oid === INT8_OID && format !== "binary" ? Number : PgTypes.getTypeParser(oid, format)
}

/**
 * Opens `layers` (the store, and whatever else keeps tables in the same database) on a
 * PostgreSQL database through one connection pool; a failure to connect is a `StoreError`
 * whose message never holds the URL's password. The pool's `PgClient` (and it as the
 * `SqlClient`) is in the output too: LISTEN/NOTIFY and row locks of other services go
 * through the same pool.
 */
export const onPostgres = <A, E extends { readonly _tag: string }, R>(
  url: Redacted.Redacted<string>,
  layers: Layer.Layer<A, E, R>
): Layer.Layer<
  A | SqlClient.SqlClient | PgClient.PgClient,
  OpenError<E>,
  Exclude<R, SqlClient.SqlClient | PgClient.PgClient>
> =>
  openedWith(
    { _tag: "postgres", url },
    PgClient.layer({ url, types: pgTypes, applicationName: "tessera", connectTimeout: "10 seconds" }),
    layers
  )

/** Opens `layers` on `database`: `onSqliteFile` or `onPostgres`. */
export const onDatabase = <A, E extends { readonly _tag: string }, R>(
  database: Database,
  layers: Layer.Layer<A, E, R>
): Layer.Layer<A | SqlClient.SqlClient, OpenError<E>, Exclude<R, SqlClient.SqlClient | PgClient.PgClient>> =>
  database._tag === "sqlite" ? onSqliteFile(database.filename, layers) : onPostgres(database.url, layers)

/**
 * The PostgreSQL client the store runs on, when it runs on PostgreSQL (for LISTEN/NOTIFY and
 * row locks shared between instances); none on SQLite.
 */
export const postgresClient: Effect.Effect<Option.Option<PgClient.PgClient>, never, SqlClient.SqlClient> = Effect.map(
  SqlClient.SqlClient,
  (sql) => PgClient.TypeId in sql ? Option.some(sql as PgClient.PgClient) : Option.none()
)

/** SQLite on a file (created with its directory), in WAL mode. */
export const layerSqlite = (
  filename: string
): Layer.Layer<TokenStore | SqlClient.SqlClient, StoreError | CryptoError, Crypto.Keyring> => onSqliteFile(filename, layer)

/** An in-memory SQLite store: for tests and embedding apps that keep nothing. */
export const layerMemory: Layer.Layer<TokenStore | SqlClient.SqlClient, StoreError | CryptoError, Crypto.Keyring> =
  layerSqlite(":memory:")

/** PostgreSQL at `url` (`postgres://user:password@host:port/database`), shared by every instance. */
export const layerPg = (
  url: Redacted.Redacted<string>
): Layer.Layer<TokenStore | SqlClient.SqlClient | PgClient.PgClient, StoreError | CryptoError, Crypto.Keyring> =>
  onPostgres(url, layer)

/** The store on the configured database (see `databaseConfig`), with its `SqlClient`. */
export const layerConfig: Layer.Layer<
  TokenStore | SqlClient.SqlClient,
  StoreError | CryptoError | ConfigError.ConfigError,
  Crypto.Keyring
> = Layer.unwrapEffect(Effect.map(databaseConfig, (database) => onDatabase(database, layer)))

/**
 * Retries an effect that failed because the database was busy beyond the busy timeout (or,
 * on PostgreSQL, chose it as a deadlock's victim).
 */
export const retryBusy = <A, R>(effect: Effect.Effect<A, StoreError, R>): Effect.Effect<A, StoreError, R> =>
  Effect.retry(effect, {
    schedule: Schedule.exponential("20 millis").pipe(Schedule.intersect(Schedule.recurs(5))),
    while: (error) =>
      error.detail.includes("SQLITE_BUSY") || error.detail.includes("database is locked") ||
      error.detail.includes("deadlock detected")
  })
