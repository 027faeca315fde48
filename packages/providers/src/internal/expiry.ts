/**
 * Reading token expiries from upstream responses: `expires_at` as an ISO-8601 string or
 * epoch seconds/milliseconds, or `expires_in` seconds; a default lifetime when neither is
 * given. An absolute `expires_at` is on the upstream's clock and is moved onto ours by the
 * offset its `Date` header shows (`Upstream.clockOffset`); a relative `expires_in` needs no
 * correction. An expiry that cannot be read is an error, never a guess; one further away
 * than any token lives (a "never" sentinel such as 9999-12-31, a unit mistake) is not
 * believed, and the source's default lifetime applies as if none had been given.
 */
import { Upstream } from "@tessera/core"
import { Option, Schema } from "effect"

export const ExpiryFields = {
  expires_at: Schema.optional(Schema.Union(Schema.String, Schema.Number, Schema.Null)),
  expires_in: Schema.optional(Schema.Union(Schema.Number, Schema.NumberFromString, Schema.Null))
}

/** Epoch seconds below this are read as seconds, above it as milliseconds (year 5138). */
const SECONDS_LIMIT = 100_000_000_000

/** Expiries further away than this are not believed (100 years). */
export const HORIZON_MS = 100 * 365.25 * 86_400_000

export type ExpiryResult =
  | { readonly _tag: "ok"; readonly expiresAt: Option.Option<number>; readonly note?: string | undefined }
  | { readonly _tag: "invalid"; readonly reason: string }

const readNumeric = (n: number) => n < SECONDS_LIMIT ? n * 1000 : n

const ISO_8601 = /^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)(Z|[+-]\d{2}:?\d{2})?$/i

/** Whether year-month-day is a day of the calendar (`Date.parse` rolls 31 February over into March). */
const isCalendarDay = (year: number, month: number, day: number): boolean => {
  const date = new Date(Date.UTC(year, month - 1, day))
  return date.getUTCMonth() === month - 1 && date.getUTCDate() === day
}

/**
 * An ISO-8601 date-time (one without an offset is UTC, as services that print naive UTC
 * times mean it), or an HTTP date; anything else is NaN (`Date.parse` alone would read
 * "garbage 12" as a date in 2001).
 */
const readTime = (text: string): number => {
  const trimmed = text.trim()
  const iso = ISO_8601.exec(trimmed)
  if (iso !== null) {
    const [, year, month, day, time, zone] = iso
    if (!isCalendarDay(Number(year), Number(month), Number(day))) return Number.NaN
    return Date.parse(`${year}-${month}-${day}T${time}${zone ?? "Z"}`)
  }
  return Option.getOrElse(Upstream.parseHttpDate(trimmed), () => Number.NaN)
}

/**
 * The expiry the fields give, on the local clock at `now`. `clockOffset` is how far the
 * local clock is ahead of the upstream's (added to `expires_at`).
 */
export const readExpiry = (
  fields: { readonly expires_at?: string | number | null | undefined; readonly expires_in?: number | null | undefined },
  now: number,
  fallback: (now: number) => Option.Option<number>,
  clockOffset = 0
): ExpiryResult => {
  const { expires_at: at, expires_in: inSeconds } = fields
  const believable = (expiresAt: number, field: string): ExpiryResult =>
    expiresAt - now > HORIZON_MS
      ? { _tag: "ok", expiresAt: fallback(now), note: `${field} is more than 100 years away; the default lifetime applies` }
      : { _tag: "ok", expiresAt: Option.some(Math.floor(expiresAt)) }
  if (at !== undefined && at !== null) {
    const ms = typeof at === "number"
      ? readNumeric(at)
      : /^\d+(\.\d+)?$/.test(at.trim())
      ? readNumeric(Number(at))
      : readTime(at)
    if (!Number.isFinite(ms) || ms <= 0) return { _tag: "invalid", reason: "expires_at is not a readable time" }
    return believable(ms + clockOffset, "expires_at")
  }
  if (inSeconds !== undefined && inSeconds !== null) {
    if (!Number.isFinite(inSeconds) || inSeconds <= 0) return { _tag: "invalid", reason: "expires_in is not a positive number of seconds" }
    return believable(now + inSeconds * 1000, "expires_in")
  }
  return { _tag: "ok", expiresAt: fallback(now) }
}
