/**
 * The `Backend` over the local database, through the core services, as the `cli` actor,
 * answering in the HTTP API's wire format (`Wire` of `@tessera/server`) with the server's
 * rules (default account, pool providers, first fetch of a new account), so a command gives
 * the same answer here as with `--server`.
 *
 * A command is short-lived, so each operation opens what it needs and closes it when done:
 * reads (`accounts list`, `token status`, `pool list`, `audit`) use the store alone and never
 * call an upstream; operations on tokens build the lifecycle over a *view* of the store that
 * holds only the accounts the command concerns (one account, or one pool). The lifecycle
 * brings the accounts it restores up to date at startup (SPEC §2.6), so over the whole
 * database a `token get` would start a fetch for every expired account; over the view it
 * fetches at most the account it was asked about, which `get` does anyway. No background
 * work outlives the command: the lifecycle's scope closes when the operation ends, after
 * its pending usage writes (last use, acquire counts) are flushed.
 */
import { FileSystem, Path } from "@effect/platform"
import { NodeHttpClient } from "@effect/platform-node"
import { Account, ApiKeys, Crypto, Errors, Events, Lifecycle, Settings, Token, TokenPool, TokenStore, Upstream } from "@tessera/core"
import { Drivers, Static } from "@tessera/providers"
import { Wire } from "@tessera/server"
import { Array as Arr, Clock, Config, ConfigError, Context, Effect, Either, Layer, Option, ParseResult, Schema } from "effect"
import type { DateTime } from "effect"
import {
  Backend,
  InvalidInput,
  KeyFileMissing,
  NoAccounts,
  NoDatabase,
  NotFound,
  PoolNotFound,
  RotationIncomplete
} from "./Backend.js"
import type { ApiKeyView, BackendError, BackendService, CheckView, ReportInput } from "./Backend.js"
import * as Doctor from "./internal/doctor.js"

type Store = TokenStore.TokenStoreService

/** Which accounts a lifecycle is built over. */
type View =
  | { readonly _tag: "accounts"; readonly ids: ReadonlyArray<string> }
  | { readonly _tag: "loaded"; readonly accounts: ReadonlyArray<TokenStore.StoredAccount> }
  | { readonly _tag: "all" }

const none: View = { _tag: "accounts", ids: [] }
const only = (id: string): View => ({ _tag: "accounts", ids: [id] })

const BULK_CONCURRENCY = 8

const decodeAccountId = Schema.decodeUnknownOption(Account.AccountId)

/** The first problem a schema found, as one line: `pool: pool name must be …`. */
export const describeParseError = (error: ParseResult.ParseError): string => {
  const [first] = ParseResult.ArrayFormatter.formatErrorSync(error)
  if (first === undefined) return "invalid input"
  return first.path.length === 0 ? first.message : `${first.path.join(".")}: ${first.message}`
}

const invalid = (error: ParseResult.ParseError) => new InvalidInput({ reason: describeParseError(error) })

const byId = (a: TokenStore.StoredAccount, b: TokenStore.StoredAccount) => a.account.id.localeCompare(b.account.id)

const apiKeyView = (key: ApiKeys.ApiKey, zone: DateTime.TimeZone): ApiKeyView => {
  const created = Wire.instant(key.createdAt, zone)
  const revoked = key.revokedAt === null ? null : Wire.instant(key.revokedAt, zone)
  return {
    name: key.name,
    scopes: key.scopes,
    created_at: created.utc,
    created_at_local: created.local,
    revoked_at: revoked?.utc ?? null,
    revoked_at_local: revoked?.local ?? null
  }
}

export const make = Effect.gen(function*() {
  const platform = yield* Effect.context<FileSystem.FileSystem | Path.Path>()
  const fs = yield* FileSystem.FileSystem
  const path = yield* Path.Path
  // A bad setting fails every operation but `doctor`, which reports it.
  const settingsOrError = yield* Effect.either(Settings.settingsConfig)
  const settings = Either.match(settingsOrError, { onLeft: Effect.fail, onRight: Effect.succeed })
  const zone = Either.match(settingsOrError, { onLeft: () => Settings.Settings.defaultValue().timeZone, onRight: (s) => s.timeZone })
  // TESSERA_DATABASE_URL (PostgreSQL, shown without its password) or the file TESSERA_DB
  const configured = yield* TokenStore.databaseConfig
  const dbFile = configured._tag === "sqlite" ? configured.filename : TokenStore.describeDatabase(configured)
  const dbPath = configured._tag === "sqlite" ? path.resolve(configured.filename) : dbFile
  const database: TokenStore.Database = configured._tag === "sqlite" ? { _tag: "sqlite", filename: dbPath } : configured

  // --- what the store holds, as the API shows it ---------------------------------------

  const infoOfStored = (stored: TokenStore.StoredAccount) =>
    Effect.map(Clock.currentTimeMillis, (now) => Token.info(stored.account, stored.state, now))

  const loadAccount = (store: Store, id: string) =>
    Option.match(decodeAccountId(id), {
      onNone: () => Effect.fail(new Errors.AccountNotFound({ accountId: id })),
      onSome: (accountId) =>
        Effect.flatMap(store.load(accountId), Option.match({
          onNone: () => Effect.fail(new Errors.AccountNotFound({ accountId: id })),
          onSome: Effect.succeed
        }))
    })

  /** The account's token info as stored: what every operation on one account answers. */
  const tokenInfo = (store: Store, id: string) =>
    Effect.flatMap(loadAccount(store, id), (stored) => Effect.map(infoOfStored(stored), (info) => Wire.tokenInfo(info, zone)))

  const loadPool = (store: Store, pool: string) =>
    Effect.map(store.loadAll, (all) => all.filter((entry) => entry.account.pool === pool).sort(byId))

  const requirePool = (store: Store, pool: string) =>
    Effect.filterOrFail(loadPool(store, pool), Arr.isNonEmptyReadonlyArray, () => new PoolNotFound({ pool }))

  // --- opening the store and the lifecycle ------------------------------------------------

  const keyFromEnvironment = Config.option(Config.redacted("TESSERA_ENCRYPTION_KEY"))

  /**
   * With the database present but the default key file gone, the keyring would create a
   * fresh key file, which cannot open the database: say what is wrong instead.
   */
  const guardKeyFile = Effect.gen(function*() {
    if (Option.isSome(yield* keyFromEnvironment)) return
    if (Option.isSome(yield* Config.option(Config.string("TESSERA_KEY_FILE")))) return
    const keyPath = yield* Crypto.keyFilePath
    if ((yield* fs.exists(dbPath)) && !(yield* fs.exists(keyPath))) {
      return yield* new KeyFileMissing({ path: keyPath, database: dbFile })
    }
  })

  // a PostgreSQL database is the server's to create; whether it answers shows when it opens
  const requireDatabase = database._tag === "postgres" ? Effect.void : Effect.flatMap(
    fs.exists(dbPath),
    (exists) => exists ? Effect.void : Effect.fail(new NoDatabase({ path: dbFile }))
  )

  /** The store and the API keys on the database. */
  const storeLayer = (keyring: Layer.Layer<Crypto.Keyring, BackendError, FileSystem.FileSystem | Path.Path>) =>
    ApiKeys.layerOn(database).pipe(Layer.provide(keyring))

  /**
   * Runs `use` with the store (and the API keys) open. Only commands that register something
   * (`create`) may create the database; the others fail when it does not exist.
   */
  const withDatabase = <A, E>(
    use: (store: Store, keys: ApiKeys.ApiKeysService) => Effect.Effect<A, E>,
    options: { readonly create?: boolean } = {}
  ): Effect.Effect<A, E | BackendError> =>
    Effect.gen(function*() {
      // a bad setting is a configuration error before anything is opened or created
      yield* settings
      if (options.create !== true) yield* requireDatabase
      yield* guardKeyFile
      return yield* Effect.scoped(
        Effect.flatMap(
          Layer.build(storeLayer(Crypto.layerConfig)),
          (context) => use(Context.get(context, TokenStore.TokenStore), Context.get(context, ApiKeys.ApiKeys))
        )
      )
    }).pipe(Events.withActor("cli"), Effect.provide(platform))

  const withStore = <A, E>(use: (store: Store) => Effect.Effect<A, E>, options: { readonly create?: boolean } = {}) =>
    withDatabase((store) => use(store), options)

  /** The store as a lifecycle over `view` sees it: only the view's accounts exist for it. */
  const narrow = (store: Store, view: View): Store => {
    switch (view._tag) {
      case "all":
        return store
      case "loaded":
        return { ...store, loadAll: Effect.succeed(view.accounts) }
      case "accounts":
        return {
          ...store,
          loadAll: Effect.map(
            Effect.forEach(Arr.filterMap(view.ids, (id) => decodeAccountId(id)), (id) => store.load(id)),
            Arr.getSomes
          )
        }
    }
  }

  const lifecycleLayer = (store: Store) =>
    Effect.map(settings, (current) =>
      Lifecycle.layer.pipe(
        Layer.provide(Layer.mergeAll(
          Events.layer,
          Layer.succeed(TokenStore.TokenStore, store),
          Drivers.layerConfig.pipe(Layer.provide(NodeHttpClient.layerUndici)),
          // The daily cron belongs to the service; a command does not schedule it.
          Layer.succeed(Settings.Settings, { ...current, refreshCron: Option.none() }),
          Upstream.layerRetryPolicyConfig
        ))
      ))

  interface Services {
    readonly lifecycle: Lifecycle.LifecycleService
    readonly pool: TokenPool.TokenPoolService
  }

  /** Runs `use` with a lifecycle over `view`; its scope (and every fiber of it) ends with `use`. */
  const inLifecycle = <A, E>(store: Store, view: View, use: (services: Services) => Effect.Effect<A, E>) =>
    Effect.scoped(Effect.gen(function*() {
      const context = yield* Layer.build(yield* lifecycleLayer(narrow(store, view)))
      return yield* use({ lifecycle: Context.get(context, Lifecycle.Lifecycle), pool: Context.get(context, TokenPool.TokenPool) })
    }))

  /**
   * The default account, as the server decides it: `INTERNAL_API_ACCOUNT_ID`, else the only
   * account, else the first one the environment declares, else the oldest.
   */
  const resolve = (store: Store, account: Option.Option<string>): Effect.Effect<string, BackendError> =>
    Option.match(account, {
      onSome: Effect.succeed,
      onNone: () =>
        Effect.gen(function*() {
          const configured = yield* Account.defaultAccountConfig
          if (Option.isSome(configured)) return configured.value
          const all = yield* store.loadAll
          const declared = yield* Effect.orElseSucceed(Drivers.accountsFromEnv, () => [])
          const chosen = Account.defaultAccountId(all.map((entry) => entry.account), {
            configured,
            declared: declared.map((entry) => entry.account.id)
          })
          return Option.isSome(chosen) ? chosen.value : yield* new NoAccounts()
        })
    })

  /** An operation on one account through the lifecycle, answered with its token info. */
  const onAccount = (
    account: Option.Option<string>,
    run: (services: Services, id: string) => Effect.Effect<unknown, BackendError>
  ) =>
    withStore((store) =>
      Effect.gen(function*() {
        const id = yield* resolve(store, account)
        yield* inLifecycle(store, only(id), (services) => run(services, id))
        return yield* tokenInfo(store, id)
      })
    )

  // --- bulk validation -------------------------------------------------------------------

  const checkOne = (services: Services, id: string): Effect.Effect<CheckView, BackendError> =>
    Effect.gen(function*() {
      const outcome = yield* Effect.either(services.lifecycle.validate(id))
      const info = yield* services.lifecycle.info(id)
      const now = yield* Clock.currentTimeMillis
      const base = {
        account_id: id,
        status: info.status,
        username: info.username,
        rate_limit: Wire.rateLimit(info.rateLimit, zone)
      }
      return Either.match(outcome, {
        onRight: (result): CheckView => ({
          ...base,
          valid: result.valid,
          checked_at: Wire.instant(result.checkedAt, zone).utc,
          reason: result.reason,
          upstream_status: result.upstreamStatus
        }),
        onLeft: (error): CheckView => ({
          ...base,
          valid: null,
          checked_at: Wire.instant(now, zone).utc,
          reason: error.message,
          upstream_status: error._tag === "UpstreamError" ? error.status : null
        })
      })
    })

  const checkTokens: BackendService["checkTokens"] = (target, progress) =>
    withStore((store) =>
      Effect.gen(function*() {
        const view: View = target._tag === "pool" ? { _tag: "loaded", accounts: yield* requirePool(store, target.pool) } : { _tag: "all" }
        return yield* inLifecycle(store, view, (services) =>
          Effect.gen(function*() {
            const ids = (yield* services.lifecycle.accounts).map((account) => account.id as string).sort()
            yield* progress.start(ids.length)
            return yield* Effect.forEach(ids, (id) => Effect.tap(checkOne(services, id), () => progress.step(id)), {
              concurrency: BULK_CONCURRENCY
            })
          }))
      })
    )

  // --- pools -----------------------------------------------------------------------------

  /** A pool's counts, as the pool index reports them, from what the store holds. */
  const summarize = (pool: string, members: ReadonlyArray<TokenStore.StoredAccount>, now: number): TokenPool.PoolSummary => {
    let available = 0
    let rateLimited = 0
    let invalidCount = 0
    let nextResetAt: number | null = null
    for (const { state } of members) {
      const status = Token.status(state, now)
      if (status === "available") available++
      if (status === "rate_limited") {
        rateLimited++
        const resetAt = Option.getOrUndefined(state.rateLimit)?.resetAt
        if (resetAt !== undefined && (nextResetAt === null || resetAt < nextResetAt)) nextResetAt = resetAt
      }
      if (Option.isSome(state.invalid)) invalidCount++
    }
    return {
      pool,
      provider: members[0]?.account.provider ?? "",
      total: members.length,
      available,
      rateLimited,
      invalid: invalidCount,
      nextResetAt
    }
  }

  /** The provider of a pool's new token: the pool's own, or the one the new pool is named after. */
  const poolProvider = (pool: string, members: ReadonlyArray<TokenStore.StoredAccount>) => {
    const provider = members[0]?.account.provider ?? pool
    return Schema.is(Account.ProviderId)(provider) ? Effect.succeed(provider) : Effect.fail(
      new InvalidInput({
        reason: `pool '${pool}' does not exist and is not named after a provider: register its first account with ` +
          `\`tessera accounts add ID --provider PROVIDER --pool ${pool}\``
      })
    )
  }

  const reportTo = (services: Services, pool: string, input: ReportInput): Effect.Effect<Token.TokenInfo, BackendError> =>
    services.pool.report(pool, {
      accountId: input.accountId,
      token: input.token,
      status: input.status,
      headers: Object.fromEntries(Object.entries(input.headers).map(([name, value]) => [name.toLowerCase(), value]))
    }).pipe(
      Effect.catchTag("AccountNotFound", (error) =>
        Effect.fail(
          input.token !== undefined && input.accountId === undefined
            ? new NotFound({ reason: `no account of pool '${pool}' holds this token` })
            : error
        ))
    )

  // --- key rotation (SPEC §4.2) ----------------------------------------------------------

  /**
   * Re-encrypts every stored value under `keys[0]` in one transaction, checks that none is
   * left under another key, and records the rotation in the audit log.
   */
  const reencrypt = (keys: Arr.NonEmptyReadonlyArray<Crypto.EncryptionKey>) =>
    Effect.scoped(Effect.gen(function*() {
      const context = yield* Layer.build(storeLayer(Crypto.layerKeys(keys)))
      const store = Context.get(context, TokenStore.TokenStore)
      const primary = keys[0].id
      const { rewritten } = yield* store.reencrypt
      const usage = yield* store.keyUsage
      const left = [...usage].filter(([id, count]) => id !== primary && count > 0)
      if (left.length > 0) {
        return yield* new RotationIncomplete({
          reason: left.map(([id, count]) => `${count} value(s) still under key ${id}`).join(", ") +
            "; no key was removed, run the rotation again"
        })
      }
      const retired = [...new Set(keys.map((key) => key.id))].filter((id) => id !== primary)
      const rotated = yield* Events.make({
        type: "key_rotated",
        accountId: null,
        detail: `${rewritten} stored value(s) re-encrypted under key ${primary}` +
          (retired.length === 0 ? "" : `; retired ${retired.join(", ")}`),
        data: { key_id: primary, rewritten }
      })
      yield* store.appendAudit([rotated])
      return { rewritten, retired }
    }))

  const rotateKey: BackendService["rotateKey"] = Effect.gen(function*() {
    yield* requireDatabase
    if (Option.isSome(yield* keyFromEnvironment)) {
      // The environment cannot be rewritten from here: re-encrypt under its first key and
      // tell the user which keys the variable no longer needs.
      const keys = yield* Crypto.loadKeys
      const { rewritten, retired } = yield* reencrypt(keys)
      return {
        key_source: "environment" as const,
        key_file: null,
        key_id: keys[0].id,
        retired_key_ids: retired,
        rewritten,
        action: retired.length > 0
          ? `remove every key but the first from TESSERA_ENCRYPTION_KEY (retired: ${retired.join(", ")}), then restart the processes that use it`
          : "TESSERA_ENCRYPTION_KEY holds one key and every value is under it. To rotate, put a new key first " +
            "(TESSERA_ENCRYPTION_KEY=<new>,<current>; make one with: openssl rand -base64 32), run `tessera keys rotate` " +
            "again, then remove the old key"
      }
    }
    yield* guardKeyFile
    const keyPath = yield* Crypto.keyFilePath
    const current = yield* Crypto.readKeyFile(keyPath)
    const fresh = yield* Crypto.generateKey
    // The new key goes on disk first, beside the old ones: whatever happens from here on,
    // the key file opens the database.
    yield* Crypto.writeKeyFile(keyPath, [fresh, ...current])
    const { rewritten, retired } = yield* reencrypt([fresh, ...current])
    yield* Crypto.writeKeyFile(keyPath, [fresh])
    return {
      key_source: "file" as const,
      key_file: keyPath,
      key_id: fresh.id,
      retired_key_ids: retired,
      rewritten,
      action: null
    }
  }).pipe(Events.withActor("cli"), Effect.provide(platform))

  // --- the service -----------------------------------------------------------------------

  const service: BackendService = {
    mode: "local",

    listAccounts: withStore((store) =>
      Effect.flatMap(store.loadAll, (all) =>
        Effect.forEach([...all].sort(byId), (stored) =>
          Effect.map(infoOfStored(stored), (info) => Wire.accountView(stored.account, info, zone))))
    ),

    addAccount: (account, token) =>
      withStore((store) =>
        Effect.gen(function*() {
          yield* inLifecycle(store, none, ({ lifecycle }) =>
            Effect.gen(function*() {
              const added = yield* lifecycle.add(account, token)
              // A renewable account without a token fetches one now; a failure shows as its last error.
              if (!added.hasToken && account.source._tag !== "static") yield* Effect.ignore(lifecycle.get(account.id))
            }))
          const stored = yield* loadAccount(store, account.id)
          return Wire.accountView(stored.account, yield* infoOfStored(stored), zone)
        }), { create: true }),

    removeAccount: (id) =>
      withStore((store) =>
        Effect.zipRight(loadAccount(store, id), inLifecycle(store, only(id), ({ lifecycle }) => lifecycle.remove(id)))
      ),

    getToken: (account) =>
      withStore((store) =>
        Effect.gen(function*() {
          const id = yield* resolve(store, account)
          const lease = yield* inLifecycle(store, only(id), ({ lifecycle }) => lifecycle.get(id))
          return Wire.rawToken(lease, zone)
        })
      ),

    tokenStatus: (account) => withStore((store) => Effect.flatMap(resolve(store, account), (id) => tokenInfo(store, id))),

    listTokens: withStore((store) =>
      Effect.flatMap(store.loadAll, (all) =>
        Effect.forEach([...all].sort(byId), (stored) => Effect.map(infoOfStored(stored), (info) => Wire.tokenInfo(info, zone))))
    ),

    validateToken: (account) =>
      withStore((store) =>
        Effect.gen(function*() {
          const id = yield* resolve(store, account)
          const result = yield* inLifecycle(store, only(id), ({ lifecycle }) => lifecycle.validate(id))
          return Wire.validation(result, zone)
        })
      ),

    updateToken: (account, input) =>
      onAccount(account, ({ lifecycle }, id) =>
        lifecycle.update(id, input.token, { expiresAt: input.expiresAt, validate: input.validate })),

    refreshToken: (account) => onAccount(account, ({ lifecycle }, id) => lifecycle.refresh(id)),

    clearToken: (account) => onAccount(account, ({ lifecycle }, id) => lifecycle.clear(id)),

    checkTokens,

    addPoolToken: (pool, input) =>
      withStore((store) =>
        Effect.gen(function*() {
          const provider = yield* poolProvider(pool, yield* loadPool(store, pool))
          const account = yield* Schema.decodeUnknown(Account.NewAccount)({
            id: input.accountId ?? Static.accountId(provider, input.token),
            provider,
            pool,
            source: { _tag: "static" },
            label: input.label
          }).pipe(Effect.mapError(invalid))
          yield* inLifecycle(store, none, ({ lifecycle }) => lifecycle.add(account, { token: input.token, expiresAt: input.expiresAt }))
          return yield* tokenInfo(store, account.id)
        }), { create: true }),

    listPools: withStore((store) =>
      Effect.gen(function*() {
        const now = yield* Clock.currentTimeMillis
        const pools = Arr.groupBy(yield* store.loadAll, (entry) => entry.account.pool)
        return Object.keys(pools).sort().map((pool) => Wire.pool(summarize(pool, pools[pool]!, now), zone))
      })
    ),

    listPoolTokens: (pool) =>
      withStore((store) =>
        Effect.flatMap(requirePool(store, pool), (members) =>
          Effect.forEach(members, (stored) => Effect.map(infoOfStored(stored), (info) => Wire.tokenInfo(info, zone))))
      ),

    acquire: (pool, options) =>
      withStore((store) =>
        Effect.gen(function*() {
          const members = yield* requirePool(store, pool)
          const leased = yield* inLifecycle(
            store,
            { _tag: "loaded", accounts: members },
            (services) => services.pool.acquire(pool, { wait: options.wait })
          )
          return Wire.lease(leased, zone)
        })
      ),

    report: (pool, input) =>
      withStore((store) =>
        Effect.gen(function*() {
          const members = yield* requirePool(store, pool)
          const reported = yield* inLifecycle(store, { _tag: "loaded", accounts: members }, (services) => reportTo(services, pool, input))
          return yield* tokenInfo(store, reported.accountId)
        })
      ),

    audit: (query) =>
      withStore((store) =>
        Effect.map(store.audit(query), (entries) => entries.map((entry) => Wire.auditEntry(entry, zone)))
      ),

    createApiKey: (name, scopes, secret) =>
      withDatabase((_, keys) =>
        Effect.gen(function*() {
          const validName = yield* Schema.decodeUnknown(ApiKeys.ApiKeyName)(name).pipe(Effect.mapError(invalid))
          const validScopes = yield* Schema.decodeUnknown(ApiKeys.Scopes)(scopes).pipe(
            Effect.mapError(() => new InvalidInput({ reason: "scopes must be read, token or admin, each once" }))
          )
          const created = yield* keys.create(validName, validScopes, secret)
          return { ...apiKeyView(created.key, zone), key: created.secret }
        }), { create: true }),

    listApiKeys: withDatabase((_, keys) => Effect.map(keys.list, (list) => list.map((key) => apiKeyView(key, zone)))),

    revokeApiKey: (name) => withDatabase((_, keys) => Effect.map(keys.revoke(name), (key) => apiKeyView(key, zone))),

    rotateKey,

    doctor: Doctor.run({
      settings,
      kind: database._tag,
      dbFile,
      dbPath,
      keyFromEnvironment,
      open: (use) => withStore(use)
    }).pipe(Effect.provide(platform))
  }
  return service
})

export const layer: Layer.Layer<Backend, ConfigError.ConfigError, FileSystem.FileSystem | Path.Path> = Layer.effect(Backend, make)
