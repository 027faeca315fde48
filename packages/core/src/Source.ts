/**
 * Sources and providers: the two halves of talking to an upstream. A **source** knows how
 * an account's token is obtained and refreshed (static, password, remote auth service,
 * OAuth2, or one registered by an embedding app). A **provider** knows the upstream API the
 * token is used against: how to validate a token there. `@tessera/providers` implements
 * them; the lifecycle only sees these interfaces, looked up through the `Drivers` service.
 */
import { Context, Effect, Layer, Option, Redacted } from "effect"
import { sourceKind } from "./Account.js"
import type { Account } from "./Account.js"
import { OperationUnsupported } from "./Errors.js"
import type { UpstreamError } from "./Errors.js"
import { RateLimit } from "./Token.js"
import type { Issued } from "./Token.js"
import { parseRetryAfter } from "./Upstream.js"

export interface TokenSource {
  /** The source kind (`static`, `password`, …, or a custom source's kind). */
  readonly kind: string
  /** Obtains a fresh token from the account's credentials, if the source can. */
  readonly obtain: Option.Option<(account: Account) => Effect.Effect<Issued, UpstreamError>>
  /**
   * Refreshes the current token, if the source can. Only called with a token that has not
   * expired: a dead token is never used to refresh (SPEC §2.2).
   */
  readonly refresh: Option.Option<
    (account: Account, current: Redacted.Redacted<string>) => Effect.Effect<Issued, UpstreamError>
  >
}

export interface Validation {
  readonly valid: boolean
  /** Why the token is invalid, or a note on a valid one. Never contains the token. */
  readonly reason: string
  readonly upstreamStatus: number | null
  readonly username?: string | undefined
  readonly rateLimit?: RateLimit | undefined
}

/**
 * What a response says about the token that made it (SPEC §1, §3.2): fine, rate-limited
 * until a time (a primary quota or a secondary limit), unauthorized, worth retrying
 * (5xx), or refused for reasons that are not the token's fault (other 4xx).
 */
export type Verdict =
  | { readonly _tag: "ok" }
  | { readonly _tag: "rate_limited"; readonly until: number; readonly scope: "primary" | "secondary" }
  | { readonly _tag: "unauthorized" }
  | { readonly _tag: "retryable" }
  | { readonly _tag: "rejected" }

export interface Observation {
  readonly verdict: Verdict
  /** The rate-limit state the response reports, if it reports any. */
  readonly rateLimit: Option.Option<RateLimit>
}

/** Response headers with lower-case names. */
export type Headers = Readonly<Record<string, string | undefined>>

export interface Provider {
  readonly id: string
  /** Reads a response to a request made with one of this provider's tokens. */
  readonly observe?: ((status: number, headers: Headers, now: number) => Observation) | undefined
  /**
   * Checks a token against the upstream. A token the upstream rejects is a `Validation`
   * with `valid: false`; a failure to ask (timeout, 5xx) is an `UpstreamError`.
   */
  readonly validate: (token: Redacted.Redacted<string>, account: Account) => Effect.Effect<Validation, UpstreamError>
}

export interface DriversService {
  readonly source: (account: Account) => Effect.Effect<TokenSource, OperationUnsupported>
  /** The account's source, if one of its kind is registered. */
  readonly lookupSource: (account: Account) => TokenSource | undefined
  readonly provider: (account: Account) => Provider
}

/** The sources and providers available to the lifecycle. */
export class Drivers extends Context.Tag("@tessera/core/Drivers")<Drivers, DriversService>() {}

/** The `static` source: the token is handed in and can be neither obtained nor refreshed. */
export const staticSource: TokenSource = { kind: "static", obtain: Option.none(), refresh: Option.none() }

/** How long a 429 without `Retry-After` keeps a token out of rotation. */
export const DEFAULT_LIMIT_MS = 60_000

/**
 * The reading any provider gets: 429 (with `Retry-After` in seconds or as a date, else a
 * minute) is a limit, 401 unauthorized, 5xx and 408 retryable, other 4xx not the token's fault.
 */
export const observeGeneric = (status: number, headers: Headers, now: number): Observation => {
  if (status === 429) {
    const after = Option.getOrElse(parseRetryAfter(headers["retry-after"], now), () => DEFAULT_LIMIT_MS)
    return {
      verdict: { _tag: "rate_limited", until: now + after, scope: "secondary" },
      rateLimit: Option.some(new RateLimit({ remaining: 0, resetAt: now + after, limited: true }))
    }
  }
  const verdict: Verdict = status === 401
    ? { _tag: "unauthorized" }
    : status >= 500 || status === 408
    ? { _tag: "retryable" }
    : status >= 400
    ? { _tag: "rejected" }
    : { _tag: "ok" }
  return { verdict, rateLimit: Option.none() }
}

/** The provider's reading of a response, or the generic one. */
export const observe = (provider: Provider, status: number, headers: Headers, now: number): Observation =>
  (provider.observe ?? observeGeneric)(status, headers, now)

/** A provider that cannot validate: `update` then accepts a token as given, and says so. */
export const unvalidatedProvider = (id: string): Provider => ({
  id,
  validate: () =>
    Effect.succeed({ valid: true, reason: `provider '${id}' has no way to validate tokens`, upstreamStatus: null })
})

/** Builds the drivers from lists of sources and providers; `static` is always present. */
export const make = (options: {
  readonly sources?: Iterable<TokenSource> | undefined
  readonly providers?: Iterable<Provider> | undefined
}): DriversService => {
  const sources = new Map<string, TokenSource>([["static", staticSource]])
  for (const source of options.sources ?? []) sources.set(source.kind, source)
  const providers = new Map<string, Provider>()
  for (const provider of options.providers ?? []) providers.set(provider.id, provider)
  return {
    lookupSource: (account) => sources.get(sourceKind(account.source)),
    source: (account) => {
      const kind = sourceKind(account.source)
      const source = sources.get(kind)
      return source === undefined
        ? Effect.fail(
          new OperationUnsupported({ accountId: account.id, operation: "use", reason: `no source of kind '${kind}' is registered` })
        )
        : Effect.succeed(source)
    },
    provider: (account) => providers.get(account.provider) ?? unvalidatedProvider(account.provider)
  }
}

export const layer = (options: Parameters<typeof make>[0]): Layer.Layer<Drivers> => Layer.succeed(Drivers, make(options))

/** Builds drivers with access to other services (an `HttpClient`, say). */
export const layerEffect = <E, R>(
  options: Effect.Effect<Parameters<typeof make>[0], E, R>
): Layer.Layer<Drivers, E, R> => Layer.effect(Drivers, Effect.map(options, make))

/** Whether a token's value looks plausible: non-empty, no whitespace or control characters. */
export const isWellFormedToken = (token: Redacted.Redacted<string>): boolean =>
  /^[\x21-\x7e]{1,8192}$/.test(Redacted.value(token))
