/**
 * The typed failures of Tessera's services. Each carries the facts a caller needs to act
 * (which account, which upstream status, when to retry) and a message a person can read;
 * none ever carries a token, password or key. The server and CLI map them to HTTP statuses
 * and exit codes at their edge.
 */
import { Schema } from "effect"

export class AccountNotFound extends Schema.TaggedError<AccountNotFound>()("AccountNotFound", {
  accountId: Schema.String
}) {
  override get message() {
    return `account '${this.accountId}' does not exist`
  }
}

export class AccountExists extends Schema.TaggedError<AccountExists>()("AccountExists", {
  accountId: Schema.String
}) {
  override get message() {
    return `account '${this.accountId}' already exists`
  }
}

/** The account has no token that can be handed out, and none could be obtained. */
export class TokenUnavailable extends Schema.TaggedError<TokenUnavailable>()("TokenUnavailable", {
  accountId: Schema.String,
  status: Schema.String,
  reason: Schema.String
}) {
  override get message() {
    return `no usable token for account '${this.accountId}' (${this.status}): ${this.reason}`
  }
}

/** A token offered by `update` failed upstream validation; the previous token stays. */
export class TokenRejected extends Schema.TaggedError<TokenRejected>()("TokenRejected", {
  accountId: Schema.String,
  reason: Schema.String,
  upstreamStatus: Schema.NullOr(Schema.Number)
}) {
  override get message() {
    return `token for account '${this.accountId}' was rejected upstream: ${this.reason}`
  }
}

/** The source cannot do what was asked (a static token cannot be refreshed or obtained). */
export class OperationUnsupported extends Schema.TaggedError<OperationUnsupported>()("OperationUnsupported", {
  accountId: Schema.String,
  operation: Schema.String,
  reason: Schema.String
}) {
  override get message() {
    return `cannot ${this.operation} account '${this.accountId}': ${this.reason}`
  }
}

export const UpstreamErrorKind = Schema.Literal(
  "rate_limited",
  "unauthorized",
  "server",
  "timeout",
  "connection",
  "rejected",
  "malformed"
)
export type UpstreamErrorKind = typeof UpstreamErrorKind.Type

/** An upstream call failed. `retryAfterMs` is the delay the upstream asked for, if any. */
export class UpstreamError extends Schema.TaggedError<UpstreamError>()("UpstreamError", {
  kind: UpstreamErrorKind,
  operation: Schema.String,
  status: Schema.NullOr(Schema.Number),
  detail: Schema.String,
  retryAfterMs: Schema.NullOr(Schema.Number)
}) {
  override get message() {
    const status = this.status === null ? "" : ` (HTTP ${this.status})`
    return `${this.operation} failed: ${this.kind}${status}: ${this.detail}`
  }
}

/** Kinds that the retry policy retries (SPEC §2.5). */
export const isRetryable = (error: UpstreamError): boolean =>
  error.kind === "rate_limited" || error.kind === "server" || error.kind === "timeout" || error.kind === "connection"

/** The database could not be read or written. */
export class StoreError extends Schema.TaggedError<StoreError>()("StoreError", {
  operation: Schema.String,
  detail: Schema.String
}) {
  override get message() {
    return `store ${this.operation} failed: ${this.detail}`
  }
}

/** Configuration is present but wrong (bad duration, bad cron expression, …). */
export class ConfigInvalid extends Schema.TaggedError<ConfigInvalid>()("ConfigInvalid", {
  setting: Schema.String,
  reason: Schema.String
}) {
  override get message() {
    return `invalid ${this.setting}: ${this.reason}`
  }
}
