/**
 * A fake GitHub REST API with per-token primary rate limits: `GET /rate_limit` reports a
 * token's `core` quota without using it, `GET /user` and every other GET use one request of
 * it, and every answer to a known token carries GitHub's `x-ratelimit-*` headers. An
 * exhausted quota answers 403 (or 429) with `x-ratelimit-remaining: 0` until the fake's clock
 * passes the reset time; secondary limits (403 + `retry-after`) can be injected per token.
 */
import { Effect, Option } from "effect"
import type { Scope } from "effect"
import * as Quota from "./quota.js"
import * as Server from "./server.js"

export type Route = "rate_limit" | "user" | "api"

export interface Options {
  /** Status of an exhausted primary limit; 403 (as GitHub answers) unless given. */
  readonly exhaustedStatus?: 403 | 429
  /** Length of a rate-limit window; 3600 unless given. */
  readonly windowSeconds?: number
  /** The fake's clock (epoch milliseconds); `Date.now` unless given. */
  readonly now?: () => number
}

export interface TokenOptions extends Quota.QuotaOptions {
  /** Requests per window; 5000 unless given. */
  readonly limit?: number
  /** The user behind the token; `user<id>` unless given. */
  readonly login?: string
  /** The user ID in messages and `/user`; numbered from 1 unless given. */
  readonly id?: number
}

/** A token's `core` quota, exactly as `/rate_limit` reports it. */
export interface CoreQuota {
  readonly limit: number
  readonly used: number
  readonly remaining: number
  /** Epoch seconds. */
  readonly reset: number
  readonly resource: "core"
}

export interface SecondaryLimit {
  /** The `retry-after` value, in seconds. */
  readonly retryAfterSeconds: number
  /** How many of the token's next quota-using requests get it; 1 unless given. */
  readonly times?: number
  /** 403 (as GitHub usually answers) unless given. */
  readonly status?: 403 | 429
}

export interface GitHubServer extends Server.FakeServer<Route>, Quota.TokenControls<TokenOptions, CoreQuota> {
  /** The token's next quota-using requests hit a secondary rate limit. */
  readonly secondaryLimit: (token: string, limit: SecondaryLimit) => void
}

interface User {
  readonly login: string
  readonly id: number
}

const DOCS = "https://docs.github.com/rest"
const PRIMARY_DOCS = "https://docs.github.com/rest/overview/resources-in-the-rest-api#rate-limiting"
const SECONDARY_DOCS = "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api#about-secondary-rate-limits"

const coreQuota = (snapshot: Quota.QuotaSnapshot): CoreQuota => ({
  limit: snapshot.limit,
  used: snapshot.used,
  remaining: snapshot.remaining,
  reset: snapshot.reset,
  resource: "core"
})

const rateLimitHeaders = (quota: CoreQuota): Record<string, string> => ({
  "x-ratelimit-limit": String(quota.limit),
  "x-ratelimit-remaining": String(quota.remaining),
  "x-ratelimit-reset": String(quota.reset),
  "x-ratelimit-used": String(quota.used),
  "x-ratelimit-resource": quota.resource
})

/** What a GET of any other path returns: a repository for `/repos/{owner}/{repo}`, else the path. */
const resource = (path: string): unknown =>
  Option.match(Server.matchPath("/repos/:owner/:repo", path), {
    onNone: () => ({ path }),
    onSome: ({ owner = "", repo = "" }) => ({
      id: 1,
      name: repo,
      full_name: `${owner}/${repo}`,
      owner: { login: owner },
      private: false
    })
  })

export const make = (options: Options = {}): Effect.Effect<GitHubServer, never, Scope.Scope> =>
  Effect.gen(function*() {
    const now = options.now ?? Date.now
    const book = Quota.makeTokenBook<User>({ limit: 5000, windowSeconds: options.windowSeconds ?? 3600, now })
    const secondary = new Map<string, Array<Required<Omit<SecondaryLimit, "times">>>>()
    let nextId = 1

    const authenticated = Quota.guard<User>({
      book,
      token: (request) => Server.authorization(request, ["token", "bearer"]),
      unauthorized: (token) =>
        Server.json(401, { message: token === undefined ? "Requires authentication" : "Bad credentials", documentation_url: DOCS }),
      exhausted: ({ identity }) =>
        Server.json(options.exhaustedStatus ?? 403, {
          message: `API rate limit exceeded for user ID ${identity.id}.`,
          documentation_url: PRIMARY_DOCS
        }),
      headers: (quota) => rateLimitHeaders(coreQuota(quota)),
      preempt: (token) => {
        const limited = secondary.get(token)?.shift()
        return limited === undefined ? undefined : Server.json(limited.status, {
          message: "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
          documentation_url: SECONDARY_DOCS
        }, { "retry-after": String(limited.retryAfterSeconds) })
      }
    })

    const server = yield* Server.make<Route>({
      now,
      routes: [
        {
          name: "rate_limit",
          method: "GET",
          path: "/rate_limit",
          handle: authenticated(false, (entry) => {
            const core = coreQuota(entry.quota.snapshot())
            return { resources: { core }, rate: core }
          })
        },
        {
          name: "user",
          method: "GET",
          path: "/user",
          handle: authenticated(true, ({ identity }) => ({ login: identity.login, id: identity.id, type: "User" }))
        },
        { name: "api", method: "GET", path: "/*", handle: authenticated(true, (_entry, request) => resource(request.path)) }
      ]
    })

    const identify = (tokenOptions: TokenOptions | undefined): User => {
      const id = tokenOptions?.id ?? nextId++
      return { id, login: tokenOptions?.login ?? `user${id}` }
    }
    const controls = Quota.tokenControls(book, identify, coreQuota)

    return {
      ...server,
      ...controls,
      addToken: (token, tokenOptions) => {
        controls.addToken(token, tokenOptions)
        secondary.delete(token)
      },
      secondaryLimit: (token, limit) => {
        const queue = secondary.get(token) ?? []
        for (let n = 0; n < (limit.times ?? 1); n++) {
          queue.push({ retryAfterSeconds: limit.retryAfterSeconds, status: limit.status ?? 403 })
        }
        secondary.set(token, queue)
      }
    }
  })
