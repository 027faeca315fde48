/**
 * Tokens and their state (SPEC §1): the token an account currently holds, where it came
 * from, when it expires, and what is known about it (rate limit, invalid mark, last error).
 * The status shown to users is derived from that state and the current time, so a token
 * leaves `rate_limited` or becomes `expired` without anybody having to flip a flag.
 */
import { Option, Redacted, Schema } from "effect"
import type { AccountId } from "./Account.js"

export const TokenStatus = Schema.Literal("available", "rate_limited", "invalid", "expired", "missing")
export type TokenStatus = typeof TokenStatus.Type

/** How the current token was obtained. */
export const TokenOrigin = Schema.Literal("startup", "obtain", "refresh", "manual", "restored", "static")
export type TokenOrigin = typeof TokenOrigin.Type

/** Rate-limit state read from upstream responses. Times are epoch milliseconds. */
export class RateLimit extends Schema.Class<RateLimit>("@tessera/core/RateLimit")({
  limit: Schema.optional(Schema.Number),
  remaining: Schema.optional(Schema.Number),
  resetAt: Schema.optional(Schema.Number),
  resource: Schema.optional(Schema.String),
  /** Set when the token must not be used before `resetAt` (primary or secondary limit). */
  limited: Schema.Boolean
}) {}

export class LastError extends Schema.Class<LastError>("@tessera/core/LastError")({
  code: Schema.String,
  message: Schema.String,
  at: Schema.Number
}) {}

/** A token as issued by a source. `expiresAt` is absent for tokens that do not expire. */
export interface Issued {
  readonly token: Redacted.Redacted<string>
  readonly expiresAt: Option.Option<number>
  /** A rotated credential (OAuth2 refresh token) that must be persisted before use. */
  readonly refreshToken?: Redacted.Redacted<string> | undefined
  readonly username?: string | undefined
}

/** The token an account holds. */
export interface TokenRecord {
  readonly token: Redacted.Redacted<string>
  readonly expiresAt: Option.Option<number>
  readonly issuedAt: number
  readonly origin: TokenOrigin
}

/** Everything known about an account's token; persisted by the store. */
export interface TokenState {
  readonly token: Option.Option<TokenRecord>
  readonly invalid: Option.Option<{ readonly reason: string; readonly at: number }>
  readonly rateLimit: Option.Option<RateLimit>
  readonly lastError: Option.Option<LastError>
  readonly lastRefreshedAt: Option.Option<number>
  readonly lastUsedAt: Option.Option<number>
  readonly username: Option.Option<string>
}

export const emptyState: TokenState = {
  token: Option.none(),
  invalid: Option.none(),
  rateLimit: Option.none(),
  lastError: Option.none(),
  lastRefreshedAt: Option.none(),
  lastUsedAt: Option.none(),
  username: Option.none()
}

const isExpired = (record: TokenRecord, now: number): boolean =>
  Option.match(record.expiresAt, { onNone: () => false, onSome: (at) => at <= now })

/** Whether a rate limit still blocks use at `now`. */
export const isLimited = (rateLimit: Option.Option<RateLimit>, now: number): boolean =>
  Option.match(rateLimit, {
    onNone: () => false,
    onSome: (rl) => (rl.limited || rl.remaining === 0) && rl.resetAt !== undefined && rl.resetAt > now
  })

/** The status users see, derived from the state at `now`. */
export const status = (state: TokenState, now: number): TokenStatus => {
  if (Option.isSome(state.invalid)) return "invalid"
  if (Option.isNone(state.token)) return "missing"
  if (isExpired(state.token.value, now)) return "expired"
  if (isLimited(state.rateLimit, now)) return "rate_limited"
  return "available"
}

/**
 * No token is handed out within this long of its expiry, whatever the refresh window: a
 * caller needs time to use it, and the expiry may be a little off (clock skew, latency).
 */
export const HANDOUT_MARGIN_MS = 60_000

/** Whether a token may still be handed out at `now`: it has no expiry or is valid beyond the margin. */
export const servable = (record: TokenRecord, now: number): boolean => servableUntil(record) > now

/** Until when (exclusive) a token may be handed out: `servable(record, now)` is `now < servableUntil(record)`. */
export const servableUntil = (record: TokenRecord): number =>
  Option.match(record.expiresAt, { onNone: () => Infinity, onSome: (at) => at - HANDOUT_MARGIN_MS })

/** What `get` must do before it can hand a token out (SPEC §2.2). */
export type Need = "use" | "refresh" | "obtain"

/**
 * Decides between using the stored token, refreshing it, or obtaining a new one.
 * A token inside the refresh window (never less than the hand-out margin) is refreshed; a
 * missing or expired token is obtained again, never refreshed (a dead token cannot refresh
 * itself).
 */
export const need = (state: TokenState, now: number, windowMs: number): Need =>
  Option.match(state.token, {
    onNone: () => "obtain",
    onSome: (record) =>
      Option.match(record.expiresAt, {
        onNone: () => "use",
        onSome: (at) => at <= now ? "obtain" : at - Math.max(windowMs, HANDOUT_MARGIN_MS) <= now ? "refresh" : "use"
      })
  })

/** A short preview that identifies a token without revealing it: first 4 and last 4. */
export const preview = (token: Redacted.Redacted<string>): string => {
  const value = Redacted.value(token)
  return value.length <= 12 ? `${value.slice(0, 2)}…` : `${value.slice(0, 4)}…${value.slice(-4)}`
}

/** The public view of an account's token: never contains the raw token. */
export class TokenInfo extends Schema.Class<TokenInfo>("@tessera/core/TokenInfo")({
  accountId: Schema.String,
  provider: Schema.String,
  pool: Schema.String,
  status: TokenStatus,
  hasToken: Schema.Boolean,
  tokenPreview: Schema.NullOr(Schema.String),
  expiresAt: Schema.NullOr(Schema.Number),
  expiresInSeconds: Schema.NullOr(Schema.Number),
  issuedAt: Schema.NullOr(Schema.Number),
  source: Schema.NullOr(TokenOrigin),
  lastRefreshedAt: Schema.NullOr(Schema.Number),
  lastUsedAt: Schema.NullOr(Schema.Number),
  username: Schema.NullOr(Schema.String),
  lastError: Schema.NullOr(LastError),
  invalidReason: Schema.NullOr(Schema.String),
  rateLimit: Schema.NullOr(RateLimit)
}) {}

export const info = (
  account: { readonly id: AccountId; readonly provider: string; readonly pool: string },
  state: TokenState,
  now: number
): TokenInfo => {
  const record = Option.getOrUndefined(state.token)
  const expiresAt = record ? Option.getOrNull(record.expiresAt) : null
  return new TokenInfo({
    accountId: account.id,
    provider: account.provider,
    pool: account.pool,
    status: status(state, now),
    hasToken: record !== undefined,
    tokenPreview: record ? preview(record.token) : null,
    expiresAt,
    expiresInSeconds: expiresAt === null ? null : Math.max(0, Math.floor((expiresAt - now) / 1000)),
    issuedAt: record?.issuedAt ?? null,
    source: record?.origin ?? null,
    lastRefreshedAt: Option.getOrNull(state.lastRefreshedAt),
    lastUsedAt: Option.getOrNull(state.lastUsedAt),
    username: Option.getOrNull(state.username),
    lastError: Option.getOrNull(state.lastError),
    invalidReason: Option.getOrNull(Option.map(state.invalid, (i) => i.reason)),
    rateLimit: Option.getOrNull(state.rateLimit)
  }, true) // built from a valid state: checking every field again costs more than all the rest
}

/**
 * Until when `info` of this state, read at `now`, reads the same: the first whole millisecond
 * after `now` at which its status or its seconds to expiry may change (the token expiring, a
 * rate limit resetting, the countdown's next second); Infinity when neither can. Nothing else
 * in it depends on the time, so an info can be kept and shown again until then.
 */
export const infoSteadyUntil = (state: TokenState, now: number): number => {
  let until = Infinity
  const expiresAt = Option.getOrUndefined(Option.flatMap(state.token, (record) => record.expiresAt))
  if (expiresAt !== undefined && expiresAt > now) {
    // `expiresInSeconds` is k while expiresAt - t is in [1000k, 1000(k + 1)); the status turns at expiresAt
    const k = Math.floor((expiresAt - now) / 1000)
    until = Math.min(Math.floor(expiresAt - 1000 * k) + 1, Math.ceil(expiresAt))
  }
  if (isLimited(state.rateLimit, now)) until = Math.min(until, Math.ceil(Option.getOrThrow(state.rateLimit).resetAt ?? now))
  return until
}

/** A token handed out for use: what `acquire` and `get` return. */
export interface Lease {
  readonly accountId: AccountId
  readonly token: Redacted.Redacted<string>
  readonly expiresAt: Option.Option<number>
  readonly rateLimit: Option.Option<RateLimit>
}
