/**
 * Clock skew (issue 6): an upstream whose clock is off gives an absolute `expires_at` on its
 * own clock, and its `Date` header shows that clock. Tessera moves such an expiry onto the
 * local clock by the offset the header shows (local expiry = expires_at + (localNow −
 * upstreamDate)), ignores a missing or unreadable header and differences within the header's
 * 1 s resolution, and leaves relative `expires_in` alone. Every fake runs on `TestClock`
 * (shifted by the skew under test), so the expected expiries are exact.
 */
import { describe, expect, it } from "@effect/vitest"
import { Account, Lifecycle, Source, Upstream } from "@tessera/core"
import { OAuth2 as OAuth2Source } from "@tessera/providers"
import { Effect, Either, Option, Redacted, TestClock } from "effect"
import { Amp, AuthService, FakeServer, OAuth2 } from "../fakes/index.js"
import * as Harness from "../lifecycle/harness.js"
import * as ProviderHarness from "../providers/harness.js"

const SECOND = 1000
const MINUTE = 60 * SECOND
const HOUR = 60 * MINUTE

/** The fake's clock: `TestClock` moved by `skewMs` (positive: the upstream's clock is ahead). */
const skewedClock = (skewMs: number) => Effect.map(FakeServer.clockNow, (now) => () => now() + skewMs)

const remoteAccount = (id: string) =>
  new Account.NewAccount({ id: Harness.accountId(id), provider: "upstox", source: new Account.RemoteSource({}) })

const ampAccount = new Account.NewAccount({
  id: Harness.accountId("amp"),
  provider: "amp",
  source: new Account.PasswordSource({ username: "trader", password: Redacted.make("s3cret-pass") })
})

/** How `date` is sent: the fake's (skewed) clock, none, or a raw value. */
type DateMode = "clock" | "missing" | { readonly raw: string }

const applyDate = (server: Pick<FakeServer.FakeServer<string>, "setDateHeader">, mode: DateMode) =>
  server.setDateHeader(mode === "clock" ? undefined : mode === "missing" ? null : mode.raw)

/**
 * A remote account fetched from an auth service whose clock is `skewMs` off and whose tokens
 * live `lifetimeMs` on that clock: the expiry stored, or the error when nothing was stored.
 */
const remoteExpiry = (skewMs: number, lifetimeMs: number, date: DateMode = "clock") =>
  Effect.scoped(Effect.gen(function*() {
    const auth = yield* AuthService.make({ now: yield* skewedClock(skewMs), tokenLifetimeSeconds: lifetimeMs / 1000 })
    applyDate(auth, date)
    auth.setAccount("acc-1")
    return yield* Effect.gen(function*() {
      const lifecycle = yield* Lifecycle.Lifecycle
      yield* lifecycle.add(remoteAccount("acc-1"))
      const got = yield* Effect.either(lifecycle.get("acc-1"))
      const info = yield* lifecycle.info("acc-1")
      return { got, info, upstreamExpiry: auth.account("acc-1")!.expiresAt.getTime() }
    }).pipe(Effect.provide(Harness.layer({ authUrl: auth.url })))
  }))

/** The same through the AMP password source, whose fake reports `expires_at`. */
const ampExpiry = (skewMs: number, lifetimeMs: number, date: DateMode = "clock") =>
  Effect.scoped(Effect.gen(function*() {
    const amp = yield* Amp.make({
      users: { trader: "s3cret-pass" },
      now: yield* skewedClock(skewMs),
      expiry: "expires_at",
      tokenLifetimeSeconds: lifetimeMs / 1000
    })
    applyDate(amp, date)
    return yield* Effect.gen(function*() {
      const lifecycle = yield* Lifecycle.Lifecycle
      yield* lifecycle.add(ampAccount)
      const got = yield* Effect.either(lifecycle.get("amp"))
      const info = yield* lifecycle.info("amp")
      return { got, info, upstreamExpiry: amp.issued()[0]!.expiresAt }
    }).pipe(Effect.provide(Harness.layer({ ampUrl: amp.url })))
  }))

/** A realistic `TestClock` time to start at: skewed clocks must not go before 1970. */
const START = Date.UTC(2026, 0, 10, 12, 0, 0)
const atStart = TestClock.setTime(START)

const describeSkew = (ms: number) => `${ms >= 0 ? "+" : "−"}${Math.abs(ms) / MINUTE} min`

describe("clock skew: the Date header", () => {
  it("reads the three HTTP-date forms and nothing else", () => {
    const at = Date.UTC(1994, 10, 6, 8, 49, 37)
    expect(Upstream.parseHttpDate("Sun, 06 Nov 1994 08:49:37 GMT")).toEqual(Option.some(at))
    expect(Upstream.parseHttpDate("Sunday, 06-Nov-94 08:49:37 GMT")).toEqual(Option.some(at))
    expect(Upstream.parseHttpDate("Sun Nov  6 08:49:37 1994")).toEqual(Option.some(at))
    expect(Upstream.parseHttpDate(new Date(at).toUTCString())).toEqual(Option.some(at))
    // what Date.parse would have read as a date, and what no calendar has
    for (const garbage of ["garbage 12", "1", "May 2", "not a date", "", "Tue, 31 Feb 2026 10:00:00 GMT", "Sun, 06 Nov 1994 25:00:00 GMT", "2026-01-01T00:00:00Z"]) {
      expect(Upstream.parseHttpDate(garbage), garbage).toEqual(Option.none())
    }
  })

  it("the offset is local now minus the upstream's date; missing, unreadable or within 2 s it is 0", () => {
    const now = Date.UTC(2026, 0, 10, 12, 0, 0)
    const dated = (ms: number) => ({ date: new Date(ms).toUTCString() })
    expect(Upstream.clockOffset(dated(now + 10 * MINUTE), now)).toBe(-10 * MINUTE)
    expect(Upstream.clockOffset(dated(now - 10 * MINUTE), now)).toBe(10 * MINUTE)
    // the header has whole seconds: 1.5 s behind shows as 2 s, which is no longer "small"
    expect(Upstream.clockOffset(dated(now - 1000), now)).toBe(0)
    expect(Upstream.clockOffset(dated(now + 1500), now)).toBe(0)
    expect(Upstream.clockOffset(dated(now - 1500), now)).toBe(2 * SECOND)
    expect(Upstream.clockOffset(dated(now - 3 * SECOND), now)).toBe(3 * SECOND)
    expect(Upstream.clockOffset({}, now)).toBe(0)
    expect(Upstream.clockOffset({ date: "garbage 12" }, now)).toBe(0)
    expect(Upstream.clockOffset({ date: "Mon, 99 Foo 2026 99:99:99 GMT" }, now)).toBe(0)
  })

  it("Retry-After reads the same HTTP dates, and no longer takes garbage for one", () => {
    const now = Date.UTC(2026, 0, 10, 12, 0, 0)
    expect(Upstream.parseRetryAfter(new Date(now + 90 * SECOND).toUTCString(), now)).toEqual(Option.some(90 * SECOND))
    expect(Upstream.parseRetryAfter("120", now)).toEqual(Option.some(120 * SECOND))
    expect(Upstream.parseRetryAfter("garbage 12", now)).toEqual(Option.none())
  })
})

describe("clock skew: absolute expiries are moved onto the local clock", () => {
  it.scoped("remote (auth service) and password (AMP) sources, upstream clock ±10 min: the stored expiry is the true one", () =>
    Effect.gen(function*() {
      yield* atStart
      const rows: Array<string> = []
      for (const skew of [10 * MINUTE, -10 * MINUTE]) {
        for (const [name, run] of [["remote", remoteExpiry], ["password", ampExpiry]] as const) {
          const localNow = yield* FakeServer.clockNow
          const start = localNow()
          const { got, info, upstreamExpiry } = yield* run(skew, HOUR)
          expect(Either.isRight(got), `${name} ${describeSkew(skew)}`).toBe(true)
          // the upstream said `start + skew + 1 h` on its clock; locally that is `start + 1 h`
          expect(upstreamExpiry).toBe(start + skew + HOUR)
          expect(info.expiresAt).toBe(start + HOUR)
          expect(info.status).toBe("available")
          rows.push(`${name.padEnd(8)} upstream ${describeSkew(skew).padEnd(8)} expires_at moved by ${(info.expiresAt! - upstreamExpiry) / SECOND} s, error ${info.expiresAt! - (start + HOUR)} ms`)
        }
      }
      console.log(`clock skew: absolute expiries corrected\n  ${rows.join("\n  ")}`)
    }))

  it.scoped("an upstream 10 min behind issuing 5-minute tokens: corrected, the token is accepted for its 5 minutes; uncorrected it would look dead", () =>
    Effect.gen(function*() {
      yield* atStart
      const start = (yield* FakeServer.clockNow)()
      const corrected = yield* remoteExpiry(-10 * MINUTE, 5 * MINUTE)
      expect(Either.isRight(corrected.got)).toBe(true)
      expect(corrected.info.expiresAt).toBe(start + 5 * MINUTE)
      // Without a Date header there is nothing to correct by: the expiry, 5 minutes ago on our
      // clock, is refused as already expired and nothing is stored.
      const blind = yield* remoteExpiry(-10 * MINUTE, 5 * MINUTE, "missing")
      const error = Either.getLeft(blind.got).pipe(Option.getOrThrow)
      expect(error).toMatchObject({ _tag: "UpstreamError", kind: "malformed" })
      expect(error.message).toContain("already expired")
      expect(blind.info).toMatchObject({ status: "missing", hasToken: false })
      console.log("clock skew: upstream −10 min, 5-minute token: corrected → valid until now + 300 s; without Date → refused, nothing stored")
    }))

  it.scoped("a missing or garbage Date header, or a skew under 2 s, leaves expires_at as given", () =>
    Effect.gen(function*() {
      yield* atStart
      const cases: ReadonlyArray<readonly [string, number, DateMode]> = [
        ["missing Date", 10 * MINUTE, "missing"],
        ["garbage Date", 10 * MINUTE, { raw: "garbage 12" }],
        ["Date in no calendar", -10 * MINUTE, { raw: "Tue, 31 Feb 2026 10:00:00 GMT" }],
        ["skew of 1.5 s", 1500, "clock"],
        ["skew of −0.9 s", -900, "clock"]
      ]
      for (const [name, skew, date] of cases) {
        const { got, info, upstreamExpiry } = yield* remoteExpiry(skew, HOUR, date)
        expect(Either.isRight(got), name).toBe(true)
        expect(info.expiresAt, name).toBe(upstreamExpiry)
      }
      console.log(`clock skew: ${cases.length} cases with no usable Date or a skew under 2 s: expires_at used as given`)
    }))

  it.scoped("relative expires_in needs no correction (OAuth2 token endpoint 10 min ahead)", () =>
    Effect.gen(function*() {
      yield* atStart
      const server = yield* OAuth2.make({ now: yield* skewedClock(10 * MINUTE), clients: { tessera: "secret" } })
      const { refreshToken } = server.issueGrant("tessera")
      const drivers = Source.layerEffect(Effect.map(OAuth2Source.source(), (source) => ({ sources: [source] })))
      const start = (yield* FakeServer.clockNow)()
      const info = yield* Effect.gen(function*() {
        const lifecycle = yield* Lifecycle.Lifecycle
        yield* lifecycle.add(
          new Account.NewAccount({
            id: Harness.accountId("oauth-1"),
            provider: "example",
            source: new Account.OAuth2Source({
              tokenUrl: `${server.url}/oauth/token`,
              clientId: "tessera",
              clientSecret: Redacted.make("secret"),
              refreshToken: Redacted.make(refreshToken)
            })
          })
        )
        yield* lifecycle.get("oauth-1")
        return yield* lifecycle.info("oauth-1")
      }).pipe(Effect.provide(ProviderHarness.lifecycle(drivers)))
      expect(info.expiresAt).toBe(start + HOUR)
    }))
})
