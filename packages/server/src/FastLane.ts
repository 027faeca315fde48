/**
 * The fast lane: the two routes a client calls before each of its own upstream requests,
 * `GET /accounts/{id}/token/status` and `POST /pools/{pool}/acquire`, answered straight from
 * Node's request by one small effect, without the HTTP API's router, middleware chain and
 * per-request decoding (which cost several times the work itself; see the README's
 * benchmarks).
 *
 * It takes only what it can answer exactly as the API does: the exact path (with an id or
 * pool name the API accepts), no query, no body, and a key that passes authentication with
 * nothing to record (`Auth.makeQuickCheck`). Everything else, every refusal included, goes
 * on to the API unchanged, whose middleware then answers, records and counts it. Both lanes
 * run the same operations (`Handlers.makeAcquire`, `Lifecycle.info`) and write the same JSON
 * (`Wire.tokenInfoJson` and `Wire.leaseJson` are held to the API's encoders; errors are
 * written by `ApiError.encode`, with the status their class declares), and the server tests compare the lanes' answers.
 */
import { ApiKeys, Events, Lifecycle, Settings } from "@tessera/core"
import { Cause, Clock, Effect, Exit, Option, Runtime, Schema } from "effect"
import type { Fiber } from "effect"
import type * as Http from "node:http"
import * as ApiError from "./ApiError.js"
import * as Auth from "./Auth.js"
import * as Handlers from "./Handlers.js"
import * as Wire from "./Wire.js"

/** An answer, ready to write. */
interface Answer {
  readonly status: number
  readonly body: string
  readonly retryAfter?: string | undefined
}

/** An answer to run, and the runtime to run it in (the actor's). */
interface Run {
  readonly run: (effect: Effect.Effect<Option.Option<Answer>>) => Fiber.RuntimeFiber<Option.Option<Answer>>
  readonly answer: Effect.Effect<Option.Option<Answer>>
}

/** More actors than any deployment has keys: the cache starts again past this. */
const MAX_ACTOR_RUNTIMES = 1_024

/** Not for this lane: the API answers it. */
const PASS = Option.none<Answer>()

const STATUS_PATH = /^\/accounts\/([^/]+)\/token\/status$/
const ACQUIRE_PATH = /^\/pools\/([^/]+)\/acquire$/

const isAccountId = Schema.is(Wire.AccountIdParam)
const isPool = Schema.is(Wire.PoolParam)

/** An error of the API, as the API answers it. */
const failure = (error: ApiError.Written, retryAfter?: string): Answer => ({
  status: ApiError.statusOf(error),
  body: ApiError.encode(error),
  retryAfter
})

/** Whether a request carries a body (which the API's edge reads and checks). */
const hasBody = (request: Http.IncomingMessage) =>
  request.headers["transfer-encoding"] !== undefined ||
  (request.headers["content-length"] !== undefined && request.headers["content-length"] !== "0")

/**
 * The lane, over the services the API's handlers use: a Node request listener that answers
 * what it takes and hands everything else, untouched, to `next` (the API's handler).
 */
export const make: Effect.Effect<
  (next: Listener) => Listener,
  never,
  Handlers.Services | ApiKeys.ApiKeys | Auth.Throttle
> = Effect.gen(function*() {
  const runtime = yield* Effect.runtime<never>()
  const clock = yield* Effect.clock
  const lifecycle = yield* Lifecycle.Lifecycle
  const zone = (yield* Settings.Settings).timeZone
  const quickCheck = yield* Auth.makeQuickCheck
  const keys = yield* ApiKeys.ApiKeys
  const acquire = yield* Handlers.makeAcquire
  const runFork = Runtime.runFork(runtime)
  // A runtime per actor (one per API key), so a request does not copy the services to name its actor.
  const actorRuns = new Map<string, Run["run"]>()
  const runAs = (actor: string) => {
    let run = actorRuns.get(actor)
    if (run === undefined) {
      if (actorRuns.size >= MAX_ACTOR_RUNTIMES) actorRuns.clear()
      run = Runtime.runFork(Runtime.provideService(runtime, Events.CurrentActor, actor))
      actorRuns.set(actor, run)
    }
    return run
  }

  /**
   * `answer`, run as the request's actor, or undefined when the API must answer the request:
   * known at once from the keys in memory, or after reading them again when they are over a
   * second old.
   */
  const authenticated = (
    scope: ApiKeys.Scope,
    request: Http.IncomingMessage,
    answer: Effect.Effect<Option.Option<Answer>>
  ): Run | undefined => {
    const client = request.socket.remoteAddress ?? "unknown"
    const check = () => quickCheck(scope, request.headers.authorization, client, clock.unsafeCurrentTimeMillis())
    const actor = check()
    if (actor === undefined) return undefined
    if (actor !== Auth.UNKNOWN) return { run: runAs(actor), answer }
    const afterReading = Effect.flatMap(Effect.either(keys.hasActive), () => {
      const again = check()
      return again === undefined || again === Auth.UNKNOWN
        ? Effect.succeed(PASS)
        : Effect.provideService(answer, Events.CurrentActor, again)
    })
    return { run: runFork, answer: afterReading }
  }

  const status = (id: string): Effect.Effect<Option.Option<Answer>> =>
    lifecycle.info(id).pipe(
      Effect.map((info) => Option.some({ status: 200, body: Wire.tokenInfoJson(Wire.tokenInfo(info, zone)) })),
      // an unknown account: the API answers it (it changes nothing)
      Effect.orElseSucceed(() => PASS)
    )

  /** Runs as the request's actor (see `runAs`). */
  const lease = (pool: string): Effect.Effect<Option.Option<Answer>> =>
    acquire(pool, undefined).pipe(
      Effect.map((leased): Answer => ({ status: 200, body: Wire.leaseJson(leased) })),
      Effect.catchAll((error) =>
        error instanceof Handlers.Exhausted
          ? Effect.map(Clock.currentTimeMillis, (now) => failure(error.answer, Auth.retryAfterSeconds(error.retryAt, now)))
          : Effect.succeed(failure(error))
      ),
      Effect.map(Option.some)
    )

  /** The effect that answers a request and how to run it, or undefined when it is not one for this lane. */
  const route = (request: Http.IncomingMessage): Run | undefined => {
    const url = request.url ?? ""
    if (url.includes("?") || hasBody(request)) return undefined
    if (request.method === "GET") {
      const id = STATUS_PATH.exec(url)?.[1]
      if (id === undefined || !isAccountId(id)) return undefined
      return authenticated("read", request, status(id))
    }
    if (request.method === "POST") {
      const pool = ACQUIRE_PATH.exec(url)?.[1]
      if (pool === undefined || !isPool(pool)) return undefined
      return authenticated("token", request, lease(pool))
    }
    return undefined
  }

  return (next: Listener): Listener => (request, response) => {
    const routed = route(request)
    if (routed === undefined) return next(request, response)
    const fiber = routed.run(routed.answer)
    fiber.addObserver((exit) => {
      if (Exit.isSuccess(exit)) return Option.isSome(exit.value) ? write(response, exit.value.value) : next(request, response)
      // A client that went away gets nothing; anything else is a bug, answered as the API's edge answers it.
      if (Cause.isInterruptedOnly(exit.cause) || response.destroyed) return
      runFork(Effect.logError("unexpected failure while answering a request", exit.cause))
      write(response, failure(ApiError.internal()))
    })
    response.on("close", () => {
      if (!response.writableEnded) fiber.unsafeInterruptAsFork(fiber.id())
    })
  }
})

const write = (response: Http.ServerResponse, answer: Answer) => {
  const headers: Record<string, string | number> = {
    "content-type": "application/json",
    "content-length": Buffer.byteLength(answer.body)
  }
  if (answer.retryAfter !== undefined) headers["retry-after"] = answer.retryAfter
  response.writeHead(answer.status, headers)
  response.end(answer.body)
}

/** A Node request listener. */
export type Listener = (request: Http.IncomingMessage, response: Http.ServerResponse) => void
