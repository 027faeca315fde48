/**
 * The checks of `tessera doctor` on the local installation: the configuration reads, the
 * database exists and every row of it reads and decrypts, the encryption key opens it (and
 * its key file is private), every value is under the current key, the accounts the
 * environment declares are registered, and every upstream in use answers. Each check is ok,
 * warn or fail, with one line saying why; a failing check never stops the others.
 */
import { FileSystem, HttpClient, HttpClientRequest } from "@effect/platform"
import type { Path } from "@effect/platform"
import { NodeHttpClient } from "@effect/platform-node"
import { Crypto, Upstream } from "@tessera/core"
import type { Settings, TokenStore } from "@tessera/core"
import { Bitbucket, Drivers, GitHub, GitLab, Upstox } from "@tessera/providers"
import { Array as Arr, Clock, Config, DateTime, Duration, Effect, Either, Logger, LogLevel, Option } from "effect"
import type { ConfigError, Redacted } from "effect"
import { NoDatabase } from "../Backend.js"
import type { BackendError, DoctorCheck, DoctorView } from "../Backend.js"
import { describeError } from "../Output.js"

/** The upstream base URLs the environment configures, by variable. */
const UPSTREAM_VARIABLES = [
  "AMP_API_URL",
  "TOKEN_REFRESH_SERVICE_URL",
  "UPSTOX_API_URL",
  "GITHUB_API_URL",
  "GITLAB_API_URL",
  "BITBUCKET_API_URL"
] as const

/** Each provider's public API and the variable that overrides it. */
const PROVIDER_DEFAULTS: Record<string, { readonly variable: string; readonly url: string }> = {
  github: { variable: "GITHUB_API_URL", url: GitHub.DEFAULT_API_URL },
  gitlab: { variable: "GITLAB_API_URL", url: GitLab.DEFAULT_BASE_URL },
  bitbucket: { variable: "BITBUCKET_API_URL", url: Bitbucket.DEFAULT_API_URL },
  upstox: { variable: "UPSTOX_API_URL", url: Upstox.DEFAULT_API_URL }
}

const REACHABILITY_TIMEOUT = Duration.seconds(5)

export interface Installation {
  readonly settings: Effect.Effect<Settings.SettingsShape, ConfigError.ConfigError>
  /** A SQLite file, or a PostgreSQL database (`TESSERA_DATABASE_URL`), which has no file to look for. */
  readonly kind: "sqlite" | "postgres"
  /** The database file as configured, and resolved (for PostgreSQL: its URL without the password). */
  readonly dbFile: string
  readonly dbPath: string
  readonly keyFromEnvironment: Effect.Effect<Option.Option<Redacted.Redacted<string>>, ConfigError.ConfigError>
  /** Opens the store with the configured key (and closes it after `use`). */
  readonly open: <A, E>(use: (store: TokenStore.TokenStoreService) => Effect.Effect<A, E>) => Effect.Effect<A, E | BackendError>
}

const configuredUpstreams = Effect.map(
  Effect.forEach(UPSTREAM_VARIABLES, (variable) =>
    Effect.map(Config.option(Config.url(variable)), (url) => Option.map(url, (u) => [variable, u.toString()] as const))),
  Arr.getSomes
)

/** Whether `url` answers at all: any HTTP status will do, a refused connection or silence will not. */
const reachable = (client: HttpClient.HttpClient, url: string) =>
  Effect.gen(function*() {
    const started = yield* Clock.currentTimeMillis
    const answer = yield* client.execute(HttpClientRequest.get(url)).pipe(
      Effect.timeoutFail({
        duration: REACHABILITY_TIMEOUT,
        onTimeout: () => `no answer within ${Duration.format(REACHABILITY_TIMEOUT)}`
      }),
      Effect.either
    )
    const elapsed = (yield* Clock.currentTimeMillis) - started
    return Either.match(answer, {
      onLeft: (error) => ({ status: "fail" as const, detail: `unreachable: ${typeof error === "string" ? error : describeError(error)}` }),
      onRight: (response) => ({ status: "ok" as const, detail: `answers (HTTP ${response.status}) in ${elapsed} ms` })
    })
  }).pipe(Effect.scoped)

export const run = (installation: Installation): Effect.Effect<DoctorView, never, FileSystem.FileSystem | Path.Path> =>
  Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    const checks: Array<DoctorCheck> = []
    const add = (name: string, status: DoctorCheck["status"], detail: string) => Effect.sync(() => void checks.push({ name, status, detail }))
    // The checks say what the keyring would warn about; its own warnings would only repeat them.
    const quietly = Logger.withMinimumLogLevel(LogLevel.Error)

    // --- configuration
    const configuration = yield* Effect.either(
      Effect.all([installation.settings, Upstream.retryPolicyConfig, configuredUpstreams, Drivers.accountsFromEnv])
    )
    const upstreams = Either.isRight(configuration) ? configuration.right[2] : []
    const declared = Either.isRight(configuration) ? configuration.right[3] : []
    yield* Either.match(configuration, {
      onLeft: (error) => add("configuration", "fail", describeError(error)),
      onRight: ([current, policy]) =>
        add(
          "configuration",
          "ok",
          `zone ${DateTime.zoneToString(current.timeZone)}, refresh window ${Duration.format(current.refreshWindow)}, ` +
            `${policy.maxAttempts} attempt(s) per upstream call, ${Duration.format(policy.requestTimeout)} timeout, ` +
            `${declared.length} account(s) declared by the environment`
        )
    })

    // --- the key
    const exists = installation.kind === "postgres" || (yield* Effect.orElseSucceed(fs.exists(installation.dbPath), () => false))
    if (!exists) yield* add("database", "fail", new NoDatabase({ path: installation.dbFile }).message)
    const fromEnvironment = yield* Effect.either(installation.keyFromEnvironment)
    if (Either.isRight(fromEnvironment) && Option.isSome(fromEnvironment.right)) {
      const keys = yield* Effect.either(Crypto.loadKeys.pipe(quietly))
      yield* Either.match(keys, {
        onLeft: (error) => add("key", "fail", describeError(error)),
        onRight: (list) => add("key", "ok", `TESSERA_ENCRYPTION_KEY, ${list.length} key(s), current ${list[0].id}`)
      })
    } else {
      const keyPath = yield* Effect.either(Crypto.keyFilePath)
      if (Either.isLeft(keyPath)) {
        yield* add("key", "fail", describeError(keyPath.left))
      } else if (!(yield* Effect.orElseSucceed(fs.exists(keyPath.right), () => false))) {
        yield* add(
          "key",
          exists ? "fail" : "warn",
          `key file ${keyPath.right} does not exist` + (exists ? "" : "; it is created with the database")
        )
      } else {
        const mode = yield* Effect.map(Effect.either(fs.stat(keyPath.right)), Either.match({ onLeft: () => 0, onRight: (info) => info.mode & 0o777 }))
        const keys = yield* Effect.either(Crypto.readKeyFile(keyPath.right).pipe(quietly))
        if (Either.isLeft(keys)) yield* add("key", "fail", describeError(keys.left))
        else if ((mode & 0o077) !== 0) {
          yield* add("key", "warn", `key file ${keyPath.right} has mode ${mode.toString(8)}; others can read it: chmod 600 ${keyPath.right}`)
        } else {
          yield* add("key", "ok", `key file ${keyPath.right} (mode ${mode.toString(8)}), ${keys.right.length} key(s), current ${keys.right[0].id}`)
        }
      }
    }

    // --- the database, read whole with the key
    let stored: ReadonlyArray<TokenStore.StoredAccount> = []
    if (exists) {
      const opened = yield* Effect.either(installation.open((store) =>
        Effect.gen(function*() {
          yield* store.ping
          const all = yield* store.loadAll
          yield* store.audit({ limit: 1 })
          return { all, usage: yield* store.keyUsage }
        })
      )).pipe(quietly)
      if (Either.isLeft(opened)) {
        const error = opened.left
        const keyProblem = error._tag === "DecryptionFailed" || error._tag === "UnknownEncryptionKey" ||
          error._tag === "InvalidEncryptionKey" || error._tag === "KeyFileMissing"
        const where = installation.kind === "postgres" && !keyProblem ? `PostgreSQL ${installation.dbFile}: ` : ""
        yield* add(keyProblem ? "key opens the database" : "database", "fail", `${where}${describeError(error)}`)
      } else {
        stored = opened.right.all
        const tokens = stored.filter((entry) => Option.isSome(entry.state.token)).length
        const where = installation.kind === "postgres" ? `PostgreSQL ${installation.dbFile} answers and` : `${installation.dbFile}:`
        yield* add("database", "ok", `${where} opens, ${stored.length} account(s) and ${tokens} token(s) read and decrypted`)
        const usage = [...opened.right.usage].filter(([, count]) => count > 0)
        const total = usage.reduce((sum, [, count]) => sum + count, 0)
        yield* add(
          "key opens the database",
          usage.length > 1 ? "warn" : "ok",
          usage.length > 1
            ? `stored values are under ${usage.length} keys (${usage.map(([id]) => id).join(", ")}): finish the rotation with \`tessera keys rotate\``
            : `all ${total} stored value(s) are under key ${usage[0]?.[0] ?? "-"}`
        )
      }
    }

    // --- accounts the environment declares that `tessera serve` has not registered yet
    const known = new Set<string>(stored.map((entry) => entry.account.id))
    const unregistered = declared.filter((entry) => !known.has(entry.account.id))
    if (exists && unregistered.length > 0) {
      const names = unregistered.slice(0, 5).map((entry) => entry.account.id).join(", ")
      yield* add(
        "declared accounts",
        "warn",
        `${unregistered.length} account(s) the environment declares are not in the database yet ` +
          `(${names}${unregistered.length > 5 ? ", …" : ""}): \`tessera serve\` registers them`
      )
    }

    // --- upstreams: what the environment configures, what accounts name, public APIs in use
    const targets = new Map<string, Array<string>>()
    const target = (url: string, user: string) => targets.set(url, [...(targets.get(url) ?? []), user])
    for (const [variable, url] of upstreams) target(url, variable)
    const configured = new Set<string>(upstreams.map(([variable]) => variable))
    for (const { account } of stored) {
      const source = account.source
      if (source._tag === "password" && source.baseUrl !== undefined) target(source.baseUrl, `account ${account.id}`)
      if (source._tag === "remote" && source.serviceUrl !== undefined) target(source.serviceUrl, `account ${account.id}`)
      if (source._tag === "oauth2") target(source.tokenUrl, `account ${account.id}`)
      const fallback = PROVIDER_DEFAULTS[account.provider]
      if (fallback !== undefined && !configured.has(fallback.variable)) {
        target(fallback.url, `${account.provider} accounts (the public API: ${fallback.variable} is not set)`)
      }
    }
    if (targets.size > 0) {
      const results = yield* Effect.flatMap(HttpClient.HttpClient, (client) =>
        Effect.forEach(
          [...targets],
          ([url, users]) => Effect.map(reachable(client, url), (result) => ({ name: `upstream ${url}`, ...result, users })),
          { concurrency: "unbounded" }
        )).pipe(Effect.provide(NodeHttpClient.layerUndici))
      for (const { detail, name, status, users } of results) {
        const named = [...new Set(users)]
        const more = named.length > 3 ? ` and ${named.length - 3} more` : ""
        yield* add(name, status, `${detail}; used by ${named.slice(0, 3).join(", ")}${more}`)
      }
    }
    return { ok: checks.every((check) => check.status !== "fail"), checks }
  })
