/**
 * The token pools of a lifecycle: one `PoolIndex` per pool, kept in step with every change
 * of an account's state (`sync`), and the `TokenPool` service over them. Writes that only
 * record use (last use, rate-limit counters that do not change a token's standing, acquire
 * audit counts) are coalesced and flushed in one transaction per interval, so heavy traffic
 * does not become one fsync per request; changes of standing (rate-limited, invalid) are
 * committed at once with their events.
 */
import { Clock, Context, Duration, Effect, Either, Exit, MutableRef, Option, Queue, Redacted } from "effect"
import type { Account } from "../Account.js"
import { AccountNotFound } from "../Errors.js"
import type { StoreError } from "../Errors.js"
import * as Events from "../Events.js"
import { observe } from "../Source.js"
import type { DriversService } from "../Source.js"
import * as Token from "../Token.js"
import type { Lease, TokenInfo, TokenRecord, TokenState } from "../Token.js"
import { NoUsableToken, PoolExhausted } from "../TokenPool.js"
import type { AcquireError, AcquireOptions, PoolSummary, SharedRotationShape, TokenPoolService } from "../TokenPool.js"
import type { TokenStoreService } from "../TokenStore.js"
import { PoolIndex } from "./poolIndex.js"
import type { Standing } from "./poolIndex.js"
import * as Scheduler from "./scheduler.js"

/** What the pools need of an account actor. */
export interface PoolActor {
  readonly id: Account["id"]
  readonly account: MutableRef.MutableRef<Account>
  readonly state: MutableRef.MutableRef<TokenState>
}

/**
 * A member of a pool, as its rotation sees it. An acquire reads and writes nothing but this
 * object and the index's own: in a pool of 100,000 every other object it touched (the token
 * record, its expiry, a counter kept elsewhere) was one more cache miss per acquire.
 */
interface Entry<A extends PoolActor> {
  readonly actor: A
  /** The token, absent while the account has none (such a member is out of rotation). */
  readonly record: TokenRecord | undefined
  /** Until when the token may be handed out (`Token.servableUntil`); 0 without one. */
  readonly servableUntil: number
  readonly rateLimit: Option.Option<Token.RateLimit>
  /** The flush round in which the actor was last marked used: it is in `used` for that round. */
  usedIn: number
  /**
   * Hand-outs not yet in the audit log (counted mode), all to one caller in one flush round.
   * A hand-out to another caller, or the entry's replacement, first moves them to `acquires`.
   */
  countRound: number
  countWho: string
  count: number
  countFirst: number
  /** What a hand-out of this entry gives: made on the first one (an entry is replaced when its token or limit changes). */
  lease: Lease | undefined
}

export interface Deps<A extends PoolActor> {
  readonly store: TokenStoreService
  readonly drivers: DriversService
  readonly events: Events.EventsService
  readonly lookup: (id: string) => Effect.Effect<A, AccountNotFound>
  readonly info: (actor: A) => Effect.Effect<TokenInfo>
  /** Commits a state that changes the account's standing, with its events; called holding the account's lock. */
  readonly commit: (actor: A, state: TokenState, events: ReadonlyArray<Events.TokenEvent>) => Effect.Effect<void, StoreError>
  /** The account's lock, which every commit of its state holds. */
  readonly lock: (actor: A) => Effect.Semaphore
  /** SPEC §2.9 for a 401 seen in the pool. */
  readonly unauthorized: (actor: A, reason: string, token: Redacted.Redacted<string>) => Effect.Effect<void, StoreError>
  readonly flushInterval: Duration.Duration
  /** Whether every acquire gets an audit record of its own, or one counts them per flush. */
  readonly auditEachAcquire: boolean
  /** Rotation shared with other instances through the database, if any. */
  readonly shared: Option.Option<SharedRotationShape>
  /** Takes up the stored state of an account that another instance changed. */
  readonly reload: (id: string) => Effect.Effect<void, StoreError>
}

const AVAILABLE: Standing = { _tag: "available" }
const OUT: Standing = { _tag: "out" }

export const standingOf = (state: TokenState, at: number): Standing => {
  if (Option.isSome(state.invalid) || Option.isNone(state.token)) return { _tag: "out" }
  if (!Token.servable(state.token.value, at)) return { _tag: "out" }
  if (Token.isLimited(state.rateLimit, at)) {
    return { _tag: "limited", until: Option.getOrThrow(state.rateLimit).resetAt ?? at }
  }
  return { _tag: "available" }
}

export const make = <A extends PoolActor>(deps: Deps<A>) =>
  Effect.gen(function*() {
    const indexes = new Map<string, PoolIndex<Entry<A>>>()
    const byToken = new Map<string, string>()
    /** Actors used since the last flush: their last use is not saved yet. */
    const used = new Set<A>()
    /**
     * Actors whose rate-limit counters changed since the last flush (without a change of
     * standing, which is committed at once): their whole usage is not saved yet.
     */
    const dirty = new Set<A>()
    /** Acquires not yet in the audit log: by who acquired, then by account. */
    const acquires = new Map<string, Map<A, { count: number; first: number }>>()
    /**
     * Acquires not yet in the audit log, one by one (`auditEachAcquire`), as three columns:
     * an object per acquire would live until the flush and burden the garbage collector.
     */
    let singles = { who: [] as Array<string>, actor: [] as Array<A>, at: [] as Array<number> }
    /** Whether the flusher has been told there is work (told once per flush). */
    let signalled = false
    /** Counts flushes: what was marked in an earlier round is in no set or map any more. */
    let round = 0

    const indexFor = (pool: string) => {
      let index = indexes.get(pool)
      if (index === undefined) {
        index = new PoolIndex<Entry<A>>()
        indexes.set(pool, index)
      }
      return index
    }

    /** Forgets the token a member held, if the token index still points at this member. */
    const forgetToken = (id: string, record: TokenRecord | undefined) => {
      if (record === undefined) return
      const value = Redacted.value(record.token)
      if (byToken.get(value) === id) byToken.delete(value)
    }

    /** Places an account in its pool according to its state: the synchronous core of `sync`. */
    const place = (actor: A, account: Account, state: TokenState, at: number): void => {
      const index = indexFor(account.pool)
      const previous = index.get(actor.id)?.value
      if (previous !== undefined) {
        forgetToken(actor.id, previous.record)
        settle(previous)
      }
      const record = Option.getOrUndefined(state.token)
      if (record !== undefined) byToken.set(Redacted.value(record.token), actor.id)
      index.set(
        actor.id,
        {
          actor,
          record,
          servableUntil: record === undefined ? 0 : Token.servableUntil(record),
          rateLimit: state.rateLimit,
          usedIn: previous?.usedIn ?? -1,
          countRound: -1,
          countWho: "",
          count: 0,
          countFirst: 0,
          lease: undefined
        },
        Option.getOrElse(state.lastUsedAt, () => 0),
        standingOf(state, at)
      )
    }

    /** Brings the actor's place in its pool in line with its state. */
    const sync = (actor: A): Effect.Effect<void> =>
      Effect.gen(function*() {
        place(actor, MutableRef.get(actor.account), MutableRef.get(actor.state), yield* Clock.currentTimeMillis)
      })

    const remove = (actor: A, pool: string) =>
      Effect.sync(() => {
        const index = indexes.get(pool)
        const entry = index?.get(actor.id)?.value
        if (entry !== undefined) {
          forgetToken(actor.id, entry.record)
          settle(entry)
        }
        index?.remove(actor.id)
        used.delete(actor)
        dirty.delete(actor)
      })

    // --- coalesced writes -------------------------------------------------------------

    // The flusher sleeps only while there is something to write: an idle service has no timer.
    const pending = yield* Queue.sliding<void>(1)
    const signal = () => {
      if (signalled) return
      signalled = true
      pending.unsafeOffer(undefined)
    }

    /** The pool's record of a member's last use is the freshest; the state catches up here. */
    const usedAt = (actor: A, pool: string): number | undefined => indexes.get(pool)?.get(actor.id)?.lastUsed

    /** The state catches up with the pool's record of the last use. */
    const catchUp = (actor: A, at: number) => {
      if (at > Option.getOrElse(MutableRef.get(actor.state).lastUsedAt, () => 0)) {
        MutableRef.update(actor.state, (current) => ({ ...current, lastUsedAt: Option.some(at) }))
      }
    }

    const flush = Effect.gen(function*() {
      signalled = false
      if (used.size === 0 && dirty.size === 0 && acquires.size === 0 && singles.at.length === 0) return
      const actors = [...dirty]
      // (one synchronous pass rather than an effect per actor: a flush may hold 100,000 of them)
      /** Accounts whose last use alone changed, with that use (the pool's record of it is the freshest). */
      const lastUses: Array<{ readonly id: Account["id"]; readonly at: number }> = []
      const usedOnly: Array<A> = []
      for (const actor of used) {
        const member = indexes.get(MutableRef.get(actor.account).pool)?.get(actor.id)
        if (member === undefined) continue
        // hand-outs counted on the entry join the others, one record per caller and account
        settle(member.value)
        if (dirty.has(actor)) continue
        catchUp(actor, member.lastUsed)
        lastUses.push({ id: actor.id, at: member.lastUsed })
        usedOnly.push(actor)
      }
      dirty.clear()
      used.clear()
      const counted = [...acquires].flatMap(([who, byAccount]) =>
        [...byAccount].map(([actor, { count, first }]) => ({ who, actor, count, first }))
      )
      acquires.clear()
      round++
      const single = singles
      singles = { who: [], actor: [], at: [] }
      // A last use alone is written without the account's lock: the store keeps the later of
      // its own and this one, whatever a commit writes meanwhile, so nothing can be undone.
      // Rate-limit counters are read and written holding their accounts' locks: a commit that
      // landed in between (an update clearing a rate limit, say) would otherwise be undone.
      const usageOf = Effect.sync(() =>
        actors.map((actor) => {
          const at = usedAt(actor, MutableRef.get(actor.account).pool)
          if (at !== undefined) catchUp(actor, at)
          return { id: actor.id, state: MutableRef.get(actor.state) }
        }))
      const locks = actors.map(deps.lock)
      const save = (usage: ReadonlyArray<{ readonly id: Account["id"]; readonly state: TokenState }>) =>
        deps.store.saveUsage(usage, audit, lastUses)
      const acquired = (who: string, actor: A, at: number, count: number) =>
        new Events.TokenEvent({
          type: "acquired",
          accountId: actor.id,
          at,
          actor: who,
          outcome: "success",
          detail: count === 1 ? "token handed out" : `token handed out ${count} times`,
          data: { count }
        }, true) // every field built here is valid: checking each of up to one per acquire again costs more than the flush
      const audit = [
        ...counted.map(({ actor, count, first, who }) => acquired(who, actor, first, count)),
        ...single.at.map((at, i) => acquired(single.who[i]!, single.actor[i]!, at, 1))
      ]
      yield* Effect.acquireUseRelease(
        Effect.forEach(locks, (lock) => lock.take(1), { discard: true }),
        () => Effect.flatMap(usageOf, save),
        () => Effect.forEach(locks, (lock) => lock.release(1), { discard: true })
      ).pipe(
        Effect.zipRight(deps.events.publishAll(audit)),
        Effect.catchAll((error) =>
          Effect.gen(function*() {
            for (const actor of actors) dirty.add(actor)
            for (const actor of usedOnly) used.add(actor)
            for (const entry of counted) countAcquire(entry.who, entry.actor, entry.first, entry.count)
            singles = {
              who: single.who.concat(singles.who),
              actor: single.actor.concat(singles.actor),
              at: single.at.concat(singles.at)
            }
            signal()
            yield* Effect.logWarning(`could not save pool usage, will retry: ${error.message}`)
          })
        )
      )
    })
    yield* Effect.addFinalizer(() => flush)
    yield* Queue.take(pending).pipe(
      Effect.zipRight(Effect.sleep(deps.flushInterval)),
      Effect.zipRight(Effect.uninterruptible(flush)),
      Effect.forever,
      Effect.forkScoped
    )

    /** Counts `count` acquires by `who` for the audit log, the first of them at `at`. */
    const countAcquire = (who: string, actor: A, at: number, count = 1): void => {
      if (deps.auditEachAcquire && count === 1) {
        singles.who.push(who)
        singles.actor.push(actor)
        singles.at.push(at)
        return
      }
      let byAccount = acquires.get(who)
      if (byAccount === undefined) {
        byAccount = new Map()
        acquires.set(who, byAccount)
      }
      const counted = byAccount.get(actor)
      if (counted === undefined) byAccount.set(actor, { count, first: at })
      else {
        counted.count += count
        counted.first = Math.min(counted.first, at)
      }
    }

    /** Moves the hand-outs counted on an entry to `acquires`, before the entry counts for someone else or is replaced. */
    const settle = (entry: Entry<A>) => {
      if (entry.countRound === round && entry.count > 0) countAcquire(entry.countWho, entry.actor, entry.countFirst, entry.count)
      entry.count = 0
    }

    /** Notes a hand-out from the rotation: the actor's usage to save, the acquire to audit. */
    const handedOut = (entry: Entry<A>, who: string, at: number) => {
      if (entry.usedIn !== round) {
        used.add(entry.actor)
        entry.usedIn = round
      }
      if (deps.auditEachAcquire) countAcquire(who, entry.actor, at)
      else if (entry.countRound === round && entry.countWho === who) entry.count++
      else {
        settle(entry)
        entry.countRound = round
        entry.countWho = who
        entry.count = 1
        entry.countFirst = at
      }
      signal()
    }

    // --- recoveries -------------------------------------------------------------------

    /** Says so when a rate limit has reset: the token is back in rotation by then already. */
    const recoveries = yield* Scheduler.make<A>(
      (actor) =>
        Effect.gen(function*() {
          const state = MutableRef.get(actor.state)
          const at = yield* Clock.currentTimeMillis
          if (Option.isNone(state.rateLimit) || Token.isLimited(state.rateLimit, at)) return
          const recovered = yield* Events.make({ type: "recovered", accountId: actor.id, detail: "rate limit reset" })
          yield* deps.store.appendAudit([recovered]).pipe(Effect.zipRight(deps.events.publish(recovered)), Effect.ignore)
        }).pipe(Events.withActor("scheduler")),
      { concurrency: 64 }
    )

    // --- the service ------------------------------------------------------------------

    const lease = (entry: Entry<A>, record: TokenRecord): Lease => ({
      accountId: entry.actor.id,
      token: record.token,
      expiresAt: record.expiresAt,
      rateLimit: entry.rateLimit
    })

    /** The last word on a candidate: its token may have expired since it entered rotation. */
    const usable = (at: number) => (member: { value: Entry<A> }): Standing =>
      member.value.servableUntil > at ? AVAILABLE : OUT

    const unsafeExists = (pool: string) => (indexes.get(pool)?.size ?? 0) > 0

    const noMembers = (pool: string) =>
      new NoUsableToken({ pool, reason: indexes.get(pool)?.size ? "every token is invalid, missing or expired" : "the pool has no tokens" })

    /** The hot path: one hand-out from the pool in memory at `at`, for `who`, as plain synchronous work. */
    const takeNow = (pool: string, who: string, at: number): Either.Either<Lease, AcquireError> => {
      const result = indexes.get(pool)?.acquire(at, usable(at)) ?? { _tag: "none" as const }
      if (result._tag === "exhausted") return Either.left(new PoolExhausted({ pool, retryAt: result.retryAt }))
      // `usable` admits only members with a token
      const entry = result._tag === "acquired" ? result.member.value : undefined
      if (entry?.record === undefined) return Either.left(noMembers(pool))
      handedOut(entry, who, at)
      return Either.right(entry.lease ??= lease(entry, entry.record))
    }

    /**
     * `takeNow`, waiting for a reset within `options.wait`: the wait is the only effect in the
     * loop. The caller and the clock are read from the fiber directly: an effect each to read
     * them cost more than the hand-out itself.
     */
    const acquireLocal = (pool: string, options: AcquireOptions): Effect.Effect<Lease, AcquireError> =>
      Effect.withFiberRuntime((fiber) => {
        const who = Context.get(fiber.currentContext, Events.CurrentActor)
        const clock = Context.get(fiber.currentDefaultServices, Clock.Clock)
        const started = clock.unsafeCurrentTimeMillis()
        const deadline = options.wait === undefined ? started : started + Duration.toMillis(Duration.decode(options.wait))
        const attempt = (): Effect.Effect<Lease, AcquireError> => {
          const at = clock.unsafeCurrentTimeMillis()
          const taken = takeNow(pool, who, at)
          if (Either.isRight(taken)) return Exit.succeed(taken.right)
          if (taken.left._tag === "NoUsableToken" || taken.left.retryAt > deadline) return Exit.fail(taken.left)
          return Effect.zipRight(Effect.sleep(Math.max(0, taken.left.retryAt - at)), Effect.suspend(attempt))
        }
        return attempt()
      })

    /**
     * Rotation through the database, for instances sharing it: the least recently used token
     * that no instance has seen limited or invalid. The token itself comes from this instance's
     * memory, which events from the others keep current; one it has not caught up with yet is
     * read from the store. If the database cannot answer, the pool rotates in memory meanwhile.
     */
    const acquireShared = (rotation: SharedRotationShape, pool: string, options: AcquireOptions) =>
      Effect.gen(function*() {
        const who = yield* Events.CurrentActor
        const started = yield* Clock.currentTimeMillis
        const deadline = options.wait === undefined ? started : started + Duration.toMillis(Duration.decode(options.wait))
        for (;;) {
          const at = yield* Clock.currentTimeMillis
          const claimed = yield* Effect.either(rotation.claim(pool, at))
          if (Either.isLeft(claimed)) {
            yield* Effect.logWarning(`shared rotation unavailable, rotating in memory: ${claimed.left.message}`)
            return yield* acquireLocal(pool, options)
          }
          if (Option.isSome(claimed.right)) {
            const id = claimed.right.value
            let entry = indexes.get(pool)?.get(id)?.value
            if (entry?.record === undefined || !Token.servable(entry.record, at)) {
              yield* deps.reload(id).pipe(Effect.ignore)
              entry = indexes.get(pool)?.get(id)?.value
            }
            if (entry?.record !== undefined && Token.servable(entry.record, at)) {
              countAcquire(who, entry.actor, at)
              signal()
              return lease(entry, entry.record)
            }
            continue
          }
          const index = indexes.get(pool)
          if (index === undefined || index.size === 0) return yield* noMembers(pool)
          // Another instance may have seen a limit this one has not heard of yet: look again shortly.
          const retryAt = index.earliestReset() ?? (index.countAvailable(at) > 0 ? at + 1_000 : undefined)
          if (retryAt === undefined) return yield* noMembers(pool)
          if (retryAt > deadline) return yield* new PoolExhausted({ pool, retryAt })
          yield* Effect.sleep(Math.max(0, retryAt - at))
        }
      })

    const acquire: TokenPoolService["acquire"] = (pool, options = {}) =>
      Option.isSome(deps.shared) ? acquireShared(deps.shared.value, pool, options) : acquireLocal(pool, options)

    const report: TokenPoolService["report"] = (pool, input) =>
      Effect.gen(function*() {
        const id = input.accountId ?? (input.token === undefined ? undefined : byToken.get(Redacted.value(input.token)))
        if (id === undefined) return yield* new AccountNotFound({ accountId: input.accountId ?? "(unknown token)" })
        const actor = yield* deps.lookup(id)
        const account = MutableRef.get(actor.account)
        if (account.pool !== pool) return yield* new AccountNotFound({ accountId: id })
        const at = yield* Clock.currentTimeMillis
        const observation = observe(deps.drivers.provider(account), input.status, input.headers, at)
        const verdict = observation.verdict
        if (verdict._tag === "unauthorized") {
          const token = Option.map(MutableRef.get(actor.state).token, (record) => record.token)
          if (Option.isSome(token)) {
            yield* deps.unauthorized(actor, `the upstream answered ${input.status}`, input.token ?? token.value)
          }
          return yield* deps.info(actor)
        }
        // Read and written under the account's lock: a change committed meanwhile (an update,
        // say) is never overwritten with the state this report started from.
        yield* deps.lock(actor).withPermits(1)(Effect.gen(function*() {
          const state = MutableRef.get(actor.state)
          // what was seen for a token that has since been replaced says nothing about the new one
          const current = Option.getOrUndefined(state.token)
          if (input.token !== undefined && (current === undefined || Redacted.value(current.token) !== Redacted.value(input.token))) return
          const rateLimit = verdict._tag === "rate_limited"
            ? Option.some(
              new Token.RateLimit({
                ...Option.getOrElse(observation.rateLimit, () => new Token.RateLimit({ limited: true })),
                resetAt: verdict.until,
                limited: true
              })
            )
            : Option.orElse(observation.rateLimit, () => state.rateLimit)
          const next: TokenState = { ...state, rateLimit }
          const wasLimited = Token.isLimited(state.rateLimit, at)
          const isLimited = Token.isLimited(rateLimit, at)
          if (isLimited && !wasLimited) {
            const until = Option.getOrThrow(rateLimit).resetAt ?? at
            const limited = yield* Events.make({
              type: "rate_limited",
              accountId: id,
              outcome: "failure",
              detail: `rate-limited until ${new Date(until).toISOString()}` +
                (verdict._tag === "rate_limited" ? ` (${verdict.scope} limit)` : ""),
              data: { reset_at: until, status: input.status }
            })
            yield* deps.commit(actor, next, [limited])
            yield* recoveries.schedule(actor, until)
          } else if (!isLimited && wasLimited) {
            const recovered = yield* Events.make({ type: "recovered", accountId: id, detail: "the upstream lifted the rate limit" })
            yield* deps.commit(actor, next, [recovered])
          } else {
            MutableRef.set(actor.state, next)
            yield* sync(actor)
            dirty.add(actor)
            signal()
          }
        }))
        return yield* deps.info(actor)
      })

    const summary = (pool: string, index: PoolIndex<Entry<A>>, at: number) =>
      Effect.gen(function*() {
        let invalid = 0
        let provider = ""
        for (const member of index.all()) {
          const state = MutableRef.get(member.value.actor.state)
          if (provider === "") provider = MutableRef.get(member.value.actor.account).provider
          if (Option.isSome(state.invalid)) invalid++
        }
        return {
          pool,
          provider,
          total: index.size,
          available: index.countAvailable(at),
          rateLimited: index.countLimited(at),
          invalid,
          nextResetAt: index.earliestReset() ?? null
        } satisfies PoolSummary
      })

    const service: TokenPoolService = {
      acquire,
      unsafeAcquire: (pool, who, at) => Option.isSome(deps.shared) ? undefined : takeNow(pool, who, at),
      withToken: (pool, use, options = {}) =>
        Effect.flatMap(acquire(pool, options), (leased) =>
          use(leased).pipe(
            Effect.onExit((exit) => {
              const seen = options.observe?.(exit)
              return seen === undefined
                ? Effect.void
                : report(pool, { accountId: leased.accountId, token: leased.token, ...seen }).pipe(
                  Effect.catchAll((error) => Effect.logWarning(`could not record the outcome: ${error.message}`))
                )
            })
          )),
      report,
      countAvailable: (pool) =>
        Effect.map(Clock.currentTimeMillis, (at) => indexes.get(pool)?.countAvailable(at) ?? 0),
      list: (pool) =>
        Effect.gen(function*() {
          const index = indexes.get(pool)
          if (index === undefined) return []
          const infos: Array<TokenInfo> = []
          for (const member of index.all()) infos.push(yield* deps.info(member.value.actor))
          return infos
        }),
      summary: (pool) =>
        Effect.gen(function*() {
          const index = indexes.get(pool)
          if (index === undefined || index.size === 0) return Option.none()
          return Option.some(yield* summary(pool, index, yield* Clock.currentTimeMillis))
        }),
      exists: (pool) => Effect.sync(() => unsafeExists(pool)),
      unsafeExists,
      pools: Effect.gen(function*() {
        const at = yield* Clock.currentTimeMillis
        return yield* Effect.forEach([...indexes].filter(([, index]) => index.size > 0), ([pool, index]) => summary(pool, index, at))
      })
    }
    /** Notes a use outside the pool (a direct `get`) so its time is saved with the next flush. */
    const touch = (actor: A) =>
      Effect.sync(() => {
        used.add(actor)
        signal()
      })

    return { service, sync, place, remove, touch, flush, usedAt }
  })

