/**
 * Static token pools from the environment (GitFleet style): `GITHUB_TOKENS`,
 * `GITLAB_TOKENS` and `BITBUCKET_TOKENS` hold comma-separated tokens, each of which becomes a
 * `static` account in the pool named after its provider. An account's id is derived from its
 * token (`github-` and the first 10 hex digits of the token's SHA-256), so the same token is
 * the same account across restarts and the id reveals nothing of the token.
 */
import { Account } from "@tessera/core"
import { Config, Effect, Option, Redacted, Schema } from "effect"
import type { ConfigError } from "effect"
import { createHash } from "node:crypto"

/** A static account and the token it starts with: `lifecycle.add(account, { token })`. */
export interface Entry {
  readonly account: Account.NewAccount
  readonly token: Redacted.Redacted<string>
}

/** The environment variable of each provider's token list. */
export const variables = {
  github: "GITHUB_TOKENS",
  gitlab: "GITLAB_TOKENS",
  bitbucket: "BITBUCKET_TOKENS"
} as const

/** The stable id of the static account of `provider` that holds `token`. */
export const accountId = (provider: string, token: Redacted.Redacted<string>): Account.AccountId =>
  Schema.decodeSync(Account.AccountId)(
    `${provider}-${createHash("sha256").update(Redacted.value(token)).digest("hex").slice(0, 10)}`
  )

/** The tokens of a comma-separated list: trimmed, empty ones dropped, each once. */
export const parseList = (list: Redacted.Redacted<string>): ReadonlyArray<Redacted.Redacted<string>> =>
  [...new Set(Redacted.value(list).split(",").map((token) => token.trim()).filter((token) => token.length > 0))]
    .map((token) => Redacted.make(token))

/** One static account of `provider` per token of the list. */
export const entries = (
  provider: string,
  list: Redacted.Redacted<string>,
  label?: string | undefined
): ReadonlyArray<Entry> =>
  parseList(list).map((token) => ({
    account: new Account.NewAccount({
      id: accountId(provider, token),
      provider,
      pool: provider,
      source: new Account.StaticSource(),
      label
    }),
    token
  }))

/** The static accounts `GITHUB_TOKENS`, `GITLAB_TOKENS` and `BITBUCKET_TOKENS` declare. */
export const accountsFromEnv: Effect.Effect<ReadonlyArray<Entry>, ConfigError.ConfigError> = Effect.map(
  Effect.forEach(Object.entries(variables), ([provider, variable]) =>
    Effect.map(
      Config.option(Config.redacted(variable)),
      (list) => Option.match(list, { onNone: () => [], onSome: (tokens) => entries(provider, tokens, `from ${variable}`) })
    )),
  (lists) => lists.flat()
)
