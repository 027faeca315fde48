/**
 * Reading rate-limit state from response headers (SPEC §3.2), once for every provider that
 * reports it: a header family (`x-ratelimit-*` for GitHub and Bitbucket, `ratelimit-*` for
 * GitLab) with the limit, the requests left and the reset time in epoch seconds, and the
 * refusals that mean "wait": 429 everywhere, and for GitHub also 403. A refusal with
 * `Retry-After` is a secondary limit for that long (it wins over an exhausted quota, as
 * GitHub documents); one with `remaining: 0` is the primary quota until its reset; a bare 429
 * keeps the token out for the generic minute. Everything else reads as the generic verdict.
 */
import { Source, Token, Upstream } from "@tessera/core"
import { Option } from "effect"

/** How a provider reports and enforces its rate limits. */
export interface Policy {
  /** The prefix of the header family, lower-case: `x-ratelimit-` or `ratelimit-`. */
  readonly prefix: string
  /** Whether a 403 can be a rate limit (GitHub answers its limits with 403 or 429). */
  readonly forbiddenIsLimit: boolean
}

/** A header's value as a non-negative whole number, if it is one. */
const wholeNumber = (headers: Source.Headers, name: string): number | undefined => {
  const value = headers[name]?.trim()
  return value !== undefined && /^\d{1,15}$/.test(value) ? Number(value) : undefined
}

/** A rate limit as the upstreams count it: requests per window, reset in epoch seconds. */
export interface Quota {
  readonly limit?: number | undefined
  readonly remaining?: number | undefined
  readonly used?: number | undefined
  readonly reset?: number | undefined
  readonly resource?: string | undefined
}

/**
 * The rate-limit state of a quota: `limited` when nothing is left, so a successful answer
 * that used the last request already takes the token out of rotation until the reset.
 * `remaining` is derived from `used` when only that is given.
 */
export const fromQuota = ({ limit, remaining, reset, resource, used }: Quota): Token.RateLimit => {
  const left = remaining ?? (limit !== undefined && used !== undefined ? Math.max(0, limit - used) : undefined)
  return new Token.RateLimit({
    limit,
    remaining: left,
    resetAt: reset === undefined ? undefined : reset * 1000,
    resource: resource === undefined || resource === "" ? undefined : resource,
    limited: left === 0
  })
}

/** The state a response's headers report, if they report any. */
export const read = (prefix: string, headers: Source.Headers): Option.Option<Token.RateLimit> => {
  const quota: Quota = {
    limit: wholeNumber(headers, `${prefix}limit`),
    remaining: wholeNumber(headers, `${prefix}remaining`),
    used: wholeNumber(headers, `${prefix}used`),
    reset: wholeNumber(headers, `${prefix}reset`),
    resource: headers[`${prefix}resource`]?.trim()
  }
  const reports = quota.limit !== undefined || quota.remaining !== undefined || quota.used !== undefined || quota.reset !== undefined
  return reports ? Option.some(fromQuota(quota)) : Option.none()
}

type Limit = Extract<Source.Verdict, { readonly _tag: "rate_limited" }>

/** Whether, and until when, a refusal is a rate limit. */
const limitOf = (
  policy: Policy,
  status: number,
  headers: Source.Headers,
  reported: Option.Option<Token.RateLimit>,
  now: number
): Option.Option<Limit> => {
  if (status !== 429 && !(status === 403 && policy.forbiddenIsLimit)) return Option.none()
  const limit = (until: number, scope: Limit["scope"]): Option.Option<Limit> =>
    Option.some({ _tag: "rate_limited", until, scope })
  const retryAfter = Upstream.parseRetryAfter(headers["retry-after"], now)
  if (Option.isSome(retryAfter)) return limit(now + retryAfter.value, "secondary")
  const reset = Option.flatMap(
    Option.filter(reported, (rateLimit) => rateLimit.remaining === 0),
    (rateLimit) => Option.fromNullable(rateLimit.resetAt)
  )
  if (Option.isSome(reset)) return limit(reset.value, "primary")
  return status === 429 ? limit(now + Source.DEFAULT_LIMIT_MS, "secondary") : Option.none()
}

/** The provider's `observe`: what a response says about the token that made it. */
export const observer = (policy: Policy) => (status: number, headers: Source.Headers, now: number): Source.Observation => {
  const reported = read(policy.prefix, headers)
  return Option.match(limitOf(policy, status, headers, reported, now), {
    onNone: () => ({ verdict: Source.observeGeneric(status, headers, now).verdict, rateLimit: reported }),
    onSome: (verdict) => {
      const known = Option.getOrUndefined(reported)
      const rateLimit = new Token.RateLimit({
        limit: known?.limit,
        remaining: known?.remaining ?? 0,
        resource: known?.resource,
        resetAt: verdict.until,
        limited: true
      })
      return { verdict, rateLimit: Option.some(rateLimit) }
    }
  })
}
