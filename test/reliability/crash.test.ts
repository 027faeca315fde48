/**
 * Crash safety (issue 6, part 1): the built `tessera serve`, on one database file and one
 * encryption key for the whole run, is SIGKILLed at random moments (TESSERA_CRASH_KILLS,
 * default 200) while concurrent clients update tokens and report rate limits through its HTTP
 * API, and restarted. After every restart: `PRAGMA integrity_check` is ok, every stored secret
 * decrypts, and neither the API nor the file has lost an acknowledged write (crashHarness.ts
 * says exactly what each kind of write promises). A negative control rolls back acknowledged
 * writes, corrupts a page and tampers with a secret in copies of the database, and shows the
 * same checks report exactly that. Two races that lose an acknowledged write, which random
 * kills meet only by chance, are made deterministic in-process with pauses injected into the
 * store.
 *
 * Each restarted process has loaded its modules ahead (`warmService`): it runs the built
 * `bin.js serve` unchanged, but the seconds of importing Effect overlap the previous process's
 * load. The run uses a copy of the build taken at its start (`snapshotBuild`), so a rebuild
 * of the working tree during the minutes it takes cannot change the binary under it.
 */
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { NodeHttpClient } from "@effect/platform-node"
import { Account, Crypto, Events, Lifecycle, Settings, Source, Token, TokenPool, TokenStore } from "@tessera/core"
import { GitHub } from "@tessera/providers"
import Database from "better-sqlite3"
import { Cause, Deferred, Duration, Effect, Either, Exit, Fiber, Layer, Option, Redacted, Schema } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { requireBuild } from "../e2e/harness.js"
import {
  addAccounts,
  check,
  describeViolation,
  integrityCheck,
  Ledger,
  makeKeys,
  observeApi,
  observeDatabase,
  seeded,
  serviceEnv,
  snapshotBuild,
  startLoad,
  usageLoss,
  warmService
} from "./crashHarness.js"
import type { Build, Keys, Observed, Violation } from "./crashHarness.js"

const KILLS = Number(process.env["TESSERA_CRASH_KILLS"] ?? 200)
const CLIENTS = 10
const ACCOUNTS = Array.from({ length: 12 }, (_, i) => `gh-${String(i + 1).padStart(2, "0")}`)
const SEED = Number(process.env["TESSERA_CRASH_SEED"] ?? Math.floor(Math.random() * 2 ** 31))

const accountId = Schema.decodeSync(Account.AccountId)
const n = (value: number) => value.toLocaleString("en-US")

/**
 * How long the clients run before the kill: mostly within the first few flush intervals
 * (TESSERA_FLUSH_INTERVAL is 200 ms here, so kills land mid-flush too), some later.
 */
const killDelay = (random: () => number): number =>
  random() < 0.75 ? Math.floor(random() * 400) : 400 + Math.floor(random() * 1100)

/** What one restart found. */
interface Inspection {
  readonly integrity: ReadonlyArray<string>
  readonly decrypted: number
  readonly undecryptable: ReadonlyArray<string>
  readonly api: Map<string, Observed>
  readonly db: Map<string, Observed>
  readonly violations: ReadonlyArray<Violation>
}

/** The checks of a restarted service on `db`: the same for the real run and the negative control. */
const inspect = (ledger: Ledger, keyring: Crypto.KeyringService, keys: Keys, url: string, db: string) =>
  Effect.gen(function*() {
    const integrity = integrityCheck(db)
    const file = observeDatabase(db, keyring)
    const api = yield* Effect.promise(() => observeApi(url, keys, ledger.accounts))
    return {
      integrity,
      decrypted: file.decrypted,
      undecryptable: file.undecryptable,
      api,
      db: file.observed,
      violations: [...check(ledger, api, "api"), ...check(ledger, file.observed, "db")]
    } satisfies Inspection
  })

/** What the run leaves for the negative control. */
interface Run {
  readonly build: Build
  readonly db: string
  readonly key: Crypto.EncryptionKey
  readonly keyBase64: string
  readonly keys: Keys
  readonly ledger: Ledger
  readonly final: Inspection
}

let dir = ""
let run: Run | undefined

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "tessera-crash-"))
})
afterAll(() => {
  if (dir !== "") fs.rmSync(dir, { recursive: true, force: true })
})

/** A copy of the database (and its WAL, if any) in `name/` under the run's directory. */
const copyDatabase = (from: string, name: string) => {
  const target = path.join(dir, name, "tessera.db")
  fs.mkdirSync(path.dirname(target), { recursive: true })
  for (const suffix of ["", "-wal"]) {
    if (fs.existsSync(from + suffix)) fs.copyFileSync(from + suffix, target + suffix)
  }
  return target
}

describe("crash safety", () => {
  it.scopedLive(`${KILLS} SIGKILLs of tessera serve under ${CLIENTS} writing clients lose no acknowledged write`, () =>
    Effect.gen(function*() {
      yield* requireBuild
      const started = Date.now()
      const random = seeded(SEED)
      const key = yield* Crypto.generateKey
      const keyBase64 = Redacted.value(Crypto.toBase64(key))
      const keyring = Crypto.make([key])
      const keys = makeKeys()
      const db = path.join(dir, "data", "tessera.db")
      const env = serviceEnv({ db, key: keyBase64, keys })
      const ledger = new Ledger(ACCOUNTS)
      const build = snapshotBuild(dir)
      const expiryBase = Math.floor((Date.now() + 30 * 24 * 3600_000) / 1000) * 1000

      const violations: Array<Violation> = []
      const integrityFailures: Array<string> = []
      const undecryptable: Array<string> = []
      const delays: Array<number> = []
      let restarts = 0
      let decrypted = 0
      let killsWithWritesInFlight = 0
      let killsWithUpdateInFlight = 0
      let usageLost = 0
      let usageMaxAgeMs = 0
      let killedAt = 0
      let lastInspection: Inspection | undefined
      /** Where the time goes: starting the service, checking it, loading it. */
      const spent = { warm: 0, start: 0, inspect: 0, load: 0 }

      /** Checks a restart, then takes what it found as the start of the next round. */
      const afterRestart = (url: string, label: string) =>
        Effect.gen(function*() {
          const began = Date.now()
          const found = yield* inspect(ledger, keyring, keys, url, db)
          spent.inspect += Date.now() - began
          restarts++
          decrypted += found.decrypted
          if (found.integrity.join() !== "ok") integrityFailures.push(`${label}: ${found.integrity.join("; ")}`)
          undecryptable.push(...found.undecryptable.map((what) => `${label}: ${what}`))
          for (const v of found.violations) {
            violations.push(v)
            console.log(`crash safety: ${label}: ${describeViolation(v)}`)
          }
          const usage = usageLoss(ledger, found.db, killedAt)
          usageLost += usage.lost
          usageMaxAgeMs = Math.max(usageMaxAgeMs, usage.maxAgeMs)
          ledger.settle(found.db)
          lastInspection = found
        })

      let kills = 0
      /** Why the run stopped early: a service that did not start again after a kill, say. */
      let broken: string | undefined

      // The next processes load their modules while the current one is under load.
      const warming = [yield* warmService(build, dir, env), yield* warmService(build, dir, env)]
      const cycle = (index: number) =>
        Effect.gen(function*() {
          const spawned = Date.now()
          const service = yield* warming.shift()!.start
          spent.warm += Date.now() - spawned
          const url = yield* service.url
          spent.start += Date.now() - spawned
          warming.push(yield* warmService(build, dir, env))
          if (index === 0) yield* Effect.promise(() => addAccounts(url, keys, ledger, expiryBase))
          else yield* afterRestart(url, `restart ${index}`)
          const loaded = Date.now()
          const load = startLoad({ url, keys, ledger, clients: CLIENTS, cycle: index, random, expiryBase })
          const delay = killDelay(random)
          delays.push(delay)
          yield* Effect.sleep(delay)
          load.stop()
          const inFlight = ledger.inFlight()
          if (inFlight.length > 0) killsWithWritesInFlight++
          if (inFlight.some((write) => write.kind === "update")) killsWithUpdateInFlight++
          killedAt = Date.now()
          yield* service.stop("SIGKILL")
          kills++
          yield* Effect.promise(() => load.done)
          spent.load += Date.now() - loaded
        })

      for (let index = 0; index < KILLS && broken === undefined; index++) {
        const exit = yield* Effect.exit(cycle(index))
        if (Exit.isFailure(exit)) broken = `cycle ${index}: ${Cause.pretty(exit.cause)}`
        if ((index + 1) % 25 === 0) {
          console.log(
            `crash safety: ${n(kills)} kills, ${n(ledger.counts.acked)} writes acknowledged, ${n(violations.length)} lost, ` +
              `${((Date.now() - started) / 1000).toFixed(0)} s`
          )
        }
      }

      // The last kill is checked like every other, then the service stops cleanly.
      let stopped: number | null = null
      if (broken === undefined) {
        const exit = yield* Effect.exit(Effect.gen(function*() {
          const service = yield* warming.shift()!.start
          yield* afterRestart(yield* service.url, `restart ${KILLS}`)
          stopped = yield* service.stop("SIGTERM")
        }))
        if (Exit.isFailure(exit)) broken = `the last restart: ${Cause.pretty(exit.cause)}`
      }

      // Every stored secret decrypts through the store itself, and holds what was last observed.
      const stored = yield* Effect.flatMap(TokenStore.TokenStore, (store) => store.loadAll).pipe(
        Effect.provide(TokenStore.layerSqlite(db).pipe(Layer.provide(Crypto.layerKeys([key])))),
        Effect.either
      )
      const mismatched: Array<string> = []
      if (Either.isRight(stored) && lastInspection !== undefined && broken === undefined) {
        for (const entry of stored.right) {
          const token = Option.getOrNull(Option.map(entry.state.token, (record) => Redacted.value(record.token)))
          const served = lastInspection.api.get(entry.account.id)
          if (token !== lastInspection.db.get(entry.account.id)?.token || (served?.token != null && served.token !== token)) {
            mismatched.push(entry.account.id)
          }
        }
      }

      const elapsed = (Date.now() - started) / 1000
      const c = ledger.counts
      const short = delays.filter((d) => d < 400).length
      console.log(
        [
          `crash safety (seed ${SEED}): ${n(kills)} SIGKILLs, ${n(restarts)} restarts checked in ${elapsed.toFixed(1)} s, ${CLIENTS} clients on ${ACCOUNTS.length} accounts`,
          `  time: starting the service ${(spent.start / 1000).toFixed(1)} s (${(spent.warm / 1000).toFixed(1)} s of it waiting for modules to load), ` +
          `checking restarts ${(spent.inspect / 1000).toFixed(1)} s, under load ${(spent.load / 1000).toFixed(1)} s ` +
          `(${n(Math.round(c.acked / Math.max(spent.load / 1000, 0.001)))} acknowledged writes/s)`,
          `  writes: ${n(c.sent)} sent, ${n(c.acked)} acknowledged (${
            Object.entries(c.byKind).map(([kind, count]) => `${n(count)} ${kind}`).join(", ")
          }), ${n(c.unanswered)} cut off by a kill (${n(c.landed)} updates of them had landed), ${n(c.refused)} refused`,
          `  kills: ${n(short)} within 400 ms of the load starting, ${n(delays.length - short)} later (up to 1.5 s); ` +
          `${n(killsWithWritesInFlight)} with writes in flight, ${n(killsWithUpdateInFlight)} with an update in flight`,
          `  acknowledged writes lost: ${n(violations.length)}`,
          `  integrity_check ok after ${n(restarts - integrityFailures.length)} of ${n(restarts)} restarts`,
          `  secrets decrypted after restarts: ${n(decrypted)}, undecryptable: ${n(undecryptable.length)}; after the run ` +
          (Either.isRight(stored)
            ? `${n(stored.right.length)} accounts' tokens and sources decrypt through TokenStore, ${n(mismatched.length)} differ from what was served`
            : `TokenStore could not load the database: ${stored.left.message}`),
          `  usage (coalesced, may lose about one flush interval): at ${n(usageLost)} account restarts the counters ` +
          `were older than the last acknowledged report, the oldest acknowledged ${n(usageMaxAgeMs)} ms before its kill`,
          ...(broken === undefined ? [] : [`  STOPPED EARLY at ${broken}`])
        ].join("\n")
      )
      for (const refusal of c.refusals) console.log(`crash safety: refused: ${refusal}`)

      expect(broken).toBeUndefined()
      expect(stopped).toBe(0)
      run = { build, db, key, keyBase64, keys, ledger, final: lastInspection! }
      expect(kills).toBe(KILLS)
      expect(restarts).toBe(KILLS)
      // the clients did write (a busy machine slows them, so no more than one a kill is asked for)
      expect(c.acked).toBeGreaterThanOrEqual(KILLS)
      expect(integrityFailures).toEqual([])
      expect(undecryptable).toEqual([])
      expect(Either.isRight(stored) && stored.right.map((entry) => entry.account.id).sort()).toEqual([...ACCOUNTS])
      expect(mismatched).toEqual([])
      expect(c.refusals).toEqual([])
      expect(violations.map(describeViolation)).toEqual([])
    }), { timeout: 30 * 60_000 })

  it.live("negative control: the same checks report a rolled-back write, a corrupt page and a tampered secret", () =>
    Effect.gen(function*() {
      if (run === undefined) return yield* Effect.die(new Error("the crash run did not finish; nothing to control"))
      const { build, db, key, keyBase64, keys, ledger, final } = run
      const keyring = Crypto.make([key])
      const store = TokenStore.layerSqlite

      // 1. Roll back one acknowledged update (A) and one acknowledged change of standing (B)
      //    in a copy, written properly through the store with the run's key.
      const lossDb = copyDatabase(db, "loss")
      // A: an account whose stored token is an acknowledged update, with an earlier one to go back to
      const holds = (id: string) => (write: { readonly values: { readonly token?: unknown } }) =>
        String(write.values.token).startsWith(`${final.db.get(id)!.token} `)
      const a = ACCOUNTS.find((id) => {
        const updates = ledger.updates.get(id) ?? []
        return updates.some(holds(id)) && updates.some((write) => !holds(id)(write))
      })
      if (a === undefined) return yield* Effect.die(new Error("no account has two acknowledged updates to roll back between"))
      const latest = ledger.updates.get(a)!.find(holds(a))!
      const older = ledger.updates.get(a)!.filter((write) => !holds(a)(write)).at(-1)!
      const [olderToken, olderExpiry] = String(older.values.token).split(" ")
      // B: any other account; its standing flips, its rate-limit counters (the usage tag) stay
      const b = ACCOUNTS.find((id) => id !== a)!
      const bWasLimited = final.db.get(b)!.limited
      yield* Effect.gen(function*() {
        const tokens = yield* TokenStore.TokenStore
        const stateA = Option.getOrThrow(yield* tokens.load(accountId(a))).state
        yield* tokens.saveState(accountId(a), {
          ...stateA,
          token: Option.some({
            token: Redacted.make(olderToken!),
            expiresAt: Option.some(Number(olderExpiry)),
            issuedAt: Date.now(),
            origin: "manual" as const
          })
        }, [])
        const stateB = Option.getOrThrow(yield* tokens.load(accountId(b))).state
        const rateLimit = Option.getOrElse(stateB.rateLimit, () => new Token.RateLimit({ limited: false }))
        yield* tokens.saveState(accountId(b), {
          ...stateB,
          rateLimit: Option.some(
            bWasLimited
              ? new Token.RateLimit({ ...rateLimit, remaining: 17, limited: false })
              : new Token.RateLimit({ ...rateLimit, remaining: 0, resetAt: Date.now() + 7200_000, limited: true })
          )
        }, [])
      }).pipe(Effect.provide(store(lossDb).pipe(Layer.provide(Crypto.layerKeys([key])))))

      const env = serviceEnv({ db: lossDb, key: keyBase64, keys })
      const found = yield* Effect.scoped(Effect.gen(function*() {
        const service = yield* Effect.flatMap(warmService(build, path.dirname(lossDb), env), (warm) => warm.start)
        const url = yield* service.url
        return yield* inspect(ledger, keyring, keys, url, lossDb)
      }))
      for (const v of found.violations) console.log(`negative control: ${describeViolation(v)}`)
      const reported = found.violations.map((v) => `${v.source} ${v.account} ${v.register}`).sort()
      expect(reported).toEqual([`api ${a} token`, `api ${b} limited`, `db ${a} token`, `db ${b} limited`].sort())
      const lostA = found.violations.find((v) => v.account === a && v.source === "db")!
      expect(lostA.observed).toContain(`expiring ${olderExpiry}`)
      expect(lostA.lost?.seq).toBe(latest.seq)
      expect(found.violations.find((v) => v.account === b && v.source === "db")!.observed).toBe(String(!bWasLimited))
      expect(found.integrity).toEqual(["ok"])
      expect(found.undecryptable).toEqual([])

      // 2. A damaged page: integrity_check says so.
      const corruptDb = copyDatabase(db, "corrupt")
      const writer = new Database(corruptDb)
      writer.pragma("wal_checkpoint(TRUNCATE)")
      writer.pragma("journal_mode = DELETE")
      const pageSize = writer.pragma("page_size", { simple: true }) as number
      const { rootpage } = writer.prepare(
        "SELECT rootpage FROM sqlite_schema WHERE type = 'index' AND rootpage > 1 ORDER BY rootpage DESC LIMIT 1"
      ).get() as { rootpage: number }
      writer.close()
      const fd = fs.openSync(corruptDb, "r+")
      fs.writeSync(fd, Buffer.alloc(pageSize, 0xff), 0, pageSize, (rootpage - 1) * pageSize)
      fs.closeSync(fd)
      const damaged = integrityCheck(corruptDb)
      console.log(`negative control: integrity_check of a copy with page ${rootpage} overwritten: ${damaged.slice(0, 2).join("; ")}`)
      expect(damaged).not.toEqual(["ok"])
      expect(integrityCheck(db)).toEqual(["ok"])

      // 3. A tampered secret, and the wrong key: the decryption check says so.
      const tamperedDb = copyDatabase(db, "tampered")
      const tamper = new Database(tamperedDb)
      const c = ACCOUNTS[ACCOUNTS.length - 1]!
      const { token_enc } = tamper.prepare("SELECT token_enc FROM token_state WHERE account_id = ?").get(c) as { token_enc: Buffer }
      const flipped = Buffer.from(token_enc)
      flipped[flipped.length - 20] = flipped[flipped.length - 20]! ^ 0x01
      tamper.prepare("UPDATE token_state SET token_enc = ? WHERE account_id = ?").run(flipped, c)
      tamper.close()
      const tampered = observeDatabase(tamperedDb, keyring)
      console.log(`negative control: one flipped bit in ${c}'s token: ${tampered.undecryptable.join("; ")}`)
      expect(tampered.undecryptable.map((what) => what.split(":")[0])).toEqual([`${c} token`])
      const wrongKey = observeDatabase(db, Crypto.make([yield* Crypto.generateKey]))
      console.log(`negative control: another key: ${wrongKey.undecryptable.length} of ${wrongKey.undecryptable.length + wrongKey.decrypted} secrets undecryptable`)
      expect(wrongKey.decrypted).toBe(0)
      expect(wrongKey.undecryptable.length).toBe(ACCOUNTS.length * 2)
      // and the store refuses to open with it (a clear error, never garbage)
      const opened = yield* Effect.either(
        Effect.flatMap(TokenStore.TokenStore, (tokens) => tokens.loadAll).pipe(
          Effect.provide(store(copyDatabase(db, "wrong-key")).pipe(Layer.provide(Crypto.layerKeys([yield* Crypto.generateKey]))))
        )
      )
      expect(Either.isLeft(opened)).toBe(true)
    }), { timeout: 120_000 })

  // A lost acknowledged write that needs no crash: the crash run above can only meet it by
  // chance, so here it is made to happen. A report that changes a token's standing reads the
  // account's state, then waits for the account's lock to commit `{ ...thatState, rateLimit }`;
  // an update that committed meanwhile is overwritten, in memory and in the database.
  it.live("an acknowledged update is not undone by a rate-limit report that raced it", () =>
    Effect.gen(function*() {
      const lifecycle = yield* Lifecycle.Lifecycle
      const pool = yield* TokenPool.TokenPool
      const store = yield* TokenStore.TokenStore
      const id = accountId("gh-race")
      yield* lifecycle.add(new Account.NewAccount({ id, provider: "github", source: new Account.StaticSource() }), {
        token: Redacted.make("ghp_before_the_update_0000")
      })
      // The update commits slowly (a busy disk): it holds the account's lock until released.
      const commit = yield* makePause
      pauses.commit = commit
      const update = yield* Effect.fork(lifecycle.update(id, Redacted.make("ghp_the_acknowledged_update"), { validate: false }))
      yield* Deferred.await(commit.entered)
      const report = yield* Effect.fork(pool.report("github", {
        accountId: id,
        status: 403,
        headers: { "x-ratelimit-remaining": "0", "x-ratelimit-reset": String(Math.floor(Date.now() / 1000) + 3600) }
      }))
      // the report has read the state and waits for the lock (or, once fixed, may not need to)
      while ((yield* Fiber.status(report))._tag === "Running") yield* Effect.yieldNow()
      yield* Deferred.succeed(commit.release, undefined)
      const updated = yield* Fiber.join(update)
      expect(updated.tokenPreview).toBe("ghp_…date")
      yield* Fiber.join(report)

      const served = yield* lifecycle.get(id)
      const stored = Option.getOrThrow(yield* store.load(id))
      console.log(
        `report vs update: the update was acknowledged; served now ${Token.preview(served.token)}, stored ${
          Option.getOrElse(Option.map(stored.state.token, (record) => Token.preview(record.token)), () => "nothing")
        }`
      )
      expect(Redacted.value(served.token)).toBe("ghp_the_acknowledged_update")
      expect(Option.map(stored.state.token, (record) => Redacted.value(record.token))).toEqual(
        Option.some("ghp_the_acknowledged_update")
      )
    }).pipe(Effect.provide(raceLayer)))

  // The coalesced flush reads each dirty account's state, then writes its rate-limit columns.
  // An update committed in between (its transaction first) clears the limit in memory and in
  // the database, and the flush then writes the old limit back: the service goes on serving
  // the token, but after a restart it is rate-limited again for up to an hour.
  it.live("a rate limit cleared by an acknowledged update stays cleared after a usage flush that read the state before it", () =>
    Effect.gen(function*() {
      const lifecycle = yield* Lifecycle.Lifecycle
      const pool = yield* TokenPool.TokenPool
      const store = yield* TokenStore.TokenStore
      const id = accountId("gh-flush")
      yield* lifecycle.add(new Account.NewAccount({ id, provider: "github", source: new Account.StaticSource() }), {
        token: Redacted.make("ghp_before_the_update_0000")
      })
      const limited = (resetIn: number) => ({
        accountId: id,
        status: 403,
        headers: { "x-ratelimit-remaining": "0", "x-ratelimit-reset": String(Math.floor(Date.now() / 1000) + resetIn) }
      })
      expect((yield* pool.report("github", limited(3600))).status).toBe("rate_limited")
      // a second report only moves the reset: usage, flushed by the next flush, which pauses
      // after it has read the state (as a fiber does when it yields on a busy service)
      const flush = yield* makePause
      pauses.flush = flush
      yield* pool.report("github", limited(3700))
      yield* Deferred.await(flush.entered)
      // the update comes while the flush is writing (it may wait for it, never be undone by it)
      const update = yield* Effect.fork(lifecycle.update(id, Redacted.make("ghp_the_acknowledged_update"), { validate: false }))
      // it has committed, or it waits for the flush
      while ((yield* Fiber.status(update))._tag === "Running") yield* Effect.yieldNow()
      yield* Deferred.succeed(flush.release, undefined)
      yield* Deferred.await(flush.done)
      const updated = yield* Fiber.join(update)
      expect(updated.status).toBe("available")

      const stored = Option.getOrThrow(yield* store.load(id))
      const restarted = Token.status(stored.state, Date.now())
      console.log(
        `flush vs update: the update was acknowledged as ${updated.status}; the service shows ${
          (yield* lifecycle.info(id)).status
        }, the database (what a restart restores) ${restarted}`
      )
      expect(Option.map(stored.state.token, (record) => Redacted.value(record.token))).toEqual(
        Option.some("ghp_the_acknowledged_update")
      )
      expect(restarted).toBe("available")
    }).pipe(Effect.provide(raceLayer)))
})

/** A pause injected into the store: the call says it has begun, then waits for `release`. */
interface Pause {
  readonly entered: Deferred.Deferred<void>
  readonly release: Deferred.Deferred<void>
  readonly done: Deferred.Deferred<void>
}

const makePause = Effect.all({ entered: Deferred.make<void>(), release: Deferred.make<void>(), done: Deferred.make<void>() })

/** When set, the next commit (`saveState`) or usage flush (`saveUsage`) pauses once. */
const pauses: { commit: Pause | undefined; flush: Pause | undefined } = { commit: undefined, flush: undefined }

const paused = <A, E>(which: "commit" | "flush", effect: Effect.Effect<A, E>) =>
  Effect.suspend(() => {
    const pause = pauses[which]
    if (pause === undefined) return effect
    pauses[which] = undefined
    return Deferred.succeed(pause.entered, undefined).pipe(
      Effect.zipRight(Deferred.await(pause.release)),
      Effect.zipRight(effect),
      Effect.ensuring(Deferred.succeed(pause.done, undefined))
    )
  })

/** The lifecycle and pools on an in-memory store whose commits and flushes can be paused. */
const raceLayer = Lifecycle.layer.pipe(
  Layer.provideMerge(Events.layer),
  Layer.provideMerge(
    Source.layerEffect(Effect.map(GitHub.provider({ apiUrl: "http://127.0.0.1:9" }), (github) => ({ sources: [], providers: [github] })))
      .pipe(Layer.provide(NodeHttpClient.layerUndici))
  ),
  Layer.provideMerge(TokenStore.onSqliteFile(
    ":memory:",
    Layer.effect(
      TokenStore.TokenStore,
      Effect.map(TokenStore.make, (store): TokenStore.TokenStoreService => ({
        ...store,
        saveState: (...args) => paused("commit", store.saveState(...args)),
        saveUsage: (...args) => paused("flush", store.saveUsage(...args))
      }))
    )
  )),
  Layer.provideMerge(Crypto.layerRandom),
  Layer.provideMerge(Layer.succeed(Settings.Settings, { ...Settings.Settings.defaultValue(), flushInterval: Duration.millis(20) }))
)
