/**
 * Single flight: at most one run of an operation at a time per key, and every caller who
 * arrives while it runs gets that run's result. The run is forked into a long-lived scope,
 * so a caller that gives up (a client disconnects) does not cancel it for the others.
 */
import { Deferred, Effect, Exit, Fiber, FiberId, Option, Ref } from "effect"
import type { FiberSet } from "effect"
import * as FiberSetModule from "effect/FiberSet"

interface Flight<A, E> {
  readonly deferred: Deferred.Deferred<A, E>
  fiber: Option.Option<Fiber.RuntimeFiber<void>>
}

export interface SingleFlight<A, E> {
  /** Joins the running flight, or starts `work` as a new one. */
  readonly run: (work: Effect.Effect<A, E>) => Effect.Effect<A, E>
  /** Waits until no flight runs, then starts `work` as the next one (writers that must not join). */
  readonly exclusive: (work: Effect.Effect<A, E>) => Effect.Effect<A, E>
  /** Interrupts the running flight; its callers fail with `onInterrupt()`. */
  readonly interrupt: Effect.Effect<void>
  /** Whether a flight runs now. */
  readonly running: Effect.Effect<boolean>
}

export const make = <A, E>(
  fibers: FiberSet.FiberSet,
  onInterrupt: () => E
): Effect.Effect<SingleFlight<A, E>> => Effect.sync(() => unsafeMake(fibers, onInterrupt))

/** `make` without an effect: for building many at once (restoring accounts). */
export const unsafeMake = <A, E>(fibers: FiberSet.FiberSet, onInterrupt: () => E): SingleFlight<A, E> => {
  const current = Ref.unsafeMake(Option.none<Flight<A, E>>())
  {
    const start = (work: Effect.Effect<A, E>, join: boolean): Effect.Effect<A, E> =>
      Effect.flatten(Ref.modify(current, (running): [Effect.Effect<A, E>, Option.Option<Flight<A, E>>] => {
        if (Option.isSome(running)) {
          const wait = Deferred.await(running.value.deferred)
          return [join ? wait : Effect.zipRight(Effect.exit(wait), Effect.suspend(() => start(work, false))), running]
        }
        const flight: Flight<A, E> = { deferred: Deferred.unsafeMake<A, E>(FiberId.none), fiber: Option.none() }
        const body = work.pipe(
          Effect.onExit((exit) =>
            Ref.set(current, Option.none()).pipe(
              Effect.zipRight(
                Exit.isInterrupted(exit)
                  ? Deferred.fail(flight.deferred, onInterrupt())
                  : Deferred.done(flight.deferred, exit)
              )
            )
          ),
          Effect.ignore
        )
        const launch = FiberSetModule.run(fibers, body).pipe(
          Effect.tap((fiber) => Effect.sync(() => (flight.fiber = Option.some(fiber)))),
          Effect.zipRight(Deferred.await(flight.deferred))
        )
        return [launch, Option.some(flight)]
      }))
    return {
      run: (work) => start(work, true),
      exclusive: (work) => start(work, false),
      interrupt: Effect.flatMap(Ref.get(current), (running) =>
        Option.isSome(running) && Option.isSome(running.value.fiber)
          ? Fiber.interrupt(running.value.fiber.value).pipe(Effect.asVoid)
          : Effect.void),
      running: Effect.map(Ref.get(current), Option.isSome)
    }
  }
}
