/**
 * Reading token expiries from upstream responses: `expires_at` as an ISO-8601 string or
 * epoch seconds/milliseconds, or `expires_in` seconds; a default lifetime when neither is
 * given. An expiry that cannot be read is an error, never a guess.
 */
import { Option, Schema } from "effect"

export const ExpiryFields = {
  expires_at: Schema.optional(Schema.Union(Schema.String, Schema.Number, Schema.Null)),
  expires_in: Schema.optional(Schema.Union(Schema.Number, Schema.NumberFromString, Schema.Null))
}

/** Epoch seconds below this are read as seconds, above it as milliseconds (year 5138). */
const SECONDS_LIMIT = 100_000_000_000

export type ExpiryResult =
  | { readonly _tag: "ok"; readonly expiresAt: Option.Option<number> }
  | { readonly _tag: "invalid"; readonly reason: string }

export const readExpiry = (
  fields: { readonly expires_at?: string | number | null | undefined; readonly expires_in?: number | null | undefined },
  now: number,
  fallback: (now: number) => Option.Option<number>
): ExpiryResult => {
  const { expires_at: at, expires_in: inSeconds } = fields
  if (at !== undefined && at !== null) {
    const ms = typeof at === "number"
      ? (at < SECONDS_LIMIT ? at * 1000 : at)
      : /^\d+(\.\d+)?$/.test(at.trim())
      ? readNumeric(Number(at))
      : Date.parse(at)
    if (!Number.isFinite(ms) || ms <= 0) return { _tag: "invalid", reason: "expires_at is not a readable time" }
    return { _tag: "ok", expiresAt: Option.some(Math.floor(ms)) }
  }
  if (inSeconds !== undefined && inSeconds !== null) {
    if (!Number.isFinite(inSeconds) || inSeconds <= 0) return { _tag: "invalid", reason: "expires_in is not a positive number of seconds" }
    return { _tag: "ok", expiresAt: Option.some(now + Math.floor(inSeconds * 1000)) }
  }
  return { _tag: "ok", expiresAt: fallback(now) }
}

const readNumeric = (n: number) => n < SECONDS_LIMIT ? n * 1000 : n
