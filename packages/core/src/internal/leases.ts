/**
 * Refresh leases: which process renews an account's token when several share one database.
 * Single flight keeps one renewal per account inside a process; a lease row in the store does
 * the same across processes. The holder extends it while it works, so a slow upstream never
 * lets a second renewal in, and a crashed holder's lease simply runs out. A process that finds
 * the lease taken waits for it, then reads what the holder stored instead of asking upstream
 * again (a rotating OAuth2 server would revoke the grant if the same refresh token came twice).
 */
import { Clock, Duration, Effect, Schedule } from "effect"
import type { AccountId } from "../Account.js"
import type { StoreError } from "../Errors.js"
import type { TokenStoreService } from "../TokenStore.js"

export interface Leases {
  /** This process's name in the lease table. */
  readonly owner: string
  /** Runs `effect` while holding the account's lease, waiting for another holder first. */
  readonly hold: <A, E, R>(id: AccountId, effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E | StoreError, R>
}

/** How often a waiting process looks at the lease again. */
const POLL = Duration.millis(50)

export const make = (store: TokenStoreService, ttl: Duration.Duration, owner: string): Leases => {
  const ttlMs = Duration.toMillis(ttl)

  const take = (id: AccountId) =>
    Effect.flatMap(Clock.currentTimeMillis, (now) => store.takeLease(id, { owner, now, expiresAt: now + ttlMs }))

  const acquire = (id: AccountId) =>
    take(id).pipe(Effect.repeat({ schedule: Schedule.spaced(POLL), until: (taken) => taken }))

  // Extended at a third of its life, so two missed beats still leave it held.
  const heartbeat = (id: AccountId) =>
    take(id).pipe(Effect.ignore, Effect.repeat(Schedule.spaced(Duration.millis(Math.max(1, Math.floor(ttlMs / 3))))))

  const hold: Leases["hold"] = (id, effect) =>
    Effect.acquireUseRelease(
      acquire(id),
      () =>
        Effect.scoped(
          Effect.zipRight(Effect.forkScoped(Effect.delay(heartbeat(id), Duration.millis(Math.floor(ttlMs / 3)))), effect)
        ),
      () => Effect.ignore(store.releaseLease(id, owner))
    )

  return { owner, hold }
}
