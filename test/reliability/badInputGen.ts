/**
 * Generators of bad HTTP requests for the reliability suite (issue 6, "Bad input"): for every
 * route of SPEC §6 that takes input, requests that are wrong by construction, so that any
 * answer but a 4xx is the server's fault. A valid request is a schema-conforming body with
 * ids that exist; each generated request breaks at least one rule the SPEC states (a required
 * field missing or of the wrong type, a value out of range, a date that is not one or is past,
 * a token that is empty, too long or has spaces, an id or pool name that cannot be one or does
 * not exist, a body that is not JSON, a media type that is not JSON, a query value that is
 * not one the route takes, a path or method that is no route), and may add noise that is
 * harmless on its own (extra fields, unknown query parameters). Values in secret positions
 * carry `MARK`, so a test can check that no answer echoes them.
 *
 * The fixture these generators assume is `test/server/harness.ts`'s: accounts acc-1 and acc-2
 * (upstox, remote), gh-1..gh-3 (the github pool, static tokens), pools `upstox` and `github`.
 */
import { FastCheck as fc } from "effect"

/** In every value the generators put where a secret goes: no answer may contain it. */
export const MARK = "sekrit"

export interface BadRequest {
  readonly method: string
  /** The request target as sent: path and query, percent-encoded where it must be. */
  readonly path: string
  readonly headers: Readonly<Record<string, string>>
  readonly body?: string | Uint8Array | undefined
  /** Which rule the request breaks, for the counts. */
  readonly kind: string
}

export interface Endpoint {
  readonly name: string
  readonly requests: fc.Arbitrary<BadRequest>
}

// --- the fixture ----------------------------------------------------------------------------

export const ACCOUNTS = ["acc-1", "acc-2", "gh-1", "gh-2", "gh-3"] as const
export const POOLS = ["upstox", "github"] as const

// --- small pieces -------------------------------------------------------------------------

const ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
const alnum = fc.constantFrom(...ALNUM)
const lower = fc.constantFrom(..."abcdefghijklmnopqrstuvwxyz0123456789")
const word = fc.string({ unit: alnum, minLength: 1, maxLength: 12 })
const lowerWord = fc.string({ unit: lower, minLength: 1, maxLength: 12 })

/** An account id or pool name of the right form that no account or pool has. */
const unknownName = lowerWord.map((w) => `no-such-${w}`)

/** Characters no account id (and no pool name) may contain. */
const forbidden = fc.constantFrom(
  " ", "/", "\\", "?", "#", "%", "&", "=", "+", ",", ";", "!", "$", "'", "\"", "<", ">", "(", ")", "[", "]",
  "{", "}", "|", "^", "`", "~", "*", "\u0000", "\u0001", "\n", "\t", "\u007f", "é", "ß", "日本", "😀", "\u202e", "\ufeff"
)

/**
 * A path segment that decodes to something that cannot be an account id or pool name (or is
 * no segment at all). Never a dot segment, which a URL parser would resolve into another path.
 */
const invalidSegment = (extraForbidden: ReadonlyArray<string> = []): fc.Arbitrary<{ segment: string; kind: string }> =>
  fc.oneof(
    fc.tuple(fc.string({ unit: alnum, maxLength: 8 }), extraForbidden.length > 0 ? fc.oneof(forbidden, fc.constantFrom(...extraForbidden)) : forbidden, fc.string({ unit: alnum, maxLength: 8 }))
      .map(([a, c, b]) => ({ segment: encodeURIComponent(`${a}${c}${b}`), kind: "path: forbidden character" })),
    fc.tuple(fc.constantFrom(".", "_", ":", "@", "-", "..."), word)
      .map(([c, w]) => ({ segment: encodeURIComponent(`${c}${w}`), kind: "path: bad first character" })),
    fc.integer({ min: 129, max: 4000 }).map((n) => ({ segment: "a".repeat(n), kind: "path: too long" })),
    fc.tuple(word, fc.constantFrom("%", "%z", "%zz", "%G1", "%E0%A4", "%C3", "%ED%A0%80", "%FF"))
      .map(([w, bad]) => ({ segment: `${w}${bad}`, kind: "path: malformed percent-encoding" })),
    fc.constant({ segment: "", kind: "path: empty segment" })
  )

/** A path segment naming no account: malformed, or of the right form but unknown. */
const badAccount = fc.oneof(
  { arbitrary: invalidSegment(), weight: 3 },
  { arbitrary: unknownName.map((name) => ({ segment: name, kind: "path: unknown account" })), weight: 1 }
)

/** A path segment naming no pool. */
const badPool = fc.oneof(
  { arbitrary: invalidSegment(["@"]), weight: 3 },
  { arbitrary: unknownName.map((name) => ({ segment: name, kind: "path: unknown pool" })), weight: 1 }
)

/** Query parameters no route takes: noise, harmless alone. */
const noiseQuery = fc.array(
  fc.tuple(word, fc.oneof(word, fc.constantFrom("", "%zz", "%00", "..%2F..", "%E2%80%AE", "a=b=c", "1e999"))),
  { maxLength: 3 }
).map((pairs) => pairs.map(([k, v]) => `x_${k}=${v}`))

const withQuery = (path: string, params: ReadonlyArray<string>) =>
  params.length === 0 ? path : `${path}${path.includes("?") ? "&" : "?"}${params.join("&")}`

// --- JSON values ----------------------------------------------------------------------------

type Json = null | boolean | number | string | ReadonlyArray<Json> | { readonly [key: string]: Json }

const marked = fc.string({ unit: alnum, minLength: 1, maxLength: 16 }).map((s) => `${MARK}-${s}`)

/** Anything but a string: what a string field must never get. */
const notString: fc.Arbitrary<Json> = fc.oneof(
  fc.integer(),
  fc.double({ noNaN: true, noDefaultInfinity: true }),
  fc.boolean(),
  fc.constant(null),
  fc.array(fc.oneof(word, fc.integer()), { maxLength: 3 }),
  fc.dictionary(word, fc.oneof(word, fc.integer()), { maxKeys: 3 })
)

/** Anything but a string, carrying the mark where it can: for secret fields. */
const notStringSecret: fc.Arbitrary<Json> = fc.oneof(
  fc.integer(),
  fc.boolean(),
  fc.constant(null),
  fc.array(marked, { minLength: 1, maxLength: 3 }),
  marked.map((value) => ({ value })),
  marked.map((value) => ({ [value]: value }))
)

/** Anything but a number (and not a numeric string either). */
const notNumber: fc.Arbitrary<Json> = fc.oneof(
  word.map((w) => `${w}x`),
  fc.constantFrom("", "200", "4e2", "NaN", "Infinity", "0x1F4"),
  fc.boolean(),
  fc.constant(null),
  fc.array(fc.integer(), { maxLength: 3 }),
  fc.dictionary(word, fc.integer(), { maxKeys: 3 })
)

/** A secret that is not one: empty, too long (over 8192 characters). */
const badSecretString = fc.oneof(
  fc.constant(""),
  fc.integer({ min: 8193, max: 20_000 }).map((n) => `${MARK}-${"s".repeat(n)}`)
)

/** A token that is not well formed: empty, too long, or with spaces or control characters. */
const badToken: fc.Arbitrary<{ value: Json; kind: string }> = fc.oneof(
  notStringSecret.map((value) => ({ value, kind: "token: wrong type" })),
  badSecretString.map((value) => ({ value, kind: value === "" ? "token: empty" : "token: too long" })),
  fc.tuple(marked, fc.constantFrom(" ", "\t", "\n", "\r", "\u0000", "\u0007", "\u007f", "\u00a0 "), marked)
    .map(([a, ws, b]) => ({ value: `${a}${ws}${b}`, kind: "token: spaces or control characters" }))
)

const pad = (n: number, width = 2) => String(n).padStart(width, "0")
const int = (min: number, max: number) => fc.integer({ min, max })

/** An expiry that is not a time, not a valid one, or not in the future (SPEC §4.6: bad dates). */
const badExpiry: fc.Arbitrary<{ value: Json; kind: string }> = fc.oneof(
  fc.oneof(fc.boolean(), fc.constant(null), fc.array(fc.integer(), { maxLength: 2 }), fc.dictionary(word, fc.integer(), { maxKeys: 2 }))
    .map((value) => ({ value, kind: "expires_at: wrong type" })),
  fc.oneof(
    word.map((w) => `${w}!`),
    fc.constantFrom("", "tomorrow", "now", "2026-13-45", "2026-1-1", "26-01-01", "2030/01/01", "01-01-2030", "+275760-09-13", "10000-01-01T00:00:00Z", "2030-01-01T", "2030-01-01TZ", "T12:00:00", "2030-W01-1")
  ).map((value) => ({ value, kind: "expires_at: not a time" })),
  fc.oneof(
    fc.tuple(int(2030, 9999), int(13, 99), int(1, 28)).map(([y, m, d]) => `${y}-${pad(m)}-${pad(d)}`),
    fc.tuple(int(2030, 9999), int(0, 0), int(1, 28)).map(([y, m, d]) => `${y}-${pad(m)}-${pad(d)}`),
    fc.tuple(int(2030, 9999), int(1, 12), fc.constantFrom(0, 32, 45, 99)).map(([y, m, d]) => `${y}-${pad(m)}-${pad(d)}T00:00:00Z`),
    fc.tuple(int(2030, 9999), fc.constantFrom("02-30", "02-31", "04-31", "06-31", "09-31", "11-31")).map(([y, md]) => `${y}-${md}`),
    int(2030, 9999).filter((y) => !(y % 4 === 0 && (y % 100 !== 0 || y % 400 === 0))).map((y) => `${y}-02-29T12:00:00Z`),
    fc.tuple(int(2030, 9999), int(24, 99), int(0, 59)).map(([y, h, mi]) => `${y}-06-15T${pad(h)}:${pad(mi)}:00Z`),
    fc.tuple(int(2030, 9999), int(0, 23), int(60, 99)).map(([y, h, mi]) => `${y}-06-15T${pad(h)}:${pad(mi)}:00Z`),
    fc.tuple(int(2030, 9999), int(60, 99)).map(([y, s]) => `${y}-06-15T12:00:${pad(s)}Z`),
    fc.tuple(int(2030, 9999), fc.constantFrom("+19:00", "-24:00", "+99:99", "+05:60", "+0575", "+5:30", "+05", "UTC", "+05:30:00"))
      .map(([y, offset]) => `${y}-06-15T12:00:00${offset}`)
  ).map((value) => ({ value, kind: "expires_at: impossible date" })),
  fc.tuple(int(1000, 2020), int(1, 12), int(1, 28), int(0, 23))
    .map(([y, m, d, h]) => ({ value: `${y}-${pad(m)}-${pad(d)}T${pad(h)}:00:00Z`, kind: "expires_at: in the past" })),
  fc.oneof(
    fc.double({ max: 0, noNaN: true, noDefaultInfinity: true }),
    int(1, 1_600_000_000),
    fc.integer({ min: 100_000_000_000, max: 1_600_000_000_000 }),
    fc.double({ min: 2.6e14, max: 1e308, noNaN: true, noDefaultInfinity: true })
  ).map((value) => ({ value, kind: "expires_at: number out of range" }))
)

/** Extra fields: harmless alone, added beside a real mistake. */
const extraFields = fc.dictionary(
  fc.oneof(word.map((w) => `x_${w}`), fc.constantFrom("__proto__", "constructor", "prototype", "toString", "hasOwnProperty")),
  fc.oneof(word, fc.integer(), fc.constant(null), fc.dictionary(word, word, { maxKeys: 2 })),
  { maxKeys: 3 }
)

// --- bodies -----------------------------------------------------------------------------------

type Body = Record<string, Json>

interface Mutation {
  readonly kind: string
  readonly apply: (body: Body) => void
}

const set = (field: string, kind: string) => (value: Json): Mutation => ({ kind, apply: (body) => void (body[field] = value) })
const drop = (field: string): Mutation => ({ kind: `${field}: missing`, apply: (body) => void delete body[field] })
const setNested = (parent: string, field: string, kind: string) => (value: Json): Mutation => ({
  kind,
  apply: (body) => {
    const inner = body[parent]
    if (typeof inner === "object" && inner !== null && !Array.isArray(inner)) (inner as Record<string, Json>)[field] = value
  }
})
const tokenMutation = (field: string) => badToken.map(({ kind, value }): Mutation => ({ kind, apply: (body) => void (body[field] = value) }))
const expiryMutation = badExpiry.map(({ kind, value }): Mutation => ({ kind, apply: (body) => void (body["expires_at"] = value) }))

/** Ids a body may name that are no account's, or cannot be one. */
const invalidIdValue: fc.Arbitrary<Json> = fc.oneof(
  fc.tuple(fc.string({ unit: alnum, maxLength: 6 }), forbidden, fc.string({ unit: alnum, maxLength: 6 })).map(([a, c, b]) => `${a}${c}${b}`),
  fc.tuple(fc.constantFrom(".", "_", ":", "@", "-"), word).map(([c, w]) => `${c}${w}`),
  fc.constant(""),
  int(129, 1000).map((n) => "a".repeat(n)),
  notString
)

/**
 * A body made from a valid one by at least one mutation that breaks a rule, plus harmless
 * extra fields; as JSON text.
 */
const mutated = (base: () => Body, mutations: fc.Arbitrary<Mutation>) =>
  fc.tuple(fc.array(mutations, { minLength: 1, maxLength: 3 }), fc.option(extraFields, { nil: undefined }))
    .map(([changes, extra]) => {
      const body: Body = { ...(extra ?? {}), ...base() }
      for (const change of changes) change.apply(body)
      return { text: JSON.stringify(body), kind: changes[0]!.kind }
    })

const parses = (text: string): boolean => {
  try {
    JSON.parse(text)
    return true
  } catch {
    return false
  }
}

/** Whether `text` is JSON of an object that has `field`: never what an "invalid" body may be. */
const hasField = (text: string, field: string): boolean => {
  try {
    const value: unknown = JSON.parse(text)
    return typeof value === "object" && value !== null && !Array.isArray(value) && field in value
  } catch {
    return false
  }
}

/** Any JSON value that lacks the route's required field (so: never a valid body). */
const arbitraryJson = (required: string) =>
  fc.jsonValue({ maxDepth: 4 }).map((value) => JSON.stringify(value)).filter((text) => !hasField(text, required))
    .map((text) => ({ text, kind: "body: arbitrary JSON" }))

/** Text that is not JSON: cut short, broken or not JSON at all. */
const malformedJson = (sample: string) =>
  fc.oneof(
    int(1, Math.max(1, sample.length - 1)).map((n) => sample.slice(0, n)),
    fc.tuple(int(0, sample.length), fc.constantFrom("'", "\"", ",", "}", "]", "{", ":", "\\", "\u0000", "/*", "NaN", "undefined", "\n,"))
      .map(([at, junk]) => `${sample.slice(0, at)}${junk}${sample.slice(at)}`),
    fc.constantFrom(
      "{'access_token': 'x'}", "{access_token: \"x\"}", "{\"a\":1,}", "[1,2,]", "{\"a\":NaN}", "{\"a\":Infinity}", "{\"a\":-}",
      "{\"a\":01}", "{\"a\":1}{\"b\":2}", "\"unterminated", "tru", "nul", "{\"a\":\"\\x41\"}", "{\"a\":\"\\u12\"}", "<xml/>", "%7B%7D",
      "{\"a\":1} trailing", "\u00ef\u00bb\u00bf{}", "\ufeff{}", "undefined", "--", "{\"a\":\"line\nbreak\"}"
    ),
    fc.string({ maxLength: 200 })
  ).filter((text) => text.trim() !== "" && !parses(text))
    .map((text) => ({ text, kind: "body: malformed JSON" }))

/** Nested deeper than any body of the API is: arrays or objects, at the top or in a field. */
const deepJson = (field: string) =>
  fc.oneof(
    // mostly just past the limit, sometimes as deep as the body limit allows
    fc.oneof({ arbitrary: int(33, 500), weight: 3 }, { arbitrary: int(501, 29_000), weight: 1 }).map((depth) => ({ open: "[", close: "]", depth })),
    fc.oneof({ arbitrary: int(33, 500), weight: 3 }, { arbitrary: int(501, 9_000), weight: 1 }).map((depth) => ({ open: "{\"a\":", close: "}", depth }))
  ).chain(({ close, depth, open }) =>
    fc.boolean().map((inField) => {
      const inner = `${open.repeat(depth)}1${close.repeat(depth)}`
      return { text: inField ? `{${JSON.stringify(field)}:${inner}}` : inner, kind: "body: nested too deeply" }
    })
  )

/** Bytes that are no JSON text (invalid UTF-8 and binary noise). */
const binaryBody = fc.uint8Array({ minLength: 1, maxLength: 512 })
  .filter((bytes) => !parses(new TextDecoder().decode(bytes)))
  .map((bytes) => ({ bytes, kind: "body: binary" }))

const NON_JSON_TYPES = [
  "text/plain",
  "text/plain; charset=utf-8",
  "text/html",
  "text/json",
  "application/x-www-form-urlencoded",
  "multipart/form-data; boundary=x",
  "multipart/form-data",
  "multipart/mixed; boundary=zz",
  "application/xml",
  "application/octet-stream",
  "application/json-patch+json",
  "application/problem+json",
  "image/png",
  "*/*",
  "garbage",
  ";;;",
  "application/",
  "/json"
]

const JSON_HEADERS = { "content-type": "application/json" }

/** A body request (`POST`): schema-violating, arbitrary, malformed, deep, binary or of the wrong media type. */
const bodyRequests = (options: {
  readonly method?: string
  readonly path: fc.Arbitrary<string>
  readonly base: () => Body
  readonly mutations: fc.Arbitrary<Mutation>
  readonly required: string
  /** Query parameters that break a rule (with an otherwise valid body). */
  readonly badQuery?: fc.Arbitrary<{ param: string; kind: string }>
}): fc.Arbitrary<BadRequest> => {
  const method = options.method ?? "POST"
  const sample = JSON.stringify(options.base())
  const json = (text: string, kind: string, path: string, noise: ReadonlyArray<string>, typed: boolean): BadRequest => ({
    method,
    path: withQuery(path, noise),
    headers: typed ? JSON_HEADERS : {},
    body: text,
    kind
  })
  const withPath = <A>(arb: fc.Arbitrary<A>) => fc.tuple(arb, options.path, noiseQuery, fc.boolean())
  const variants: Array<fc.WeightedArbitrary<BadRequest>> = [
    {
      weight: 12,
      arbitrary: withPath(mutated(options.base, options.mutations)).map(([b, p, q, typed]) => json(b.text, b.kind, p, q, typed))
    },
    { weight: 2, arbitrary: withPath(arbitraryJson(options.required)).map(([b, p, q, t]) => json(b.text, b.kind, p, q, t)) },
    { weight: 2, arbitrary: withPath(malformedJson(sample)).map(([b, p, q, t]) => json(b.text, b.kind, p, q, t)) },
    { weight: 1, arbitrary: withPath(deepJson(options.required)).map(([b, p, q, t]) => json(b.text, b.kind, p, q, t)) },
    {
      weight: 1,
      arbitrary: fc.tuple(binaryBody, options.path).map(([b, p]): BadRequest => ({ method, path: p, headers: JSON_HEADERS, body: b.bytes, kind: b.kind }))
    },
    {
      weight: 2,
      // A valid body under a media type that is not JSON.
      arbitrary: fc.tuple(fc.constantFrom(...NON_JSON_TYPES), options.path).map(([type, p]): BadRequest => ({
        method,
        path: p,
        headers: { "content-type": type },
        body: type.startsWith("application/x-www-form-urlencoded") ? `access_token=${MARK}-form&account_id=acc-1` : JSON.stringify(options.base()),
        kind: "content type: not JSON"
      }))
    },
    {
      weight: 1,
      // No body at all, or an empty one.
      arbitrary: fc.tuple(options.path, fc.constantFrom<Record<string, string>>({}, JSON_HEADERS, { "content-type": "text/plain" }, { "content-type": "multipart/form-data; boundary=x" }))
        .map(([p, headers]): BadRequest => ({ method, path: p, headers, body: undefined, kind: "body: none" }))
    }
  ]
  if (options.badQuery !== undefined) {
    variants.push({
      weight: 2,
      arbitrary: fc.tuple(options.badQuery, options.path, noiseQuery).map(([bad, p, noise]) => ({
        method,
        path: withQuery(p, [bad.param, ...noise]),
        headers: JSON_HEADERS,
        body: JSON.stringify(options.base()),
        kind: bad.kind
      }))
    })
  }
  return fc.oneof(...variants)
}

// --- query values ---------------------------------------------------------------------------

/** A value for `?validate=`: anything but `true` or `false`, or the parameter twice. */
const badValidate = fc.oneof(
  fc.oneof(word, fc.constantFrom("", "TRUE", "False", "1", "0", "yes", "no", "on", "%00", "true%20", "%20false", "t"))
    .filter((v) => v !== "true" && v !== "false")
    .map((v) => ({ param: `validate=${v}`, kind: "query: validate not a boolean" })),
  fc.constant({ param: "validate=true&validate=false", kind: "query: validate twice" })
)

/** A value for `?wait=`: no duration, a negative one, one over ten minutes, or the parameter twice. */
const badWait = fc.oneof(
  fc.oneof(word.map((w) => `x${w}`), fc.constantFrom("", "forever", "NaN", "Infinity", "-Infinity", "%00", "5y", "5%20sec", "1w", "s", "ms", "5sm", "5s5", "--5s", "1e3", "0x10", "5,5s"))
    .map((v) => ({ param: `wait=${v}`, kind: "query: wait not a duration" })),
  fc.tuple(int(1, 600), fc.constantFrom("", "s", "ms", "m", "%20seconds", "%20minutes")).map(([n, unit]) => ({ param: `wait=-${n}${unit}`, kind: "query: wait negative" })),
  fc.oneof(
    int(601, 10_000_000).map(String),
    int(601, 100_000).map((n) => `${n}s`),
    int(11, 100_000).map((n) => `${n}m`),
    int(1, 1000).map((n) => `${n}h`),
    int(1, 1000).map((n) => `${n}d`),
    int(600_001, 100_000_000).map((n) => `${n}ms`),
    int(11, 1000).map((n) => `${n}%20minutes`)
  ).map((v) => ({ param: `wait=${v}`, kind: "query: wait over 10 minutes" })),
  fc.constant({ param: "wait=1s&wait=2s", kind: "query: wait twice" })
)

/** `/audit` parameters with at least one that breaks a rule. */
const badAuditQuery = fc.tuple(
  fc.oneof(
    fc.oneof(
      int(-1_000_000, 0).map(String),
      int(1001, 10_000_000).map(String),
      fc.tuple(int(1, 999), int(1, 9)).map(([a, b]) => `${a}.${b}`),
      word.map((w) => `x${w}`),
      fc.constantFrom("", "NaN", "Infinity", "-Infinity", "1e999", "%00", "1,5", "ten")
    ).map((v) => ({ param: `limit=${v}`, kind: "query: limit out of range or not a number" })),
    fc.constant({ param: "limit=10&limit=20", kind: "query: limit twice" }),
    fc.oneof(
      int(-1_000_000, 0).map(String),
      fc.tuple(int(1, 999), int(1, 9)).map(([a, b]) => `${a}.${b}`),
      word.map((w) => `x${w}`),
      fc.constantFrom("", "NaN", "Infinity", "1e999", "%00")
    ).map((v) => ({ param: `before=${v}`, kind: "query: before not an entry id" })),
    invalidIdValue.filter((v): v is string => typeof v === "string")
      .map((v) => ({ param: `account_id=${encodeURIComponent(v)}`, kind: "query: account_id cannot be one" })),
    fc.constant({ param: "account_id=acc-1&account_id=acc-2", kind: "query: account_id twice" })
  ),
  fc.option(fc.constantFrom("limit=5", "account_id=acc-1", "before=100"), { nil: undefined }),
  noiseQuery
).map(([bad, good, noise]) => ({
  params: [bad.param, ...(good === undefined || good.split("=")[0] === bad.param.split("=")[0] ? [] : [good]), ...noise],
  kind: bad.kind
}))

// --- the routes -------------------------------------------------------------------------------

/**
 * A request to a route that names an account in its path, with a path that names none; junk
 * query parameters, and sometimes a body the route does not take.
 */
const accountRoute = (method: string, suffix: string): fc.Arbitrary<BadRequest> =>
  fc.tuple(badAccount, noiseQuery, fc.option(fc.tuple(fc.constantFrom(...NON_JSON_TYPES, "application/json"), fc.oneof(word, malformedJson("{\"a\":1}").map((m) => m.text))), { freq: 4, nil: undefined }))
    .map(([account, noise, extra]): BadRequest => ({
      method,
      path: withQuery(`/accounts/${account.segment}${suffix}`, noise),
      headers: extra === undefined ? {} : { "content-type": extra[0] },
      body: extra?.[1],
      kind: account.kind
    }))

const updateBase = (): Body => ({ access_token: `${MARK}-valid-looking-token`, expires_at: "2099-01-01T00:00:00Z" })

const updateMutations = (pathId: string | undefined) =>
  fc.oneof(
    fc.constant(drop("access_token")),
    tokenMutation("access_token"),
    expiryMutation,
    invalidIdValue.map(set("account_id", "account_id: cannot be one")),
    pathId === undefined
      ? unknownName.map(set("account_id", "account_id: unknown"))
      : fc.constantFrom(...ACCOUNTS).filter((id) => id !== pathId).map(set("account_id", "account_id: differs from the path"))
  )

/** `POST /token/update`. */
const defaultUpdate = bodyRequests({
  path: fc.constantFrom("/token/update", "/token/update?validate=false", "/token/update?validate=true"),
  base: updateBase,
  mutations: updateMutations(undefined),
  required: "access_token",
  badQuery: badValidate.map(({ kind, param }) => ({ kind, param }))
})

/** `POST /accounts/{id}/token/update`: a bad body for acc-1, or a path naming no account. */
const accountUpdate = fc.oneof(
  { weight: 4, arbitrary: bodyRequests({
    path: fc.constantFrom("/accounts/acc-1/token/update", "/accounts/acc-1/token/update?validate=false"),
    base: updateBase,
    mutations: updateMutations("acc-1"),
    required: "access_token",
    badQuery: badValidate
  }) },
  { weight: 1, arbitrary: fc.tuple(badAccount, fc.constantFrom("", "?validate=false")).map(([account, query]): BadRequest => ({
    method: "POST",
    path: `/accounts/${account.segment}/token/update${query}`,
    headers: JSON_HEADERS,
    body: JSON.stringify({ access_token: `${MARK}-for-nobody`, expires_at: "2099-01-01T00:00:00Z" }),
    kind: account.kind
  })) }
)

const urlLike = fc.oneof(
  word,
  fc.constantFrom("", "ftp://example.test", "javascript:alert(1)", "file:///etc/passwd", "http//x", "://x", "http:", "mailto:a@b", "127.0.0.1:80", "/relative", "data:text/plain,x")
)

/** `POST /accounts`. */
const newAccount = (() => {
  let n = 0
  const base = (): Body => ({
    account_id: `fresh-${n++}`,
    provider: "github",
    label: "a label",
    source: { type: "static" },
    access_token: `${MARK}-fresh-token`
  })
  const source = (value: Body, kind: string): Mutation => ({ kind, apply: (body) => void (body["source"] = value) })
  const password = { type: "password", username: "trader", password: `${MARK}-pw`, base_url: "http://127.0.0.1:9/amp" }
  const oauth2 = { type: "oauth2", token_url: "http://127.0.0.1:9/token", client_id: "id", client_secret: `${MARK}-cs`, refresh_token: `${MARK}-rt` }
  const without = (value: Body, field: string): Body => Object.fromEntries(Object.entries(value).filter(([k]) => k !== field))
  const mutations = fc.oneof(
    fc.constantFrom(drop("account_id"), drop("provider"), drop("source")),
    invalidIdValue.map(set("account_id", "account_id: cannot be one")),
    fc.constantFrom(...ACCOUNTS).map(set("account_id", "account_id: exists")),
    fc.oneof(
      word.map((w) => `Upper${w}`),
      fc.tuple(int(0, 9), lowerWord).map(([d, w]) => `${d}${w}`),
      int(65, 300).map((n) => `p${"x".repeat(n)}`),
      fc.constantFrom("", "git hub", "git.hub", "_x", "-x", "ünï")
    ).map(set("provider", "provider: cannot be one")),
    notString.map(set("provider", "provider: wrong type")),
    fc.oneof(invalidIdValue, fc.constant("pool@x")).map(set("pool", "pool: cannot be one")),
    fc.oneof(int(201, 5000).map((n) => "l".repeat(n)), notString.filter((v) => v !== null)).map(set("label", "label: too long or wrong type")),
    notString.filter((v) => typeof v !== "object" || v === null || Array.isArray(v)).map(set("source", "source: wrong type")),
    fc.oneof(word.map((w) => `x${w}`), fc.constantFrom("", "STATIC", "custom", "Static", "password ", "null")).map((type) => source({ type }, "source: unknown type")),
    fc.constant(source({}, "source.type: missing")),
    fc.constantFrom("username", "password").map((field) => source(without(password, field), `source.${field}: missing`)),
    fc.constant(source({ ...password, username: "" }, "source.username: empty")),
    fc.oneof(notStringSecret, badSecretString).map((value) => source({ ...password, password: value }, "source.password: not a secret")),
    urlLike.map((value) => source({ ...password, base_url: value }, "source.base_url: not an http URL")),
    urlLike.map((value) => source({ type: "remote", service_url: value }, "source.service_url: not an http URL")),
    fc.constantFrom("token_url", "client_id", "client_secret").map((field) => source(without(oauth2, field), `source.${field}: missing`)),
    urlLike.map((value) => source({ ...oauth2, token_url: value }, "source.token_url: not an http URL")),
    fc.oneof(word, fc.constantFrom("", "password", "implicit", "REFRESH_TOKEN")).map((grant) => source({ ...oauth2, grant }, "source.grant: unknown")),
    fc.oneof(notStringSecret, badSecretString).map((value) => source({ ...oauth2, refresh_token: value }, "source.refresh_token: not a secret")),
    fc.oneof(notStringSecret, badSecretString).map((value) => source({ ...oauth2, client_secret: value }, "source.client_secret: not a secret")),
    notString.filter((v) => v !== null).map((scope) => source({ ...oauth2, scope }, "source.scope: wrong type")),
    tokenMutation("access_token"),
    expiryMutation
  )
  return bodyRequests({ path: fc.constant("/accounts"), base, mutations, required: "account_id" })
})()

/** `POST /pools/{pool}/tokens`: a bad body for the github pool, or a pool that cannot be one. */
const addPoolToken = (() => {
  const base = (): Body => ({ access_token: `${MARK}-new-pool-token`, label: "x" })
  const mutations = fc.oneof(
    fc.constant(drop("access_token")),
    tokenMutation("access_token"),
    invalidIdValue.map(set("account_id", "account_id: cannot be one")),
    fc.constantFrom(...ACCOUNTS).map(set("account_id", "account_id: exists")),
    fc.oneof(int(201, 5000).map((n) => "l".repeat(n)), notString.filter((v) => v !== null)).map(set("label", "label: too long or wrong type")),
    expiryMutation
  )
  return fc.oneof(
    { weight: 4, arbitrary: bodyRequests({ path: fc.constant("/pools/github/tokens"), base, mutations, required: "access_token" }) },
    {
      weight: 1,
      arbitrary: fc.oneof(
        invalidSegment(["@"]),
        // of the right form, but neither a pool nor a provider's name
        word.map((w) => ({ segment: `No.Such.${w}`, kind: "path: unknown pool not named after a provider" }))
      ).map(({ segment, kind }): BadRequest => ({
        method: "POST",
        path: `/pools/${segment}/tokens`,
        headers: JSON_HEADERS,
        body: JSON.stringify(base()),
        kind
      }))
    }
  )
})()

/** `POST /pools/{pool}/report`: a bad report for the github pool, or a pool that names none. */
const report = (() => {
  const base = (): Body => ({ account_id: "gh-1", status: 200, headers: { "x-ratelimit-remaining": "10" } })
  const mutations = fc.oneof(
    fc.constant(drop("status")),
    notNumber.map(set("status", "status: wrong type")),
    fc.oneof(int(-1_000_000_000, 99), int(600, 1_000_000_000), fc.tuple(int(100, 598), int(1, 9)).map(([a, b]) => Number(`${a}.${b}`)))
      .map(set("status", "status: not an HTTP status")),
    fc.constant<Mutation>({ kind: "account: neither account_id nor access_token", apply: (body) => void delete body["account_id"] }),
    invalidIdValue.map(set("account_id", "account_id: cannot be one")),
    fc.oneof(unknownName, fc.constantFrom("acc-1", "acc-2")).map((id): Mutation => ({
      kind: "account_id: no account of this pool",
      apply: (body) => void ((body["account_id"] = id), delete body["access_token"])
    })),
    fc.oneof(notStringSecret, badSecretString).map((value): Mutation => ({ kind: "access_token: not a secret", apply: (body) => void (body["access_token"] = value) })),
    marked.map((token): Mutation => ({
      kind: "access_token: held by no account",
      apply: (body) => void ((body["access_token"] = token), delete body["account_id"])
    })),
    fc.oneof(word, fc.integer(), fc.boolean(), fc.array(word, { minLength: 1, maxLength: 3 })).map(set("headers", "headers: not an object")),
    fc.tuple(word, fc.oneof(fc.boolean(), fc.constant(null), fc.array(word, { maxLength: 2 }), fc.dictionary(word, word, { maxKeys: 2 })))
      .map(([name, value]) => setNested("headers", `x-${name}`, "headers: a value neither string nor number")(value))
  )
  return fc.oneof(
    { weight: 4, arbitrary: bodyRequests({ path: fc.constant("/pools/github/report"), base, mutations, required: "status" }) },
    {
      weight: 1,
      arbitrary: badPool.map(({ segment, kind }): BadRequest => ({
        method: "POST",
        path: `/pools/${segment}/report`,
        headers: JSON_HEADERS,
        body: JSON.stringify(base()),
        kind
      }))
    }
  )
})()

/** `POST /pools/{pool}/acquire`: a pool that names none (any `wait`), or a bad `wait`. */
const acquire = fc.oneof(
  fc.tuple(badPool, fc.constantFrom("", "?wait=1s", "?wait=0"), noiseQuery).map(([pool, wait, noise]): BadRequest => ({
    method: "POST",
    path: withQuery(`/pools/${pool.segment}/acquire${wait}`, noise),
    headers: {},
    kind: pool.kind
  })),
  fc.tuple(fc.constantFrom(...POOLS), badWait, noiseQuery).map(([pool, bad, noise]): BadRequest => ({
    method: "POST",
    path: withQuery(`/pools/${pool}/acquire`, [bad.param, ...noise]),
    headers: {},
    kind: bad.kind
  }))
)

const poolTokens = fc.tuple(badPool, noiseQuery).map(([pool, noise]): BadRequest => ({
  method: "GET",
  path: withQuery(`/pools/${pool.segment}/tokens`, noise),
  headers: {},
  kind: pool.kind
}))

const audit = badAuditQuery.map(({ params, kind }): BadRequest => ({ method: "GET", path: withQuery("/audit", params), headers: {}, kind }))

/** `/events` takes no input: other methods, and paths under it. */
const events = fc.oneof(
  fc.tuple(fc.constantFrom("POST", "PUT", "PATCH", "DELETE", "OPTIONS"), noiseQuery, fc.option(word, { nil: undefined }))
    .map(([method, noise, body]): BadRequest => ({
      method,
      path: withQuery("/events", noise),
      headers: body === undefined ? {} : JSON_HEADERS,
      body: body === undefined ? undefined : JSON.stringify({ body }),
      kind: "method: not GET"
    })),
  fc.tuple(fc.oneof(word, invalidSegment().map((s) => s.segment).filter((s) => s !== "")), noiseQuery)
    .map(([sub, noise]): BadRequest => ({ method: "GET", path: withQuery(`/events/${sub}`, noise), headers: {}, kind: "path: under /events" }))
)

// --- no route -------------------------------------------------------------------------------

/** The routes of SPEC §6 (and the docs), as patterns over a normalized path. */
const ROUTES: ReadonlyArray<readonly [string, RegExp]> = [
  ["GET", /^\/health$/],
  ["GET", /^\/token\/(status|validate)$/],
  ["POST", /^\/token\/update$/],
  ["POST", /^\/refresh-token$/],
  ["GET", /^\/accounts\/[^/]+\/token(\/status|\/validate)?$/],
  ["POST", /^\/accounts\/[^/]+\/token\/(update|refresh)$/],
  ["DELETE", /^\/accounts\/[^/]+(\/token)?$/],
  ["GET", /^\/accounts$/],
  ["POST", /^\/accounts$/],
  ["GET", /^\/pools(\/[^/]+\/tokens)?$/],
  ["POST", /^\/pools\/[^/]+\/(tokens|acquire|report)$/],
  ["GET", /^\/(events|metrics|audit|openapi\.json)$/],
  ["GET", /^\/docs(\/.*)?$/]
]

/**
 * The path a server would route: dot segments resolved, repeated and trailing slashes dropped,
 * and in lower case, since the platform's router matches paths regardless of case.
 */
const normalize = (target: string): string => {
  const pathname = new URL(target, "http://x").pathname
  let decoded: string
  try {
    decoded = decodeURI(pathname)
  } catch {
    decoded = pathname
  }
  return decoded.replace(/\/{2,}/g, "/").replace(/(.)\/$/, "$1").toLowerCase()
}

/** Whether some route answers this method and path (HEAD and GET alike). */
export const isRoute = (method: string, target: string): boolean => {
  const path = normalize(target.split("?")[0]!)
  const m = method === "HEAD" ? "GET" : method
  return ROUTES.some(([rm, pattern]) => rm === m && pattern.test(path))
}

const ROOTS = ["health", "token", "refresh-token", "accounts", "pools", "events", "metrics", "audit", "openapi.json", "docs"]

/** Paths and methods no route answers. */
const noRoute = fc.tuple(
  fc.constantFrom("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "GET", "POST"),
  fc.oneof(
    // an unknown first segment
    fc.array(fc.oneof(word, invalidSegment().map((s) => s.segment)), { minLength: 1, maxLength: 5 }).map((segments) => `/zz${segments.join("/")}`),
    // a known root, then segments it does not have
    fc.tuple(fc.constantFrom(...ROOTS), fc.array(fc.oneof(word, fc.constantFrom("..", ".", "%2e%2e", "", "token", "tokens", "x")), { minLength: 1, maxLength: 5 }))
      .map(([root, rest]) => `/${root}/${rest.join("/")}`),
    // a known path with a method it does not take
    fc.constantFrom("/health", "/accounts", "/pools", "/metrics", "/audit", "/token/status", "/refresh-token", "/token/update", "/accounts/acc-1", "/accounts/acc-1/token", "/pools/github/acquire", "/pools/github/tokens", "/openapi.json"),
    fc.constantFrom("*", "/", "/%00", "/..", "/../..", "/%2e%2e/%2e%2e/etc/passwd", "/accounts%2F", "/ACCOUNTS", "/Health", "/accounts/acc-1/TOKEN", "/?", "/#")
  ),
  noiseQuery,
  fc.option(fc.constantFrom("{}", "[]", "x", "{\"access_token\":\"sekrit-x\"}"), { nil: undefined })
).filter(([method, path]) => !isRoute(method, path))
  .map(([method, path, noise, body]): BadRequest => ({
    method,
    path: withQuery(path, noise),
    headers: body === undefined ? {} : JSON_HEADERS,
    body,
    kind: "no such route"
  }))

/** Every route of SPEC §6 that takes input, and the requests no route answers. */
export const endpoints: ReadonlyArray<Endpoint> = [
  { name: "POST /token/update", requests: defaultUpdate },
  { name: "POST /accounts/{id}/token/update", requests: accountUpdate },
  { name: "GET /accounts/{id}/token/status", requests: accountRoute("GET", "/token/status") },
  { name: "GET /accounts/{id}/token/validate", requests: accountRoute("GET", "/token/validate") },
  { name: "POST /accounts/{id}/token/refresh", requests: accountRoute("POST", "/token/refresh") },
  { name: "GET /accounts/{id}/token", requests: accountRoute("GET", "/token") },
  { name: "DELETE /accounts/{id}/token", requests: accountRoute("DELETE", "/token") },
  { name: "POST /accounts", requests: newAccount },
  { name: "DELETE /accounts/{id}", requests: accountRoute("DELETE", "") },
  { name: "GET /pools/{pool}/tokens", requests: poolTokens },
  { name: "POST /pools/{pool}/tokens", requests: addPoolToken },
  { name: "POST /pools/{pool}/acquire", requests: acquire },
  { name: "POST /pools/{pool}/report", requests: report },
  { name: "GET /audit", requests: audit },
  { name: "/events (methods, paths)", requests: events },
  { name: "no route (paths, methods)", requests: noRoute }
]
