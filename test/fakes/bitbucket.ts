/**
 * A fake Bitbucket Cloud REST API (`/2.0`) with per-token rate limits: `GET /2.0/user` and every
 * other GET under `/2.0` use one request of the token's quota; an exhausted quota answers 429,
 * with `Retry-After` unless switched off. `X-RateLimit-*` headers are sent only when switched on,
 * since Bitbucket does not always send them. Tokens come as `Authorization: Bearer <token>` or
 * as the password of `Authorization: Basic` (app passwords and API tokens).
 */
import { Effect } from "effect"
import type { Scope } from "effect"
import * as Quota from "./quota.js"
import * as Server from "./server.js"

export type Route = "user" | "api"

/** What the fake's answers include; both can be changed while it runs. */
export interface Settings {
  /** `Retry-After` (seconds to the reset) on 429; on unless set. */
  readonly retryAfter: boolean
  /** `X-RateLimit-Limit`, `-Remaining`, `-Reset` (epoch seconds) on every answer to a known token; off unless set. */
  readonly rateLimitHeaders: boolean
}

export interface Options extends Partial<Settings> {
  /** Length of a rate-limit window; 3600 unless given. */
  readonly windowSeconds?: number
  /** The fake's clock (epoch milliseconds); `Date.now` unless given. */
  readonly now?: () => number
}

export interface TokenOptions extends Quota.QuotaOptions {
  /** Requests per window; 1000 unless given. */
  readonly limit?: number
  /** `user<n>` unless given. */
  readonly username?: string
  /** The username unless given. */
  readonly displayName?: string
  /** A braced UUID made up from the token's number unless given. */
  readonly uuid?: string
}

/** A token's quota as the `X-RateLimit-*` headers report it. */
export interface BitbucketQuota {
  readonly limit: number
  readonly remaining: number
  /** Epoch seconds. */
  readonly reset: number
}

export interface BitbucketServer extends Server.FakeServer<Route>, Quota.TokenControls<TokenOptions, BitbucketQuota> {
  readonly configure: (settings: Partial<Settings>) => void
}

interface User {
  readonly username: string
  readonly display_name: string
  readonly uuid: string
}

const bitbucketQuota = (snapshot: Quota.QuotaSnapshot): BitbucketQuota => ({
  limit: snapshot.limit,
  remaining: snapshot.remaining,
  reset: snapshot.reset
})

const bitbucketError = (status: number, message: string, headers: Readonly<Record<string, string>> = {}) =>
  Server.json(status, { type: "error", error: { message } }, headers)

const uuidFor = (n: number) => `{00000000-0000-4000-8000-${n.toString(16).padStart(12, "0")}}`

export const make = (options: Options = {}): Effect.Effect<BitbucketServer, never, Scope.Scope> =>
  Effect.gen(function*() {
    const now = options.now ?? Date.now
    const book = Quota.makeTokenBook<User>({ limit: 1000, windowSeconds: options.windowSeconds ?? 3600, now })
    let settings: Settings = { retryAfter: options.retryAfter ?? true, rateLimitHeaders: options.rateLimitHeaders ?? false }
    let nextNumber = 1

    const authenticated = Quota.guard<User>({
      book,
      token: (request) => Server.bearerToken(request) ?? Server.basicCredentials(request)?.password,
      unauthorized: () => bitbucketError(401, "Unauthorized"),
      exhausted: (_entry, quota) =>
        bitbucketError(
          429,
          "Rate limit for this resource has been exceeded",
          settings.retryAfter ? { "Retry-After": String(quota.secondsToReset) } : {}
        ),
      headers: (quota): Record<string, string> =>
        settings.rateLimitHeaders
          ? {
            "X-RateLimit-Limit": String(quota.limit),
            "X-RateLimit-Remaining": String(quota.remaining),
            "X-RateLimit-Reset": String(quota.reset)
          }
          : {}
    })

    const server = yield* Server.make<Route>({
      now,
      routes: [
        {
          name: "user",
          method: "GET",
          path: "/2.0/user",
          handle: authenticated(true, ({ identity }) => ({ type: "user", ...identity }))
        },
        { name: "api", method: "GET", path: "/2.0/*", handle: authenticated(true, (_entry, request) => ({ path: request.path })) }
      ]
    })

    const identify = (tokenOptions: TokenOptions | undefined): User => {
      const n = nextNumber++
      const username = tokenOptions?.username ?? `user${n}`
      return { username, display_name: tokenOptions?.displayName ?? username, uuid: tokenOptions?.uuid ?? uuidFor(n) }
    }

    return {
      ...server,
      ...Quota.tokenControls(book, identify, bitbucketQuota),
      configure: (changes) => {
        settings = { ...settings, ...changes }
      }
    }
  })
