/**
 * The store's schema, as ordered migrations for the `@effect/sql` Migrator, for SQLite and
 * PostgreSQL alike: one list, the same names, the same tables, columns, indexes and rules.
 * Where the dialects differ the difference is spelled here once: byte columns are `BLOB` or
 * `BYTEA`, integers (epoch milliseconds among them) `INTEGER` or `BIGINT`, generated keys
 * `AUTOINCREMENT` or an identity column, and the append-only audit log is enforced by
 * triggers that raise in SQLite's way or through a plpgsql function (which also refuses
 * `TRUNCATE`, a way around row triggers that SQLite does not have). A migration is never
 * edited once released: a change of schema is a new entry. The SQLite statements are the
 * ones first released.
 */
import { SqlClient } from "@effect/sql"
import type { SqlError, Statement } from "@effect/sql"
import { Effect } from "effect"

/** The column types that differ between the dialects. */
interface ColumnTypes {
  readonly bytes: Statement.Fragment
  /** A 64-bit integer: epoch milliseconds, counts, flags. */
  readonly integer: Statement.Fragment
  /** A generated 64-bit primary key. */
  readonly serial: Statement.Fragment
}

const columnTypes = (sql: SqlClient.SqlClient): ColumnTypes =>
  sql.onDialectOrElse({
    pg: () => ({
      bytes: sql.literal("BYTEA"),
      integer: sql.literal("BIGINT"),
      serial: sql.literal("BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY")
    }),
    orElse: () => ({
      bytes: sql.literal("BLOB"),
      integer: sql.literal("INTEGER"),
      serial: sql.literal("INTEGER PRIMARY KEY AUTOINCREMENT")
    })
  })

/**
 * The `meta` table (key check, write-lock row): the store creates it before it runs the
 * migrations, because the lock row serializes them.
 */
export const createMetaTable = (sql: SqlClient.SqlClient): Effect.Effect<void, SqlError.SqlError> =>
  Effect.asVoid(sql`CREATE TABLE IF NOT EXISTS meta (
      key TEXT PRIMARY KEY,
      value ${columnTypes(sql).bytes}
    )`)

/** Triggers that refuse every change of `table`'s rows with `message`. */
const appendOnly = (sql: SqlClient.SqlClient, table: string, message: string) =>
  sql.onDialectOrElse({
    pg: () =>
      Effect.gen(function*() {
        const refuse = `${table}_append_only`
        yield* sql`CREATE FUNCTION ${sql(refuse)}() RETURNS trigger LANGUAGE plpgsql AS ${
          sql.literal(`$$ BEGIN RAISE EXCEPTION '${message}'; END $$`)
        }`
        yield* sql`CREATE TRIGGER ${sql(`${table}_no_update`)} BEFORE UPDATE ON ${sql(table)}
          FOR EACH ROW EXECUTE FUNCTION ${sql(refuse)}()`
        yield* sql`CREATE TRIGGER ${sql(`${table}_no_delete`)} BEFORE DELETE ON ${sql(table)}
          FOR EACH ROW EXECUTE FUNCTION ${sql(refuse)}()`
        yield* sql`CREATE TRIGGER ${sql(`${table}_no_truncate`)} BEFORE TRUNCATE ON ${sql(table)}
          FOR EACH STATEMENT EXECUTE FUNCTION ${sql(refuse)}()`
      }),
    orElse: () =>
      Effect.gen(function*() {
        yield* sql`CREATE TRIGGER ${sql.literal(`${table}_no_update`)} BEFORE UPDATE ON ${sql.literal(table)}
      BEGIN SELECT RAISE(ABORT, ${sql.literal(`'${message}'`)}); END`
        yield* sql`CREATE TRIGGER ${sql.literal(`${table}_no_delete`)} BEFORE DELETE ON ${sql.literal(table)}
      BEGIN SELECT RAISE(ABORT, ${sql.literal(`'${message}'`)}); END`
      })
  })

/**
 * What `integrityCheck` looks for on PostgreSQL, which keeps its own pages consistent: the
 * tables, and the triggers that keep the audit log append-only.
 */
export const expectedTables = ["meta", "accounts", "token_state", "audit_log", "api_keys", "refresh_leases"] as const
export const auditTriggers = ["audit_log_no_update", "audit_log_no_delete", "audit_log_no_truncate"] as const

export const migrations: Record<string, Effect.Effect<void, unknown, SqlClient.SqlClient>> = {
  "0001_initial": Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const t = columnTypes(sql)
    yield* createMetaTable(sql)
    yield* sql`CREATE TABLE accounts (
      account_id TEXT PRIMARY KEY,
      provider TEXT NOT NULL,
      pool TEXT NOT NULL,
      source_type TEXT NOT NULL,
      source_enc ${t.bytes} NOT NULL,
      label TEXT,
      created_at ${t.integer} NOT NULL
    )`
    yield* sql`CREATE INDEX accounts_pool ON accounts (pool)`
    yield* sql`CREATE TABLE token_state (
      account_id TEXT PRIMARY KEY REFERENCES accounts (account_id) ON DELETE CASCADE,
      version ${t.integer} NOT NULL DEFAULT 0,
      token_enc ${t.bytes},
      expires_at ${t.integer},
      issued_at ${t.integer},
      origin TEXT,
      invalid_reason TEXT,
      invalid_at ${t.integer},
      last_error_code TEXT,
      last_error_message TEXT,
      last_error_at ${t.integer},
      last_refreshed_at ${t.integer},
      last_used_at ${t.integer},
      username TEXT,
      rl_limit ${t.integer},
      rl_remaining ${t.integer},
      rl_reset_at ${t.integer},
      rl_resource TEXT,
      rl_limited ${t.integer} NOT NULL DEFAULT 0,
      updated_at ${t.integer} NOT NULL
    )`
    yield* sql`CREATE TABLE audit_log (
      id ${t.serial},
      at ${t.integer} NOT NULL,
      actor TEXT NOT NULL,
      type TEXT NOT NULL,
      account_id TEXT,
      outcome TEXT NOT NULL,
      detail TEXT NOT NULL,
      data TEXT NOT NULL
    )`
    yield* sql`CREATE INDEX audit_log_account ON audit_log (account_id, id)`
    yield* appendOnly(sql, "audit_log", "the audit log is append-only")
  }),
  "0002_api_keys": Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const t = columnTypes(sql)
    // Keys are stored as their SHA-256 only; a revoked key keeps its row (and its hash, so the
    // same secret can never be registered again).
    yield* sql`CREATE TABLE api_keys (
      id ${t.serial},
      name TEXT NOT NULL,
      scopes TEXT NOT NULL,
      key_hash ${t.bytes} NOT NULL UNIQUE,
      created_at ${t.integer} NOT NULL,
      revoked_at ${t.integer}
    )`
    yield* sql`CREATE UNIQUE INDEX api_keys_active_name ON api_keys (name) WHERE revoked_at IS NULL`
  }),
  "0003_refresh_leases": Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const t = columnTypes(sql)
    // Who renews an account's token right now, across every process sharing the database:
    // the holder named by `owner` until `expires_at` (epoch milliseconds), then anyone.
    yield* sql`CREATE TABLE refresh_leases (
      account_id TEXT PRIMARY KEY REFERENCES accounts (account_id) ON DELETE CASCADE,
      owner TEXT NOT NULL,
      expires_at ${t.integer} NOT NULL
    )`
  }),
  "0004_pool_claims": Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    // Instances sharing a PostgreSQL database rotate a pool together (Cluster.ts): a claim
    // takes the pool's turn (a transaction-level advisory lock), then stamps the least recently
    // used usable token later than any before it, in one round trip. Each statement of a
    // PL/pgSQL function reads what committed before it, so the claim after the lock sees the
    // claim that held it. A claim records use, not a credential: its commit need not wait for
    // the disk. SQLite has no shared rotation.
    yield* sql.onDialectOrElse({
      pg: () =>
        sql`CREATE FUNCTION tessera_claim(p_pool TEXT, p_at BIGINT, p_usable_after BIGINT) RETURNS TEXT
          LANGUAGE plpgsql AS ${
          sql.literal(`$$
DECLARE
  stamp BIGINT;
  claimed TEXT;
BEGIN
  PERFORM set_config('synchronous_commit', 'off', true);
  PERFORM pg_advisory_xact_lock(hashtext('tessera.pool:' || p_pool));
  SELECT GREATEST(p_at, COALESCE(MAX(t.last_used_at), 0) + 1) INTO stamp
    FROM token_state t JOIN accounts a ON a.account_id = t.account_id WHERE a.pool = p_pool;
  UPDATE token_state SET last_used_at = stamp WHERE account_id = (
    SELECT t.account_id FROM token_state t JOIN accounts a ON a.account_id = t.account_id
    WHERE a.pool = p_pool AND t.token_enc IS NOT NULL AND t.invalid_reason IS NULL
      AND (t.expires_at IS NULL OR t.expires_at > p_usable_after)
      AND NOT ((t.rl_limited = 1 OR t.rl_remaining = 0) AND t.rl_reset_at IS NOT NULL AND t.rl_reset_at > p_at)
    ORDER BY t.last_used_at ASC NULLS FIRST, t.account_id
    LIMIT 1)
  RETURNING account_id INTO claimed;
  RETURN claimed;
END $$`)
        }`.pipe(Effect.asVoid),
      orElse: () => Effect.void
    })
  }),
  "0005_static_sources": Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const t = columnTypes(sql)
    // A copy of `source_enc`, written with it when the source is static (which holds no
    // secret), so a restore can skip that decryption: half of all those of a pool of static
    // tokens. A writer that changes `source_enc` without knowing this column (an older
    // version) leaves the two different, and the source is decrypted as before.
    yield* sql`ALTER TABLE accounts ADD COLUMN static_source_enc ${t.bytes}`
  })
}
