/**
 * Per-token request quotas for the fakes of rate-limited APIs (GitHub, GitLab, Bitbucket):
 * `limit` requests per window, refilled when the fake's clock passes the reset time, and a
 * book of the tokens a fake knows with the identity each one stands for, and the guard that
 * authenticates a request and charges it to its token's quota.
 */
import * as Server from "./server.js"

/** One token's quota as the fakes report it. */
export interface QuotaSnapshot {
  readonly limit: number
  readonly remaining: number
  /** Requests granted in this window (`limit - remaining`). */
  readonly used: number
  /** Requests attempted in this window, refused ones included. */
  readonly observed: number
  /** When the window resets, epoch milliseconds. */
  readonly resetAt: number
  /** When the window resets, epoch seconds rounded up (the form rate-limit headers use). */
  readonly reset: number
  /** Whole seconds from now until the reset, at least 1 (the form `Retry-After` uses). */
  readonly secondsToReset: number
}

export interface QuotaOptions {
  /** Requests per window. */
  readonly limit?: number
  /** Requests left in the first window; `limit` unless given. */
  readonly remaining?: number
  /** End of the first window; one window from now unless given. */
  readonly resetAt?: Date
}

export interface Quota {
  readonly snapshot: () => QuotaSnapshot
  /** Takes one request from the quota; `false` (and nothing taken) when none is left. */
  readonly consume: () => boolean
}

export const makeQuota = (
  options: QuotaOptions,
  defaults: { readonly limit: number; readonly windowSeconds: number; readonly now: () => number }
): Quota => {
  const limit = options.limit ?? defaults.limit
  let remaining = Math.min(options.remaining ?? limit, limit)
  let observed = 0
  let resetAt = options.resetAt?.getTime() ?? defaults.now() + defaults.windowSeconds * 1000

  const refill = () => {
    const now = defaults.now()
    if (now < resetAt) return now
    remaining = limit
    observed = 0
    resetAt = now + defaults.windowSeconds * 1000
    return now
  }

  return {
    snapshot: () => {
      const now = refill()
      return {
        limit,
        remaining,
        used: limit - remaining,
        observed,
        resetAt,
        reset: Math.ceil(resetAt / 1000),
        secondsToReset: Math.max(1, Math.ceil((resetAt - now) / 1000))
      }
    },
    consume: () => {
      refill()
      observed++
      if (remaining === 0) return false
      remaining--
      return true
    }
  }
}

/** A token a fake knows: who it belongs to and its quota. */
export interface Entry<I> {
  readonly identity: I
  readonly quota: Quota
}

/** The tokens a fake knows. Adding a token again replaces it (a fresh quota, no longer revoked). */
export interface TokenBook<I> {
  readonly add: (token: string, identity: I, options: QuotaOptions) => void
  /** The entry of a known, unrevoked token. */
  readonly get: (token: string | undefined) => Entry<I> | undefined
  readonly revoke: (token: string) => void
  readonly snapshot: (token: string) => QuotaSnapshot | undefined
}

export const makeTokenBook = <I>(defaults: {
  readonly limit: number
  readonly windowSeconds: number
  readonly now: () => number
}): TokenBook<I> => {
  const entries = new Map<string, Entry<I>>()
  return {
    add: (token, identity, options) => void entries.set(token, { identity, quota: makeQuota(options, defaults) }),
    get: (token) => (token === undefined ? undefined : entries.get(token)),
    revoke: (token) => void entries.delete(token),
    snapshot: (token) => entries.get(token)?.quota.snapshot()
  }
}

/** What the handle of a rate-limited fake offers to manage its tokens. */
export interface TokenControls<O, Q> {
  /** Adds the token, or replaces it with a fresh quota (and un-revokes it). */
  readonly addToken: (token: string, options?: O) => void
  /** The token is answered 401 from now on. */
  readonly revoke: (token: string) => void
  /** The token's quota as of the fake's clock; `undefined` for unknown or revoked tokens. */
  readonly quota: (token: string) => Q | undefined
}

/** The token controls over `book`: `identify` makes the identity a new token stands for, `report` shows a quota. */
export const tokenControls = <I, O extends QuotaOptions, Q>(
  book: TokenBook<I>,
  identify: (options: O | undefined) => I,
  report: (quota: QuotaSnapshot) => Q
): TokenControls<O, Q> => ({
  addToken: (token, options) => book.add(token, identify(options), options ?? {}),
  revoke: book.revoke,
  quota: (token) => {
    const snapshot = book.snapshot(token)
    return snapshot === undefined ? undefined : report(snapshot)
  }
})

/** How a rate-limited fake authenticates requests and answers the ones it refuses. */
export interface GuardOptions<I> {
  readonly book: TokenBook<I>
  /** The token a request presents. */
  readonly token: (request: Server.FakeRequest) => string | undefined
  /** The answer to a missing, unknown or revoked token. */
  readonly unauthorized: (token: string | undefined) => Server.Reply
  /** The answer when the quota is used up. */
  readonly exhausted: (entry: Entry<I>, quota: QuotaSnapshot) => Server.Reply
  /** The rate-limit headers every answer to a known token carries. */
  readonly headers: (quota: QuotaSnapshot) => Readonly<Record<string, string>>
  /** A refusal that comes before the quota is used (an injected secondary limit). */
  readonly preempt?: (token: string) => Server.Reply | undefined
}

/**
 * Wraps a route's answer in authentication and rate limiting: unknown tokens get
 * `unauthorized`, then (when `consume`) the request takes one unit of quota or gets
 * `exhausted`, and every answer to a known token carries the quota as it is afterwards.
 */
export const guard = <I>(options: GuardOptions<I>) =>
(consume: boolean, respond: (entry: Entry<I>, request: Server.FakeRequest) => unknown) =>
(request: Server.FakeRequest): Server.Outcome => {
  const token = options.token(request)
  const entry = options.book.get(token)
  if (token === undefined || entry === undefined) return options.unauthorized(token)
  const refusal = (): Server.Reply | undefined => {
    if (!consume) return undefined
    const preempted = options.preempt?.(token)
    if (preempted !== undefined) return preempted
    return entry.quota.consume() ? undefined : options.exhausted(entry, entry.quota.snapshot())
  }
  const reply = refusal() ?? Server.json(200, respond(entry, request))
  // Taken after the request is charged, so the headers show the quota it left.
  return Server.withHeaders(reply, options.headers(entry.quota.snapshot()))
}
