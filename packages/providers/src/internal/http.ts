/** Small helpers shared by the providers' HTTP calls. */
import { Effect, Option, Redacted } from "effect"
import { Errors, Upstream } from "@tessera/core"
import type { Token } from "@tessera/core"
import { readExpiry } from "./expiry.js"
import type { ExpiryFields } from "./expiry.js"
import type { Schema } from "effect"

export const bearer = (token: Redacted.Redacted<string>) => `Bearer ${Redacted.value(token)}`

export const malformed = (operation: string, detail: string) =>
  new Errors.UpstreamError({ kind: "malformed", operation, status: null, detail, retryAfterMs: null })

type ExpiryInput = Schema.Struct.Type<typeof ExpiryFields>

/** The headers of the answer a token came in: its `Date` says how far the upstream's clock is off. */
export interface Answer {
  readonly headers: Readonly<Record<string, string | undefined>>
}

/** Turns a decoded token response into what a source issues. */
export const issued = (
  operation: string,
  token: string | null | undefined,
  expiry: ExpiryInput,
  answer: Answer,
  fallback: (now: number) => Option.Option<number>,
  extra: Partial<Pick<Token.Issued, "refreshToken" | "username">> = {}
): Effect.Effect<Token.Issued, Errors.UpstreamError> =>
  Effect.gen(function*() {
    if (typeof token !== "string" || token.length === 0) return yield* malformed(operation, "the response has no token")
    const now = yield* Effect.clockWith((clock) => clock.currentTimeMillis)
    const read = readExpiry(expiry, now, fallback, Upstream.clockOffset(answer.headers, now))
    if (read._tag === "invalid") return yield* malformed(operation, read.reason)
    if (read.note !== undefined) yield* Effect.logWarning(`${operation}: ${read.note}`)
    return { token: Redacted.make(token), expiresAt: read.expiresAt, ...extra }
  })

/** `Upstream.call` that keeps the answer's headers, for sources whose bodies carry absolute times. */
export const call = <A, I>(
  operation: string,
  request: Parameters<typeof Upstream.exchange>[1],
  schema: Schema.Schema<A, I>
) =>
  Effect.map(Upstream.withRetry(Upstream.exchange(operation, request, schema)), ({ response, value }) => ({
    value,
    answer: { headers: response.headers } satisfies Answer
  }))

export { Upstream }
