/**
 * One timer for all accounts: a min-heap of (due time, key) served by a single fiber that
 * sleeps until the earliest entry is due (SPEC §2.1 at scale: 100,000 accounts do not need
 * 100,000 timers). Scheduling a key again replaces its entry; stale heap entries are
 * skipped when they surface. Due keys run with bounded concurrency. Time comes from the
 * `Clock`, so `TestClock` drives it in tests.
 */
import { Clock, Effect, FiberSet, Queue } from "effect"
import type { Scope } from "effect"
import { Heap } from "./heap.js"

interface Entry<K> {
  readonly at: number
  readonly key: K
  readonly seq: number
}

const less = <K>(a: Entry<K>, b: Entry<K>) => a.at < b.at || (a.at === b.at && a.seq < b.seq)

export interface Scheduler<K> {
  /** Runs `key` at `at` (epoch ms), replacing any earlier schedule of it. */
  readonly schedule: (key: K, at: number) => Effect.Effect<void>
  /** `schedule` without an effect: for scheduling many keys at once. */
  readonly unsafeSchedule: (key: K, at: number) => void
  readonly cancel: (key: K) => Effect.Effect<void>
  /** How many keys have a pending schedule. */
  readonly pending: Effect.Effect<number>
}

/**
 * Starts the scheduler in the current scope. `run` is forked for each due key, at most
 * `concurrency` at a time; it must handle its own failures.
 */
export const make = <K>(
  run: (key: K) => Effect.Effect<void>,
  options: { readonly concurrency: number }
): Effect.Effect<Scheduler<K>, never, Scope.Scope> =>
  Effect.gen(function*() {
    const heap = new Heap<Entry<K>>(less)
    const current = new Map<K, number>()
    let seq = 0
    const wake = yield* Queue.sliding<void>(1)
    const permits = yield* Effect.makeSemaphore(options.concurrency)
    const running = yield* FiberSet.make()

    const isCurrent = (entry: Entry<K>) => current.get(entry.key) === entry.seq

    const takeDue = (now: number): Array<K> => {
      const due: Array<K> = []
      for (let top = heap.peek(); top !== undefined && (top.at <= now || !isCurrent(top)); top = heap.peek()) {
        heap.pop()
        if (isCurrent(top)) {
          current.delete(top.key)
          due.push(top.key)
        }
      }
      return due
    }

    const loop = Effect.gen(function*() {
      const now = yield* Clock.currentTimeMillis
      const due = takeDue(now)
      for (const key of due) {
        yield* FiberSet.run(running, permits.withPermits(1)(run(key)))
      }
      const next = heap.peek()
      if (next === undefined) {
        yield* Queue.take(wake)
      } else {
        yield* Effect.raceFirst(Effect.sleep(next.at - now), Queue.take(wake))
      }
    })
    yield* Effect.forkScoped(Effect.forever(loop))

    const unsafeSchedule = (key: K, at: number) => {
      const entry = { at, key, seq: ++seq }
      current.set(key, entry.seq)
      const top = heap.peek()
      heap.push(entry)
      // Rescheduling leaves stale entries behind; drop them before they outnumber live ones.
      if (heap.size > 2 * current.size + 1024) heap.compact(isCurrent)
      if (top === undefined || less(entry, top)) wake.unsafeOffer(undefined)
    }

    return {
      schedule: (key, at) => Effect.sync(() => unsafeSchedule(key, at)),
      unsafeSchedule,
      cancel: (key) => Effect.sync(() => void current.delete(key)),
      pending: Effect.sync(() => current.size)
    }
  })
