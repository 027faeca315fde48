/**
 * The `tessera` command line (SPEC §7): the root command and its subcommands, and the edge
 * where failures become one line on stderr (`tessera: <reason>`, never a stack trace) and a
 * distinct exit status, so scripts can tell a missing account from an unreachable upstream.
 *
 * | status | meaning |
 * |---|---|
 * | 0 | success |
 * | 1 | failure (database error, failed doctor check, anything unexpected) |
 * | 2 | usage: unknown command or option, bad date, duration, id or header |
 * | 3 | not found: account, pool, database, API key |
 * | 4 | rejected: the upstream refused the token or credentials, a token is not valid, the operation is impossible for the account |
 * | 5 | unavailable: upstream or server unreachable, no usable token |
 * | 6 | rate-limited: every token of the pool is limited (retry later, or `--wait`) |
 * | 7 | conflict: the account (or API key) already exists |
 * | 8 | configuration or key problem (bad setting, wrong or missing encryption key, API key refused by the server) |
 */
import { Command, HelpDoc, ValidationError } from "@effect/cli"
import * as Span from "@effect/cli/HelpDoc/Span"
import type { CliApp } from "@effect/cli/CliApp"
import { NodeContext, NodeRuntime } from "@effect/platform-node"
import { Cause, ConfigError, Console, Context, Effect, Exit, Layer, Logger, Option, Schema } from "effect"
import * as Accounts from "./commands/accounts.js"
import * as Audit from "./commands/audit.js"
import * as Doctor from "./commands/doctor.js"
import * as Keys from "./commands/keys.js"
import * as Pool from "./commands/pool.js"
import * as Shared from "./commands/shared.js"
import * as Token from "./commands/token.js"
import * as Output from "./Output.js"
import * as Serve from "./Serve.js"

export const ExitCode = {
  ok: 0,
  failure: 1,
  usage: 2,
  notFound: 3,
  rejected: 4,
  unavailable: 5,
  rateLimited: 6,
  conflict: 7,
  configuration: 8
} as const

const EXIT_CODES: ReadonlyArray<readonly [number, string]> = [
  [ExitCode.ok, "success"],
  [ExitCode.failure, "failure (database error, failed doctor check, anything unexpected)"],
  [ExitCode.usage, "usage: unknown command or option, bad date, duration, id or header"],
  [ExitCode.notFound, "not found: account, pool, database, API key"],
  [ExitCode.rejected, "rejected: the upstream refused the token or credentials, a token is not valid, the operation is impossible for the account"],
  [ExitCode.unavailable, "unavailable: upstream or server unreachable, no usable token"],
  [ExitCode.rateLimited, "rate-limited: every token of the pool is limited (retry later, or use --wait)"],
  [ExitCode.conflict, "conflict: the account (or API key) already exists"],
  [ExitCode.configuration, "configuration or key problem (bad setting, wrong or missing encryption key, API key refused by the server)"]
]

/** The exit status for a failure. */
export const exitCodeOf = (error: unknown): number => {
  if (ValidationError.isValidationError(error)) return ExitCode.usage
  if (ConfigError.isConfigError(error)) return ExitCode.configuration
  const tag = typeof error === "object" && error !== null && "_tag" in error ? error._tag : undefined
  switch (tag) {
    case "Verdict":
      return (error as { readonly exitCode: number }).exitCode
    case "InvalidInput":
    case "NotSupported":
    case "InvalidApiKey":
      return ExitCode.usage
    case "AccountNotFound":
    case "PoolNotFound":
    case "NoAccounts":
    case "NoDatabase":
    case "NotFound":
    case "ApiKeyNotFound":
      return ExitCode.notFound
    case "TokenRejected":
      // refused before asking the upstream (malformed): the caller's mistake
      return (error as { readonly upstreamStatus: number | null }).upstreamStatus === null ? ExitCode.usage : ExitCode.rejected
    case "OperationUnsupported":
      return ExitCode.rejected
    case "UpstreamError": {
      const kind = (error as { readonly kind: string }).kind
      return kind === "rate_limited" ? ExitCode.rateLimited : kind === "unauthorized" || kind === "rejected" || kind === "malformed"
        ? ExitCode.rejected
        : ExitCode.unavailable
    }
    case "TokenUnavailable":
    case "NoUsableToken":
      return ExitCode.unavailable
    case "PoolExhausted":
      return ExitCode.rateLimited
    case "AccountExists":
    case "ApiKeyExists":
      return ExitCode.conflict
    case "ServerError":
      return serverExitCode(error as { readonly status: number | null; readonly code: string })
    case "InvalidEncryptionKey":
    case "DecryptionFailed":
    case "UnknownEncryptionKey":
    case "KeyFileMissing":
      return ExitCode.configuration
    default:
      return ExitCode.failure
  }
}

/** The exit status for a server's answer (`--server`): by HTTP status, as the local failure would have it. */
const serverExitCode = ({ code, status }: { readonly status: number | null; readonly code: string }): number => {
  if (status === null) return ExitCode.unavailable
  switch (status) {
    case 400:
    case 413:
      return ExitCode.usage
    case 401:
    case 403:
      return ExitCode.configuration
    case 404:
      return ExitCode.notFound
    case 409:
      return code === "account_exists" ? ExitCode.conflict : ExitCode.rejected
    case 422:
      return ExitCode.rejected
    case 429:
      return ExitCode.rateLimited
    case 502:
    case 503:
    case 504:
      return ExitCode.unavailable
    default:
      return ExitCode.failure
  }
}

// --- the commands ------------------------------------------------------------------------

const serve = Command.make("serve", {}, () => Serve.run).pipe(
  Command.withDescription("Run the token service on the local database")
)

const stderrLogger = Logger.make(({ logLevel, message }) => {
  const text = (Array.isArray(message) ? message : [message]).map(String).join(" ")
  process.stderr.write(`tessera: ${logLevel.label.toLowerCase()}: ${text}\n`)
})

/**
 * Log lines of the token commands: `tessera: warn: …` on stderr, in place of the default
 * logger or the pretty one `NodeRuntime.runMain` installs. `serve` keeps its own format.
 */
const commandLogger = Layer.merge(
  Logger.replace(Logger.defaultLogger, stderrLogger),
  Logger.replace(Logger.prettyLoggerDefault, stderrLogger)
)

const terminal = Layer.merge(commandLogger, Output.layerNode)
const withTerminal = <Name extends string, R, E, A>(command: Command.Command<Name, R, E, A>) =>
  command.pipe(Command.provide(terminal))

const description = HelpDoc.blocks([
  HelpDoc.p(
    "Tessera keeps API tokens alive. Commands work on the database (TESSERA_DATABASE_URL for PostgreSQL, else the SQLite file " +
      "TESSERA_DB, default ./data/tessera.db) " +
      "or, with --server URL, on a running tessera server. --json prints the HTTP API's JSON."
  ),
  HelpDoc.h2("Exit status"),
  HelpDoc.descriptionList([
    [Span.text(String(EXIT_CODES[0]![0])), HelpDoc.p(EXIT_CODES[0]![1])],
    ...EXIT_CODES.slice(1).map(([code, meaning]) => [Span.text(String(code)), HelpDoc.p(meaning)] as [Span.Span, HelpDoc.HelpDoc])
  ])
])

const command = Shared.root.pipe(
  Command.withDescription(description),
  Command.transformHandler((handler) => Effect.provideService(handler, InCommand, true)),
  Command.withSubcommands([
    serve,
    withTerminal(Accounts.command),
    withTerminal(Token.command),
    withTerminal(Pool.command),
    withTerminal(Audit.command),
    withTerminal(Keys.command),
    withTerminal(Doctor.command)
  ])
)

const cli = Command.run(command, { name: "tessera", version: "0.1.0" })

// --- the edge ----------------------------------------------------------------------------

/** The command failed with this exit status; its reason is already on stderr. */
export class ExitStatus extends Schema.TaggedError<ExitStatus>()("ExitStatus", { code: Schema.Number }) {}

// eslint-disable-next-line no-control-regex
const stripAnsi = (text: string) => text.replace(/\x1b\[[0-9;]*m/g, "")

/** The first line of a parse error's help text: `Expected to find option: '--token'`. */
const usageReason = (error: ValidationError.ValidationError): string => {
  const text = "error" in error ? stripAnsi(HelpDoc.toAnsiText(error.error)) : ""
  return text.split("\n").map((line) => line.trim()).find((line) => line !== "") ?? "invalid command line"
}

const reasonOf = (error: unknown): string =>
  ValidationError.isValidationError(error) ? usageReason(error) : Output.describeError(error)

const report = (line: string) => Effect.sync(() => void process.stderr.write(`tessera: ${line}\n`))

/** Set while a command's own handler runs, as opposed to the argument parser. */
class InCommand extends Context.Reference<InCommand>()("@tessera/cli/Cli/InCommand", { defaultValue: () => false }) {}

/**
 * The argument parser prints its own complaints with `Console.error`, several lines of help
 * text; the edge reports one line instead. Inside a command (`serve` logs through the
 * console) `Console.error` is left alone.
 */
const quietParser = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.flatMap(Console.consoleWith(Effect.succeed), (console) =>
    Console.withConsole(effect, {
      ...console,
      error: (...args) => Effect.flatMap(InCommand, (inCommand) => (inCommand ? console.error(...args) : Effect.void))
    }))

/**
 * Runs the command line (`argv` as `process.argv`: node, script, arguments). A failure is
 * reported as one line on stderr and ends as `ExitStatus`; an interruption (Ctrl-C,
 * SIGTERM) is a clean stop.
 */
export const run = (argv: ReadonlyArray<string>): Effect.Effect<void, ExitStatus, CliApp.Environment> =>
  cli(argv).pipe(
    quietParser,
    Effect.catchAllCause((cause) => {
      if (Cause.isInterruptedOnly(cause)) return Effect.void
      const failure = Cause.failureOption(cause)
      if (Option.isSome(failure)) {
        const error = failure.value
        // a help request is not a failure: the parser has printed the help
        if (ValidationError.isValidationError(error) && ValidationError.isHelpRequested(error)) return Effect.void
        return Effect.zipRight(report(reasonOf(error)), Effect.fail(new ExitStatus({ code: exitCodeOf(error) })))
      }
      const defect = Cause.squash(cause)
      return Effect.zipRight(
        report(`unexpected error: ${Output.describeError(defect)}`),
        Effect.fail(new ExitStatus({ code: ExitCode.failure }))
      )
    })
  )

/** Runs the command line in this process and exits with its status. */
export const main = (argv: ReadonlyArray<string>): void =>
  NodeRuntime.runMain(run(argv).pipe(Effect.provide(NodeContext.layer)), {
    disableErrorReporting: true,
    teardown: (exit, onExit) =>
      onExit(Exit.isSuccess(exit) ? ExitCode.ok : Option.match(Cause.failureOption(exit.cause), {
        onNone: () => (Cause.isInterruptedOnly(exit.cause) ? ExitCode.ok : ExitCode.failure),
        onSome: (status) => (status instanceof ExitStatus ? status.code : ExitCode.failure)
      }))
  })
