/**
 * The pooled `HttpClient` (SPEC §3.7): an `HttpClient` whose every request carries a token
 * from a pool. Per request it acquires the least recently used token, sets
 * `Authorization: Bearer …`, reads the response's rate-limit state back into the pool, and
 * when the response says the token is rate-limited or unauthorized (which refreshes or
 * invalidates it, SPEC §2.9) sends the request again with the next token. When no token is
 * left it fails with the pool's typed error (`PoolExhausted` with the earliest reset, or
 * `NoUsableToken`).
 */
import { HttpClient, HttpClientRequest } from "@effect/platform"
import type { HttpClientError, HttpClientResponse } from "@effect/platform"
import { Duration, Effect, Redacted } from "effect"
import { TokenPool } from "./TokenPool.js"
import type { AcquireError, AcquireOptions } from "./TokenPool.js"

export interface Options extends AcquireOptions {
  /** How many tokens one request may try (default 3). */
  readonly maxAttempts?: number | undefined
}

export type PooledHttpClient = HttpClient.HttpClient.With<HttpClientError.HttpClientError | AcquireError>

/** Response headers as the pool reads them: lower-case names. */
const headersOf = (response: HttpClientResponse.HttpClientResponse): Record<string, string> => {
  const headers: Record<string, string> = {}
  for (const [name, value] of Object.entries(response.headers)) headers[name.toLowerCase()] = value
  return headers
}

/** An `HttpClient` over `pool`, built on the current `HttpClient`. */
export const make = (
  pool: string,
  options: Options = {}
): Effect.Effect<PooledHttpClient, never, HttpClient.HttpClient | TokenPool> =>
  Effect.gen(function*() {
    const base = yield* HttpClient.HttpClient
    const pools = yield* TokenPool
    const maxAttempts = Math.max(1, options.maxAttempts ?? 3)
    const acquireOptions: AcquireOptions = options.wait === undefined ? {} : { wait: Duration.decode(options.wait) }

    const send = (request: HttpClientRequest.HttpClientRequest, attempt: number): Effect.Effect<
      HttpClientResponse.HttpClientResponse,
      HttpClientError.HttpClientError | AcquireError
    > =>
      Effect.gen(function*() {
        const lease = yield* pools.acquire(pool, acquireOptions)
        const response = yield* base.execute(HttpClientRequest.bearerToken(request, Redacted.value(lease.token)))
        const info = yield* pools.report(pool, {
          accountId: lease.accountId,
          token: lease.token,
          status: response.status,
          headers: headersOf(response)
        }).pipe(Effect.option)
        const refused = response.status === 401 ||
          (response.status >= 400 && info._tag === "Some" && info.value.status === "rate_limited")
        if (!refused || attempt >= maxAttempts) return response
        // the answer is about this token, not the request: drain it and try the next token
        yield* Effect.ignore(response.text)
        return yield* send(request, attempt + 1)
      })

    return HttpClient.makeWith<never, never, HttpClientError.HttpClientError | AcquireError, never>(
      (request) => Effect.flatMap(request, (r) => send(r, 1)),
      Effect.succeed
    )
  })
