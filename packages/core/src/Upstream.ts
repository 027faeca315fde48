/**
 * Calling upstream APIs: the retry policy of SPEC §2.5 and one way to turn an HTTP exchange
 * into a typed result. Every upstream call of every source goes through `call`, so timeouts,
 * backoff with jitter, `Retry-After` and the classification of statuses are decided in one
 * place, as is how far an upstream's clock is off by its `Date` header (`clockOffset`, which
 * sources apply to absolute expiries). Error details quote only the upstream's own message
 * fields, never request data, and with every credential the request carried blanked out (an
 * upstream may quote back what it was sent), so a credential cannot leak into an error.
 */
import { HttpClient, HttpClientRequest } from "@effect/platform"
import type { HttpClientResponse } from "@effect/platform"
import { Cause, Config, Context, Duration, Effect, Either, Encoding, Exit, Layer, Metric, MetricState, Option, ParseResult, Schedule, Schema } from "effect"
import { isRetryable, UpstreamError } from "./Errors.js"

export interface RetryPolicyShape {
  /** Attempts in all, the first included. */
  readonly maxAttempts: number
  readonly baseDelay: Duration.Duration
  readonly maxDelay: Duration.Duration
  readonly requestTimeout: Duration.Duration
}

/** The retry policy; defaults are the existing systems' (3 attempts, 1 s, 30 s, 10 s). */
export class RetryPolicy extends Context.Reference<RetryPolicy>()("@tessera/core/Upstream/RetryPolicy", {
  defaultValue: (): RetryPolicyShape => ({
    maxAttempts: 3,
    baseDelay: Duration.millis(1000),
    maxDelay: Duration.millis(30_000),
    requestTimeout: Duration.millis(10_000)
  })
}) {}

const positiveInt = (name: string, fallback: number) =>
  Config.integer(name).pipe(
    Config.validate({ message: `${name} must be a positive whole number`, validation: (n) => n >= 1 }),
    Config.withDefault(fallback)
  )

/** The policy from `API_RETRY_MAX_ATTEMPTS`, `API_RETRY_BASE_DELAY_MS`, `API_RETRY_MAX_DELAY_MS`, `API_REQUEST_TIMEOUT_MS`. */
export const retryPolicyConfig: Config.Config<RetryPolicyShape> = Config.all({
  maxAttempts: positiveInt("API_RETRY_MAX_ATTEMPTS", 3),
  baseDelay: Config.map(positiveInt("API_RETRY_BASE_DELAY_MS", 1000), Duration.millis),
  maxDelay: Config.map(positiveInt("API_RETRY_MAX_DELAY_MS", 30_000), Duration.millis),
  requestTimeout: Config.map(positiveInt("API_REQUEST_TIMEOUT_MS", 10_000), Duration.millis)
})

export const layerRetryPolicyConfig = Layer.effect(RetryPolicy, retryPolicyConfig)

/**
 * The schedule between attempts: exponential from the base delay with jitter, each delay
 * capped at the maximum, raised to the upstream's `Retry-After` when it asked for longer.
 * It stops after `maxAttempts` attempts, on errors that are not worth retrying, and when the
 * upstream asks to wait longer than the maximum delay (the caller then gets the error with
 * its `retryAfterMs`, rather than a call that hangs for an hour).
 */
export const retrySchedule = (policy: RetryPolicyShape): Schedule.Schedule<unknown, UpstreamError> => {
  const maxDelayMs = Duration.toMillis(policy.maxDelay)
  return Schedule.exponential(policy.baseDelay).pipe(
    Schedule.jittered,
    Schedule.modifyDelay((_, delay) => Duration.min(delay, policy.maxDelay)),
    Schedule.intersect(Schedule.recurs(policy.maxAttempts - 1)),
    Schedule.intersect(Schedule.identity<UpstreamError>()),
    Schedule.modifyDelay(([, error], delay) =>
      error.retryAfterMs === null ? delay : Duration.max(delay, Duration.millis(error.retryAfterMs))
    ),
    Schedule.whileInput((error: UpstreamError) => isRetryable(error) && (error.retryAfterMs ?? 0) <= maxDelayMs)
  )
}

/** Retries `effect` under the current retry policy. */
export const withRetry = <A, R>(effect: Effect.Effect<A, UpstreamError, R>): Effect.Effect<A, UpstreamError, R> =>
  Effect.flatMap(RetryPolicy, (policy) => Effect.retry(effect, retrySchedule(policy)))

const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
const DAY = "(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)"
const LONG_DAY = "(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday)"
const TIME = "(\\d{2}):(\\d{2}):(\\d{2})"
/** `Sun, 06 Nov 1994 08:49:37 GMT` (a one-digit day is tolerated). */
const IMF_FIXDATE = new RegExp(`^${DAY}, (\\d{1,2}) ([A-Z][a-z]{2}) (\\d{4}) ${TIME} GMT$`)
/** `Sunday, 06-Nov-94 08:49:37 GMT` (obsolete). */
const RFC_850 = new RegExp(`^${LONG_DAY}, (\\d{2})-([A-Z][a-z]{2})-(\\d{2}) ${TIME} GMT$`)
/** `Sun Nov  6 08:49:37 1994` (obsolete, always UTC). */
const ASCTIME = new RegExp(`^${DAY} ([A-Z][a-z]{2}) ( \\d|\\d{2}) ${TIME} (\\d{4})$`)

const utc = (year: number, month: string, day: number, hour: number, minute: number, second: number): Option.Option<number> => {
  const monthIndex = MONTHS.indexOf(month)
  if (monthIndex < 0 || hour > 23 || minute > 59 || second > 60) return Option.none()
  const time = Date.UTC(year, monthIndex, day, hour, minute, Math.min(second, 59))
  // Date.UTC rolls 31 February over into March; an HTTP date never does.
  return new Date(time).getUTCDate() === day ? Option.some(time) : Option.none()
}

/**
 * Parses an HTTP date (RFC 9110 §5.6.7: IMF-fixdate and the two obsolete forms every
 * recipient must read) as epoch milliseconds. Anything else is none: `Date.parse` would read
 * "garbage 12" as December 2001, and a header is not worth a guess.
 */
export const parseHttpDate = (value: string | undefined): Option.Option<number> => {
  if (value === undefined) return Option.none()
  const trimmed = value.trim()
  const imf = IMF_FIXDATE.exec(trimmed)
  if (imf !== null) return utc(Number(imf[3]), imf[2]!, Number(imf[1]), Number(imf[4]), Number(imf[5]), Number(imf[6]))
  const rfc850 = RFC_850.exec(trimmed)
  if (rfc850 !== null) {
    const yy = Number(rfc850[3])
    return utc(yy < 70 ? 2000 + yy : 1900 + yy, rfc850[2]!, Number(rfc850[1]), Number(rfc850[4]), Number(rfc850[5]), Number(rfc850[6]))
  }
  const asctime = ASCTIME.exec(trimmed)
  if (asctime !== null) {
    return utc(Number(asctime[6]), asctime[1]!, Number(asctime[2]), Number(asctime[3]), Number(asctime[4]), Number(asctime[5]))
  }
  return Option.none()
}

/** Parses `Retry-After`: delay-seconds or an HTTP date, as milliseconds from `now`. */
export const parseRetryAfter = (value: string | undefined, now: number): Option.Option<number> => {
  if (value === undefined) return Option.none()
  const trimmed = value.trim()
  if (/^\d+$/.test(trimmed)) return Option.some(Number(trimmed) * 1000)
  return Option.map(parseHttpDate(trimmed), (date) => Math.max(0, date - now))
}

/**
 * Below this, a difference between our clock and an upstream's `Date` header is the header's
 * 1 s resolution and the time the answer spent in flight, not a wrong clock.
 */
export const CLOCK_SKEW_TOLERANCE_MS = 2000

/**
 * How far our clock is ahead of the upstream's, read from a response's `Date` header
 * (RFC 9110 §6.6.1): `now − date` in milliseconds, so that an absolute time the upstream gave
 * on its own clock (an `expires_at`) is `time + offset` on ours. 0 when the header is missing
 * or unreadable, or the difference is within `CLOCK_SKEW_TOLERANCE_MS`. Relative times
 * (`expires_in`, `Retry-After` seconds) need no correction.
 */
export const clockOffset = (headers: Readonly<Record<string, string | undefined>>, now: number): number =>
  Option.match(parseHttpDate(headers["date"]), {
    onNone: () => 0,
    onSome: (date) => Math.abs(now - date) < CLOCK_SKEW_TOLERANCE_MS ? 0 : now - date
  })

const MESSAGE_FIELDS = ["error_description", "message", "detail", "error"] as const

/** The message fields of an upstream error body, if it has any. */
const messageOf = (body: string): string | undefined => {
  try {
    const json: unknown = JSON.parse(body)
    if (typeof json === "object" && json !== null) {
      const record = json as Record<string, unknown>
      for (const field of MESSAGE_FIELDS) {
        const value = record[field]
        if (typeof value === "string" && value.length > 0) return value
      }
      const errors = record["errors"]
      if (Array.isArray(errors) && typeof errors[0]?.message === "string") return String(errors[0].message)
      // Bitbucket and others nest it: {"error": {"message": "…"}}
      const nested = record["error"]
      if (typeof nested === "object" && nested !== null && typeof (nested as Record<string, unknown>)["message"] === "string") {
        return String((nested as Record<string, unknown>)["message"])
      }
    }
  } catch {
    // not JSON: the status alone
  }
  return undefined
}

/**
 * A short, safe excerpt of an upstream error body: only its message fields, never the raw
 * body, with `secrets` (what the request carried) blanked out before it is shortened.
 */
const upstreamMessage = (body: string, secrets: ReadonlyArray<string>): string => {
  const message = messageOf(body)
  if (message === undefined) return "no details"
  return secrets.reduce((text, secret) => text.split(secret).join("[redacted]"), message).slice(0, 200)
}

const SECRET_FIELD = /pass|secret|token|key|assertion|code/i

const formDecode = (text: string): string => {
  try {
    return decodeURIComponent(text.replace(/\+/g, " "))
  } catch {
    return text
  }
}

/**
 * The credentials a request carries: its `Authorization` credential (and the password of
 * HTTP Basic), and the secret-named fields of a JSON or form body. Longest first, so a
 * credential that contains another is blanked out whole.
 */
const credentialsOf = (request: HttpClientRequest.HttpClientRequest): ReadonlyArray<string> => {
  const found: Array<string> = []
  const authorization = request.headers["authorization"]
  if (authorization !== undefined) {
    const credential = authorization.replace(/^\S+\s+/, "")
    found.push(credential)
    if (/^basic\s/i.test(authorization)) {
      const decoded = Either.getOrElse(Encoding.decodeBase64String(credential), () => "")
      const password = decoded.slice(decoded.indexOf(":") + 1)
      found.push(password, formDecode(password))
    }
  }
  if (request.body._tag === "Uint8Array") {
    const text = new TextDecoder().decode(request.body.body)
    let fields: Array<[string, unknown]> = []
    if (request.body.contentType.includes("json")) {
      try {
        const json: unknown = JSON.parse(text)
        if (typeof json === "object" && json !== null) fields = Object.entries(json)
      } catch {
        // not JSON after all: nothing to look for
      }
    } else {
      fields = [...new URLSearchParams(text)]
    }
    for (const [name, value] of fields) if (SECRET_FIELD.test(name) && typeof value === "string") found.push(value)
  }
  return [...new Set(found.filter((secret) => secret.length >= 4))].sort((a, b) => b.length - a.length)
}

/** Classifies a non-2xx response (SPEC §2.5: 401/408/429/5xx are special, other 4xx final). */
export const classifyStatus = (
  operation: string,
  status: number,
  headers: Readonly<Record<string, string | undefined>>,
  body: string,
  now: number,
  /** What the request carried: blanked out of the upstream's message. */
  secrets: ReadonlyArray<string> = []
): UpstreamError => {
  const retryAfterMs = Option.getOrNull(parseRetryAfter(headers["retry-after"], now))
  const kind = status === 401
    ? "unauthorized"
    : status === 408
    ? "timeout"
    : status === 429
    ? "rate_limited"
    : status >= 500
    ? "server"
    : "rejected"
  return new UpstreamError({ kind, operation, status, detail: upstreamMessage(body, secrets), retryAfterMs })
}

/** Describes why a body did not match its schema by paths only: values may be secrets. */
const describeParseError = (error: ParseResult.ParseError): string => {
  const paths = ParseResult.ArrayFormatter.formatErrorSync(error).map((issue) =>
    issue.path.length === 0 ? "body" : issue.path.join(".")
  )
  return `unexpected response body at ${[...new Set(paths)].join(", ")}`
}

/**
 * One upstream exchange, with timeout and classification but no retry: a 2xx JSON body is
 * decoded with `schema`; everything else becomes an `UpstreamError`.
 */
export const exchange = <A, I>(
  operation: string,
  request: HttpClientRequest.HttpClientRequest,
  schema: Schema.Schema<A, I>
): Effect.Effect<{ readonly value: A; readonly response: HttpClientResponse.HttpClientResponse }, UpstreamError, HttpClient.HttpClient> =>
  Effect.gen(function*() {
    const client = yield* HttpClient.HttpClient
    const policy = yield* RetryPolicy
    const fail = (kind: UpstreamError["kind"], detail: string, status: number | null = null) =>
      new UpstreamError({ kind, operation, status, detail, retryAfterMs: null })
    const response = yield* client.execute(request).pipe(
      Effect.mapError(() => fail("connection", "could not reach the upstream")),
      Effect.timeoutFail({
        duration: policy.requestTimeout,
        onTimeout: () => fail("timeout", `no answer within ${Duration.format(policy.requestTimeout)}`)
      })
    )
    const body = yield* response.text.pipe(
      Effect.mapError(() => fail("connection", "the connection broke while reading the response", response.status)),
      Effect.timeoutFail({
        duration: policy.requestTimeout,
        onTimeout: () => fail("timeout", "the response body did not arrive in time", response.status)
      })
    )
    if (response.status < 200 || response.status >= 300) {
      const now = yield* Effect.clockWith((clock) => clock.currentTimeMillis)
      return yield* Effect.fail(classifyStatus(operation, response.status, response.headers, body, now, credentialsOf(request)))
    }
    const json = yield* Effect.try({
      try: (): unknown => JSON.parse(body),
      catch: () => fail("malformed", "response body is not JSON", response.status)
    })
    const value = yield* Schema.decodeUnknown(schema)(json).pipe(
      Effect.mapError((error) => fail("malformed", describeParseError(error), response.status))
    )
    return { value, response }
  }).pipe(Effect.onExit((exit) => countCall(operation, exit)))

/** Every upstream request this process made, by operation and outcome (`ok` or the error kind). */
export const calls = Metric.counter("tessera_upstream_calls_total", {
  description: "Upstream requests by operation and outcome",
  incremental: true
})

const outcomeOf = (exit: Exit.Exit<unknown, UpstreamError>): string =>
  Exit.match(exit, {
    onSuccess: () => "ok",
    onFailure: (cause) => Option.match(Cause.failureOption(cause), { onNone: () => "interrupted", onSome: (error) => error.kind })
  })

const countCall = (operation: string, exit: Exit.Exit<unknown, UpstreamError>) =>
  Metric.update(calls.pipe(Metric.tagged("operation", operation), Metric.tagged("outcome", outcomeOf(exit))), 1)

/** The counts of `calls` so far. */
export const callCounts: Effect.Effect<ReadonlyArray<{ readonly operation: string; readonly outcome: string; readonly count: number }>> =
  Effect.map(Metric.snapshot, (pairs) =>
    pairs.flatMap((pair) => {
      if (pair.metricKey.name !== "tessera_upstream_calls_total") return []
      if (!MetricState.isCounterState(pair.metricState)) return []
      const tag = (key: string) => pair.metricKey.tags.find((t) => t.key === key)?.value ?? ""
      return [{ operation: tag("operation"), outcome: tag("outcome"), count: Number(pair.metricState.count) }]
    }))

/** `exchange` under the retry policy: what sources call. */
export const call = <A, I>(
  operation: string,
  request: HttpClientRequest.HttpClientRequest,
  schema: Schema.Schema<A, I>
): Effect.Effect<A, UpstreamError, HttpClient.HttpClient> =>
  Effect.map(withRetry(exchange(operation, request, schema)), (result) => result.value)

/** Joins a base URL and a path without doubling or dropping slashes. */
export const joinUrl = (base: string, path: string): string => `${base.replace(/\/+$/, "")}/${path.replace(/^\/+/, "")}`

