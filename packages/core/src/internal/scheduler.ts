/**
 * One timer for all accounts: a min-heap of (due time, key) served by a single fiber that
 * sleeps until the earliest entry is due (SPEC §2.1 at scale: 100,000 accounts do not need
 * 100,000 timers). Scheduling a key again replaces its entry; stale heap entries are
 * skipped when they surface. Due keys run with bounded concurrency. Time comes from the
 * `Clock`, so `TestClock` drives it in tests.
 */
import { Clock, Effect, FiberSet, Queue } from "effect"
import type { Scope } from "effect"

interface Entry<K> {
  readonly at: number
  readonly key: K
  readonly seq: number
}

/** A binary min-heap ordered by (at, seq). */
class Heap<K> {
  private readonly items: Array<Entry<K>> = []
  get size() {
    return this.items.length
  }
  peek(): Entry<K> | undefined {
    return this.items[0]
  }
  push(entry: Entry<K>) {
    const items = this.items
    items.push(entry)
    let i = items.length - 1
    while (i > 0) {
      const parent = (i - 1) >> 1
      if (!less(items[i], items[parent])) break
      ;[items[i], items[parent]] = [items[parent], items[i]]
      i = parent
    }
  }
  /** Keeps only the entries `keep` accepts (drops stale ones) and restores the heap order. */
  compact(keep: (entry: Entry<K>) => boolean) {
    const kept = this.items.filter(keep)
    this.items.length = 0
    for (const entry of kept) this.push(entry)
  }
  pop(): Entry<K> | undefined {
    const items = this.items
    const top = items[0]
    const last = items.pop()
    if (items.length > 0 && last !== undefined) {
      items[0] = last
      let i = 0
      for (;;) {
        const l = 2 * i + 1
        const r = l + 1
        let m = i
        if (l < items.length && less(items[l], items[m])) m = l
        if (r < items.length && less(items[r], items[m])) m = r
        if (m === i) break
        ;[items[i], items[m]] = [items[m], items[i]]
        i = m
      }
    }
    return top
  }
}

const less = <K>(a: Entry<K>, b: Entry<K>) => a.at < b.at || (a.at === b.at && a.seq < b.seq)

export interface Scheduler<K> {
  /** Runs `key` at `at` (epoch ms), replacing any earlier schedule of it. */
  readonly schedule: (key: K, at: number) => Effect.Effect<void>
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
    const heap = new Heap<K>()
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

    return {
      schedule: (key, at) =>
        Effect.suspend(() => {
          const entry = { at, key, seq: ++seq }
          current.set(key, entry.seq)
          const top = heap.peek()
          heap.push(entry)
          // Rescheduling leaves stale entries behind; drop them before they outnumber live ones.
          if (heap.size > 2 * current.size + 1024) heap.compact(isCurrent)
          return top === undefined || less(entry, top) ? Queue.offer(wake, undefined) : Effect.void
        }).pipe(Effect.asVoid),
      cancel: (key) => Effect.sync(() => void current.delete(key)),
      pending: Effect.sync(() => current.size)
    }
  })
