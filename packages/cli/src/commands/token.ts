/**
 * `tessera token get|status|validate|update|refresh|clear [ACCOUNT]`: one account's token.
 * `get` prints the raw token alone, so `export TOKEN=$(tessera token get acc)` works; every
 * other subcommand shows the token's status, never the token.
 */
import { Command, Options } from "@effect/cli"
import { Wire } from "@tessera/server"
import { Effect, Option, Redacted, Schema } from "effect"
import { InvalidInput, Verdict } from "../Backend.js"
import type { CheckView } from "../Backend.js"
import * as Output from "../Output.js"
import * as Shared from "./shared.js"

const get = Command.make("get", { ...Shared.global, account: Shared.account }, (options) =>
  Shared.withBackend(options, ({ backend, json }) =>
    Effect.gen(function*() {
      const grant = yield* backend.getToken(options.account)
      if (json) return yield* Output.json(Schema.encodeSync(Wire.RawToken)(grant))
      const out = yield* Output.Output
      yield* out.line(Redacted.value(grant.access_token))
    }))).pipe(
    Command.withDescription(
      "Print the account's raw token, fresh (renewed first when it is inside its refresh window, obtained when missing or expired). " +
        "Only the token is printed, for $(tessera token get ACCOUNT)"
    )
  )

const all = Options.boolean("all").pipe(Options.withDescription("Every account, instead of one"))

const noAccountWithAll = (account: Option.Option<string>, everyAccount: boolean) =>
  everyAccount && Option.isSome(account)
    ? Effect.fail(new InvalidInput({ reason: "give an ACCOUNT or --all, not both" }))
    : Effect.void

const status = Command.make("status", { ...Shared.global, account: Shared.account, all }, (options) =>
  Shared.withBackend(options, ({ backend, json }) =>
    Effect.gen(function*() {
      yield* noAccountWithAll(options.account, options.all)
      if (options.all) {
        const infos = yield* backend.listTokens
        return yield* json ? Output.json(infos) : Shared.printInfos(infos, "no accounts")
      }
      yield* Shared.showInfo(json, yield* backend.tokenStatus(options.account))
    }))).pipe(Command.withDescription("Show the token's status (a preview of the token, never the token); --all for every account"))

/** Prints bulk validation results and fails with exit status 4 when a token is invalid. */
export const printChecks = (json: boolean, checks: ReadonlyArray<CheckView>, empty: string) =>
  Effect.gen(function*() {
    const zone = yield* Shared.displayZone
    if (json) yield* Output.json(checks)
    else {
      yield* Output.table(
        ["ACCOUNT", "VALID", "STATUS", "USERNAME", "REMAINING", "RESETS", "REASON"],
        checks.map((check) => [
          check.account_id,
          check.valid === null ? Output.status("unknown") : Output.status(check.valid ? "valid" : "invalid"),
          Output.status(check.status),
          check.username,
          check.rate_limit?.remaining === undefined || check.rate_limit.remaining === null
            ? null
            : `${check.rate_limit.remaining}${check.rate_limit.limit === null ? "" : `/${check.rate_limit.limit}`}`,
          Output.displayTime(check.rate_limit?.reset_at, zone),
          check.reason
        ]),
        empty
      )
    }
    const invalid = checks.filter((check) => check.valid === false).length
    const unchecked = checks.filter((check) => check.valid === null).length
    if (invalid > 0) {
      return yield* new Verdict({ reason: `${invalid} of ${checks.length} token(s) are not valid`, exitCode: 4 })
    }
    if (unchecked > 0) {
      return yield* new Verdict({ reason: `${unchecked} of ${checks.length} token(s) could not be checked`, exitCode: 5 })
    }
  })

/** `pool check` and `token validate --all`: validate many with progress on stderr. */
export const checkMany = (
  backend: Shared.Context["backend"],
  target: Parameters<Shared.Context["backend"]["checkTokens"]>[0],
  label: string
) =>
  Effect.gen(function*() {
    const out = yield* Output.Output
    let progress: Output.Progress | undefined
    const checks = yield* backend.checkTokens(target, {
      start: (total) =>
        Output.progress(label, total).pipe(
          Effect.map((started) => void (progress = started)),
          Effect.provideService(Output.Output, out)
        ),
      step: (accountId) => progress?.step(accountId) ?? Effect.void
    }).pipe(Effect.ensuring(Effect.suspend(() => progress?.done ?? Effect.void)))
    return checks
  })

const validate = Command.make("validate", { ...Shared.global, account: Shared.account, all }, (options) =>
  Shared.withBackend(options, ({ backend, json }) =>
    Effect.gen(function*() {
      yield* noAccountWithAll(options.account, options.all)
      if (options.all) {
        const checks = yield* checkMany(backend, { _tag: "all" }, "validating")
        return yield* printChecks(json, checks, "no accounts")
      }
      const result = yield* backend.validateToken(options.account)
      if (json) yield* Output.json(result)
      else {
        const zone = yield* Shared.displayZone
        yield* Output.record([
          ["account", result.account_id],
          ["valid", Output.status(result.valid ? "valid" : "invalid")],
          ["reason", result.reason],
          ["upstream status", result.upstream_status],
          ["checked", Output.displayTime(result.checked_at, zone)]
        ])
      }
      if (!result.valid) {
        return yield* new Verdict({ reason: `the token of account '${result.account_id}' is not valid: ${result.reason}`, exitCode: 4 })
      }
    }))).pipe(
    Command.withDescription(
      "Check the token against the upstream API (exit status 4 when it is not valid); --all checks every account"
    )
  )

const update = Command.make("update", {
  ...Shared.global,
  account: Shared.account,
  token: Shared.secretOption("token", "The new token"),
  ...Shared.expiryOptions,
  noValidate: Options.boolean("no-validate").pipe(Options.withDescription("Store the token without validating it upstream first"))
}, (options) =>
  Shared.withBackend(options, ({ backend, json }) =>
    Effect.gen(function*() {
      const expiresAt = yield* Shared.expiry(options.expiresAt, options.expiresIn)
      const token = yield* Shared.secret(options.token)
      const info = yield* backend.updateToken(options.account, { token, expiresAt, validate: !options.noValidate })
      yield* Shared.showInfo(json, info)
    }))).pipe(
    Command.withDescription(
      "Replace the token by hand. It is validated upstream first unless --no-validate; a token the upstream rejects " +
        "is refused (exit status 4) and the previous one stays"
    )
  )

const refresh = Command.make("refresh", { ...Shared.global, account: Shared.account }, (options) =>
  Shared.withBackend(options, ({ backend, json }) => Effect.flatMap(backend.refreshToken(options.account), (info) => Shared.showInfo(json, info))))
  .pipe(Command.withDescription("Refresh the token now (a fresh obtain when it cannot be refreshed)"))

const clear = Command.make("clear", { ...Shared.global, account: Shared.account }, (options) =>
  Shared.withBackend(options, ({ backend, json }) => Effect.flatMap(backend.clearToken(options.account), (info) => Shared.showInfo(json, info))))
  .pipe(Command.withDescription("Forget the token; the account stays"))

export const command = Command.make("token").pipe(
  Command.withDescription("One account's token: get, status, validate, update, refresh, clear"),
  Command.withSubcommands([get, status, validate, update, refresh, clear])
)
