/**
 * Accounts: one credential each, with a stable id, the provider it talks to, the pool it
 * serves in, and the source that says how its token is obtained (SPEC §1). The source
 * configuration carries the credentials (passwords, client secrets, refresh tokens) as
 * `Redacted` values; the store encrypts it whole.
 */
import { Config, Option, Schema } from "effect"

/** A stable account id, unique across the service: usable in URLs and as a SQLite key. */
export const AccountId = Schema.String.pipe(
  Schema.pattern(/^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$/, {
    message: () => "account id must be 1-128 characters of letters, digits and . _ : @ -, starting with a letter or digit"
  }),
  Schema.brand("AccountId")
)
export type AccountId = typeof AccountId.Type

/** A provider id such as `github`, `upstox` or one registered by an embedding app. */
export const ProviderId = Schema.String.pipe(
  Schema.pattern(/^[a-z][a-z0-9_-]{0,63}$/, {
    message: () => "provider id must be lower-case letters, digits, _ or -, starting with a letter"
  })
)

/** A pool name; defaults to the provider's id. */
export const PoolId = Schema.String.pipe(
  Schema.pattern(/^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/, {
    message: () => "pool name must be 1-128 characters of letters, digits and . _ : -"
  })
)

const Url = Schema.String.pipe(
  Schema.filter((s) => {
    try {
      const url = new URL(s)
      return url.protocol === "http:" || url.protocol === "https:" ? true : "URL must use http or https"
    } catch {
      return "must be an absolute URL"
    }
  })
)

const Secret = Schema.Redacted(Schema.NonEmptyString)

/** A token the user hands in (a GitHub PAT): never refreshed, a 401 marks it invalid. */
export class StaticSource extends Schema.TaggedClass<StaticSource>()("static", {}) {}

/** AMP style: obtain with username/password, refresh with the current token. */
export class PasswordSource extends Schema.TaggedClass<PasswordSource>()("password", {
  baseUrl: Schema.optional(Url),
  username: Schema.NonEmptyString,
  password: Secret
}) {}

/** Upstox style: fetch and refresh through an internal auth service. */
export class RemoteSource extends Schema.TaggedClass<RemoteSource>()("remote", {
  serviceUrl: Schema.optional(Url)
}) {}

/** OAuth2 refresh-token or client-credentials grant against a token URL. */
export class OAuth2Source extends Schema.TaggedClass<OAuth2Source>()("oauth2", {
  tokenUrl: Url,
  clientId: Schema.NonEmptyString,
  clientSecret: Secret,
  grant: Schema.optionalWith(Schema.Literal("refresh_token", "client_credentials"), { default: () => "refresh_token" }),
  refreshToken: Schema.optional(Secret),
  scope: Schema.optional(Schema.String)
}) {}

/** A source registered by an embedding application, identified by `kind`. */
export class CustomSource extends Schema.TaggedClass<CustomSource>()("custom", {
  kind: Schema.NonEmptyString,
  options: Schema.optionalWith(Schema.Record({ key: Schema.String, value: Schema.String }), { default: () => ({}) }),
  secrets: Schema.optionalWith(Schema.Record({ key: Schema.String, value: Secret }), { default: () => ({}) })
}) {}

export const SourceConfig = Schema.Union(StaticSource, PasswordSource, RemoteSource, OAuth2Source, CustomSource)
export type SourceConfig = typeof SourceConfig.Type
export type SourceType = SourceConfig["_tag"]

/** The name a source is looked up by: its tag, or a custom source's kind. */
export const sourceKind = (source: SourceConfig): string => source._tag === "custom" ? source.kind : source._tag

export class Account extends Schema.Class<Account>("@tessera/core/Account")({
  id: AccountId,
  provider: ProviderId,
  pool: PoolId,
  source: SourceConfig,
  label: Schema.optional(Schema.String),
  createdAt: Schema.Number
}) {}

/** What a caller supplies to register an account; the pool defaults to the provider. */
export class NewAccount extends Schema.Class<NewAccount>("@tessera/core/NewAccount")({
  id: AccountId,
  provider: ProviderId,
  pool: Schema.optional(PoolId),
  source: SourceConfig,
  label: Schema.optional(Schema.String)
}) {}

const encodeSourceJson = Schema.encodeSync(Schema.parseJson(SourceConfig))

/** Whether two source configurations are the same, secrets included. */
export const sameSource = (a: SourceConfig, b: SourceConfig): boolean => encodeSourceJson(a) === encodeSourceJson(b)

/** `INTERNAL_API_ACCOUNT_ID`: the account configuration names as the default, if any. */
export const defaultAccountConfig: Config.Config<Option.Option<string>> = Config.option(
  Config.string("INTERNAL_API_ACCOUNT_ID")
).pipe(Config.map((id) => Option.filter(Option.map(id, (text) => text.trim()), (text) => text.length > 0)))

/**
 * The default account (SPEC §5), of the unscoped `/token/*` routes, the CLI's commands without
 * an account and the Redis mirror's legacy keys: the configured one, else the only account,
 * else the first declared one that exists, else the oldest (then the first by id).
 */
export const defaultAccountId = (
  accounts: ReadonlyArray<{ readonly id: string; readonly createdAt: number }>,
  options: { readonly configured: Option.Option<string>; readonly declared: ReadonlyArray<string> }
): Option.Option<string> => {
  if (Option.isSome(options.configured)) return options.configured
  if (accounts.length <= 1) return Option.fromNullable(accounts[0]?.id)
  const ids = new Set(accounts.map((account) => account.id))
  const declared = options.declared.find((id) => ids.has(id))
  if (declared !== undefined) return Option.some(declared)
  const oldest = accounts.reduce((a, b) => (b.createdAt < a.createdAt || (b.createdAt === a.createdAt && b.id.localeCompare(a.id) < 0) ? b : a))
  return Option.some(oldest.id)
}
