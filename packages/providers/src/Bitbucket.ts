/**
 * The `bitbucket` provider: Bitbucket Cloud's REST API under `{base}/2.0`
 * (`https://api.bitbucket.org`, or another through `BITBUCKET_API_URL`, given with or without
 * `/2.0`). Bitbucket refuses a throttled request with 429, with `Retry-After` when it says how
 * long (else the token waits the generic minute), and sends `X-RateLimit-Limit`, `-Remaining`
 * and `-Reset` only on some answers. A token is validated with `GET /2.0/user`.
 */
import type { HttpClient } from "@effect/platform"
import { Upstream } from "@tessera/core"
import type { Source } from "@tessera/core"
import { Schema } from "effect"
import type { Effect } from "effect"
import * as RateLimitHeaders from "./internal/rateLimitHeaders.js"
import * as Rest from "./internal/rest.js"

export const DEFAULT_API_URL = "https://api.bitbucket.org"

/** What Bitbucket's answers say about the token that made the request. */
export const observe = RateLimitHeaders.observer({ prefix: "x-ratelimit-", forbiddenIsLimit: false })

const User = Schema.Struct({
  username: Schema.optional(Schema.String),
  nickname: Schema.optional(Schema.String),
  display_name: Schema.optional(Schema.String)
})

/** The `bitbucket` provider; `apiUrl` defaults to `https://api.bitbucket.org`. */
export const provider = (
  options: { readonly apiUrl?: string | undefined } = {}
): Effect.Effect<Source.Provider, never, HttpClient.HttpClient> =>
  Rest.userEndpointProvider({
    id: "bitbucket",
    upstream: "the Bitbucket API",
    userUrl: Upstream.joinUrl(Rest.apiRoot(options.apiUrl ?? DEFAULT_API_URL, "/2.0"), "/user"),
    schema: User,
    // Bitbucket dropped `username` from most answers for privacy; `nickname` replaced it.
    username: (user) => user.username ?? user.nickname ?? user.display_name,
    observe
  })
