/**
 * The small core every fake upstream is built on: a real `node:http` server on 127.0.0.1
 * (ephemeral port) as a scoped resource, a route table, a call counter per route, a request
 * log, and a fault-injection queue that makes any route hang, reset the connection or answer
 * something broken instead of its real reply. A fake is a list of routes whose handlers are
 * plain synchronous functions over the fake's own state; everything a test controls is a
 * plain synchronous method of the handle.
 */
import { Effect, Option } from "effect"
import type { Scope } from "effect"
import * as crypto from "node:crypto"
import * as http from "node:http"
import type { AddressInfo } from "node:net"

// --- replies -------------------------------------------------------------------------------

/** A complete HTTP answer. */
export interface Reply {
  readonly status: number
  readonly headers: Readonly<Record<string, string>>
  readonly body: string
}

/** What a route does with a request: answer it, never answer it, or drop the connection. */
export type Outcome = Reply | "timeout" | "reset"

export const json = (status: number, body: unknown, headers: Readonly<Record<string, string>> = {}): Reply => ({
  status,
  headers: { "content-type": "application/json", ...headers },
  body: JSON.stringify(body)
})

export const text = (
  status: number,
  body: string,
  contentType = "text/plain; charset=utf-8",
  headers: Readonly<Record<string, string>> = {}
): Reply => ({ status, headers: { "content-type": contentType, ...headers }, body })

/** Adds headers to a reply (and leaves the two non-answers alone). */
export const withHeaders = (outcome: Outcome, headers: Readonly<Record<string, string>>): Outcome =>
  typeof outcome === "string" ? outcome : { ...outcome, headers: { ...outcome.headers, ...headers } }

/** `JSON.parse` as an option, for bodies that may be anything. */
export const parseJson = (raw: string): Option.Option<unknown> =>
  Option.liftThrowable((input: string): unknown => JSON.parse(input))(raw)

// --- faults --------------------------------------------------------------------------------

/**
 * What a route can be told to do instead of its real reply:
 * - `{ status, body? }`: that status; `body` is sent as given (as JSON when it parses as
 *   JSON, else as text), by default `{"message":"<reason phrase>"}`;
 * - `{ status: 429, retryAfter? }`: 429 with the raw `Retry-After` value (seconds or an HTTP date);
 * - `"timeout"`: accept the request and never answer (until the server closes);
 * - `"reset"`: destroy the socket;
 * - `"garbage-html"`: 200 `text/html` `<html>oops</html>`;
 * - `"truncated-json"`: 200 `application/json` `{"access_token": "abc`;
 * - `"empty-json"`: 200 `{}`;
 * - `"empty-body"`: 200 `application/json` with no body at all;
 * - `{ json, status? }`: any JSON body, status 200 unless given.
 */
export type Fault =
  | { readonly status: 400 | 401 | 403 | 404 | 408 | 500 | 502 | 503; readonly body?: string }
  | { readonly status: 429; readonly retryAfter?: string }
  | "timeout"
  | "reset"
  | "garbage-html"
  | "truncated-json"
  | "empty-json"
  | "empty-body"
  | { readonly json: unknown; readonly status?: number }

const reasonBody = (status: number) => json(status, { message: http.STATUS_CODES[status] ?? "Error" })

const rawBody = (status: number, body: string): Reply =>
  Option.isSome(parseJson(body))
    ? text(status, body, "application/json")
    : text(status, body)

/** The outcome a fault stands for. */
export const faultOutcome = (fault: Fault): Outcome => {
  switch (fault) {
    case "timeout":
    case "reset":
      return fault
    case "garbage-html":
      return text(200, "<html>oops</html>", "text/html; charset=utf-8")
    case "truncated-json":
      return text(200, "{\"access_token\": \"abc", "application/json")
    case "empty-json":
      return json(200, {})
    case "empty-body":
      return text(200, "", "application/json")
  }
  if ("json" in fault) return json(fault.status ?? 200, fault.json)
  if (fault.status === 429) {
    return withHeaders(reasonBody(429), fault.retryAfter === undefined ? {} : { "retry-after": fault.retryAfter })
  }
  return fault.body === undefined ? reasonBody(fault.status) : rawBody(fault.status, fault.body)
}

// --- requests ------------------------------------------------------------------------------

/** A request as a route handler sees it. */
export interface FakeRequest {
  readonly method: string
  /** The path without the query string. */
  readonly path: string
  readonly query: Readonly<Record<string, string>>
  /** Header names lower-cased; repeated headers joined with `, `. */
  readonly headers: Readonly<Record<string, string>>
  readonly rawBody: string
  /** Form fields for `application/x-www-form-urlencoded`, else the parsed JSON; `undefined` when empty or unparseable. */
  readonly body: unknown
  /** Path parameters of the matched route (`:name` segments, `*` for the rest of the path). */
  readonly params: Readonly<Record<string, string>>
  /** Arrival time, from the fake's clock (epoch milliseconds). */
  readonly at: number
}

/** A request in the log, with the route it reached and the fault it was answered with, if any. */
export interface LoggedRequest<R extends string> extends FakeRequest {
  readonly route: R
  readonly fault: Fault | undefined
}

const headerRecord = (headers: http.IncomingHttpHeaders): Record<string, string> => {
  const record: Record<string, string> = {}
  for (const [name, value] of Object.entries(headers)) {
    if (value !== undefined) record[name.toLowerCase()] = Array.isArray(value) ? value.join(", ") : value
  }
  return record
}

const parseBody = (raw: string, contentType: string | undefined): unknown => {
  if (raw.length === 0) return undefined
  if (contentType?.toLowerCase().startsWith("application/x-www-form-urlencoded")) {
    return Object.fromEntries(new URLSearchParams(raw))
  }
  return Option.getOrUndefined(parseJson(raw))
}

/**
 * Reads a request body of at most `limit` bytes and hands it to `done`, or `undefined` when it
 * is larger (the rest is drained and dropped, so memory stays bounded).
 */
export const readBody = (req: http.IncomingMessage, limit: number, done: (body: string | undefined) => void): void => {
  const chunks: Array<Buffer> = []
  let size = 0
  req.on("data", (chunk: Buffer) => {
    size += chunk.length
    if (size <= limit) chunks.push(chunk)
  })
  req.on("end", () => done(size > limit ? undefined : Buffer.concat(chunks).toString("utf8")))
  // A client that goes away mid-request needs no answer.
  req.on("error", () => undefined)
}

/** The credential of an `Authorization: <scheme> <credential>` header whose scheme is one of `schemes`. */
export const authorization = (request: FakeRequest, schemes: ReadonlyArray<string>): string | undefined => {
  const match = /^(\S+)\s+(.+)$/.exec(request.headers["authorization"]?.trim() ?? "")
  if (match === null) return undefined
  const [, scheme = "", credential = ""] = match
  return schemes.includes(scheme.toLowerCase()) ? credential.trim() : undefined
}

/** The token of `Authorization: Bearer <token>`. */
export const bearerToken = (request: FakeRequest): string | undefined => authorization(request, ["bearer"])

/** The user and password of `Authorization: Basic <base64(user:password)>`. */
export const basicCredentials = (request: FakeRequest): { readonly user: string; readonly password: string } | undefined => {
  const credential = authorization(request, ["basic"])
  if (credential === undefined) return undefined
  const decoded = Buffer.from(credential, "base64").toString("utf8")
  const colon = decoded.indexOf(":")
  return colon < 0 ? undefined : { user: decoded.slice(0, colon), password: decoded.slice(colon + 1) }
}

// --- routes --------------------------------------------------------------------------------

/** A route of a fake: its short name (for counters and faults), method, path pattern and handler. */
export interface Route<R extends string> {
  readonly name: R
  readonly method: string
  /** `/accounts/:accountId/token`; a final `*` matches the rest of the path. */
  readonly path: string
  readonly handle: (request: FakeRequest) => Outcome
}

const decodeSegment = Option.liftThrowable(decodeURIComponent)

/** The parameters of `path` if it matches `pattern` (see `Route.path`). */
export const matchPath = (pattern: string, path: string): Option.Option<Record<string, string>> => {
  const wanted = pattern.split("/").filter((segment) => segment.length > 0)
  const given = path.split("/").filter((segment) => segment.length > 0)
  const params: Record<string, string> = {}
  for (const [index, segment] of wanted.entries()) {
    if (segment === "*") {
      params["*"] = given.slice(index).join("/")
      return Option.some(params)
    }
    const actual = given[index]
    if (actual === undefined) return Option.none()
    if (segment.startsWith(":")) {
      const decoded = decodeSegment(actual)
      if (Option.isNone(decoded)) return Option.none()
      params[segment.slice(1)] = decoded.value
    } else if (segment !== actual) {
      return Option.none()
    }
  }
  return given.length === wanted.length ? Option.some(params) : Option.none()
}

// --- the server ----------------------------------------------------------------------------

/** What every fake's handle offers; each fake adds its own controls. */
export interface FakeServer<R extends string> {
  /** `http://127.0.0.1:PORT`, without a trailing slash. */
  readonly url: string
  /** Requests that reached `route` since the start or the last `resetCalls`, faults included. */
  readonly calls: (route: R) => number
  /** Zeroes every counter and empties the request log. */
  readonly resetCalls: () => void
  /** The next `times` requests to `route` get `fault` (before any `failAlways` fault). */
  readonly failNext: (route: R, fault: Fault, times?: number) => void
  /** Every request to `route` gets `fault` from now on; `undefined` stops it. */
  readonly failAlways: (route: R, fault: Fault | undefined) => void
  /** Drops every queued and standing fault. */
  readonly clearFaults: () => void
  /** The request log, oldest first, of one route or of all. */
  readonly requests: (route?: R) => ReadonlyArray<LoggedRequest<R>>
  readonly lastRequest: (route: R) => LoggedRequest<R> | undefined
  /**
   * The `Date` header of every answer: by default the fake's clock (`now`), so a fake on
   * `TestClock` dates its answers on it and a fake whose `now` is skewed shows its wrong
   * clock; `null` sends none; a string is sent as given (garbage, say).
   */
  readonly setDateHeader: (value: string | null | undefined) => void
}

export interface ServerOptions<R extends string> {
  readonly routes: ReadonlyArray<Route<R>>
  /** The clock stamped on logged requests; `Date.now` unless given. */
  readonly now?: () => number
  /** Bodies larger than this get 413; 1 MiB unless given. */
  readonly maxBodyBytes?: number
  /** Consulted before faults and handlers: an outcome here answers every route (a fake that is "down"). */
  readonly intercept?: (request: FakeRequest) => Outcome | undefined
}

const listen = (handler: http.RequestListener) =>
  Effect.async<http.Server>((resume) => {
    const server = http.createServer(handler)
    const onError = (error: Error) => resume(Effect.die(error))
    server.once("error", onError)
    server.listen(0, "127.0.0.1", () => {
      server.off("error", onError)
      resume(Effect.succeed(server))
    })
  })

/** Stops listening and destroys every open socket, hanging requests included, so nothing outlives the scope. */
const close = (server: http.Server) =>
  Effect.async<void>((resume) => {
    server.close(() => resume(Effect.void))
    server.closeAllConnections()
  })

const send = (req: http.IncomingMessage, res: http.ServerResponse, outcome: Outcome, date: string | null): void => {
  // A request that times out is left open; `close` destroys its socket.
  if (outcome === "timeout") return
  if (outcome === "reset") return void req.socket.destroy()
  // Node would add a `Date` of the real clock; the fake's own (or none) is sent instead.
  res.sendDate = false
  const dated = date === null || Object.keys(outcome.headers).some((name) => name.toLowerCase() === "date")
    ? outcome.headers
    : { date, ...outcome.headers }
  res.writeHead(outcome.status, { "content-length": String(Buffer.byteLength(outcome.body)), ...dated })
  res.end(outcome.body)
}

/** Starts a fake on 127.0.0.1 with an ephemeral port; the scope closes it. */
export const make = <R extends string>(options: ServerOptions<R>): Effect.Effect<FakeServer<R>, never, Scope.Scope> =>
  Effect.gen(function*() {
    const now = options.now ?? Date.now
    const maxBodyBytes = options.maxBodyBytes ?? 1024 * 1024
    const counts = new Map<R, number>()
    const log: Array<LoggedRequest<R>> = []
    const queued = new Map<R, Array<Fault>>()
    const standing = new Map<R, Fault>()
    let dateHeader: string | null | undefined
    const currentDate = () => (dateHeader === undefined ? new Date(now()).toUTCString() : dateHeader)

    const takeFault = (route: R): Fault | undefined => queued.get(route)?.shift() ?? standing.get(route)

    const answer = (route: Route<R>, request: FakeRequest, body: string | undefined): Outcome => {
      counts.set(route.name, (counts.get(route.name) ?? 0) + 1)
      const intercepted = options.intercept?.(request)
      const fault = intercepted === undefined ? takeFault(route.name) : undefined
      log.push({ ...request, route: route.name, fault })
      if (intercepted !== undefined) return intercepted
      if (fault !== undefined) return faultOutcome(fault)
      if (body === undefined) return json(413, { message: `request body larger than ${maxBodyBytes} bytes` })
      return route.handle(request)
    }

    const dispatch = (req: http.IncomingMessage, body: string | undefined): Outcome => {
      const url = new URL(req.url ?? "/", "http://127.0.0.1")
      const headers = headerRecord(req.headers)
      const base = {
        method: req.method ?? "GET",
        path: url.pathname,
        query: Object.fromEntries(url.searchParams),
        headers,
        rawBody: body ?? "",
        body: parseBody(body ?? "", headers["content-type"]),
        at: now()
      }
      let pathMatched = false
      for (const route of options.routes) {
        const params = matchPath(route.path, base.path)
        if (Option.isNone(params)) continue
        pathMatched = true
        if (route.method === base.method) return answer(route, { ...base, params: params.value }, body)
      }
      return pathMatched
        ? json(405, { message: "Method Not Allowed" })
        : json(404, { message: "Not Found", path: base.path })
    }

    const server = yield* Effect.acquireRelease(
      listen((req, res) => readBody(req, maxBodyBytes, (body) => send(req, res, dispatch(req, body), currentDate()))),
      close
    )
    const { port } = server.address() as AddressInfo

    return {
      url: `http://127.0.0.1:${port}`,
      calls: (route) => counts.get(route) ?? 0,
      resetCalls: () => {
        counts.clear()
        log.length = 0
      },
      failNext: (route, fault, times = 1) => {
        const queue = queued.get(route) ?? []
        for (let n = 0; n < times; n++) queue.push(fault)
        queued.set(route, queue)
      },
      failAlways: (route, fault) => {
        if (fault === undefined) standing.delete(route)
        else standing.set(route, fault)
      },
      clearFaults: () => {
        queued.clear()
        standing.clear()
      },
      requests: (route) => (route === undefined ? [...log] : log.filter((entry) => entry.route === route)),
      setDateHeader: (value) => {
        dateHeader = value
      },
      lastRequest: (route) => {
        for (let index = log.length - 1; index >= 0; index--) {
          if (log[index]!.route === route) return log[index]
        }
        return undefined
      }
    }
  })

// --- shared helpers for fakes --------------------------------------------------------------

const BASE32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"

/** `prefix` followed by `length` random base32 characters, e.g. `amp_` + 24. */
export const randomToken = (prefix: string, length = 24): string => {
  let token = prefix
  for (let n = 0; n < length; n++) token += BASE32[crypto.randomInt(BASE32.length)]
  return token
}

/**
 * The current Effect `Clock` as a plain `now()` function, to hand to a fake as its `now`
 * option: under `it.effect` / `it.scoped` it reads `TestClock`, so `TestClock.adjust` moves
 * the fake's time together with the code under test.
 */
export const clockNow: Effect.Effect<() => number> = Effect.map(Effect.clock, (clock) => () => clock.unsafeCurrentTimeMillis())
