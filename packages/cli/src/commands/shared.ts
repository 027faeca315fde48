/**
 * What every `tessera` command shares: the global options (`--json`, `--server`), accepted
 * before the subcommand or after it; the optional `ACCOUNT` argument; running a command
 * against the right `Backend`; reading secrets from a flag or stdin; parsing times and
 * durations; and printing token infos.
 */
import { Args, Command, Options } from "@effect/cli"
import type { FileSystem, Path } from "@effect/platform"
import { Settings } from "@tessera/core"
import { Wire } from "@tessera/server"
import { Clock, Config, DateTime, Duration, Effect, Either, Layer, Option, Redacted } from "effect"
import { Backend, InvalidInput } from "../Backend.js"
import type { AccountView, BackendError, BackendService, TokenInfoView } from "../Backend.js"
import * as LocalBackend from "../LocalBackend.js"
import * as RemoteBackend from "../RemoteBackend.js"
import * as Output from "../Output.js"

// --- global options ----------------------------------------------------------------------

export const json = Options.boolean("json").pipe(
  Options.withDescription("Print JSON (snake_case fields, as the HTTP API gives them) instead of a table")
)

export const server = Options.text("server").pipe(
  Options.withPseudoName("URL"),
  Options.withDescription("Work on the tessera server at URL (API key from TESSERA_API_KEY) instead of the local database"),
  Options.optional
)

export const global = { json, server }

export interface GlobalOptions {
  readonly json: boolean
  readonly server: Option.Option<string>
}

/** The root command, bare: `Cli.ts` adds the subcommands. Its options reach every subcommand. */
export const root = Command.make("tessera", global)

/** The options in effect: a subcommand's own, else the ones given before it. */
export const effectiveOptions = (own: GlobalOptions): Effect.Effect<GlobalOptions, never, Command.Command.Context<"tessera">> =>
  Effect.map(root, (outer) => ({ json: own.json || outer.json, server: Option.orElse(own.server, () => outer.server) }))

export const account = Args.text({ name: "ACCOUNT" }).pipe(
  Args.withDescription(
    "The account id; without it, the default account: INTERNAL_API_ACCOUNT_ID, else the only account, else the first " +
      "the environment declares, else the oldest"
  ),
  Args.optional
)

export const pool = Args.text({ name: "POOL" }).pipe(Args.withDescription("The pool name (by default a pool is named after its provider)"))

// --- running a command -------------------------------------------------------------------

/** The backend `--server` asks for: the local database, or a server. */
export const backendLayer = (
  serverUrl: Option.Option<string>
): Layer.Layer<Backend, BackendError, FileSystem.FileSystem | Path.Path> =>
  Option.match(serverUrl, { onNone: () => LocalBackend.layer, onSome: RemoteBackend.layer })

export interface Context {
  readonly backend: BackendService
  readonly json: boolean
}

/** Runs a command's work with the backend its options ask for. */
export const withBackend = <A, E, R>(
  own: GlobalOptions,
  work: (context: Context) => Effect.Effect<A, E, R>
) =>
  Effect.gen(function*() {
    const options = yield* effectiveOptions(own)
    return yield* Effect.flatMap(Backend, (backend) => work({ backend, json: options.json })).pipe(
      Effect.provide(backendLayer(options.server))
    )
  })

// --- input -------------------------------------------------------------------------------

/** All of stdin, for secrets given as `-` rather than on the command line. */
const readStdin = Effect.async<string>((resume) => {
  const chunks: Array<Buffer> = []
  process.stdin.on("data", (chunk: Buffer) => chunks.push(chunk))
  process.stdin.once("end", () => resume(Effect.succeed(Buffer.concat(chunks).toString("utf8"))))
  process.stdin.once("error", () => resume(Effect.succeed(Buffer.concat(chunks).toString("utf8"))))
})

/**
 * A secret option's value; `-` reads it from stdin (first line), so it stays out of the
 * shell history and the process list.
 */
export const secret = (value: Redacted.Redacted<string>): Effect.Effect<Redacted.Redacted<string>> =>
  Redacted.value(value) === "-"
    ? Effect.map(readStdin, (text) => Redacted.make(text.split(/\r?\n/)[0]!.trim()))
    : Effect.succeed(value)

export const optionalSecret = (value: Option.Option<Redacted.Redacted<string>>) =>
  Option.match(value, { onNone: () => Effect.succeedNone, onSome: (v) => Effect.asSome(secret(v)) })

/** Reads a secret option as text: `--token VALUE`, or `--token -` for stdin. */
export const secretOption = (name: string, description: string) =>
  Options.redacted(name).pipe(Options.withPseudoName("VALUE|-"), Options.withDescription(`${description} ('-' reads it from stdin)`))

const timeZone = Settings.timeZone("TESSERA_TIMEZONE").pipe(Config.withDefault(DateTime.zoneUnsafeMakeNamed("UTC")))

/** A duration flag (`5m`, `90s`, `1h30m`, `2 hours`). */
export const parseDuration = (flag: string, text: string): Effect.Effect<Duration.Duration, InvalidInput> =>
  Option.match(Settings.parseDuration(text), {
    onNone: () => Effect.fail(new InvalidInput({ reason: `bad ${flag} '${text}': expected a duration such as 90s, 5m or 1h30m` })),
    onSome: Effect.succeed
  })

/**
 * A token's expiry, read as the HTTP API reads `expires_at`: ISO-8601 with an offset
 * (`2026-11-24T03:30:00+05:30`), a local time without one (in `TESSERA_TIMEZONE`), or epoch
 * seconds; it must lie in the future.
 */
export const parseExpiresAt = (flag: string, text: string) =>
  Effect.gen(function*() {
    const trimmed = text.trim()
    const zone = yield* timeZone
    const at = yield* Either.match(Wire.parseExpiresAt(/^\d+(\.\d+)?$/.test(trimmed) ? Number(trimmed) : trimmed, zone), {
      onLeft: (reason) => Effect.fail(new InvalidInput({ reason: `bad ${flag}: ${reason.replace(/^expires_at /, "")}` })),
      onRight: Effect.succeed
    })
    if (at <= (yield* Clock.currentTimeMillis)) {
      return yield* new InvalidInput({ reason: `bad ${flag} '${trimmed}': the time must be in the future` })
    }
    return at
  })

/** `--expires-at TIME` or `--expires-in DURATION` as epoch milliseconds, if either is given. */
export const expiry = (expiresAt: Option.Option<string>, expiresIn: Option.Option<string>) =>
  Effect.gen(function*() {
    if (Option.isSome(expiresAt) && Option.isSome(expiresIn)) {
      return yield* new InvalidInput({ reason: "give --expires-at or --expires-in, not both" })
    }
    if (Option.isSome(expiresAt)) return yield* parseExpiresAt("--expires-at", expiresAt.value)
    if (Option.isSome(expiresIn)) {
      const duration = yield* parseDuration("--expires-in", expiresIn.value)
      return (yield* Clock.currentTimeMillis) + Duration.toMillis(duration)
    }
    return undefined
  })

export const expiryOptions = {
  expiresAt: Options.text("expires-at").pipe(
    Options.withPseudoName("TIME"),
    Options.withDescription("When the token expires: ISO-8601 (2026-11-24T03:30:00+05:30), a local time in TESSERA_TIMEZONE, or epoch seconds"),
    Options.optional
  ),
  expiresIn: Options.text("expires-in").pipe(
    Options.withPseudoName("DURATION"),
    Options.withDescription("When the token expires, from now (8h, 90m)"),
    Options.optional
  )
}

// --- printing token infos ----------------------------------------------------------------

export const displayZone = timeZone.pipe(Effect.orElseSucceed(() => DateTime.zoneUnsafeMakeNamed("UTC")))

const rateLimitText = (info: Pick<TokenInfoView, "rate_limit">, zone: DateTime.TimeZone) => {
  const rl = info.rate_limit
  if (rl === null) return null
  const quota = rl.remaining === null ? "" : rl.limit === null ? `${rl.remaining} left` : `${rl.remaining}/${rl.limit} left`
  const reset = rl.reset_at === null ? "" : `resets ${Output.displayTime(rl.reset_at, zone)}`
  return [quota, reset, rl.resource === null ? "" : `(${rl.resource})`].filter((part) => part !== "").join(", ") || null
}

/** When a token expires, for a table: `never` for a token without an expiry. */
export const expiresCell = (info: Pick<TokenInfoView, "has_token" | "expires_at">, zone: DateTime.TimeZone) =>
  info.has_token && info.expires_at === null ? "never" : Output.displayTime(info.expires_at, zone)

/** One token info, for people. */
export const printInfo = (info: TokenInfoView) =>
  Effect.gen(function*() {
    const zone = yield* displayZone
    const now = yield* Clock.currentTimeMillis
    yield* Output.record([
      ["account", info.account_id],
      ["provider", info.provider],
      ["pool", info.pool],
      ["status", Output.status(info.status)],
      ["token", info.token_preview],
      ["expires", info.has_token && info.expires_at === null ? "never" : Output.timeWithDistance(info.expires_at, zone, now)],
      ["issued", Output.displayTime(info.issued_at, zone)],
      ["source", info.source],
      ["last refreshed", Output.displayTime(info.last_refreshed_at, zone)],
      ["last used", Output.displayTime(info.last_used_at, zone)],
      ["username", info.username],
      ["rate limit", rateLimitText(info, zone)],
      ...(info.invalid_reason === null ? [] : [["invalid", info.invalid_reason] as const]),
      ["last error", info.last_error === null ? null : `${info.last_error.message} (${Output.displayTime(info.last_error.at, zone)})`]
    ])
  })

/** An account and its token, for people. */
export const printAccount = (account: AccountView) =>
  Effect.gen(function*() {
    const zone = yield* displayZone
    const source = Object.entries(account.source).filter(([name]) => name !== "type").map(([name, value]) => `${name} ${value ?? "-"}`)
    yield* Output.record([
      ["account", account.account_id],
      ["provider", account.provider],
      ["pool", account.pool],
      ["source", [account.source.type, ...source].join(", ")],
      ["label", account.label],
      ["created", Output.displayTime(account.created_at, zone)]
    ])
    const out = yield* Output.Output
    yield* out.line("")
    yield* printInfo(account.token)
  })

/** Token infos as a table, for people. */
export const printInfos = (infos: ReadonlyArray<TokenInfoView>, empty: string) =>
  Effect.gen(function*() {
    const zone = yield* displayZone
    yield* Output.table(
      ["ACCOUNT", "PROVIDER", "POOL", "STATUS", "TOKEN", "EXPIRES", "RATE LIMIT", "LAST ERROR"],
      infos.map((info) => [
        info.account_id,
        info.provider,
        info.pool,
        Output.status(info.status),
        info.token_preview,
        expiresCell(info, zone),
        rateLimitText(info, zone),
        info.invalid_reason ?? info.last_error?.message ?? null
      ]),
      empty
    )
  })

/** Prints a token info as JSON or for people. */
export const showInfo = (json: boolean, info: TokenInfoView) => json ? Output.json(info) : printInfo(info)
