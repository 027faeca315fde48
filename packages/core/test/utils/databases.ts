/**
 * The databases the store's tests run against, one suite for both (SPEC §4.1, §9): SQLite
 * (a file in a temporary directory) and PostgreSQL (a fresh database on the machine's server,
 * see `test/postgres.ts`; absent, its half of each suite is skipped with a message, or fails
 * when `TESSERA_REQUIRE_SERVICES=1`). Each test gets a new, empty database, a client of its
 * own on it (to look at and tamper with rows as someone with the database but not the key
 * would), and everything the database holds as bytes (to look for plaintext secrets).
 */
import { SqlClient } from "@effect/sql"
import { SqliteClient } from "@effect/sql-sqlite-node"
import { describe } from "@effect/vitest"
import { ApiKeys, Crypto, TokenStore } from "@tessera/core"
import { Effect, Layer, Redacted } from "effect"
import type { Array as Arr, Scope } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import * as Postgres from "../../../../test/postgres.js"
import { tempDir } from "./tempDir.js"

export type Kind = "sqlite" | "postgres"

export interface TestDatabase {
  readonly kind: Kind
  readonly database: TokenStore.Database
  /** Runs `effect` through a client of its own on the database, closed afterwards. */
  readonly raw: <A, E>(effect: Effect.Effect<A, E, SqlClient.SqlClient>) => Effect.Effect<A, E>
  /**
   * Everything the database keeps, as bytes: SQLite's file and its WAL; every value of every
   * row of every table on PostgreSQL (its byte columns as the bytes they hold).
   */
  readonly contents: Effect.Effect<ReadonlyArray<Buffer>>
}

export interface Backend {
  readonly kind: Kind
  /** "SQLite" or "PostgreSQL", for test names. */
  readonly title: string
  readonly available: boolean
  /** A new, empty database that lives as long as the scope. */
  readonly fresh: Effect.Effect<TestDatabase, never, Scope.Scope>
}

const sqlite: Backend = {
  kind: "sqlite",
  title: "SQLite",
  available: true,
  fresh: Effect.map(tempDir, (dir): TestDatabase => {
    const filename = path.join(dir, "tessera.db")
    return {
      kind: "sqlite",
      database: { _tag: "sqlite", filename },
      raw: (effect) => Effect.scoped(Effect.provide(effect, SqliteClient.layer({ filename }).pipe(Layer.orDie))),
      contents: Effect.sync(() => [filename, `${filename}-wal`].filter(fs.existsSync).map((file) => fs.readFileSync(file)))
    }
  })
}

const postgres = (available: boolean): Backend => ({
  kind: "postgres",
  title: "PostgreSQL",
  available,
  fresh: Effect.map(Postgres.freshDatabase, (url): TestDatabase => ({
    kind: "postgres",
    database: { _tag: "postgres", url: Redacted.make(url) },
    raw: (effect) => Effect.scoped(Effect.provide(effect, Postgres.client(url))),
    contents: Effect.map(Postgres.contents(url), (held) => held.values)
  }))
})

/** SQLite always; PostgreSQL when the machine's server answers. */
export const backends: ReadonlyArray<Backend> = [sqlite, postgres(await Postgres.probe())]

/**
 * Declares `name` once per database ("TokenStore on SQLite", "TokenStore on PostgreSQL"),
 * with the same tests.
 */
export const describeEachDatabase = (name: string, body: (backend: Backend) => void): void => {
  for (const backend of backends) {
    const title = `${name} on ${backend.title}`
    if (backend.kind === "sqlite") describe(title, () => body(backend))
    else Postgres.describeWithPostgres(title, backend.available, () => body(backend))
  }
}

/** The store on `database` with `keys` (the first is the primary). */
export const storeLayer = (database: TokenStore.Database, keys: Arr.NonEmptyReadonlyArray<Crypto.EncryptionKey>) =>
  TokenStore.onDatabase(database, TokenStore.layer).pipe(Layer.provide(Crypto.layerKeys(keys)))

/** The store and its API keys on `database` with `keys`. */
export const apiKeysLayer = (database: TokenStore.Database, keys: Arr.NonEmptyReadonlyArray<Crypto.EncryptionKey>) =>
  ApiKeys.layerOn(database).pipe(Layer.provide(Crypto.layerKeys(keys)))
