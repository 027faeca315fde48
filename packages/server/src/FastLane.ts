/**
 * The fast lane: the two routes a client calls before each of its own upstream requests,
 * `GET /accounts/{id}/token/status` and `POST /pools/{pool}/acquire`, answered straight from
 * Node's request, without the HTTP API's router, middleware chain and per-request decoding
 * (which cost several times the work itself; see the README's benchmarks). Both answers are
 * read and written synchronously, in the request's own callback: a fiber per request cost
 * more than the answer. Only what cannot be answered at once runs as an effect: an acquire
 * from a rotation shared through the database, or a request that comes when the API keys in
 * memory are over a second old.
 *
 * It takes only what it can answer exactly as the API does: the exact path (with an id or
 * pool name the API accepts), no query, no body, and a key that passes authentication with
 * nothing to record (`Auth.makeQuickCheck`). Everything else, every refusal included, goes
 * on to the API unchanged, whose middleware then answers, records and counts it. Both lanes
 * run the same operations (`Handlers.makeAcquire`, `Lifecycle.info` and `unsafeInfo`) and
 * write the same JSON (`Wire.tokenInfoJson` and `Wire.leaseJson` are held to the API's
 * encoders; errors are written by `ApiError.encode`, with the status their class declares),
 * and the server tests compare the lanes' answers.
 */
import { ApiKeys, Events, Lifecycle, Settings } from "@tessera/core"
import type { Token } from "@tessera/core"
import { Cause, Clock, Effect, Either, Exit, Runtime, Schema } from "effect"
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

/** Not for this lane: the API answers it. */
const PASS = Symbol.for("@tessera/server/FastLane/PASS")

/**
 * A request the lane takes: its answer for an actor, given at once (or `PASS`), or undefined
 * when only `later` (an effect, run as the actor) can give it.
 */
interface Route {
  readonly scope: ApiKeys.Scope
  readonly now: (actor: string, at: number) => Answer | typeof PASS | undefined
  readonly later: () => Effect.Effect<Answer | typeof PASS>
}

/** More actors than any deployment has keys: the cache starts again past this. */
const MAX_ACTOR_RUNTIMES = 1_024

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

/** A map that forgets everything once it holds `max` entries. */
class Bounded<K, V> extends Map<K, V> {
  constructor(private readonly max: number) {
    super()
  }
  override set(key: K, value: V) {
    if (this.size >= this.max && !this.has(key)) this.clear()
    return super.set(key, value)
  }
}

/**
 * `answer`, remembered in `answers` by its (immutable) input: the lifecycle shows an
 * account's info again while nothing in it changes, and the pool hands an entry's lease out
 * again until its token or limit changes, so most answers are text already written.
 */
const remembered = <K extends object>(
  answers: { get(key: K): Answer | undefined; set(key: K, answer: Answer): unknown },
  answer: (key: K) => Answer
) =>
(key: K): Answer => {
  let known = answers.get(key)
  if (known === undefined) answers.set(key, known = answer(key))
  return known
}

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
  type Run = (effect: Effect.Effect<Answer | typeof PASS>) => Fiber.RuntimeFiber<Answer | typeof PASS>
  // A runtime per actor (one per API key), so a request does not copy the services to name its actor.
  const actorRuns = new Map<string, Run>()
  const runAs = (actor: string) => {
    let run = actorRuns.get(actor)
    if (run === undefined) {
      if (actorRuns.size >= MAX_ACTOR_RUNTIMES) actorRuns.clear()
      run = Runtime.runFork(Runtime.provideService(runtime, Events.CurrentActor, actor))
      actorRuns.set(actor, run)
    }
    return run
  }

  // A status holds no secret: the last 4,096 are kept, whatever the number of accounts.
  const statusOf = remembered(
    new Bounded<Token.TokenInfo, Answer>(4_096),
    (info): Answer => ({ status: 200, body: Wire.tokenInfoJson(Wire.tokenInfo(info, zone)) })
  )
  // A lease reveals its token: kept only while the pool's entry (and so the lease) lives.
  const leaseOf = remembered(
    new WeakMap<Token.Lease, Answer>(),
    (leased): Answer => ({ status: 200, body: Wire.leaseJson(Wire.lease(leased, zone)) })
  )

  /** An acquire's answer at `at` (from which an exhausted pool's `Retry-After` counts down). */
  const acquired = (result: Either.Either<Token.Lease, Handlers.AcquireFailure>, at: number): Answer =>
    Either.isRight(result)
      ? leaseOf(result.right)
      : result.left instanceof Handlers.Exhausted
      ? failure(result.left.answer, Auth.retryAfterSeconds(result.left.retryAt, at))
      : failure(result.left)

  const status = (id: string): Route => ({
    scope: "read",
    now: (_actor, at) => {
      const info = lifecycle.unsafeInfo(id, at)
      // an unknown account: the API answers it (it changes nothing)
      return info === undefined ? PASS : statusOf(info)
    },
    later: () => lifecycle.info(id).pipe(Effect.map(statusOf), Effect.orElseSucceed((): typeof PASS => PASS))
  })

  const lease = (pool: string): Route => ({
    scope: "token",
    now: (actor, at) => {
      const result = acquire.now(pool, actor, at)
      return result === undefined ? undefined : acquired(result, at)
    },
    later: () =>
      Effect.either(acquire.run(pool, undefined)).pipe(
        Effect.flatMap((result) => Effect.map(Clock.currentTimeMillis, (at) => acquired(result, at)))
      )
  })

  /** The request's route, or undefined when it is not one for this lane. */
  const route = (request: Http.IncomingMessage): Route | undefined => {
    const url = request.url ?? ""
    if (url.includes("?") || hasBody(request)) return undefined
    if (request.method === "GET") {
      const id = STATUS_PATH.exec(url)?.[1]
      return id === undefined || !isAccountId(id) ? undefined : status(id)
    }
    if (request.method === "POST") {
      const pool = ACQUIRE_PATH.exec(url)?.[1]
      return pool === undefined || !isPool(pool) ? undefined : lease(pool)
    }
    return undefined
  }

  /** An unexpected failure (a bug): logged, and answered as the API's edge answers it. */
  const answerDefect = (response: Http.ServerResponse, cause: Cause.Cause<unknown>) => {
    runFork(Effect.logError("unexpected failure while answering a request", cause))
    write(response, failure(ApiError.internal()))
  }

  /** Answers with what `run` gives `effect`, or hands the request on. */
  const answerLater = (
    request: Http.IncomingMessage,
    response: Http.ServerResponse,
    next: Listener,
    run: Run,
    effect: Effect.Effect<Answer | typeof PASS>
  ) => {
    const fiber = run(effect)
    fiber.addObserver((exit) => {
      if (Exit.isSuccess(exit)) return exit.value === PASS ? next(request, response) : write(response, exit.value)
      // A client that went away gets nothing; anything else is a bug, answered as the API's edge answers it.
      if (!Cause.isInterruptedOnly(exit.cause) && !response.destroyed) answerDefect(response, exit.cause)
    })
    response.on("close", () => {
      if (!response.writableEnded) fiber.unsafeInterruptAsFork(fiber.id())
    })
  }

  return (next: Listener): Listener => (request, response) => {
    const taken = route(request)
    if (taken === undefined) return next(request, response)
    const client = request.socket.remoteAddress ?? "unknown"
    const check = () => quickCheck(taken.scope, request.headers.authorization, client, clock.unsafeCurrentTimeMillis())
    const actor = check()
    if (actor === undefined) return next(request, response)
    if (actor === Auth.UNKNOWN) {
      // the keys in memory are over a second old: read them, then check again
      return answerLater(
        request,
        response,
        next,
        runFork,
        Effect.flatMap(Effect.either(keys.hasActive), () => {
          const again = check()
          return again === undefined || again === Auth.UNKNOWN
            ? Effect.succeed(PASS)
            : Effect.provideService(taken.later(), Events.CurrentActor, again)
        })
      )
    }
    let answer: Answer | typeof PASS | undefined
    try {
      answer = taken.now(actor, clock.unsafeCurrentTimeMillis())
    } catch (defect) {
      // thrown in Node's request callback, it would end the process
      return answerDefect(response, Cause.die(defect))
    }
    if (answer === undefined) return answerLater(request, response, next, runAs(actor), taken.later())
    return answer === PASS ? next(request, response) : write(response, answer)
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
