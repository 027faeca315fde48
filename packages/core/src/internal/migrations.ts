/**
 * The store's schema, as ordered migrations for the `@effect/sql` Migrator. A migration is
 * never edited once released: a change of schema is a new entry.
 */
import { SqlClient } from "@effect/sql"
import { Effect } from "effect"

export const migrations: Record<string, Effect.Effect<void, unknown, SqlClient.SqlClient>> = {
  "0001_initial": Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    yield* sql`CREATE TABLE IF NOT EXISTS meta (
      key TEXT PRIMARY KEY,
      value BLOB
    )`
    yield* sql`CREATE TABLE accounts (
      account_id TEXT PRIMARY KEY,
      provider TEXT NOT NULL,
      pool TEXT NOT NULL,
      source_type TEXT NOT NULL,
      source_enc BLOB NOT NULL,
      label TEXT,
      created_at INTEGER NOT NULL
    )`
    yield* sql`CREATE INDEX accounts_pool ON accounts (pool)`
    yield* sql`CREATE TABLE token_state (
      account_id TEXT PRIMARY KEY REFERENCES accounts (account_id) ON DELETE CASCADE,
      version INTEGER NOT NULL DEFAULT 0,
      token_enc BLOB,
      expires_at INTEGER,
      issued_at INTEGER,
      origin TEXT,
      invalid_reason TEXT,
      invalid_at INTEGER,
      last_error_code TEXT,
      last_error_message TEXT,
      last_error_at INTEGER,
      last_refreshed_at INTEGER,
      last_used_at INTEGER,
      username TEXT,
      rl_limit INTEGER,
      rl_remaining INTEGER,
      rl_reset_at INTEGER,
      rl_resource TEXT,
      rl_limited INTEGER NOT NULL DEFAULT 0,
      updated_at INTEGER NOT NULL
    )`
    yield* sql`CREATE TABLE audit_log (
      id INTEGER PRIMARY KEY AUTOINCREMENT,
      at INTEGER NOT NULL,
      actor TEXT NOT NULL,
      type TEXT NOT NULL,
      account_id TEXT,
      outcome TEXT NOT NULL,
      detail TEXT NOT NULL,
      data TEXT NOT NULL
    )`
    yield* sql`CREATE INDEX audit_log_account ON audit_log (account_id, id)`
    yield* sql`CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
      BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END`
    yield* sql`CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
      BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END`
  }),
  "0002_api_keys": Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    // Keys are stored as their SHA-256 only; a revoked key keeps its row (and its hash, so the
    // same secret can never be registered again).
    yield* sql`CREATE TABLE api_keys (
      id INTEGER PRIMARY KEY AUTOINCREMENT,
      name TEXT NOT NULL,
      scopes TEXT NOT NULL,
      key_hash BLOB NOT NULL UNIQUE,
      created_at INTEGER NOT NULL,
      revoked_at INTEGER
    )`
    yield* sql`CREATE UNIQUE INDEX api_keys_active_name ON api_keys (name) WHERE revoked_at IS NULL`
  }),
  "0003_refresh_leases": Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    // Who renews an account's token right now, across every process sharing the database:
    // the holder named by `owner` until `expires_at` (epoch milliseconds), then anyone.
    yield* sql`CREATE TABLE refresh_leases (
      account_id TEXT PRIMARY KEY REFERENCES accounts (account_id) ON DELETE CASCADE,
      owner TEXT NOT NULL,
      expires_at INTEGER NOT NULL
    )`
  })
}
