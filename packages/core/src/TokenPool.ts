/**
 * Token pools (SPEC §3): the accounts that can serve the same requests, handed out in
 * least-recently-used order. `acquire` picks the token used longest ago among those that
 * are valid, unexpired and not rate-limited; rate-limited tokens come back by themselves at
 * their reset; invalid ones never come back until replaced or re-validated. `report` feeds a
 * response's status and headers back, so limits are tracked from real traffic. The pool is
 * implemented by the lifecycle layer, which owns the accounts.
 */
import { Context, Option, Schema } from "effect"
import type { Duration, Effect, Either, Exit, Redacted } from "effect"
import type { AccountNotFound, StoreError } from "./Errors.js"
import type { Headers } from "./Source.js"
import type { Lease, TokenInfo } from "./Token.js"

/** Every token of the pool is rate-limited; the earliest comes back at `retryAt`. */
export class PoolExhausted extends Schema.TaggedError<PoolExhausted>()("PoolExhausted", {
  pool: Schema.String,
  retryAt: Schema.Number
}) {
  override get message() {
    return `every token of pool '${this.pool}' is rate-limited; the first is usable again at ${new Date(this.retryAt).toISOString()}`
  }
}

/** No token of the pool can be used at all (all invalid, missing or expired), or the pool is empty. */
export class NoUsableToken extends Schema.TaggedError<NoUsableToken>()("NoUsableToken", {
  pool: Schema.String,
  reason: Schema.String
}) {
  override get message() {
    return `pool '${this.pool}' has no usable token: ${this.reason}`
  }
}

export type AcquireError = PoolExhausted | NoUsableToken

export interface AcquireOptions {
  /** Wait up to this long for a rate limit to reset instead of failing with `PoolExhausted`. */
  readonly wait?: Duration.DurationInput | undefined
}

/** What an upstream answered to a request made with a pool's token. */
export interface Report {
  readonly accountId?: string | undefined
  readonly token?: Redacted.Redacted<string> | undefined
  readonly status: number
  readonly headers: Headers
}

export interface PoolSummary {
  readonly pool: string
  readonly provider: string
  readonly total: number
  readonly available: number
  readonly rateLimited: number
  readonly invalid: number
  readonly nextResetAt: number | null
}

/**
 * Rotation shared by several instances on one database (SPEC §9): `claim` marks the least
 * recently used token of the pool that is usable for everyone as used at `at`, and names its
 * account; none when no token of the pool is usable now.
 */
export interface SharedRotationShape {
  readonly claim: (pool: string, at: number) => Effect.Effect<Option.Option<string>, StoreError>
}

/** The shared rotation, when the store is shared by several instances; absent, pools rotate in memory. */
export class SharedRotation extends Context.Reference<SharedRotation>()("@tessera/core/TokenPool/SharedRotation", {
  defaultValue: (): Option.Option<SharedRotationShape> => Option.none()
}) {}

export interface TokenPoolService {
  readonly acquire: (pool: string, options?: AcquireOptions) => Effect.Effect<Lease, AcquireError>
  /**
   * `acquire` without a wait, answered at once for `who` (the actor its audit record names)
   * at `at`, when the pool rotates in this process's memory; undefined when the rotation is
   * shared through the database (then only `acquire` can answer). For callers that answer
   * without a fiber (the HTTP fast lane).
   */
  readonly unsafeAcquire: (pool: string, who: string, at: number) => Either.Either<Lease, AcquireError> | undefined
  /**
   * Acquires a token, runs `use` with it, and reports the outcome back when `observe` can
   * read a status and headers from it (an HTTP response, say).
   */
  readonly withToken: <A, E, R>(
    pool: string,
    use: (lease: Lease) => Effect.Effect<A, E, R>,
    options?: AcquireOptions & {
      readonly observe?: ((exit: Exit.Exit<A, E>) => { readonly status: number; readonly headers: Headers } | undefined) | undefined
    }
  ) => Effect.Effect<A, E | AcquireError, R>
  readonly report: (pool: string, report: Report) => Effect.Effect<TokenInfo, AccountNotFound | StoreError>
  readonly countAvailable: (pool: string) => Effect.Effect<number>
  readonly list: (pool: string) => Effect.Effect<ReadonlyArray<TokenInfo>>
  readonly pools: Effect.Effect<ReadonlyArray<PoolSummary>>
  /** One pool's summary, if the pool has any account. */
  readonly summary: (pool: string) => Effect.Effect<Option.Option<PoolSummary>>
  /** Whether the pool has any account: a constant-time check. */
  readonly exists: (pool: string) => Effect.Effect<boolean>
  /** `exists`, answered at once. */
  readonly unsafeExists: (pool: string) => boolean
}

export class TokenPool extends Context.Tag("@tessera/core/TokenPool")<TokenPool, TokenPoolService>() {}
