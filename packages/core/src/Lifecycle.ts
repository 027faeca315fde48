/**
 * The token lifecycle (SPEC §2): every account is an actor that keeps its token alive.
 * `get` hands out a token that is valid beyond the refresh window, renewing it first when
 * needed; renewals are single-flight per account, so any number of concurrent callers (and
 * the scheduler) cause one upstream call and share its result. A scheduler refreshes tokens
 * proactively at expiry minus the window; accounts whose fetch fails are retried in the
 * background with backoff; an optional cron refreshes every account daily. State changes
 * are written to the store with their audit records before they take effect in memory, and
 * then published as events.
 */
import { Cause, Clock, Context, Duration, Effect, Exit, Fiber, FiberMap, FiberSet, Layer, MutableRef, Option, Redacted, Schedule } from "effect"
import { identity } from "effect/Function"
import * as crypto from "node:crypto"
import { Account, NewAccount, OAuth2Source, sameSource, sourceKind } from "./Account.js"
import type { AccountId, SourceConfig } from "./Account.js"
import {
  AccountNotFound,
  isRetryable,
  OperationUnsupported,
  TokenRejected,
  TokenUnavailable,
  UpstreamError
} from "./Errors.js"
import { StoreError } from "./Errors.js"
import type { AccountExists } from "./Errors.js"
import * as Events from "./Events.js"
import * as Leases from "./internal/leases.js"
import * as Pools from "./internal/pools.js"
import * as Scheduler from "./internal/scheduler.js"
import * as SingleFlight from "./internal/singleFlight.js"
import { Settings } from "./Settings.js"
import { Drivers, isWellFormedToken } from "./Source.js"
import type { TokenSource, Validation } from "./Source.js"
import * as Token from "./Token.js"
import type { Issued, Lease, TokenInfo, TokenOrigin, TokenRecord, TokenState } from "./Token.js"
import { SharedRotation, TokenPool } from "./TokenPool.js"
import { TokenStore } from "./TokenStore.js"
import type { StoredAccount } from "./TokenStore.js"
import { RetryPolicy } from "./Upstream.js"

export interface ValidationResult {
  readonly accountId: string
  readonly valid: boolean
  readonly checkedAt: number
  readonly reason: string
  readonly upstreamStatus: number | null
}

export interface UpdateOptions {
  /** Epoch milliseconds; absent for a token without a known expiry. */
  readonly expiresAt?: number | undefined
  /** Validate upstream first (default true). */
  readonly validate?: boolean | undefined
}

export interface RefreshSummary {
  readonly refreshed: number
  readonly failed: number
  readonly skipped: number
}

export type RenewError = TokenUnavailable | UpstreamError | OperationUnsupported | StoreError | AccountNotFound

export interface LifecycleService {
  /** A token valid beyond the refresh window (SPEC §2.2). */
  readonly get: (id: string) => Effect.Effect<Lease, RenewError>
  /** Refreshes now, joining a renewal already under way (SPEC §2.4). */
  readonly refresh: (id: string) => Effect.Effect<TokenInfo, RenewError>
  /** Replaces the token, validating it upstream unless told not to (SPEC §2.8). */
  readonly update: (
    id: string,
    token: Redacted.Redacted<string>,
    options?: UpdateOptions
  ) => Effect.Effect<TokenInfo, AccountNotFound | TokenRejected | UpstreamError | StoreError>
  readonly validate: (id: string) => Effect.Effect<ValidationResult, AccountNotFound | TokenUnavailable | UpstreamError | StoreError>
  /** Forgets the token; the account stays (SPEC §2.10). */
  readonly clear: (id: string) => Effect.Effect<TokenInfo, AccountNotFound | StoreError>
  /** A 401 seen for the account's token (SPEC §2.9). `token` names the token it was seen for. */
  readonly reportUnauthorized: (
    id: string,
    report: { readonly reason: string; readonly token?: Redacted.Redacted<string> | undefined }
  ) => Effect.Effect<TokenInfo, AccountNotFound | StoreError>
  readonly info: (id: string) => Effect.Effect<TokenInfo, AccountNotFound>
  /**
   * `info` at `at`, read at once without a fiber, or undefined for an unknown account: for
   * callers that answer synchronously (the HTTP fast lane).
   */
  readonly unsafeInfo: (id: string, at: number) => TokenInfo | undefined
  readonly list: Effect.Effect<ReadonlyArray<TokenInfo>>
  readonly account: (id: string) => Effect.Effect<Account, AccountNotFound>
  readonly accounts: Effect.Effect<ReadonlyArray<Account>>
  readonly add: (
    account: NewAccount,
    token?: { readonly token: Redacted.Redacted<string>; readonly expiresAt?: number | undefined }
  ) => Effect.Effect<TokenInfo, AccountExists | TokenRejected | StoreError>
  readonly remove: (id: string) => Effect.Effect<void, AccountNotFound | StoreError>
  /**
   * Takes up what the store holds for an account that another instance sharing it changed:
   * its state, an account it added, or the removal of one.
   */
  readonly reload: (id: string) => Effect.Effect<void, StoreError>
  /** Refreshes every account whose source can renew (the daily cron's work). */
  readonly refreshAll: Effect.Effect<RefreshSummary>
  /** Completes when every startup fetch has had its first attempt. */
  readonly awaitStartup: Effect.Effect<void>
}

export class Lifecycle extends Context.Tag("@tessera/core/Lifecycle")<Lifecycle, LifecycleService>() {}

/** An account that configuration declares (environment, config file), with its token if it has one. */
export interface Declared {
  readonly account: NewAccount
  readonly token?: { readonly token: Redacted.Redacted<string>; readonly expiresAt?: number | undefined } | undefined
}

/**
 * The accounts configuration declares. At startup each one missing from the store is added,
 * and one whose source configuration changed (a new password, say) gets the new one, before
 * the startup fetch, so they are fetched with everything else.
 */
/**
 * Whether startup fetches the tokens that are missing or expiring (SPEC §2.6): on for the
 * service; a one-off command (the CLI) turns it off and renews only what it is asked for.
 */
export class StartupFetch extends Context.Reference<StartupFetch>()("@tessera/core/Lifecycle/StartupFetch", {
  defaultValue: () => true
}) {}

export class DeclaredAccounts extends Context.Reference<DeclaredAccounts>()("@tessera/core/Lifecycle/DeclaredAccounts", {
  defaultValue: (): ReadonlyArray<Declared> => []
}) {}

interface Actor {
  readonly id: AccountId
  /**
   * The account and its token state. Plain cells rather than `Ref`s: a status read takes them
   * without starting a fiber (`unsafeInfo`, which the HTTP fast lane answers from). Each is
   * replaced whole, in one synchronous step of the fiber that changes it, so a reader never
   * sees half a change; the account's lock orders the changes that depend on what they read.
   */
  readonly account: MutableRef.MutableRef<Account>
  readonly state: MutableRef.MutableRef<TokenState>
  /**
   * Serializes commits of this account's state; made on first use, since most restored
   * accounts never need one (`lockOf`).
   */
  lock: Effect.Semaphore | undefined
  /** The account's single-flight renewal cell; made on first use (`flightOf`). */
  flight: SingleFlight.SingleFlight<TokenRecord, RenewError> | undefined
  /** Set at startup for an account whose first fetch is still to come: its token's origin is `startup`. */
  startup: boolean
  /** The token record loaded from the store at startup, while it is still the current one. */
  restored: TokenRecord | undefined
  /**
   * The public view last shown, with what it was made of: shown again while none of that
   * changes, until its status or countdown would (`Token.infoSteadyUntil`).
   */
  shown:
    | {
      readonly account: Account
      readonly state: TokenState
      readonly used: number | undefined
      readonly restored: TokenRecord | undefined
      readonly from: number
      readonly until: number
      readonly info: TokenInfo
    }
    | undefined
  /**
   * A rotated credential (an OAuth2 refresh token) the store could not take: the upstream has
   * retired the previous one, so this is the only copy. Used from memory and written with
   * the account's next commit.
   */
  unsaved: SourceConfig | undefined
}

type Mode = "ensure" | "force"

/** How long a caller with a still-usable token waits for its renewal before it is served that token. */
const RENEWAL_WAIT = Duration.seconds(2)

/** How a commit carrying a rotated credential is tried again: about 3 s in all. */
const ROTATED_SAVE_RETRIES = Schedule.exponential("100 millis").pipe(Schedule.intersect(Schedule.recurs(5)))

/** Whether two states hold the same token (the same value with the same expiry). */
const sameRecord = (a: Option.Option<TokenRecord>, b: Option.Option<TokenRecord>): boolean =>
  Option.isNone(a) || Option.isNone(b)
    ? Option.isNone(a) && Option.isNone(b)
    : Redacted.value(a.value.token) === Redacted.value(b.value.token) &&
      Option.getOrNull(a.value.expiresAt) === Option.getOrNull(b.value.expiresAt)

const canRenew = (source: TokenSource) => Option.isSome(source.obtain) || Option.isSome(source.refresh)

const lastError = (error: RenewError, at: number) =>
  new Token.LastError({ code: error._tag === "UpstreamError" ? error.kind : error._tag, message: error.message, at })

/** A token's expiry is not believed beyond this: no date past it can even be written down. */
const LATEST_EXPIRY_MS = 100 * 365 * 24 * 3_600_000

/** What is wrong with an expiry given at `now`, if anything. */
const expiryProblem = (expiresAt: number, now: number): string | undefined =>
  !Number.isFinite(expiresAt)
    ? "expires_at is not a time"
    : expiresAt <= now
    ? "expires_at must be a time in the future"
    : expiresAt - now > LATEST_EXPIRY_MS
    ? "expires_at is more than 100 years away"
    : undefined

const expiryDetail = (expiresAt: Option.Option<number>) =>
  Option.match(expiresAt, { onNone: () => "no expiry", onSome: (at) => `expires ${new Date(at).toISOString()}` })

export const make = Effect.gen(function*() {
  const store = yield* TokenStore
  const drivers = yield* Drivers
  const events = yield* Events.Events
  const settings = yield* Settings
  const policy = yield* RetryPolicy
  const windowMs = Duration.toMillis(settings.refreshWindow)
  const flights = yield* FiberSet.make()
  const background = yield* FiberMap.make<string>()
  const upstreamPermits = yield* Effect.makeSemaphore(settings.concurrency)
  // One lifecycle, one holder: even two in one process (tests, tools) never share a lease.
  const leases = Leases.make(store, settings.leaseTtl, `${settings.instanceId}/${crypto.randomBytes(3).toString("hex")}`)
  /** Every account's actor by id; changed only inside `Effect.sync`, so never seen half-updated. */
  const actors = new Map<string, Actor>()

  const now = Clock.currentTimeMillis
  // Upstream calls run in callers' fibers: give them the policy this lifecycle was built with.
  const withPolicy = <A, E>(effect: Effect.Effect<A, E>) => Effect.provideService(effect, RetryPolicy, policy)

  const lookup = (id: string): Effect.Effect<Actor, AccountNotFound> =>
    Effect.suspend(() => {
      const actor = actors.get(id)
      return actor === undefined ? Effect.fail(new AccountNotFound({ accountId: id })) : Effect.succeed(actor)
    })

  const lockOf = (actor: Actor): Effect.Semaphore => (actor.lock ??= Effect.unsafeMakeSemaphore(1))

  const flightOf = (actor: Actor): SingleFlight.SingleFlight<TokenRecord, RenewError> =>
    (actor.flight ??= SingleFlight.unsafeMake<TokenRecord, RenewError>(
      flights,
      () => new TokenUnavailable({ accountId: actor.id, status: "missing", reason: "the renewal was cancelled" })
    ))

  /** The public view at `at`: the one shown last while nothing it is made of has changed. */
  const infoAt = (actor: Actor, at: number): TokenInfo => {
    const account = MutableRef.get(actor.account)
    const state = MutableRef.get(actor.state)
    const used = pools.usedAt(actor, account.pool)
    const shown = actor.shown
    if (
      shown !== undefined && shown.account === account && shown.state === state && shown.used === used &&
      shown.restored === actor.restored && at >= shown.from && at < shown.until
    ) return shown.info
    const info = makeInfo(actor, account, state, used, at)
    actor.shown = { account, state, used, restored: actor.restored, from: at, until: Token.infoSteadyUntil(state, at), info }
    return info
  }

  /** The public view; a pool's record of the last hand-out is fresher than the saved state. */
  const makeInfo = (actor: Actor, account: Account, state: TokenState, used: number | undefined, at: number): TokenInfo => {
    const fresher = used !== undefined && used > Option.getOrElse(state.lastUsedAt, () => 0)
    const shown = fresher ? { ...state, lastUsedAt: Option.some(used) } : state
    // A token loaded from the store says so while it lasts (a static token is always static);
    // the stored origin itself is never overwritten with that label.
    const record = Option.getOrUndefined(state.token)
    const restored = record !== undefined && record === actor.restored && record.origin !== "static"
    return Token.info(
      account,
      restored ? { ...shown, token: Option.some({ ...record, origin: "restored" as const }) } : shown,
      at
    )
  }

  const infoOf = (actor: Actor): Effect.Effect<TokenInfo> => Effect.map(now, (at) => infoAt(actor, at))

  /**
   * Writes a new state (and source, for a rotated credential) with its events, then makes it
   * current and publishes the events. The store comes first: if it fails, nothing changed.
   */
  const commit = (
    actor: Actor,
    state: TokenState,
    evts: ReadonlyArray<Events.TokenEvent>,
    source?: SourceConfig
  ): Effect.Effect<void, StoreError> =>
    Effect.gen(function*() {
      const saved = source ?? actor.unsaved
      yield* store.saveState(actor.id, state, evts, saved)
      actor.unsaved = undefined
      MutableRef.set(actor.state, state)
      if (saved !== undefined) MutableRef.update(actor.account, (account) => new Account({ ...account, source: saved }))
      yield* pools.sync(actor)
      yield* events.publishAll(evts)
      yield* scheduleNext(actor)
    })

  const event = (actor: Actor, type: Events.EventType, fields: Omit<Parameters<typeof Events.make>[0], "type" | "accountId"> = {}) =>
    Events.make({ type, accountId: actor.id, ...fields })

  // --- scheduling -------------------------------------------------------------------

  const renewable = (account: Account) => {
    const source = drivers.lookupSource(account)
    return source !== undefined && canRenew(source)
  }

  /** When the account next needs attention: refresh time for renewable tokens, expiry for others. */
  const dueAt = (account: Account, state: TokenState): number | undefined => {
    if (Option.isSome(state.invalid)) return undefined
    const expiresAt = Option.getOrUndefined(Option.flatMap(state.token, (record) => record.expiresAt))
    if (expiresAt === undefined) return undefined
    return renewable(account) ? expiresAt - Math.max(windowMs, Token.HANDOUT_MARGIN_MS) : expiresAt
  }

  const scheduleNext = (actor: Actor): Effect.Effect<void> =>
    Effect.suspend(() => {
      const at = dueAt(MutableRef.get(actor.account), MutableRef.get(actor.state))
      return at === undefined ? scheduler.cancel(actor.id) : scheduler.schedule(actor.id, at)
    })

  // --- renewal ------------------------------------------------------------------------

  /** Checks what a source issued: a bad token is never stored. */
  const checkIssued = (issued: Issued, operation: string, at: number): Effect.Effect<Issued, UpstreamError> => {
    const malformed = (detail: string) =>
      Effect.fail(new UpstreamError({ kind: "malformed", operation, status: null, detail, retryAfterMs: null }))
    if (!isWellFormedToken(issued.token)) return malformed("the upstream issued an empty or malformed token")
    if (Option.isSome(issued.expiresAt)) {
      const expiresAt = issued.expiresAt.value
      if (Number.isFinite(expiresAt) && expiresAt <= at) return malformed("the upstream issued a token that has already expired")
      const problem = expiryProblem(expiresAt, at)
      if (problem !== undefined) return malformed(`the upstream issued an unusable expiry: ${problem}`)
    }
    return Effect.succeed(issued)
  }

  /** An account as stored now; a value that does not decrypt is a store failure here. */
  const loadStored = (id: AccountId): Effect.Effect<Option.Option<StoredAccount>, StoreError> =>
    store.load(id).pipe(
      Effect.catchTags({
        DecryptionFailed: (error) => Effect.fail(new StoreError({ operation: "load account", detail: error.message })),
        UnknownEncryptionKey: (error) => Effect.fail(new StoreError({ operation: "load account", detail: error.message }))
      })
    )

  /** Stops keeping an account in this instance: its pool place, schedules and renewals. */
  const forget = (actor: Actor) =>
    Effect.gen(function*() {
      yield* Effect.sync(() => actors.delete(actor.id))
      yield* pools.remove(actor, MutableRef.get(actor.account).pool)
      yield* scheduler.cancel(actor.id)
      yield* FiberMap.remove(background, actor.id)
      if (actor.flight !== undefined) yield* actor.flight.interrupt
    })

  /**
   * Takes up what another process sharing the database stored for the account since this one
   * last looked (a token it renewed, with a rotated credential, or an invalid mark or a clear).
   * True when something changed.
   */
  const adoptStored = (actor: Actor): Effect.Effect<boolean, StoreError> =>
    lockOf(actor).withPermits(1)(Effect.gen(function*() {
      const stored = yield* loadStored(actor.id)
      if (Option.isNone(stored)) return false
      const current = MutableRef.get(actor.state)
      const theirs = stored.value.state
      if (sameRecord(current.token, theirs.token) && Option.isSome(current.invalid) === Option.isSome(theirs.invalid)) return false
      MutableRef.set(actor.state, {
        ...current,
        token: theirs.token,
        invalid: theirs.invalid,
        lastError: theirs.lastError,
        lastRefreshedAt: theirs.lastRefreshedAt,
        username: theirs.username
      })
      if (actor.unsaved === undefined) MutableRef.set(actor.account, stored.value.account)
      actor.startup = false
      yield* pools.sync(actor)
      yield* scheduleNext(actor)
      return true
    }))

  /**
   * Renews the token: the work of one flight. When it may go upstream it holds the account's
   * refresh lease, so of the processes sharing the database only one renews, and the others
   * take up its result: first, whatever the store holds now is taken up.
   */
  const renew = (actor: Actor, mode: Mode): Effect.Effect<TokenRecord, RenewError> =>
    Effect.gen(function*() {
      const start = yield* now
      const state = MutableRef.get(actor.state)
      const settled = mode === "ensure" && (Option.isSome(state.invalid) || Token.need(state, start, windowMs) === "use")
      if (settled || !renewable(MutableRef.get(actor.account))) return yield* renewHere(actor, mode, start)
      return yield* leases.hold(
        actor.id,
        Effect.gen(function*() {
          if (yield* adoptStored(actor)) {
            const adopted = MutableRef.get(actor.state)
            // A forced refresh is answered by a renewal that another process finished meanwhile.
            if (mode === "force" && Option.isSome(adopted.token) && Option.exists(adopted.lastRefreshedAt, (at) => at > start)) {
              return adopted.token.value
            }
          }
          return yield* renewHere(actor, mode, start)
        })
      )
    })

  /**
   * The renewal itself. In `ensure` mode a token still valid beyond the window is returned as
   * is (another caller's flight may have just renewed it).
   */
  const renewHere = (actor: Actor, mode: Mode, start: number): Effect.Effect<TokenRecord, RenewError> =>
    Effect.gen(function*() {
      const state = MutableRef.get(actor.state)
      const account = MutableRef.get(actor.account)
      const status = Token.status(state, start)
      if (mode === "ensure" && Option.isSome(state.invalid)) {
        return yield* new TokenUnavailable({ accountId: actor.id, status, reason: state.invalid.value.reason })
      }
      const need = Token.need(state, start, windowMs)
      if (mode === "ensure" && need === "use") return Option.getOrThrow(state.token)
      const source = yield* drivers.source(account)
      const current = state.token
      const stillValid = Option.isSome(current) && need !== "obtain"
      if (!canRenew(source)) {
        const servable = Option.filter(current, (record) => Token.servable(record, start))
        if (mode === "ensure" && Option.isSome(servable)) return servable.value
        return yield* new OperationUnsupported({
          accountId: actor.id,
          operation: mode === "force" ? "refresh" : "obtain a token for",
          reason: Option.isSome(current) && Option.isNone(servable)
            ? `its ${sourceKind(account.source)} token has expired (or expires within a minute) and cannot be renewed; update it`
            : `a ${sourceKind(account.source)} token is handed in, never obtained or refreshed`
        })
      }

      const notes: Array<Events.TokenEvent> = []
      if (status === "expired") notes.push(yield* event(actor, "expired", { detail: "the token expired before it was renewed" }))
      const obtain = Option.map(source.obtain, (f) => Effect.map(f(account), (issued) => [issued, "obtain"] as const))
      const attempt: Effect.Effect<readonly [Issued, "obtain" | "refresh"], RenewError> =
        stillValid && Option.isSome(source.refresh)
          ? source.refresh.value(account, current.value.token).pipe(
            Effect.map((issued) => [issued, "refresh"] as const),
            Effect.flatMap(([issued, how]) => Effect.as(checkIssued(issued, "refresh", start), [issued, how] as const)),
            Effect.catchAll((error) =>
              Option.match(obtain, {
                onNone: () => Effect.fail(error),
                onSome: (fallback) =>
                  // SPEC §2.3: a failed refresh of a still-valid token falls back to obtain.
                  Effect.flatMap(
                    event(actor, "refresh_failed", {
                      outcome: "failure",
                      detail: `${error.message}; obtaining a new token instead`
                    }),
                    (note) => Effect.zipRight(Effect.sync(() => notes.push(note)), fallback)
                  )
              })
            )
          )
          : Option.getOrElse(obtain, () =>
            Effect.fail(
              new OperationUnsupported({
                accountId: actor.id,
                operation: "obtain a token for",
                reason: "the source cannot obtain a token and the current one cannot be refreshed"
              })
            ))

      const result = yield* upstreamPermits.withPermits(1)(
        Effect.flatMap(attempt, ([issued, how]) => Effect.as(checkIssued(issued, how, start), [issued, how] as const))
      ).pipe(withPolicy, Effect.exit)

      return yield* lockOf(actor).withPermits(1)(Effect.gen(function*() {
        const at = yield* now
        const latest = MutableRef.get(actor.state)
        if (Exit.isFailure(result)) {
          const error = Cause.failureOption(result.cause)
          if (Option.isNone(error)) return yield* Effect.failCause(result.cause)
          yield* recordFailure(actor, latest, error.value, notes, at)
          return yield* Effect.fail(error.value)
        }
        const [issued, how] = result.value
        // A manual update or a clear that landed while we were upstream wins.
        if (Option.getOrUndefined(latest.token) !== Option.getOrUndefined(current) || Option.isSome(latest.invalid) !== Option.isSome(state.invalid)) {
          return yield* Option.match(latest.token, {
            onNone: () => Effect.fail(new TokenUnavailable({ accountId: actor.id, status: "missing", reason: "the token was cleared" })),
            onSome: Effect.succeed
          })
        }
        const startup = actor.startup
        actor.startup = false
        const origin: TokenOrigin = startup && how === "obtain" ? "startup" : how
        const record: TokenRecord = { token: issued.token, expiresAt: issued.expiresAt, issuedAt: at, origin }
        const next: TokenState = {
          ...latest,
          token: Option.some(record),
          invalid: Option.none(),
          lastError: Option.none(),
          rateLimit: Option.none(),
          lastRefreshedAt: Option.some(at),
          username: issued.username === undefined ? latest.username : Option.some(issued.username)
        }
        const account = MutableRef.get(actor.account)
        const rotated: SourceConfig | undefined = issued.refreshToken !== undefined && account.source._tag === "oauth2"
          ? new OAuth2Source({ ...account.source, refreshToken: issued.refreshToken })
          : undefined
        const done = yield* event(actor, how === "obtain" ? "obtained" : "refreshed", {
          detail: expiryDetail(issued.expiresAt),
          data: { origin }
        })
        yield* commit(actor, next, [...notes, done], rotated).pipe(
          // The upstream has retired the refresh token this renewal used: presenting it again
          // would revoke the grant. The new one must reach the store while this instance holds
          // the lease (another would read the retired one), so the write is tried again a few
          // times; failing that, the new one is kept, and saved with the next commit.
          rotated === undefined ? identity : Effect.retry(ROTATED_SAVE_RETRIES),
          Effect.tapError(() =>
            rotated === undefined ? Effect.void : Effect.sync(() => {
              actor.unsaved = rotated
              MutableRef.update(actor.account, (account) => new Account({ ...account, source: rotated }))
            })
          )
        )
        return record
      }))
    })

  /**
   * Records a failed renewal: the last error, and an invalid mark when the upstream refused the
   * account's credentials outright (retrying those would only lock the account).
   */
  const recordFailure = (
    actor: Actor,
    state: TokenState,
    error: RenewError,
    notes: ReadonlyArray<Events.TokenEvent>,
    at: number
  ) =>
    Effect.gen(function*() {
      const refused = error._tag === "UpstreamError" && error.kind === "unauthorized" && Option.isNone(state.token)
      const failed = yield* event(actor, "refresh_failed", { outcome: "failure", detail: error.message })
      const invalidated = refused
        ? [yield* event(actor, "invalidated", { outcome: "failure", detail: `credentials refused: ${error.detail}` })]
        : []
      const next: TokenState = {
        ...state,
        lastError: Option.some(lastError(error, at)),
        invalid: refused ? Option.some({ reason: `credentials refused: ${error.detail}`, at }) : state.invalid
      }
      // The failure is what the caller hears about; a store that also fails must not mask it.
      yield* commit(actor, next, [...notes, failed, ...invalidated]).pipe(
        Effect.catchAll((storeError) =>
          Effect.logWarning(`could not record a failed renewal of '${actor.id}': ${storeError.message}`).pipe(
            Effect.zipRight(Effect.sync(() => MutableRef.set(actor.state, next))),
            Effect.zipRight(pools.sync(actor))
          )
        )
      )
    })

  const renewOnce = (actor: Actor, mode: Mode) => flightOf(actor).run(renew(actor, mode))

  /** Background retries for an account whose fetch failed: forever, with backoff, until it works. */
  const backgroundSchedule = Schedule.exponential(policy.baseDelay).pipe(
    Schedule.jittered,
    Schedule.modifyDelay((_, delay) => Duration.min(delay, settings.backgroundRetryMax)),
    Schedule.intersect(Schedule.identity<RenewError>()),
    // an upstream that asked for quiet (429 Retry-After) gets it
    Schedule.modifyDelay(([, error], delay) =>
      error._tag === "UpstreamError" && error.retryAfterMs !== null ? Duration.max(delay, Duration.millis(error.retryAfterMs)) : delay
    ),
    Schedule.whileInput((error: RenewError) =>
      (error._tag === "UpstreamError" && (isRetryable(error) || error.kind === "rejected" || error.kind === "malformed")) ||
      error._tag === "StoreError"
    )
  )

  /** Keeps the account's token fresh without a caller: what the scheduler runs when it is due. */
  const keepFresh = (actor: Actor) =>
    Effect.gen(function*() {
      const account = MutableRef.get(actor.account)
      if (!renewable(account)) {
        // Nothing can renew it: say once that it expired.
        const at = yield* now
        const state = MutableRef.get(actor.state)
        if (Token.status(state, at) === "expired") {
          const expired = yield* event(actor, "expired", { detail: "the token expired and its source cannot renew it" })
          yield* store.appendAudit([expired]).pipe(Effect.zipRight(events.publish(expired)), Effect.ignore)
        }
        return
      }
      yield* renewOnce(actor, "ensure").pipe(Effect.retry(backgroundSchedule), Effect.ignore)
    }).pipe(Events.withActor("scheduler"))

  const runInBackground = (actor: Actor) =>
    FiberMap.run(background, actor.id, keepFresh(actor), { onlyIfMissing: true }).pipe(Effect.asVoid)

  const scheduler = yield* Scheduler.make<string>(
    (id) => Effect.flatMap(Effect.option(lookup(id)), Option.match({ onNone: () => Effect.void, onSome: runInBackground })),
    { concurrency: 1024 }
  )

  // --- actors -------------------------------------------------------------------------

  const makeActor = (account: Account, state: TokenState, startup: boolean): Actor => ({
    id: account.id,
    account: MutableRef.make(account),
    state: MutableRef.make(state),
    lock: undefined,
    flight: undefined,
    startup,
    restored: undefined,
    shown: undefined,
    unsaved: undefined
  })

  const getLease = (actor: Actor) =>
    Effect.gen(function*() {
      const at = yield* now
      const state = MutableRef.get(actor.state)
      if (Option.isSome(state.invalid)) {
        return yield* new TokenUnavailable({ accountId: actor.id, status: "invalid", reason: state.invalid.value.reason })
      }
      const need = Token.need(state, at, windowMs)
      const record = need === "use"
        ? Option.getOrThrow(state.token)
        : need === "refresh"
        ? yield* refreshOrKeep(actor, Option.getOrThrow(state.token))
        : yield* renewOnce(actor, "ensure")
      const used = yield* now
      const latest = MutableRef.updateAndGet(actor.state, (s) => ({ ...s, lastUsedAt: Option.some(used) }))
      yield* pools.touch(actor)
      return { accountId: actor.id, token: record.token, expiresAt: record.expiresAt, rateLimit: latest.rateLimit } satisfies Lease
    })

  /**
   * A token inside its window is renewed first, but while it is still valid a failed renewal
   * does not fail the caller: the current token is served and the background keeps trying.
   * While a background retry waits for its next attempt, callers do not start renewals of
   * their own; they join one that is under way.
   */
  const refreshOrKeep = (actor: Actor, current: TokenRecord): Effect.Effect<TokenRecord, RenewError> =>
    Effect.gen(function*() {
      const retrying = (yield* FiberMap.has(background, actor.id)) && !(yield* flightOf(actor).running)
      if (retrying && Token.servable(current, yield* now)) return current
      // A caller holding a token it can still use waits a little for the renewal, not for a
      // slow upstream's every retry: the renewal goes on without it.
      const renewal = renewOnce(actor, "ensure")
      const waited = Token.servable(current, yield* now)
        ? yield* Effect.timeoutOption(Effect.either(renewal), RENEWAL_WAIT)
        : Option.some(yield* Effect.either(renewal))
      if (Option.isNone(waited)) {
        yield* runInBackground(actor)
        return current
      }
      const renewed = waited.value
      if (renewed._tag === "Right") return renewed.right
      const state = MutableRef.get(actor.state)
      const at = yield* now
      const stillValid = Option.isNone(state.invalid) && Option.getOrUndefined(state.token) === current &&
        Token.servable(current, at)
      if (!stillValid) return yield* Effect.fail(renewed.left)
      yield* runInBackground(actor)
      return current
    })

  const invalidate = (actor: Actor, reason: string) =>
    lockOf(actor).withPermits(1)(Effect.gen(function*() {
      const at = yield* now
      const state = MutableRef.get(actor.state)
      const invalidated = yield* event(actor, "invalidated", { outcome: "failure", detail: reason })
      yield* commit(actor, { ...state, invalid: Option.some({ reason, at }) }, [invalidated])
    }))

  const validateWith = (actor: Actor, token: Redacted.Redacted<string>): Effect.Effect<Validation, UpstreamError> =>
    Effect.suspend(() => {
      const account = MutableRef.get(actor.account)
      return drivers.provider(account).validate(token, account)
    }).pipe(withPolicy)

  /** A new account: the pool defaults to the provider's id. */
  const accountFrom = (input: NewAccount, at: number) =>
    new Account({
      id: input.id,
      provider: input.provider,
      pool: input.pool ?? input.provider,
      source: input.source,
      label: input.label,
      createdAt: at
    })

  /** A new account's state: empty, or holding the token it was registered with. */
  const initialState = (account: Account, initial: Declared["token"]): TokenState =>
    initial === undefined ? Token.emptyState : {
      ...Token.emptyState,
      token: Option.some({
        token: initial.token,
        expiresAt: Option.fromNullable(initial.expiresAt),
        issuedAt: account.createdAt,
        origin: account.source._tag === "static" ? "static" : "manual"
      })
    }

  const service: LifecycleService = {
    get: (id) => Effect.flatMap(lookup(id), getLease),

    refresh: (id) =>
      Effect.flatMap(lookup(id), (actor) => Effect.zipRight(renewOnce(actor, "force"), infoOf(actor))),

    update: (id, token, options = {}) =>
      Effect.gen(function*() {
        const actor = yield* lookup(id)
        const at = yield* now
        const reject = (reason: string, upstreamStatus: number | null = null) =>
          new TokenRejected({ accountId: id, reason, upstreamStatus })
        if (!isWellFormedToken(token)) return yield* reject("the token is empty or contains spaces or control characters")
        if (options.expiresAt !== undefined) {
          const problem = expiryProblem(options.expiresAt, at)
          if (problem !== undefined) return yield* reject(problem)
        }
        let username = Option.none<string>()
        if (options.validate !== false) {
          const validation = yield* validateWith(actor, token)
          if (!validation.valid) {
            const rejected = yield* event(actor, "updated", { outcome: "failure", detail: `rejected upstream: ${validation.reason}` })
            yield* store.appendAudit([rejected]).pipe(Effect.zipRight(events.publish(rejected)))
            return yield* reject(validation.reason, validation.upstreamStatus)
          }
          username = Option.fromNullable(validation.username)
        }
        return yield* lockOf(actor).withPermits(1)(Effect.gen(function*() {
          const state = MutableRef.get(actor.state)
          const expiresAt = Option.fromNullable(options.expiresAt)
          const record: TokenRecord = { token, expiresAt, issuedAt: at, origin: "manual" }
          const updated = yield* event(actor, "updated", {
            detail: `${expiryDetail(expiresAt)}${options.validate === false ? ", not validated" : ", validated upstream"}`
          })
          yield* commit(actor, {
            ...state,
            token: Option.some(record),
            invalid: Option.none(),
            lastError: Option.none(),
            rateLimit: Option.none(),
            username: Option.orElse(username, () => state.username)
          }, [updated])
          return yield* infoOf(actor)
        }))
      }),

    validate: (id) =>
      Effect.gen(function*() {
        const actor = yield* lookup(id)
        const state = MutableRef.get(actor.state)
        const at = yield* now
        if (Option.isNone(state.token)) {
          return yield* new TokenUnavailable({ accountId: id, status: Token.status(state, at), reason: "there is no token to validate" })
        }
        const record = state.token.value
        const validation = yield* validateWith(actor, record.token)
        const checkedAt = yield* now
        yield* lockOf(actor).withPermits(1)(Effect.gen(function*() {
          const latest = MutableRef.get(actor.state)
          if (Option.getOrUndefined(latest.token) !== record) return
          const validated = yield* event(actor, "validated", {
            outcome: validation.valid ? "success" : "failure",
            detail: validation.reason,
            data: { valid: validation.valid, upstream_status: validation.upstreamStatus }
          })
          yield* commit(actor, {
            ...latest,
            // A token that validates again is back in rotation (SPEC §3.4).
            invalid: validation.valid ? Option.none() : latest.invalid,
            username: validation.username === undefined ? latest.username : Option.some(validation.username),
            rateLimit: validation.rateLimit === undefined ? latest.rateLimit : Option.some(validation.rateLimit)
          }, [validated])
        }))
        if (!validation.valid) yield* service.reportUnauthorized(id, { reason: validation.reason, token: record.token })
        return { accountId: id, valid: validation.valid, checkedAt, reason: validation.reason, upstreamStatus: validation.upstreamStatus }
      }),

    clear: (id) =>
      Effect.gen(function*() {
        const actor = yield* lookup(id)
        if (actor.flight !== undefined) yield* actor.flight.interrupt
        return yield* lockOf(actor).withPermits(1)(Effect.gen(function*() {
          const state = MutableRef.get(actor.state)
          const cleared = yield* event(actor, "cleared", { detail: "token forgotten" })
          yield* commit(actor, { ...Token.emptyState, username: state.username, lastUsedAt: state.lastUsedAt }, [cleared])
          yield* FiberMap.remove(background, id)
          return yield* infoOf(actor)
        }))
      }),

    reportUnauthorized: (id, report) =>
      Effect.gen(function*() {
        const actor = yield* lookup(id)
        const state = MutableRef.get(actor.state)
        const seenFor = report.token
        const current = Option.getOrUndefined(state.token)
        // A 401 for a token that has since been replaced says nothing about the new one.
        if (seenFor !== undefined && (current === undefined || Redacted.value(current.token) !== Redacted.value(seenFor))) {
          return yield* infoOf(actor)
        }
        const account = MutableRef.get(actor.account)
        if (renewable(account)) {
          const renewed = yield* Effect.either(renewOnce(actor, "force"))
          if (renewed._tag === "Right") return yield* infoOf(actor)
          yield* invalidate(actor, `${report.reason}; renewal failed: ${renewed.left.message}`)
        } else {
          yield* invalidate(actor, report.reason)
        }
        return yield* infoOf(actor)
      }),

    info: (id) => Effect.flatMap(lookup(id), infoOf),
    unsafeInfo: (id, at) => {
      const actor = actors.get(id)
      return actor === undefined ? undefined : infoAt(actor, at)
    },

    list: Effect.suspend(() => Effect.forEach([...actors.values()], infoOf)),

    account: (id) => Effect.map(lookup(id), (actor) => MutableRef.get(actor.account)),

    accounts: Effect.sync(() => Array.from(actors.values(), (actor) => MutableRef.get(actor.account))),

    add: (input, initial) =>
      Effect.gen(function*() {
        const at = yield* now
        if (initial !== undefined) {
          const reject = (reason: string) => new TokenRejected({ accountId: input.id, reason, upstreamStatus: null })
          if (!isWellFormedToken(initial.token)) return yield* reject("the token is empty or contains spaces or control characters")
          const problem = initial.expiresAt === undefined ? undefined : expiryProblem(initial.expiresAt, at)
          if (problem !== undefined) return yield* reject(problem)
        }
        const account = accountFrom(input, at)
        const state = initialState(account, initial)
        const added = yield* Events.make({
          type: "account_added",
          accountId: account.id,
          detail: `${account.provider} account in pool ${account.pool}, ${sourceKind(account.source)} source`
        })
        yield* store.addAccount(account, state, [added])
        const actor = makeActor(account, state, false)
        yield* Effect.sync(() => actors.set(account.id, actor))
        yield* pools.sync(actor)
        yield* events.publish(added)
        yield* scheduleNext(actor)
        return yield* infoOf(actor)
      }),

    remove: (id) =>
      Effect.gen(function*() {
        const actor = yield* lookup(id)
        const removed = yield* Events.make({ type: "account_removed", accountId: id })
        yield* lockOf(actor).withPermits(1)(store.removeAccount(actor.id, [removed]))
        yield* forget(actor)
        yield* events.publish(removed)
      }),

    reload: (id) =>
      Effect.gen(function*() {
        const stored = yield* loadStored(id as AccountId)
        const actor = actors.get(id)
        if (Option.isNone(stored)) {
          if (actor !== undefined) yield* forget(actor)
          return
        }
        const { account, state: theirs } = stored.value
        if (actor === undefined) {
          const added = makeActor(account, theirs, false)
          yield* Effect.sync(() => actors.set(id, added))
          yield* pools.sync(added)
          return yield* scheduleNext(added)
        }
        yield* lockOf(actor).withPermits(1)(Effect.gen(function*() {
          const ours = MutableRef.get(actor.state)
          const lastUsed = Math.max(Option.getOrElse(ours.lastUsedAt, () => 0), Option.getOrElse(theirs.lastUsedAt, () => 0))
          MutableRef.set(actor.state, { ...theirs, lastUsedAt: lastUsed === 0 ? Option.none() : Option.some(lastUsed) })
          if (actor.unsaved === undefined) MutableRef.set(actor.account, account)
          yield* pools.sync(actor)
          yield* scheduleNext(actor)
        }))
      }),

    refreshAll: Effect.gen(function*() {
      const all = [...actors.values()]
      const outcomes = yield* Effect.forEach(all, (actor) =>
        Effect.gen(function*() {
          const account = MutableRef.get(actor.account)
          if (!renewable(account)) return "skipped" as const
          return yield* renewOnce(actor, "force").pipe(
            Effect.as("refreshed" as const),
            Effect.catchAll(() => Effect.zipRight(runInBackground(actor), Effect.succeed("failed" as const)))
          )
        }), { concurrency: settings.concurrency })
      return {
        refreshed: outcomes.filter((o) => o === "refreshed").length,
        failed: outcomes.filter((o) => o === "failed").length,
        skipped: outcomes.filter((o) => o === "skipped").length
      }
    }),

    awaitStartup: Effect.void
  }

  // --- pools (SPEC §3) ---------------------------------------------------------------

  const pools = yield* Pools.make<Actor>({
    store,
    drivers,
    events,
    lookup,
    info: infoOf,
    commit,
    lock: lockOf,
    unauthorized: (actor, reason, token) =>
      service.reportUnauthorized(actor.id, { reason, token }).pipe(
        Effect.asVoid,
        Effect.catchTag("AccountNotFound", () => Effect.void)
      ),
    flushInterval: settings.flushInterval,
    auditEachAcquire: settings.auditAcquires === "each",
    shared: yield* SharedRotation,
    reload: (id) => service.reload(id)
  })

  // --- startup (SPEC §2.6) ------------------------------------------------------------

  const reconcileDeclared = (loaded: ReadonlyArray<StoredAccount>) =>
    Effect.gen(function*() {
      const declared = yield* DeclaredAccounts
      if (declared.length === 0) return loaded
      const at = yield* now
      const byId = new Map(loaded.map((entry) => [entry.account.id as string, entry]))
      const added: Array<StoredAccount> = []
      const addedEvents: Array<Events.TokenEvent> = []
      for (const { account: input, token } of declared) {
        const existing = byId.get(input.id)
        if (existing === undefined) {
          if (token !== undefined && !isWellFormedToken(token.token)) {
            yield* Effect.logWarning(`the declared token of account '${input.id}' is malformed; the account starts without it`)
          }
          const account = accountFrom(input, at)
          const usable = token !== undefined && isWellFormedToken(token.token) ? token : undefined
          const entry = { account, state: initialState(account, usable) }
          added.push(entry)
          byId.set(account.id, entry)
          addedEvents.push(
            yield* Events.make({ type: "account_added", accountId: account.id, detail: "declared by configuration" })
          )
        } else if (!sameSource(existing.account.source, input.source)) {
          const updated = { ...existing, account: new Account({ ...existing.account, source: input.source }) }
          byId.set(input.id, updated)
          yield* store.saveState(existing.account.id, existing.state, [], input.source)
          yield* Effect.logInfo(`account '${input.id}': source configuration updated from configuration`)
        }
      }
      if (added.length > 0) {
        yield* store.importAccounts(added, addedEvents, { skipExisting: true }).pipe(
          Effect.catchTag("AccountExists", (error) =>
            Effect.fail(new StoreError({ operation: "add declared accounts", detail: error.message })))
        )
        yield* events.publishAll(addedEvents)
      }
      return Array.from(byId.values())
    }).pipe(Events.withActor("config"))

  const stored = yield* Effect.flatMap(store.loadAll, (loaded) => reconcileDeclared(loaded))
  // Restoring is plain synchronous work per account (100,000 accounts must come up in
  // seconds): build the actor, place it in its pool, and either fetch it or schedule it.
  const startAt = yield* now
  const due: Array<Actor> = []
  for (const { account, state } of stored) {
    const actor = makeActor(account, state, Option.isNone(state.token))
    actor.restored = Option.getOrUndefined(state.token)
    actors.set(account.id, actor)
    pools.place(actor, account, state, startAt)
    if (renewable(account) && Option.isNone(state.invalid) && Token.need(state, startAt, windowMs) !== "use") {
      due.push(actor)
    } else {
      const at = dueAt(account, state)
      if (at !== undefined) scheduler.unsafeSchedule(actor.id, at)
    }
  }
  // Every account that needs a token is fetched at once; the ones that fail keep retrying in
  // the background while the service runs.
  const fetchAtStartup = yield* StartupFetch
  const startupFetch = yield* Effect.forEach(fetchAtStartup ? due : [], (actor) =>
    renewOnce(actor, "ensure").pipe(
      Effect.catchAll(() => runInBackground(actor)),
      Events.withActor("scheduler")
    ), { concurrency: settings.concurrency, discard: true }).pipe(Effect.forkScoped)

  yield* Option.match(settings.refreshCron, {
    onNone: () => Effect.void,
    onSome: (cron) =>
      service.refreshAll.pipe(
        Events.withActor("scheduler"),
        Effect.schedule(Schedule.cron(cron)),
        Effect.forkScoped
      )
  })

  const lifecycle: LifecycleService = { ...service, awaitStartup: Effect.asVoid(Fiber.await(startupFetch)) }
  return { lifecycle, pool: pools.service }
})

/** The lifecycle and the token pools over its accounts: needs the store, the drivers and the event hub. */
export const layer = Layer.scopedContext(
  Effect.map(make, ({ lifecycle, pool }) => Context.make(Lifecycle, lifecycle).pipe(Context.add(TokenPool, pool)))
)
