/**
 * What the `tessera` commands ask of Tessera, one method per operation, answered in the
 * HTTP API's wire format (snake_case, UTC ISO-8601 times with `*_local` twins in the
 * configured zone), so a command prints the same thing whether it works on the local
 * database or on a running server. `LocalBackend` implements it over the core services;
 * `RemoteBackend` over a running server's API; `--server` chooses (see `commands/shared.ts`).
 */
import type { PlatformError } from "@effect/platform/Error"
import type { Account, ApiKeys, Crypto, Errors, Token, TokenPool } from "@tessera/core"
import type { Wire } from "@tessera/server"
import { Context, Schema } from "effect"
import type { ConfigError, Duration, Effect, Option, Redacted } from "effect"

// --- wire formats: the HTTP API's own schemas ------------------------------------------

export type TokenInfoView = typeof Wire.TokenInfo.Type
export type AccountView = typeof Wire.AccountView.Type
export type PoolSummaryView = typeof Wire.Pool.Type
export type ValidationView = typeof Wire.Validation.Type
export type RateLimitView = typeof Wire.RateLimit.Type
export type AuditView = typeof Wire.AuditEntry.Type
/** A token handed out by `token get`: the raw token stays `Redacted` until it is printed. */
export type GrantView = typeof Wire.RawToken.Type
/** A token handed out by `pool acquire`. */
export type LeaseView = typeof Wire.Lease.Type

/** One token of a bulk validation (`pool check`, `token validate --all`). */
export interface CheckView {
  readonly account_id: string
  /** `null` when the token could not be checked (no token, upstream unreachable). */
  readonly valid: boolean | null
  readonly checked_at: string
  readonly reason: string
  readonly upstream_status: number | null
  readonly status: Token.TokenStatus
  readonly username: string | null
  readonly rate_limit: RateLimitView | null
}

export interface RotationView {
  /** Where the keys live: a key file (rewritten) or `TESSERA_ENCRYPTION_KEY` (which the user must edit). */
  readonly key_source: "file" | "environment"
  readonly key_file: string | null
  /** The key every stored value is now encrypted with. */
  readonly key_id: string
  /** Keys no longer needed: removed from the key file, or to be removed from the variable. */
  readonly retired_key_ids: ReadonlyArray<string>
  /** Stored values re-encrypted. */
  readonly rewritten: number
  /** What the user still has to do, if anything. */
  readonly action: string | null
}

export type CheckStatus = "ok" | "warn" | "fail"

export interface DoctorCheck {
  readonly name: string
  readonly status: CheckStatus
  readonly detail: string
}

export interface DoctorView {
  readonly ok: boolean
  readonly checks: ReadonlyArray<DoctorCheck>
}

/** An API key of the HTTP service as listed: never the key itself. */
export interface ApiKeyView {
  readonly name: string
  readonly scopes: ReadonlyArray<string>
  readonly created_at: string
  readonly created_at_local: string
  readonly revoked_at: string | null
  readonly revoked_at_local: string | null
}

/** A new API key, with its secret: shown this once. */
export interface CreatedApiKeyView extends ApiKeyView {
  readonly key: Redacted.Redacted<string>
}

// --- inputs ------------------------------------------------------------------------------

export interface InitialToken {
  readonly token: Redacted.Redacted<string>
  /** Epoch milliseconds. */
  readonly expiresAt?: number | undefined
}

export interface UpdateInput extends InitialToken {
  readonly validate: boolean
}

/** A static token for a pool; the account's provider is the pool's, or the pool's name for a new pool. */
export interface PoolTokenInput extends InitialToken {
  readonly accountId?: string | undefined
  readonly label?: string | undefined
}

export interface ReportInput {
  readonly accountId?: string | undefined
  readonly token?: Redacted.Redacted<string> | undefined
  readonly status: number
  readonly headers: Readonly<Record<string, string>>
}

/** What a bulk validation goes through: one pool, or every account. */
export type CheckTarget = { readonly _tag: "pool"; readonly pool: string } | { readonly _tag: "all" }

// --- errors ------------------------------------------------------------------------------

/** The command line asked for something malformed (a bad date, duration, id or header). */
export class InvalidInput extends Schema.TaggedError<InvalidInput>()("InvalidInput", { reason: Schema.String }) {
  override get message() {
    return this.reason
  }
}

/** The operation is not available in this mode (a remote server, say). */
export class NotSupported extends Schema.TaggedError<NotSupported>()("NotSupported", { reason: Schema.String }) {
  override get message() {
    return this.reason
  }
}

/** Something asked for does not exist (beyond accounts and pools, which have their own errors). */
export class NotFound extends Schema.TaggedError<NotFound>()("NotFound", { reason: Schema.String }) {
  override get message() {
    return this.reason
  }
}

/**
 * A server (`--server`) refused or failed a request: its HTTP status (`null` when it could
 * not be reached) and its error's code and message.
 */
export class ServerError extends Schema.TaggedError<ServerError>()("ServerError", {
  status: Schema.NullOr(Schema.Number),
  code: Schema.String,
  reason: Schema.String
}) {
  override get message() {
    return this.reason
  }
}

/** No account to default to. */
export class NoAccounts extends Schema.TaggedError<NoAccounts>()("NoAccounts", {}) {
  override get message() {
    return "there are no accounts yet: add one with `tessera accounts add` or `tessera pool add`"
  }
}

export class PoolNotFound extends Schema.TaggedError<PoolNotFound>()("PoolNotFound", { pool: Schema.String }) {
  override get message() {
    return `pool '${this.pool}' does not exist`
  }
}

/** The database file does not exist, and the command only reads. */
export class NoDatabase extends Schema.TaggedError<NoDatabase>()("NoDatabase", { path: Schema.String }) {
  override get message() {
    return `no database at ${this.path}: set TESSERA_DB, or create it with \`tessera accounts add\`, \`tessera pool add\` or \`tessera serve\``
  }
}

/** The database exists but its key file does not: a new key would not open it. */
export class KeyFileMissing extends Schema.TaggedError<KeyFileMissing>()("KeyFileMissing", {
  path: Schema.String,
  database: Schema.String
}) {
  override get message() {
    return `the database ${this.database} exists but its key file ${this.path} does not: restore the key file, ` +
      `or point TESSERA_KEY_FILE or TESSERA_ENCRYPTION_KEY at the key it was written with`
  }
}

/** A key rotation stopped before the old key could be dropped. */
export class RotationIncomplete extends Schema.TaggedError<RotationIncomplete>()("RotationIncomplete", {
  reason: Schema.String
}) {
  override get message() {
    return `key rotation incomplete: ${this.reason}`
  }
}

/**
 * The command did its work and printed its answer, but the answer is a failure a script must
 * see (a token that does not validate, a failed doctor check): exits with `exitCode`.
 */
export class Verdict extends Schema.TaggedError<Verdict>()("Verdict", { reason: Schema.String, exitCode: Schema.Number }) {
  override get message() {
    return this.reason
  }
}

export type BackendError =
  | Errors.AccountNotFound
  | Errors.AccountExists
  | Errors.TokenUnavailable
  | Errors.TokenRejected
  | Errors.OperationUnsupported
  | Errors.UpstreamError
  | Errors.StoreError
  | TokenPool.PoolExhausted
  | TokenPool.NoUsableToken
  | Crypto.DecryptionFailed
  | Crypto.UnknownEncryptionKey
  | Crypto.InvalidEncryptionKey
  | ApiKeys.ApiKeyExists
  | ApiKeys.ApiKeyNotFound
  | ApiKeys.InvalidApiKey
  | ConfigError.ConfigError
  | PlatformError
  | InvalidInput
  | NotSupported
  | NotFound
  | ServerError
  | NoAccounts
  | PoolNotFound
  | NoDatabase
  | KeyFileMissing
  | RotationIncomplete

// --- the service -------------------------------------------------------------------------

type Op<A> = Effect.Effect<A, BackendError>

/**
 * `account` is optional wherever SPEC §7 writes `[ACCOUNT]`: the default account is then
 * `INTERNAL_API_ACCOUNT_ID`, else the only account, else the first one the environment
 * declares, else the oldest (as the server decides it).
 */
export interface BackendService {
  readonly mode: "local" | "remote"

  readonly listAccounts: Op<ReadonlyArray<AccountView>>
  /** Registers an account; a renewable one without a token fetches its first token at once. */
  readonly addAccount: (account: Account.NewAccount, token?: InitialToken) => Op<AccountView>
  readonly removeAccount: (id: string) => Op<void>

  readonly getToken: (account: Option.Option<string>) => Op<GrantView>
  readonly tokenStatus: (account: Option.Option<string>) => Op<TokenInfoView>
  readonly listTokens: Op<ReadonlyArray<TokenInfoView>>
  readonly validateToken: (account: Option.Option<string>) => Op<ValidationView>
  readonly updateToken: (account: Option.Option<string>, input: UpdateInput) => Op<TokenInfoView>
  readonly refreshToken: (account: Option.Option<string>) => Op<TokenInfoView>
  readonly clearToken: (account: Option.Option<string>) => Op<TokenInfoView>
  /**
   * Validates every token of the target upstream (for GitHub that reads its live rate limit),
   * calling `progress` after each one.
   */
  readonly checkTokens: (
    target: CheckTarget,
    progress: {
      readonly start: (total: number) => Effect.Effect<void>
      readonly step: (accountId: string) => Effect.Effect<void>
    }
  ) => Op<ReadonlyArray<CheckView>>

  readonly addPoolToken: (pool: string, input: PoolTokenInput) => Op<TokenInfoView>
  readonly listPools: Op<ReadonlyArray<PoolSummaryView>>
  readonly listPoolTokens: (pool: string) => Op<ReadonlyArray<TokenInfoView>>
  readonly acquire: (pool: string, options: { readonly wait?: Duration.Duration | undefined }) => Op<LeaseView>
  readonly report: (pool: string, input: ReportInput) => Op<TokenInfoView>

  readonly audit: (query: { readonly accountId?: string | undefined; readonly limit?: number | undefined }) => Op<ReadonlyArray<AuditView>>

  /** API keys of the HTTP service (local database only: the API has no routes for them). */
  readonly createApiKey: (
    name: string,
    scopes: ReadonlyArray<string>,
    secret?: Redacted.Redacted<string>
  ) => Op<CreatedApiKeyView>
  readonly listApiKeys: Op<ReadonlyArray<ApiKeyView>>
  readonly revokeApiKey: (name: string) => Op<ApiKeyView>

  /** Replaces the encryption key (local database only). */
  readonly rotateKey: Op<RotationView>
  readonly doctor: Op<DoctorView>
}

export class Backend extends Context.Tag("@tessera/cli/Backend")<Backend, BackendService>() {}
