/**
 * The `github` provider: GitHub's REST API (`https://api.github.com`, or a GitHub Enterprise
 * `…/api/v3` through `GITHUB_API_URL`). Responses carry `x-ratelimit-*` headers; GitHub
 * refuses an exhausted primary quota with 403 or 429 and `x-ratelimit-remaining: 0` (until
 * `x-ratelimit-reset`), and a secondary limit with 403 or 429 and `retry-after`. A token is
 * validated with `GET /rate_limit`, which costs no quota and reports the token's `core`
 * quota, then `GET /user` for the login.
 */
import type { HttpClient } from "@effect/platform"
import { Upstream } from "@tessera/core"
import type { Source } from "@tessera/core"
import { Clock, Effect, Option, Schema } from "effect"
import type { Redacted } from "effect"
import * as RateLimitHeaders from "./internal/rateLimitHeaders.js"
import * as Rest from "./internal/rest.js"

export const DEFAULT_API_URL = "https://api.github.com"

/** What GitHub's answers say about the token that made the request. */
export const observe = RateLimitHeaders.observer({ prefix: "x-ratelimit-", forbiddenIsLimit: true })

/** The headers GitHub asks every REST client to send. */
export const headers: Readonly<Record<string, string>> = {
  accept: "application/vnd.github+json",
  "x-github-api-version": "2022-11-28"
}

const Quota = Schema.Struct({
  limit: Schema.optional(Schema.Number),
  remaining: Schema.optional(Schema.Number),
  used: Schema.optional(Schema.Number),
  reset: Schema.optional(Schema.Number),
  resource: Schema.optional(Schema.String)
})

const RateLimits = Schema.Struct({
  resources: Schema.optional(Schema.Struct({ core: Schema.optional(Quota) })),
  rate: Schema.optional(Quota)
})

const User = Schema.Struct({ login: Schema.optional(Schema.String) })

/** The `github` provider; `apiUrl` defaults to `https://api.github.com`. */
export const provider = (
  options: { readonly apiUrl?: string | undefined } = {}
): Effect.Effect<Source.Provider, never, HttpClient.HttpClient> => {
  const apiUrl = options.apiUrl ?? DEFAULT_API_URL
  const get = (path: string, token: Redacted.Redacted<string>) =>
    Rest.authorizedGet(Upstream.joinUrl(apiUrl, path), token, headers)

  const validate = (token: Redacted.Redacted<string>) =>
    Effect.gen(function*() {
      const { response, value } = yield* Upstream.withRetry(Upstream.exchange("validate", get("/rate_limit", token), RateLimits))
      const now = yield* Clock.currentTimeMillis
      const core = Option.orElse(
        Option.map(Option.fromNullable(value.resources?.core ?? value.rate), (quota) => RateLimitHeaders.fromQuota({ resource: "core", ...quota })),
        () => observe(response.status, response.headers, now).rateLimit
      )
      // `/user` would be refused for the quota: the token is fine, it just has to wait.
      if (Option.exists(core, (rateLimit) => rateLimit.remaining === 0)) {
        return {
          valid: true,
          reason: "the token is accepted by the GitHub API; its core quota is used up until the reset",
          upstreamStatus: response.status,
          rateLimit: Option.getOrUndefined(core)
        } satisfies Source.Validation
      }
      const user = yield* Rest.whoAmI({
        upstream: "the GitHub API",
        request: get("/user", token),
        schema: User,
        username: (body) => body.login,
        observe
      })
      return { ...user, rateLimit: user.rateLimit ?? Option.getOrUndefined(core) } satisfies Source.Validation
    })

  return Rest.provider({ id: "github", observe, validate })
}
