/**
 * `tessera accounts list|add|remove`: the accounts Tessera keeps tokens for, and how each
 * one's token is obtained (`static`, `password`, `remote`, `oauth2`).
 */
import { Args, Command, Options } from "@effect/cli"
import { Account } from "@tessera/core"
import { Effect, Option, Redacted, Schema } from "effect"
import { InvalidInput } from "../Backend.js"
import { describeParseError } from "../LocalBackend.js"
import * as Output from "../Output.js"
import * as Shared from "./shared.js"

const list = Command.make("list", { ...Shared.global }, (options) =>
  Shared.withBackend(options, ({ backend, json }) =>
    Effect.gen(function*() {
      const accounts = yield* backend.listAccounts
      if (json) return yield* Output.json(accounts)
      const zone = yield* Shared.displayZone
      yield* Output.table(
        ["ACCOUNT", "PROVIDER", "POOL", "SOURCE", "STATUS", "TOKEN", "EXPIRES", "LABEL"],
        accounts.map((account) => [
          account.account_id,
          account.provider,
          account.pool,
          account.source.type,
          Output.status(account.token.status),
          account.token.token_preview,
          Shared.expiresCell(account.token, zone),
          account.label
        ]),
        "no accounts"
      )
    }))).pipe(Command.withDescription("List the accounts with their provider, pool, source and token status"))

const sourceTypes = ["static", "password", "remote", "oauth2"] as const
type SourceType = typeof sourceTypes[number]

const text = (name: string, description: string) =>
  Options.text(name).pipe(Options.withDescription(description), Options.optional)

const addOptions = {
  ...Shared.global,
  id: Args.text({ name: "ACCOUNT" }).pipe(Args.withDescription("The new account's id (letters, digits and . _ : @ -)")),
  provider: Options.text("provider").pipe(
    Options.withDescription("The upstream API the token is for: github, gitlab, bitbucket, upstox, amp, oauth2, …")
  ),
  pool: text("pool", "The pool the account serves in (default: the provider)"),
  label: text("label", "A note shown beside the account"),
  source: Options.choice("source", sourceTypes).pipe(
    Options.withDescription(
      "How the token is obtained (default: inferred from the other options: --token-url oauth2, --username password, " +
        "--service-url or provider upstox remote, --token static)"
    ),
    Options.optional
  ),
  token: Shared.secretOption("token", "The token to start with (required for static accounts)").pipe(Options.optional),
  ...Shared.expiryOptions,
  username: text("username", "password source: the user name"),
  password: Shared.secretOption("password", "password source: the password").pipe(Options.optional),
  baseUrl: text("base-url", "password source: the API base URL (default: AMP_API_URL)"),
  serviceUrl: text("service-url", "remote source: the auth service URL (default: TOKEN_REFRESH_SERVICE_URL)"),
  tokenUrl: text("token-url", "oauth2 source: the token endpoint"),
  clientId: text("client-id", "oauth2 source: the client id"),
  clientSecret: Shared.secretOption("client-secret", "oauth2 source: the client secret").pipe(Options.optional),
  grant: Options.choice("grant", ["refresh_token", "client_credentials"]).pipe(
    Options.withDescription("oauth2 source: the grant (default refresh_token)"),
    Options.optional
  ),
  refreshToken: Shared.secretOption("refresh-token", "oauth2 source: the refresh token").pipe(Options.optional),
  scope: text("scope", "oauth2 source: the scope to ask for")
}

type AddOptions = Command.Command.ParseConfig<typeof addOptions>

const inferSource = (options: AddOptions): Effect.Effect<SourceType, InvalidInput> => {
  if (Option.isSome(options.source)) return Effect.succeed(options.source.value)
  if (Option.isSome(options.tokenUrl)) return Effect.succeed("oauth2")
  if (Option.isSome(options.username) || Option.isSome(options.password)) return Effect.succeed("password")
  if (Option.isSome(options.serviceUrl) || options.provider === "upstox") return Effect.succeed("remote")
  if (Option.isSome(options.token)) return Effect.succeed("static")
  return Effect.fail(new InvalidInput({ reason: "say how the account's token is obtained with --source (static, password, remote, oauth2)" }))
}

const plain = (value: Option.Option<Redacted.Redacted<string>>) => Option.getOrUndefined(Option.map(value, Redacted.value))

/** The source configuration, in the wire form the account schema decodes (secrets included, briefly). */
const sourceConfig = (type: SourceType, options: AddOptions, secrets: {
  readonly password: Option.Option<Redacted.Redacted<string>>
  readonly clientSecret: Option.Option<Redacted.Redacted<string>>
  readonly refreshToken: Option.Option<Redacted.Redacted<string>>
}): Effect.Effect<typeof Account.SourceConfig.Encoded, InvalidInput> => {
  const missing = (flag: string) => Effect.fail(new InvalidInput({ reason: `a ${type} account needs ${flag}` }))
  switch (type) {
    case "static":
      return Option.isNone(options.token) ? missing("--token") : Effect.succeed({ _tag: "static" })
    case "password":
      if (Option.isNone(options.username)) return missing("--username")
      if (Option.isNone(secrets.password)) return missing("--password")
      return Effect.succeed({
        _tag: "password",
        username: options.username.value,
        password: Redacted.value(secrets.password.value),
        baseUrl: Option.getOrUndefined(options.baseUrl)
      })
    case "remote":
      return Effect.succeed({ _tag: "remote", serviceUrl: Option.getOrUndefined(options.serviceUrl) })
    case "oauth2":
      if (Option.isNone(options.tokenUrl)) return missing("--token-url")
      if (Option.isNone(options.clientId)) return missing("--client-id")
      if (Option.isNone(secrets.clientSecret)) return missing("--client-secret")
      return Effect.succeed({
        _tag: "oauth2",
        tokenUrl: options.tokenUrl.value,
        clientId: options.clientId.value,
        clientSecret: Redacted.value(secrets.clientSecret.value),
        grant: Option.getOrUndefined(options.grant),
        refreshToken: plain(secrets.refreshToken),
        scope: Option.getOrUndefined(options.scope)
      })
  }
}

const add = Command.make("add", addOptions, (options) =>
  Shared.withBackend(options, ({ backend, json }) =>
    Effect.gen(function*() {
      const type = yield* inferSource(options)
      const secrets = {
        password: yield* Shared.optionalSecret(options.password),
        clientSecret: yield* Shared.optionalSecret(options.clientSecret),
        refreshToken: yield* Shared.optionalSecret(options.refreshToken)
      }
      const token = yield* Shared.optionalSecret(options.token)
      const expiresAt = yield* Shared.expiry(options.expiresAt, options.expiresIn)
      const source = yield* sourceConfig(type, options, secrets)
      const account = yield* Schema.decodeUnknown(Account.NewAccount)({
        id: options.id,
        provider: options.provider,
        pool: Option.getOrUndefined(options.pool),
        label: Option.getOrUndefined(options.label),
        source
      }).pipe(Effect.mapError((error) => new InvalidInput({ reason: describeParseError(error) })))
      const initial = Option.getOrUndefined(Option.map(token, (value) => ({ token: value, expiresAt })))
      const added = yield* backend.addAccount(account, initial)
      yield* json ? Output.json(added) : Shared.printAccount(added)
    }))).pipe(
    Command.withDescription(
      "Register an account. Examples: accounts add gh-ci --provider github --token - (static token from stdin); " +
        "accounts add amp --provider amp --username trader --password - --base-url https://amp.example; " +
        "accounts add acc1 --provider upstox (remote, from TOKEN_REFRESH_SERVICE_URL). " +
        "A renewable account without a token fetches its first token at once"
    )
  )

const remove = Command.make("remove", {
  ...Shared.global,
  id: Args.text({ name: "ACCOUNT" }).pipe(Args.withDescription("The account to remove"))
}, (options) =>
  Shared.withBackend(options, ({ backend, json }) =>
    Effect.gen(function*() {
      yield* backend.removeAccount(options.id)
      if (json) return yield* Output.json({ account_id: options.id, removed: true })
      const out = yield* Output.Output
      yield* out.line(`removed account ${options.id}`)
    }))).pipe(Command.withDescription("Remove an account and its token (the audit log keeps its history)"))

export const command = Command.make("accounts").pipe(
  Command.withDescription("The accounts Tessera keeps tokens for: list, add, remove"),
  Command.withSubcommands([list, add, remove])
)
