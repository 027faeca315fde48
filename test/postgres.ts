/**
 * The machine's PostgreSQL server for tests (127.0.0.1:5432, trust authentication, user
 * `postgres`): whether it answers, and a fresh database for each test that needs one
 * (`tessera_test_<random>`, created through the `postgres` database and dropped `WITH
 * (FORCE)` when the test's scope closes), so runs and parallel test files never meet.
 */
import { SqlClient } from "@effect/sql"
import { PgClient } from "@effect/sql-pg"
import { Effect, Layer, Redacted } from "effect"
import type { Scope } from "effect"
import * as crypto from "node:crypto"
import * as net from "node:net"
import * as Services from "./services.js"

export const HOST = process.env["TESSERA_TEST_PG_HOST"] ?? "127.0.0.1"
export const PORT = Number(process.env["TESSERA_TEST_PG_PORT"] ?? 5432)
export const USER = process.env["TESSERA_TEST_PG_USER"] ?? "postgres"

export const url = (database: string) => `postgres://${USER}@${HOST}:${PORT}/${database}`

const admin = PgClient.layer({ url: Redacted.make(url("postgres")), connectTimeout: "5 seconds", maxConnections: 2 })

/** Runs `effect` on the `postgres` database as the admin user. */
const asAdmin = <A, E>(effect: Effect.Effect<A, E, SqlClient.SqlClient>) =>
  Effect.scoped(Effect.provide(effect, admin))

const portOpen = () =>
  new Promise<boolean>((resolve) => {
    const socket = net.connect(PORT, HOST)
    socket.setTimeout(2000)
    socket.once("connect", () => (socket.destroy(), resolve(true)))
    socket.once("timeout", () => (socket.destroy(), resolve(false)))
    socket.once("error", () => resolve(false))
  })

/** Whether PostgreSQL answers a query on the `postgres` database (within a few seconds). */
export const probe = async (): Promise<boolean> =>
  (await portOpen()) &&
  Effect.runPromise(asAdmin(Effect.flatMap(SqlClient.SqlClient, (sql) => sql`SELECT 1`)).pipe(
    Effect.as(true),
    Effect.orElseSucceed(() => false)
  ))

export const service: Services.Service = {
  name: `PostgreSQL on ${HOST}:${PORT} (user ${USER})`,
  tests: "the PostgreSQL store tests"
}

/** Declares a suite that needs PostgreSQL (see `Services.describeWith`). */
export const describeWithPostgres = (name: string, available: boolean, body: () => void) =>
  Services.describeWith(name, available, service, body)

/** A new, empty database, dropped (connections and all) when the scope closes: its URL. */
export const freshDatabase: Effect.Effect<string, never, Scope.Scope> = Effect.acquireRelease(
  Effect.gen(function*() {
    const name = `tessera_test_${crypto.randomBytes(6).toString("hex")}`
    yield* asAdmin(Effect.flatMap(SqlClient.SqlClient, (sql) => sql.unsafe(`CREATE DATABASE ${name}`)))
    return name
  }).pipe(Effect.orDie),
  (name) =>
    asAdmin(Effect.flatMap(SqlClient.SqlClient, (sql) => sql.unsafe(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`))).pipe(
      Effect.orDie
    )
).pipe(Effect.map(url))

/** A client of its own on the database at `databaseUrl`: for looking at rows as an outsider. */
export const client = (databaseUrl: string): Layer.Layer<SqlClient.SqlClient | PgClient.PgClient> =>
  PgClient.layer({ url: Redacted.make(databaseUrl), maxConnections: 2 }).pipe(Layer.orDie)

const asBytes = (value: unknown): Buffer =>
  value instanceof Uint8Array ? Buffer.from(value) : Buffer.from(value === null ? "" : String(value), "utf8")

/**
 * Everything the database at `databaseUrl` holds: its tables, and every value of every row
 * of them as bytes (byte columns as the bytes they hold, others as text), to look for
 * plaintext secrets.
 */
export const contents = (databaseUrl: string): Effect.Effect<{ readonly tables: ReadonlyArray<string>; readonly values: ReadonlyArray<Buffer> }> =>
  Effect.scoped(Effect.provide(
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const tables = (yield* sql<{ name: string }>`SELECT table_name AS name FROM information_schema.tables
        WHERE table_schema = current_schema()`).map((row) => row.name)
      const values: Array<Buffer> = []
      for (const table of tables) {
        for (const row of yield* sql<Record<string, unknown>>`SELECT * FROM ${sql(table)}`) values.push(...Object.values(row).map(asBytes))
      }
      return { tables, values }
    }),
    client(databaseUrl)
  )).pipe(Effect.orDie)
