/**
 * The `gitlab` provider: GitLab's REST API under `{base}/api/v4` (`https://gitlab.com`, or a
 * self-managed instance through `GITLAB_API_URL`, given with or without `/api/v4`). Answers
 * carry `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset` (epoch seconds); a
 * throttled request gets 429 with `Retry-After`. A token is validated with `GET /api/v4/user`.
 */
import type { HttpClient } from "@effect/platform"
import { Upstream } from "@tessera/core"
import type { Source } from "@tessera/core"
import { Schema } from "effect"
import type { Effect } from "effect"
import * as RateLimitHeaders from "./internal/rateLimitHeaders.js"
import * as Rest from "./internal/rest.js"

export const DEFAULT_BASE_URL = "https://gitlab.com"

/** What GitLab's answers say about the token that made the request. */
export const observe = RateLimitHeaders.observer({ prefix: "ratelimit-", forbiddenIsLimit: false })

const User = Schema.Struct({ username: Schema.optional(Schema.String) })

/** The `gitlab` provider; `baseUrl` defaults to `https://gitlab.com`. */
export const provider = (
  options: { readonly baseUrl?: string | undefined } = {}
): Effect.Effect<Source.Provider, never, HttpClient.HttpClient> =>
  Rest.userEndpointProvider({
    id: "gitlab",
    upstream: "the GitLab API",
    userUrl: Upstream.joinUrl(Rest.apiRoot(options.baseUrl ?? DEFAULT_BASE_URL, "/api/v4"), "/user"),
    schema: User,
    username: (user) => user.username,
    observe
  })
