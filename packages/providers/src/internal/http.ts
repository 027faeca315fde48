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

/** Turns a decoded token response into what a source issues. */
export const issued = (
  operation: string,
  token: string | null | undefined,
  expiry: ExpiryInput,
  fallback: (now: number) => Option.Option<number>,
  extra: Partial<Pick<Token.Issued, "refreshToken" | "username">> = {}
): Effect.Effect<Token.Issued, Errors.UpstreamError> =>
  Effect.gen(function*() {
    if (typeof token !== "string" || token.length === 0) return yield* malformed(operation, "the response has no token")
    const now = yield* Effect.clockWith((clock) => clock.currentTimeMillis)
    const read = readExpiry(expiry, now, fallback)
    if (read._tag === "invalid") return yield* malformed(operation, read.reason)
    return { token: Redacted.make(token), expiresAt: read.expiresAt, ...extra }
  })

export { Upstream }
