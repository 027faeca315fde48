/**
 * A fake GitLab REST API (`/api/v4`) with per-token rate limits: `GET /api/v4/user` and every
 * other GET under `/api/v4` use one request of the token's quota; answers carry GitLab's
 * `RateLimit-*` headers, and an exhausted quota answers 429 with `Retry-After` until the
 * fake's clock passes the reset time. Tokens come as `PRIVATE-TOKEN` or `Authorization: Bearer`.
 */
import { Effect } from "effect"
import type { Scope } from "effect"
import * as Quota from "./quota.js"
import * as Server from "./server.js"

export type Route = "user" | "api"

export interface Options {
  /** Length of a rate-limit window; 60 unless given. */
  readonly windowSeconds?: number
  /** The fake's clock (epoch milliseconds); `Date.now` unless given. */
  readonly now?: () => number
}

export interface TokenOptions extends Quota.QuotaOptions {
  /** Requests per window; 2000 unless given. */
  readonly limit?: number
  /** `user<id>` unless given. */
  readonly username?: string
  /** Numbered from 1 unless given. */
  readonly id?: number
}

/** A token's quota as the `RateLimit-*` headers report it. */
export interface GitLabQuota {
  readonly limit: number
  readonly remaining: number
  /** Requests seen in this window, refused ones included. */
  readonly observed: number
  /** Epoch seconds. */
  readonly reset: number
}

export interface GitLabServer extends Server.FakeServer<Route>, Quota.TokenControls<TokenOptions, GitLabQuota> {}

interface User {
  readonly id: number
  readonly username: string
}

const gitlabQuota = (snapshot: Quota.QuotaSnapshot): GitLabQuota => ({
  limit: snapshot.limit,
  remaining: snapshot.remaining,
  observed: snapshot.observed,
  reset: snapshot.reset
})

const rateLimitHeaders = (snapshot: Quota.QuotaSnapshot): Record<string, string> => ({
  "RateLimit-Limit": String(snapshot.limit),
  "RateLimit-Remaining": String(snapshot.remaining),
  "RateLimit-Reset": String(snapshot.reset),
  "RateLimit-Observed": String(snapshot.observed),
  "RateLimit-ResetTime": new Date(snapshot.reset * 1000).toUTCString()
})

export const make = (options: Options = {}): Effect.Effect<GitLabServer, never, Scope.Scope> =>
  Effect.gen(function*() {
    const now = options.now ?? Date.now
    const book = Quota.makeTokenBook<User>({ limit: 2000, windowSeconds: options.windowSeconds ?? 60, now })
    let nextId = 1

    const authenticated = Quota.guard<User>({
      book,
      token: (request) => request.headers["private-token"] ?? Server.bearerToken(request),
      unauthorized: () => Server.json(401, { message: "401 Unauthorized" }),
      // GitLab's throttle answers in plain text.
      exhausted: (_entry, quota) =>
        Server.text(429, "Retry later\n", "text/plain", { "Retry-After": String(quota.secondsToReset) }),
      headers: rateLimitHeaders
    })

    const server = yield* Server.make<Route>({
      now,
      routes: [
        {
          name: "user",
          method: "GET",
          path: "/api/v4/user",
          handle: authenticated(true, ({ identity }) => ({
            id: identity.id,
            username: identity.username,
            name: identity.username,
            state: "active"
          }))
        },
        { name: "api", method: "GET", path: "/api/v4/*", handle: authenticated(true, (_entry, request) => ({ path: request.path })) }
      ]
    })

    const identify = (tokenOptions: TokenOptions | undefined): User => {
      const id = tokenOptions?.id ?? nextId++
      return { id, username: tokenOptions?.username ?? `user${id}` }
    }

    return { ...server, ...Quota.tokenControls(book, identify, gitlabQuota) }
  })
