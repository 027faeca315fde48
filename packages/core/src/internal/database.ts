/**
 * Which database the store lives in, from the environment: PostgreSQL when
 * `TESSERA_DATABASE_URL` is a `postgres://` or `postgresql://` URL (several instances share
 * it), else the SQLite file `TESSERA_DB`. The URL is `Redacted`: it usually holds a
 * password, so it is only ever shown through `describe`, which leaves the password out.
 */
import { Config, ConfigError, Either, Option, Redacted } from "effect"

export type Database =
  | { readonly _tag: "sqlite"; readonly filename: string }
  | { readonly _tag: "postgres"; readonly url: Redacted.Redacted<string> }

/** The database file from `TESSERA_DB` (default `./data/tessera.db`). */
export const dbPathConfig: Config.Config<string> = Config.string("TESSERA_DB").pipe(Config.withDefault("./data/tessera.db"))

const POSTGRES_URL = /^postgres(?:ql)?:\/\//i

export const isPostgresUrl = (url: string): boolean => POSTGRES_URL.test(url.trim())

/**
 * `TESSERA_DATABASE_URL` (a PostgreSQL URL) if it is set and not empty, else `TESSERA_DB`.
 * Any other kind of URL is a configuration error: silently falling back to a local file
 * would split instances that were meant to share one database.
 */
export const databaseConfig: Config.Config<Database> = Config.all([
  Config.option(Config.redacted("TESSERA_DATABASE_URL")),
  dbPathConfig
]).pipe(
  Config.mapOrFail(([url, filename]): Either.Either<Database, ConfigError.ConfigError> => {
    if (Option.isNone(url) || Redacted.value(url.value).trim() === "") return Either.right({ _tag: "sqlite", filename })
    return isPostgresUrl(Redacted.value(url.value))
      ? Either.right({ _tag: "postgres", url: Redacted.make(Redacted.value(url.value).trim()) })
      : Either.left(ConfigError.InvalidData(
        ["TESSERA_DATABASE_URL"],
        "TESSERA_DATABASE_URL must be a postgres:// or postgresql:// URL (leave it unset to use the SQLite file TESSERA_DB)"
      ))
  })
)

/**
 * The database as it may be shown in logs and messages: the file, or the PostgreSQL URL's
 * user, host, port and database, never its password or query parameters.
 */
export const describe = (database: Database): string => {
  if (database._tag === "sqlite") return database.filename
  try {
    const url = new URL(Redacted.value(database.url))
    const user = url.username === "" ? "" : `${decodeURIComponent(url.username)}@`
    return `${url.protocol}//${user}${url.host}${url.pathname === "/" ? "" : url.pathname}`
  } catch {
    return "postgres://(a URL that cannot be shown)"
  }
}

/** `text` with every occurrence of the URL's password masked: for driver messages. */
export const scrub = (database: Database, text: string): string => {
  if (database._tag === "sqlite") return text
  const raw = Redacted.value(database.url)
  const secrets = [raw]
  try {
    const url = new URL(raw)
    if (url.password !== "") secrets.push(url.password, decodeURIComponent(url.password))
    const fromQuery = url.searchParams.get("password")
    if (fromQuery !== null && fromQuery !== "") secrets.push(fromQuery)
  } catch {
    // the whole URL is masked below anyway
  }
  return secrets.reduce((out, secret) => out.split(secret).join("***"), text)
}
