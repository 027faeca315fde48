/**
 * The Redis mirror (SPEC §9): for consumers that read tokens from Redis the way the existing
 * Upstox-style service's users do (`GET upstox_access_token`), every change of an account's
 * token is written to `upstox_access_token:{account_id}` (the raw token) and
 * `token_info:{account_id}` (the token info JSON of the HTTP API, without the token), with a
 * TTL (24 hours unless configured), and for the default account also to the legacy keys
 * `upstox_access_token` and `token_info`. A cleared or removed account's keys are deleted; an
 * invalid or expired token is taken out (its info stays, saying why); a token key never
 * outlives its token.
 *
 * The mirror never blocks the service: it follows the event hub, marks the accounts that
 * changed, and one background fiber writes what is current for them, in short transactions
 * with a command timeout. While Redis is unreachable the marks stay (a later change of an
 * account supersedes the pending one: only its latest state is ever written), writes are
 * retried with backoff, and the outage is logged once; when Redis is back, at startup, and
 * every half TTL (at most every hour, so that unchanged tokens' keys never lapse) every
 * account is mirrored again. Nothing connects unless the mirror's layer is used
 * (`layerConfig` only when `TESSERA_REDIS_URL` is set).
 *
 * The token is read from the store, which every change is committed to before it is
 * published, so the mirror never asks the lifecycle for a token and never causes a renewal.
 */
import { Clock, Config, ConfigError, Data, Deferred, Duration, Effect, Either, Exit, Layer, Option, Queue, Redacted, Schedule } from "effect"
import type { DateTime } from "effect"
import * as Account from "./Account.js"
import type { StoreError } from "./Errors.js"
import * as Events from "./Events.js"
import { DeclaredAccounts, Lifecycle } from "./Lifecycle.js"
import { Settings } from "./Settings.js"
import * as SettingsModule from "./Settings.js"
import * as Token from "./Token.js"
import { TokenStore } from "./TokenStore.js"
import type { CryptoError, StoredAccount } from "./TokenStore.js"

/** The keys consumers read (the existing service's names). */
export const keys = {
  token: (accountId: string) => `upstox_access_token:${accountId}`,
  info: (accountId: string) => `token_info:${accountId}`,
  legacyToken: "upstox_access_token",
  legacyInfo: "token_info"
} as const

export interface Options {
  /** `redis://[user:password@]host:port/db` (or `rediss://`). */
  readonly url: Redacted.Redacted<string>
  /** How long a written key lives unless written again; 24 hours unless given. */
  readonly ttl?: Duration.DurationInput | undefined
  /** `INTERNAL_API_ACCOUNT_ID`, if configured; otherwise the default account is chosen by the rule. */
  readonly defaultAccount?: Option.Option<string> | undefined
  /**
   * The JSON written to `token_info`: the HTTP API's token info (the server passes its wire
   * encoder, so the shape is defined once), in the configured zone.
   */
  readonly tokenInfo: (info: Token.TokenInfo, zone: DateTime.TimeZone) => unknown
  /** How long one write may take before it counts as failed; 1 second unless given. */
  readonly commandTimeout?: Duration.DurationInput | undefined
  /** The longest pause between attempts while Redis is unreachable; 2 seconds unless given. */
  readonly retryMax?: Duration.DurationInput | undefined
}

/** Events after which an account's mirrored keys may have to change. */
const MIRRORED: ReadonlySet<Events.EventType> = new Set<Events.EventType>([
  "obtained",
  "refreshed",
  "updated",
  "validated",
  "rate_limited",
  "recovered",
  "invalidated",
  "expired",
  "refresh_failed",
  "cleared",
  "account_added",
  "account_removed"
])

/** How many accounts' keys go into one Redis transaction (an account's are never split). */
const ACCOUNTS_PER_TRANSACTION = 100

/** The longest time between two writes of everything (which keeps unchanged tokens' keys alive). */
const REWRITE_AT_LEAST_EVERY = Duration.hours(1)

type Command =
  | { readonly _tag: "set"; readonly key: string; readonly value: string; readonly ttlSeconds: number }
  | { readonly _tag: "del"; readonly key: string }

const set = (key: string, value: string, ttlSeconds: number): Command => ({ _tag: "set", key, value, ttlSeconds })
const del = (key: string): Command => ({ _tag: "del", key })

/** The URL as it may be logged: scheme, host, port and database, never a credential. */
export const describeUrl = (url: Redacted.Redacted<string>): string => {
  try {
    const parsed = new URL(Redacted.value(url))
    return `${parsed.protocol}//${parsed.host}${parsed.pathname === "/" ? "" : parsed.pathname}`
  } catch {
    return "(unparseable Redis URL)"
  }
}

/**
 * What the mirror holds for an account in its current state: the token and its info while
 * the token can be used (the token key never outliving the token), only the info when it is
 * invalid or expired, nothing when the account has no token or no longer exists.
 */
const commandsFor = (
  id: string,
  stored: StoredAccount | undefined,
  context: {
    readonly now: number
    readonly ttlSeconds: number
    readonly zone: DateTime.TimeZone
    readonly isDefault: boolean
    readonly tokenInfo: Options["tokenInfo"]
  }
): ReadonlyArray<Command> => {
  const tokenKeys = context.isDefault ? [keys.token(id), keys.legacyToken] : [keys.token(id)]
  const infoKeys = context.isDefault ? [keys.info(id), keys.legacyInfo] : [keys.info(id)]
  const record = stored === undefined ? undefined : Option.getOrUndefined(stored.state.token)
  if (stored === undefined || record === undefined) return [...tokenKeys, ...infoKeys].map(del)
  const info = JSON.stringify(context.tokenInfo(Token.info(stored.account, stored.state, context.now), context.zone))
  const infoCommands = infoKeys.map((key) => set(key, info, context.ttlSeconds))
  const status = Token.status(stored.state, context.now)
  const lifetime = Option.match(record.expiresAt, {
    onNone: () => context.ttlSeconds,
    onSome: (at) => Math.floor((at - context.now) / 1000)
  })
  if (status === "invalid" || status === "expired" || lifetime < 1) return [...tokenKeys.map(del), ...infoCommands]
  const ttlSeconds = Math.min(context.ttlSeconds, lifetime)
  return [...tokenKeys.map((key) => set(key, Redacted.value(record.token), ttlSeconds)), ...infoCommands]
}

/** A write that did not reach Redis: the reason says why, never what was written. */
export class WriteFailed extends Data.TaggedError("WriteFailed")<{ readonly reason: string }> {
  override get message() {
    return this.reason
  }
}

const chunksOf = <A>(items: ReadonlyArray<A>, size: number): ReadonlyArray<ReadonlyArray<A>> => {
  const chunks: Array<ReadonlyArray<A>> = []
  for (let i = 0; i < items.length; i += size) chunks.push(items.slice(i, i + size))
  return chunks
}

/**
 * Mirrors every account's token to Redis for as long as the scope lasts. Needs the lifecycle
 * (for the accounts), the store (for their current tokens) and the event hub.
 */
export const layer = (options: Options): Layer.Layer<never, never, Lifecycle | TokenStore | Events.Events> =>
  Layer.scopedDiscard(Effect.gen(function*() {
    const lifecycle = yield* Lifecycle
    const store = yield* TokenStore
    const events = yield* Events.Events
    const settings = yield* Settings
    const declared = (yield* DeclaredAccounts).map((entry) => entry.account.id as string)
    // Subscribed before anything is written, so a change made while everything is being
    // written is written again afterwards.
    const subscription = yield* events.subscribe
    const ttlSeconds = Math.max(1, Math.floor(Duration.toSeconds(options.ttl ?? Duration.hours(24))))
    const timeout = Duration.decode(options.commandTimeout ?? Duration.seconds(1))
    const connectTimeout = Duration.max(Duration.seconds(2), Duration.times(timeout, 2))
    const where = describeUrl(options.url)

    // What is still to be written: the accounts that changed, whether every account must be
    // written again (at startup, after a reconnect) and whether the set of accounts changed
    // (the default account may have). Changed only by the subscriber and the writer, inside
    // `Effect.sync`.
    const dirty = new Set<string>()
    let everything = true
    let accountsChanged = true
    let currentDefault: Option.Option<string> = Option.none()
    let down = false
    let lastError = "not connected yet"
    const wake = yield* Queue.sliding<void>(1)
    const reconnected = yield* Queue.sliding<void>(1)
    const connectedOnce = yield* Deferred.make<void>()

    // Loaded only when a mirror runs, so the CLI's start does not pay for it.
    const { Redis } = yield* Effect.promise(() => import("ioredis"))
    const client = yield* Effect.acquireRelease(
      Effect.sync(() => {
        // `lazyConnect` until the listeners are on: nothing may be missed.
        const redis = new Redis(Redacted.value(options.url), {
          enableOfflineQueue: false,
          maxRetriesPerRequest: 0,
          commandTimeout: Duration.toMillis(timeout),
          connectTimeout: Duration.toMillis(connectTimeout),
          retryStrategy: (attempt) => Math.min(100 * 2 ** Math.min(attempt, 10), 1000),
          lazyConnect: true
        })
        // Failures are reported by the writes that meet them (once per outage); without a
        // listener the client would print every reconnect attempt.
        redis.on("error", (error: Error) => {
          lastError = error.message
        })
        // A (re)connected Redis may have lost what was written before: write everything again.
        redis.on("ready", () => {
          everything = true
          Queue.unsafeOffer(wake, undefined)
          Queue.unsafeOffer(reconnected, undefined)
          Deferred.unsafeDone(connectedOnce, Exit.void)
        })
        redis.connect().catch(() => undefined)
        return redis
      }),
      (redis) =>
        Effect.promise(() => redis.quit().catch(() => "")).pipe(
          Effect.timeout(timeout),
          Effect.ignore,
          Effect.ensuring(Effect.sync(() => redis.disconnect()))
        )
    )

    const connected = Effect.suspend(() =>
      client.status === "ready" ? Effect.void : Effect.fail(new WriteFailed({ reason: `not connected: ${lastError}` }))
    )

    /** One transaction: all of it is written, or the write failed. */
    const transact = (commands: ReadonlyArray<Command>) =>
      Effect.tryPromise({
        try: async () => {
          const transaction = client.multi()
          for (const command of commands) {
            if (command._tag === "set") transaction.set(command.key, command.value, "EX", command.ttlSeconds)
            else transaction.del(command.key)
          }
          const results = await transaction.exec()
          const failed = results?.find(([error]) => error !== null)?.[0]
          if (results === null || failed !== undefined) throw new Error(failed?.message ?? "transaction aborted")
        },
        catch: (error) => new WriteFailed({ reason: error instanceof Error ? error.message : String(error) })
      }).pipe(
        Effect.timeoutFail({ duration: Duration.times(timeout, 2), onTimeout: () => new WriteFailed({ reason: "timed out" }) })
      )

    /** The stored state of an account; absent when it has been removed. */
    const load = (id: string) => Effect.map(store.load(id as Account.AccountId), Option.getOrUndefined)

    /**
     * Writes what is current for every marked account. The marks are taken first and put back
     * if the write fails, so nothing is lost and a later change is written with the rest.
     */
    const flush: Effect.Effect<number, WriteFailed | StoreError | CryptoError> = Effect.suspend(() => {
      if (dirty.size === 0 && !everything && !accountsChanged) return Effect.succeed(0)
      const taken = { ids: [...dirty], everything, accountsChanged }
      dirty.clear()
      everything = false
      accountsChanged = false
      const restore = Effect.sync(() => {
        for (const id of taken.ids) dirty.add(id)
        everything ||= taken.everything
        accountsChanged ||= taken.accountsChanged
      })
      return Effect.gen(function*() {
        // Nothing is read while Redis is away: a long outage costs no work.
        yield* connected
        let nextDefault = currentDefault
        const ids = new Set(taken.ids)
        if (taken.everything || taken.accountsChanged) {
          const accounts = yield* lifecycle.accounts
          nextDefault = Account.defaultAccountId(accounts, {
            configured: options.defaultAccount ?? Option.none(),
            declared
          })
          if (Option.isSome(nextDefault)) ids.add(nextDefault.value)
          if (taken.everything) for (const account of accounts) ids.add(account.id)
        }
        // A few accounts at a time, read and written, so that even writing every account
        // never holds up the rest of the service.
        for (const chunk of chunksOf([...ids], ACCOUNTS_PER_TRANSACTION)) {
          const stored = yield* Effect.forEach(chunk, load)
          const now = yield* Clock.currentTimeMillis
          const context = { now, ttlSeconds, zone: settings.timeZone, tokenInfo: options.tokenInfo }
          yield* transact(chunk.flatMap((id, i) => commandsFor(id, stored[i], { ...context, isDefault: Option.contains(nextDefault, id) })))
          yield* Effect.yieldNow()
        }
        // No default account any more (the last one was removed): nothing under the legacy keys.
        if (Option.isNone(nextDefault)) yield* transact([del(keys.legacyToken), del(keys.legacyInfo)])
        currentDefault = nextDefault
        return ids.size
      }).pipe(Effect.tapErrorCause(() => restore))
    })

    const reportOutage = (error: WriteFailed | StoreError | CryptoError) =>
      Effect.suspend(() => {
        if (down) return Effect.void
        down = true
        return error._tag === "WriteFailed"
          ? Effect.logWarning(`Redis mirror: cannot write to ${where} (${error.message}); retrying in the background`)
          : Effect.logWarning(`Redis mirror: cannot read the tokens to mirror (${error.message}); retrying`)
      })

    const reportRecovery = Effect.suspend(() => {
      if (!down) return Effect.void
      down = false
      return Effect.logInfo(`Redis mirror: writing to ${where} again`)
    })

    const backoff = Schedule.exponential("100 millis").pipe(
      Schedule.union(Schedule.spaced(options.retryMax ?? Duration.seconds(2))),
      Schedule.jittered
    )

    const permit = yield* Effect.makeSemaphore(1)
    /** Writes until a write succeeds: after each failure, the backoff or the reconnection, whichever comes first. */
    const flushUntilDone = permit.withPermits(1)(Effect.gen(function*() {
      const driver = yield* Schedule.driver(backoff)
      yield* Queue.takeAll(reconnected)
      while (true) {
        const written = yield* Effect.either(flush)
        if (Either.isRight(written)) return yield* reportRecovery
        yield* reportOutage(written.left)
        yield* Effect.raceFirst(Effect.ignore(driver.next(undefined)), Queue.take(reconnected))
      }
    }))

    yield* Queue.takeBetween(subscription, 1, 4096).pipe(
      Effect.flatMap((batch) =>
        Effect.sync(() => {
          let marked = false
          for (const event of batch) {
            if (event.accountId === null || !MIRRORED.has(event.type)) continue
            dirty.add(event.accountId)
            if (event.type === "account_added" || event.type === "account_removed") accountsChanged = true
            marked = true
          }
          if (marked) Queue.unsafeOffer(wake, undefined)
        })
      ),
      Effect.forever,
      Effect.forkScoped
    )

    // The first write waits for the connection (a Redis that is slow to answer at startup is
    // no outage), or, if none comes in time, finds out that Redis is unreachable and says so.
    yield* Deferred.await(connectedOnce).pipe(
      Effect.timeout(connectTimeout),
      Effect.ignore,
      Effect.zipRight(Queue.take(wake).pipe(Effect.zipRight(flushUntilDone), Effect.forever)),
      Effect.forkScoped
    )
    yield* Queue.offer(wake, undefined)

    // Keys of tokens that do not change (a token without an expiry, one that lives longer than
    // the TTL) are written again before they expire; this also repairs anything Redis lost.
    const rewriteEvery = Duration.min(REWRITE_AT_LEAST_EVERY, Duration.millis(ttlSeconds * 500))
    yield* Effect.sync(() => {
      everything = true
      Queue.unsafeOffer(wake, undefined)
    }).pipe(Effect.delay(rewriteEvery), Effect.forever, Effect.forkScoped)

    // On shutdown, what is still pending gets one short chance to be written.
    yield* Effect.addFinalizer(() =>
      down ? Effect.void : permit.withPermits(1)(flush).pipe(Effect.timeout(Duration.times(timeout, 2)), Effect.ignore)
    )
    yield* Effect.logInfo(`Redis mirror: mirroring tokens to ${where} (keys live ${ttlSeconds} s)`)
  }))

/** `TESSERA_REDIS_URL`, checked to be a Redis URL; absent when the variable is not set. */
export const urlConfig: Config.Config<Option.Option<Redacted.Redacted<string>>> = Config.option(
  Config.mapOrFail(Config.redacted("TESSERA_REDIS_URL"), (url) => {
    const text = Redacted.value(url).trim()
    let protocol = ""
    try {
      protocol = new URL(text).protocol
    } catch {
      // reported below
    }
    return protocol === "redis:" || protocol === "rediss:"
      ? Either.right(Redacted.make(text))
      : Either.left(ConfigError.InvalidData([], "TESSERA_REDIS_URL must be a redis:// or rediss:// URL"))
  })
)

/**
 * The mirror from the environment: `TESSERA_REDIS_URL` (without it, nothing), `TESSERA_REDIS_TTL`
 * (a duration, 24h unless set) and `INTERNAL_API_ACCOUNT_ID` for the legacy keys.
 */
export const layerConfig = (
  options: Pick<Options, "tokenInfo">
): Layer.Layer<never, ConfigError.ConfigError, Lifecycle | TokenStore | Events.Events> =>
  Layer.unwrapEffect(Effect.gen(function*() {
    const url = yield* urlConfig
    if (Option.isNone(url)) return Layer.empty
    const ttl = yield* SettingsModule.duration("TESSERA_REDIS_TTL").pipe(
      Config.validate({ message: "TESSERA_REDIS_TTL must be at least 1s", validation: (d) => Duration.toMillis(d) >= 1000 }),
      Config.withDefault(Duration.hours(24))
    )
    const defaultAccount = yield* Account.defaultAccountConfig
    return layer({ ...options, url: url.value, ttl, defaultAccount })
  }))
