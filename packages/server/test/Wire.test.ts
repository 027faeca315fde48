import { describe, expect, it } from "@effect/vitest"
import { Account, Token } from "@tessera/core"
import { Arbitrary, DateTime, FastCheck, Option, Redacted, Schema } from "effect"
import * as Wire from "../src/Wire.js"

/** Zones with every kind of offset: none, half and quarter hours, DST both ways, a half-hour DST shift. */
const ZONES = [
  "UTC",
  "Asia/Kolkata",
  "Asia/Kathmandu",
  "America/New_York",
  "America/St_Johns",
  "Europe/London",
  "Australia/Lord_Howe",
  "Pacific/Chatham",
  "America/Santiago"
]

const reference = (at: number, zone: DateTime.TimeZone) => DateTime.formatIsoOffset(DateTime.unsafeMakeZoned(at, { timeZone: zone }))

/** The first millisecond of each of `zone`'s offset changes in [from, to) (at most one a day). */
const offsetChanges = (zone: DateTime.TimeZone, from: number, to: number): Array<number> => {
  const offsetOf = (at: number) => reference(at, zone).slice(23)
  const DAY = 86_400_000
  const changes: Array<number> = []
  for (let day = from; day < to; day += DAY) {
    if (offsetOf(day) === offsetOf(day + DAY)) continue
    let [low, high] = [day, day + DAY]
    while (high - low > 1) {
      const mid = Math.floor((low + high) / 2)
      if (offsetOf(mid) === offsetOf(day)) low = mid
      else high = mid
    }
    changes.push(high)
  }
  return changes
}

describe("Wire.instant", () => {
  it("writes local times exactly as DateTime.formatIsoOffset does, across DST transitions (1970-2100)", () => {
    const zones = ZONES.map((id) => DateTime.zoneUnsafeMakeNamed(id))
    const from = Date.UTC(1970, 0, 1)
    const to = Date.UTC(2100, 0, 1)
    FastCheck.assert(
      FastCheck.property(FastCheck.integer({ min: from, max: to }), FastCheck.constantFrom(...zones), (at, zone) => {
        const shown = Wire.instant(at, zone)
        expect(shown.local).toBe(reference(at, zone))
        expect(shown.utc).toBe(new Date(at).toISOString())
      }),
      { numRuns: 20_000 }
    )
  })

  it("is exact at the millisecond of every offset change this decade, and for fixed offsets", () => {
    const zones = ZONES.map((id) => DateTime.zoneUnsafeMakeNamed(id))
    let transitions = 0
    for (const zone of zones) {
      for (const change of offsetChanges(zone, Date.UTC(2025, 0, 1), Date.UTC(2035, 0, 1))) {
        for (const at of [change - 1, change, change + 1]) expect(Wire.instant(at, zone).local).toBe(reference(at, zone))
        transitions++
      }
    }
    expect(transitions).toBeGreaterThan(100)
    const fixed = DateTime.zoneMakeOffset(5.5 * 3_600_000)
    expect(Wire.instant(Date.UTC(2026, 10, 23, 16, 40, 58, 861), fixed).local).toBe("2026-11-23T22:10:58.861+05:30")
  })

  it("is exact at offset changes that fall between quarter hours, as Newfoundland's did until 2011", () => {
    const stJohns = DateTime.zoneUnsafeMakeNamed("America/St_Johns")
    // 2004-10-31 00:01 daylight time (02:31 UTC) became 2004-10-30 23:01 standard time
    const change = Date.UTC(2004, 9, 31, 2, 31)
    expect(Wire.instant(change - 1, stJohns).local).toBe("2004-10-31T00:00:59.999-02:30")
    expect(Wire.instant(change, stJohns).local).toBe("2004-10-30T23:01:00.000-03:30")
    expect(Wire.instant(change + 60_000, stJohns).local).toBe("2004-10-30T23:02:00.000-03:30")
    // every change of 1987-2011, at the millisecond on either side
    const changes = offsetChanges(stJohns, Date.UTC(1987, 0, 1), Date.UTC(2012, 0, 1))
    for (const change of changes) {
      for (const at of [change - 1, change, change + 1]) expect(Wire.instant(at, stJohns).local).toBe(reference(at, stJohns))
    }
    expect(changes).toHaveLength(50)
  })
})

/** Any instant `Date` can show (the API never holds others). */
const time = (t: number) => Number.isFinite(t) ? Math.abs(Math.trunc(t)) % 8.6e15 : 0

const infos = Arbitrary.make(Token.TokenInfo).map((i) =>
  new Token.TokenInfo({
    ...i,
    expiresAt: i.expiresAt === null ? null : time(i.expiresAt),
    issuedAt: i.issuedAt === null ? null : time(i.issuedAt),
    lastRefreshedAt: i.lastRefreshedAt === null ? null : time(i.lastRefreshedAt),
    lastUsedAt: i.lastUsedAt === null ? null : time(i.lastUsedAt),
    lastError: i.lastError === null ? null : new Token.LastError({ ...i.lastError, at: time(i.lastError.at) }),
    rateLimit: i.rateLimit === null ? null : new Token.RateLimit({ ...i.rateLimit, resetAt: i.rateLimit.resetAt === undefined ? undefined : time(i.rateLimit.resetAt) })
  })
)

const leases = FastCheck.record({
  accountId: FastCheck.string({ minLength: 1 }),
  token: FastCheck.string({ minLength: 1, maxLength: 200 }),
  expiresAt: FastCheck.option(FastCheck.integer({ min: 0, max: 8.6e15 }), { nil: undefined }),
  rateLimit: FastCheck.option(Arbitrary.make(Token.RateLimit), { nil: undefined })
}).map(({ accountId, expiresAt, rateLimit, token }): Token.Lease => ({
  accountId: accountId as Account.AccountId,
  token: Redacted.make(token),
  expiresAt: Option.fromNullable(expiresAt),
  rateLimit: Option.fromNullable(rateLimit).pipe(
    Option.map((rl) => new Token.RateLimit({ ...rl, resetAt: rl.resetAt === undefined ? undefined : time(rl.resetAt) }))
  )
}))

describe("the fast lane's JSON", () => {
  const zone = DateTime.zoneUnsafeMakeNamed("Asia/Kolkata")
  const encodeInfo = Schema.encodeSync(Schema.parseJson(Wire.TokenInfo))
  const encodeLease = Schema.encodeSync(Schema.parseJson(Wire.Lease))

  it("a token info is the text the API's schema encodes", () => {
    FastCheck.assert(
      FastCheck.property(infos, (info) => {
        const shown = Wire.tokenInfo(info, zone)
        expect(Wire.tokenInfoJson(shown)).toBe(encodeInfo(shown))
      }),
      { numRuns: 2_000 }
    )
  })

  it("a lease is the text the API's schema encodes, the token in the clear", () => {
    FastCheck.assert(
      FastCheck.property(leases, (leased) => {
        const shown = Wire.lease(leased, zone)
        expect(Wire.leaseJson(shown)).toBe(encodeLease(shown))
        expect(JSON.parse(Wire.leaseJson(shown)).access_token).toBe(Redacted.value(leased.token))
      }),
      { numRuns: 2_000 }
    )
  })
})
