/**
 * The JSON of the HTTP API (SPEC §6), as schemas: snake_case fields, every timestamp as UTC
 * ISO-8601 (`expires_at`) beside the same instant in the configured zone with its offset
 * (`expires_at_local`), secrets as `Redacted` from the moment a request body is decoded
 * until a response that hands a token out is encoded. The functions at the end turn core's
 * camelCase values into these shapes. The CLI builds its client from the same schemas.
 */
import { Account, Events, Settings, Token } from "@tessera/core"
import type { Lifecycle, TokenPool, TokenStore } from "@tessera/core"
import { DateTime, Duration, Either, Option, ParseResult, Redacted, Schema } from "effect"

// --- common -------------------------------------------------------------------------------

const Timestamp = Schema.String.annotations({ description: "UTC, ISO-8601", examples: ["2026-01-02T03:04:05.000Z"] })
const LocalTimestamp = Schema.String.annotations({
  description: "the same instant in TESSERA_TIMEZONE, ISO-8601 with its offset",
  examples: ["2026-01-02T08:34:05.000+05:30"]
})
const NullableTime = Schema.NullOr(Timestamp)
const NullableLocalTime = Schema.NullOr(LocalTimestamp)

/** A secret in a request or a response: never echoed by an error message. */
export const Secret = Schema.Redacted(Schema.String.pipe(Schema.minLength(1), Schema.maxLength(8192))).annotations({
  message: () => ({ message: "must be a non-empty string of at most 8192 characters", override: true })
})

/** An account id in a path. */
export const AccountIdParam = Account.AccountId
/** A pool name in a path. */
export const PoolParam = Account.PoolId

/**
 * An expiry given by a client: ISO-8601 (a time without an offset is read in
 * `TESSERA_TIMEZONE`), or a number of epoch seconds (milliseconds when it is that large).
 */
export const ExpiresAtInput = Schema.Union(
  Schema.String.annotations({ description: "ISO-8601; without an offset it is read in TESSERA_TIMEZONE" }),
  Schema.Number.annotations({ description: "epoch seconds (or milliseconds)" })
).annotations({ message: () => "expires_at must be an ISO-8601 time or a number of epoch seconds" })

// --- token info ---------------------------------------------------------------------------

export const LastError = Schema.Struct({
  code: Schema.String,
  message: Schema.String,
  at: Timestamp,
  at_local: LocalTimestamp
}).annotations({ identifier: "LastError" })

export const RateLimit = Schema.Struct({
  limit: Schema.NullOr(Schema.Number),
  remaining: Schema.NullOr(Schema.Number),
  reset_at: NullableTime,
  reset_at_local: NullableLocalTime,
  resource: Schema.NullOr(Schema.String)
}).annotations({ identifier: "RateLimit" })

const tokenInfoFields = {
  account_id: Schema.String,
  provider: Schema.String,
  pool: Schema.String,
  status: Token.TokenStatus,
  has_token: Schema.Boolean,
  token_preview: Schema.NullOr(Schema.String),
  expires_at: NullableTime,
  expires_at_local: NullableLocalTime,
  expires_in_seconds: Schema.NullOr(Schema.Number),
  issued_at: NullableTime,
  issued_at_local: NullableLocalTime,
  source: Schema.NullOr(Token.TokenOrigin),
  last_refreshed_at: NullableTime,
  last_refreshed_at_local: NullableLocalTime,
  last_used_at: NullableTime,
  last_used_at_local: NullableLocalTime,
  username: Schema.NullOr(Schema.String),
  last_error: Schema.NullOr(LastError),
  invalid_reason: Schema.NullOr(Schema.String),
  rate_limit: Schema.NullOr(RateLimit)
}

/** An account's token, without the token (SPEC §6, token info). */
export const TokenInfo = Schema.Struct(tokenInfoFields).annotations({ identifier: "TokenInfo" })
export type TokenInfo = typeof TokenInfo.Type

export const Validation = Schema.Struct({
  account_id: Schema.String,
  valid: Schema.Boolean,
  checked_at: Timestamp,
  checked_at_local: LocalTimestamp,
  reason: Schema.String,
  upstream_status: Schema.NullOr(Schema.Number)
}).annotations({ identifier: "Validation" })

/** What `GET /accounts/{id}/token` hands out. */
export const RawToken = Schema.Struct({
  account_id: Schema.String,
  access_token: Secret,
  expires_at: NullableTime,
  expires_at_local: NullableLocalTime
}).annotations({ identifier: "RawToken" })

/** What `POST /pools/{pool}/acquire` hands out. */
export const Lease = Schema.Struct({
  account_id: Schema.String,
  access_token: Secret,
  expires_at: NullableTime,
  expires_at_local: NullableLocalTime,
  rate_limit: Schema.NullOr(RateLimit)
}).annotations({ identifier: "Lease" })

// --- accounts -----------------------------------------------------------------------------

/** A source as shown: its configuration without any secret. */
export const SourceView = Schema.Union(
  Schema.Struct({ type: Schema.Literal("static") }),
  Schema.Struct({ type: Schema.Literal("password"), base_url: Schema.NullOr(Schema.String), username: Schema.String }),
  Schema.Struct({ type: Schema.Literal("remote"), service_url: Schema.NullOr(Schema.String) }),
  Schema.Struct({
    type: Schema.Literal("oauth2"),
    token_url: Schema.String,
    client_id: Schema.String,
    grant: Schema.String,
    scope: Schema.NullOr(Schema.String)
  }),
  Schema.Struct({ type: Schema.Literal("custom"), kind: Schema.String })
).annotations({ identifier: "Source" })
export type SourceView = typeof SourceView.Type

/** An account: its configuration (secrets left out) and its token's info. */
export const AccountView = Schema.Struct({
  account_id: Schema.String,
  provider: Schema.String,
  pool: Schema.String,
  label: Schema.NullOr(Schema.String),
  source: SourceView,
  created_at: Timestamp,
  created_at_local: LocalTimestamp,
  token: TokenInfo
}).annotations({ identifier: "Account" })

/** A source as registered: secrets are accepted here and never shown again. */
export const SourceInput = Schema.Union(
  Schema.Struct({ type: Schema.Literal("static") }),
  Schema.Struct({
    type: Schema.Literal("password"),
    base_url: Account.PasswordSource.fields.baseUrl,
    username: Schema.NonEmptyString,
    password: Secret
  }),
  Schema.Struct({ type: Schema.Literal("remote"), service_url: Account.RemoteSource.fields.serviceUrl }),
  Schema.Struct({
    type: Schema.Literal("oauth2"),
    token_url: Account.OAuth2Source.fields.tokenUrl,
    client_id: Schema.NonEmptyString,
    client_secret: Secret,
    grant: Schema.optional(Schema.Literal("refresh_token", "client_credentials")),
    refresh_token: Schema.optional(Secret),
    scope: Schema.optional(Schema.String)
  })
).annotations({ identifier: "SourceInput" })
export type SourceInput = typeof SourceInput.Type

export const NewAccount = Schema.Struct({
  account_id: Account.AccountId,
  provider: Account.ProviderId,
  pool: Schema.optional(Account.PoolId),
  label: Schema.optional(Schema.String.pipe(Schema.maxLength(200))),
  source: SourceInput,
  access_token: Schema.optional(Secret),
  expires_at: Schema.optional(ExpiresAtInput)
}).annotations({ identifier: "NewAccount" })

// --- token operations ---------------------------------------------------------------------

export const UpdateToken = Schema.Struct({
  access_token: Secret,
  expires_at: Schema.optional(ExpiresAtInput),
  account_id: Schema.optional(Account.AccountId)
}).annotations({ identifier: "UpdateToken" })

export const UpdateParams = Schema.Struct({
  validate: Schema.optional(
    Schema.BooleanFromString.annotations({ message: () => "validate must be true or false" })
  )
})

// --- pools --------------------------------------------------------------------------------

export const Pool = Schema.Struct({
  pool: Schema.String,
  provider: Schema.String,
  total: Schema.Number,
  available: Schema.Number,
  rate_limited: Schema.Number,
  invalid: Schema.Number,
  next_reset_at: NullableTime,
  next_reset_at_local: NullableLocalTime
}).annotations({ identifier: "Pool" })

export const AddPoolToken = Schema.Struct({
  access_token: Secret,
  account_id: Schema.optional(Account.AccountId),
  label: Schema.optional(Schema.String.pipe(Schema.maxLength(200))),
  expires_at: Schema.optional(ExpiresAtInput)
}).annotations({ identifier: "AddPoolToken" })

/** The longest a caller may ask `acquire` to wait. */
export const MAX_WAIT = Duration.minutes(10)

/** `5s`, `90s`, `1m`, `250ms`, or a number of seconds, up to ten minutes. */
export const WaitDuration = Schema.transformOrFail(Schema.String, Schema.DurationFromSelf, {
  strict: true,
  decode: (text, _, ast) =>
    Option.match(Settings.parseDuration(text), {
      onNone: () =>
        ParseResult.fail(new ParseResult.Type(ast, text, `wait must be a duration such as 5s, 1m or 250ms (got '${text}')`)),
      onSome: (duration) =>
        Duration.greaterThan(duration, MAX_WAIT)
          ? ParseResult.fail(new ParseResult.Type(ast, text, "wait must be at most 10m"))
          : ParseResult.succeed(duration)
    }),
  encode: (duration) => ParseResult.succeed(`${Duration.toMillis(duration)}ms`)
}).annotations({ description: "how long to wait for a rate limit to reset, e.g. 30s (at most 10m)" })

export const AcquireParams = Schema.Struct({ wait: Schema.optional(WaitDuration) })

const HeaderValue = Schema.Union(Schema.String, Schema.Number).pipe(
  Schema.transform(Schema.String, { strict: true, decode: String, encode: (s) => s })
)

export const Report = Schema.Struct({
  account_id: Schema.optional(Account.AccountId),
  access_token: Schema.optional(Secret),
  status: Schema.Int.pipe(Schema.between(100, 599)).annotations({
    message: () => "status must be an HTTP status code (100-599)"
  }),
  headers: Schema.optionalWith(Schema.Record({ key: Schema.String, value: HeaderValue }), { default: () => ({}) })
}).annotations({ identifier: "Report" })

// --- health, events, audit ----------------------------------------------------------------

export const Health = Schema.Struct({
  status: Schema.Literal("ok", "degraded"),
  time: Timestamp,
  time_local: LocalTimestamp,
  accounts: Schema.Number,
  tokens_available: Schema.Number
}).annotations({ identifier: "Health" })

const eventFields = {
  type: Events.EventType,
  account_id: Schema.NullOr(Schema.String),
  at: Timestamp,
  at_local: LocalTimestamp,
  actor: Schema.String,
  outcome: Events.Outcome,
  detail: Schema.String,
  data: Schema.Record({ key: Schema.String, value: Schema.Union(Schema.String, Schema.Number, Schema.Boolean, Schema.Null) })
}

export const Event = Schema.Struct(eventFields).annotations({ identifier: "Event" })

export const AuditEntry = Schema.Struct({ id: Schema.Number, ...eventFields }).annotations({ identifier: "AuditEntry" })

const isAccountId = Schema.is(Account.AccountId)

export const AuditParams = Schema.Struct({
  // An id no account can have is a mistake, not a filter that matches nothing.
  account_id: Schema.optional(
    Schema.String.pipe(Schema.filter((id): boolean => isAccountId(id), {
      message: () => "account_id must be an account id: 1-128 letters, digits and . _ : @ -"
    }))
  ),
  limit: Schema.optional(
    Schema.NumberFromString.pipe(Schema.int(), Schema.between(1, 1000)).annotations({
      message: () => "limit must be a whole number from 1 to 1000"
    })
  ),
  before: Schema.optional(
    Schema.NumberFromString.pipe(Schema.int(), Schema.positive()).annotations({
      message: () => "before must be an audit entry id"
    })
  )
})

// --- from core ----------------------------------------------------------------------------

const QUARTER_HOUR_MS = 15 * 60_000
/** How many quarter hours of offsets a zone's memo holds before it starts again. */
const MAX_MEMO = 4_096
const offsetMemo = new WeakMap<DateTime.TimeZone, Map<number, number>>()

const zoneOffset = (at: number, zone: DateTime.TimeZone): number =>
  DateTime.zonedOffset(DateTime.unsafeMakeZoned(at, { timeZone: zone }))

/**
 * `zone`'s offset from UTC at `at`, in milliseconds. Asking the time-zone database is the
 * slow part of showing a time (most of a token status answer's cost), so it is asked once per
 * zone and quarter hour: the memo holds the quarter's offset when the offset is the same at its
 * first and last millisecond, and `NaN` when it changes inside the quarter. Today's rules change
 * offsets on quarter hours, but older ones did not (Newfoundland changed at 00:01 local time
 * until 2011), so a quarter with a change in it is asked about every instant.
 */
const offsetAt = (at: number, zone: DateTime.TimeZone): number => {
  if (zone._tag === "Offset") return zone.offset
  let memo = offsetMemo.get(zone)
  if (memo === undefined) offsetMemo.set(zone, memo = new Map())
  const quarter = Math.floor(at / QUARTER_HOUR_MS)
  let offset = memo.get(quarter)
  if (offset === undefined) {
    const first = zoneOffset(quarter * QUARTER_HOUR_MS, zone)
    offset = first === zoneOffset((quarter + 1) * QUARTER_HOUR_MS - 1, zone) ? first : Number.NaN
    if (memo.size >= MAX_MEMO) memo.clear()
    memo.set(quarter, offset)
  }
  return Number.isNaN(offset) ? zoneOffset(at, zone) : offset
}

const twoDigits = (n: number) => (n < 10 ? "0" : "") + n

/** `+05:30`: an offset as ISO-8601 writes it (as `DateTime.formatIsoOffset` does). */
const offsetText = (offset: number) => {
  const abs = Math.abs(offset)
  let hours = Math.floor(abs / 3_600_000)
  let minutes = Math.round((abs % 3_600_000) / 60_000)
  if (minutes === 60) (hours += 1), (minutes = 0)
  return `${offset < 0 ? "-" : "+"}${twoDigits(hours)}:${twoDigits(minutes)}`
}

/**
 * An instant as the pair the API shows: UTC and local in `zone`, the latter exactly as
 * `DateTime.formatIsoOffset` writes it (`2026-11-23T22:10:58.861+05:30`).
 */
export const instant = (at: number, zone: DateTime.TimeZone): { readonly utc: string; readonly local: string } => {
  const offset = offsetAt(at, zone)
  return {
    utc: new Date(at).toISOString(),
    local: `${new Date(at + offset).toISOString().slice(0, -1)}${offsetText(offset)}`
  }
}

const pair = (at: number | null | undefined, zone: DateTime.TimeZone) =>
  at === null || at === undefined ? { utc: null, local: null } : instant(at, zone)

export const rateLimit = (rl: Token.RateLimit | null | undefined, zone: DateTime.TimeZone): typeof RateLimit.Type | null => {
  if (rl === null || rl === undefined) return null
  const reset = pair(rl.resetAt, zone)
  return {
    limit: rl.limit ?? null,
    remaining: rl.remaining ?? null,
    reset_at: reset.utc,
    reset_at_local: reset.local,
    resource: rl.resource ?? null
  }
}

export const tokenInfo = (info: Token.TokenInfo, zone: DateTime.TimeZone): TokenInfo => {
  const expires = pair(info.expiresAt, zone)
  const issued = pair(info.issuedAt, zone)
  const refreshed = pair(info.lastRefreshedAt, zone)
  const used = pair(info.lastUsedAt, zone)
  return {
    account_id: info.accountId,
    provider: info.provider,
    pool: info.pool,
    status: info.status,
    has_token: info.hasToken,
    token_preview: info.tokenPreview,
    expires_at: expires.utc,
    expires_at_local: expires.local,
    expires_in_seconds: info.expiresInSeconds,
    issued_at: issued.utc,
    issued_at_local: issued.local,
    source: info.source,
    last_refreshed_at: refreshed.utc,
    last_refreshed_at_local: refreshed.local,
    last_used_at: used.utc,
    last_used_at_local: used.local,
    username: info.username,
    last_error: info.lastError === null ? null : (() => {
      const at = instant(info.lastError.at, zone)
      return { code: info.lastError.code, message: info.lastError.message, at: at.utc, at_local: at.local }
    })(),
    invalid_reason: info.invalidReason,
    rate_limit: rateLimit(info.rateLimit, zone)
  }
}

export const sourceView = (source: Account.SourceConfig): SourceView => {
  switch (source._tag) {
    case "static":
      return { type: "static" }
    case "password":
      return { type: "password", base_url: source.baseUrl ?? null, username: source.username }
    case "remote":
      return { type: "remote", service_url: source.serviceUrl ?? null }
    case "oauth2":
      return { type: "oauth2", token_url: source.tokenUrl, client_id: source.clientId, grant: source.grant, scope: source.scope ?? null }
    case "custom":
      return { type: "custom", kind: source.kind }
  }
}

export const sourceConfig = (input: SourceInput): Account.SourceConfig => {
  switch (input.type) {
    case "static":
      return new Account.StaticSource()
    case "password":
      return new Account.PasswordSource({ baseUrl: input.base_url, username: input.username, password: input.password })
    case "remote":
      return new Account.RemoteSource({ serviceUrl: input.service_url })
    case "oauth2":
      return new Account.OAuth2Source({
        tokenUrl: input.token_url,
        clientId: input.client_id,
        clientSecret: input.client_secret,
        grant: input.grant ?? "refresh_token",
        refreshToken: input.refresh_token,
        scope: input.scope
      })
  }
}

export const accountView = (account: Account.Account, info: Token.TokenInfo, zone: DateTime.TimeZone): typeof AccountView.Type => {
  const created = instant(account.createdAt, zone)
  return {
    account_id: account.id,
    provider: account.provider,
    pool: account.pool,
    label: account.label ?? null,
    source: sourceView(account.source),
    created_at: created.utc,
    created_at_local: created.local,
    token: tokenInfo(info, zone)
  }
}

export const validation = (result: Lifecycle.ValidationResult, zone: DateTime.TimeZone): typeof Validation.Type => {
  const checked = instant(result.checkedAt, zone)
  return {
    account_id: result.accountId,
    valid: result.valid,
    checked_at: checked.utc,
    checked_at_local: checked.local,
    reason: result.reason,
    upstream_status: result.upstreamStatus
  }
}

export const rawToken = (lease: Token.Lease, zone: DateTime.TimeZone): typeof RawToken.Type => {
  const expires = pair(Option.getOrNull(lease.expiresAt), zone)
  return { account_id: lease.accountId, access_token: lease.token, expires_at: expires.utc, expires_at_local: expires.local }
}

export const lease = (leased: Token.Lease, zone: DateTime.TimeZone): typeof Lease.Type => ({
  ...rawToken(leased, zone),
  rate_limit: rateLimit(Option.getOrNull(leased.rateLimit), zone)
})

/**
 * A token info as JSON text, without a pass through the schema: its encoded form is itself
 * (every field is already JSON), so this is the text the API's encoder writes; a test holds
 * the two to the same output for arbitrary infos.
 */
export const tokenInfoJson = (info: TokenInfo): string => JSON.stringify(info)

/** A lease as JSON text, the token revealed: the text the API's encoder writes (a test holds them equal). */
export const leaseJson = (leased: typeof Lease.Type): string =>
  JSON.stringify({ ...leased, access_token: Redacted.value(leased.access_token) })

export const pool = (summary: TokenPool.PoolSummary, zone: DateTime.TimeZone): typeof Pool.Type => {
  const reset = pair(summary.nextResetAt, zone)
  return {
    pool: summary.pool,
    provider: summary.provider,
    total: summary.total,
    available: summary.available,
    rate_limited: summary.rateLimited,
    invalid: summary.invalid,
    next_reset_at: reset.utc,
    next_reset_at_local: reset.local
  }
}

export const event = (e: Events.TokenEvent, zone: DateTime.TimeZone): typeof Event.Type => {
  const at = instant(e.at, zone)
  return {
    type: e.type,
    account_id: e.accountId,
    at: at.utc,
    at_local: at.local,
    actor: e.actor,
    outcome: e.outcome,
    detail: e.detail,
    data: e.data
  }
}

export const auditEntry = (entry: TokenStore.AuditEntry, zone: DateTime.TimeZone): typeof AuditEntry.Type => ({
  id: entry.id,
  ...event(entry, zone)
})

/** The last instant the API accepts: 9999-12-31T23:59:59.999Z. */
const LATEST = 253_402_300_799_999

/**
 * Reads a client's expiry: ISO-8601 with an offset, ISO-8601 without one (read in `zone`), or
 * epoch seconds (milliseconds when the number is that large).
 */
export const parseExpiresAt = (input: string | number, zone: DateTime.TimeZone): Either.Either<number, string> => {
  if (typeof input === "number") {
    const at = input >= 1e11 ? Math.round(input) : Math.round(input * 1000)
    return Number.isFinite(input) && input > 0 && at <= LATEST
      ? Either.right(at)
      : Either.left("expires_at must be a positive number of epoch seconds before the year 10000")
  }
  const text = input.trim()
  const match = /^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?)?(Z|[+-]\d{2}:?\d{2})?$/i.exec(text)
  if (match === null) {
    return Either.left(`expires_at must be an ISO-8601 time such as 2026-01-02T15:30:00+05:30 (got '${text.slice(0, 40)}')`)
  }
  const [, year, month, day, hours = "0", minutes = "0", seconds = "0", fraction = "0", offset] = match
  const wall = Date.UTC(Number(year), Number(month) - 1, Number(day), Number(hours), Number(minutes), Number(seconds)) +
    Math.floor(Number(`0.${fraction}`) * 1000)
  const back = new Date(wall)
  const valid = back.getUTCFullYear() === Number(year) && back.getUTCMonth() === Number(month) - 1 &&
    back.getUTCDate() === Number(day) && Number(hours) < 24 && Number(minutes) < 60 && Number(seconds) < 60
  if (!valid) return Either.left(`expires_at is not a valid time: '${text.slice(0, 40)}'`)
  if (offset === undefined) {
    return Either.right(DateTime.toEpochMillis(DateTime.unsafeMakeZoned(wall, { timeZone: zone, adjustForTimeZone: true })))
  }
  if (offset.toUpperCase() === "Z") return Either.right(wall)
  const sign = offset.startsWith("-") ? -1 : 1
  const digits = offset.slice(1).replace(":", "")
  const offsetMinutes = Number(digits.slice(0, 2)) * 60 + Number(digits.slice(2))
  if (Number(digits.slice(2)) >= 60 || offsetMinutes > 18 * 60) return Either.left(`expires_at has an invalid offset: '${offset}'`)
  return Either.right(wall - sign * offsetMinutes * 60_000)
}
