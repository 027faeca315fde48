/**
 * Issue 7, scale-out: three `tessera serve` processes on 127.0.0.1 sharing one fresh
 * PostgreSQL database.
 * - 50 OAuth2 accounts whose tokens expire at one instant, against a token endpoint that
 *   rotates refresh tokens and revokes the grant on reuse, while 1,000 concurrent clients ask
 *   the three instances for those tokens and for leases of a 20-token GitHub pool: exactly 50
 *   upstream refreshes, no reuse, every answer 200, and pool acquires spread over the tokens as
 *   evenly as one instance would spread them (least recently used across all instances).
 * - A token limited on one instance is never handed out by another; every instance's
 *   `/events` shows another instance's events.
 * - The instance holding a refresh lease is SIGKILLed while upstream: another instance
 *   completes the refresh within the lease time.
 */
import { SqlClient } from "@effect/sql"
import { expect, it } from "@effect/vitest"
import { Effect, Fiber } from "effect"
import { GitHub, OAuth2 } from "../fakes/index.js"
import { call, registerOAuth as registerOAuthAccounts, requireBuild, serve } from "../e2e/harness.js"
import type { Running } from "../e2e/harness.js"
import { tempDir, waitUntil } from "../lifecycle/harness.js"
import * as Postgres from "../postgres.js"
import { openStream, streamEvents } from "../server/harness.js"

const ACCOUNTS = 50
const CLIENTS = 1_000
const POOL = 20
const ADMIN_KEY = "cluster-admin-key-0123456789abcdef"
const CLIENT_ID = "tessera-cluster"
const CLIENT_SECRET = "cluster-client-secret-0123456789"
const KEY = Buffer.alloc(32, 11).toString("base64")
const GH_TOKENS = Array.from({ length: POOL }, (_, i) => `ghp_cluster_${String(i).padStart(24, "0")}`)
/** Registered tokens expire this long after registration: due 60 s before, after every instance has started. */
const EXPIRY_S = 95

const id = (i: number) => `oauth-${String(i).padStart(2, "0")}`

const available = await Postgres.probe()

/** Three instances on one database, the first started (and given the accounts) before the others. */
const cluster = (database: string, extra: Record<string, string>, setup: (url: string) => Effect.Effect<void>) =>
  Effect.gen(function*() {
    const cwd = yield* tempDir
    const env = (name: string) => ({
      TESSERA_DATABASE_URL: database,
      TESSERA_ENCRYPTION_KEY: KEY,
      TESSERA_API_KEYS: `ops:admin:${ADMIN_KEY}`,
      TESSERA_INSTANCE_ID: name,
      TESSERA_REFRESH_WINDOW: "10s",
      TESSERA_FLUSH_INTERVAL: "200ms",
      ...extra
    })
    const first = yield* serve(cwd, env("i1"))
    const firstUrl = yield* first.url
    yield* setup(firstUrl)
    const others = yield* Effect.all([serve(cwd, env("i2")), serve(cwd, env("i3"))])
    const urls = [firstUrl, ...(yield* Effect.all(others.map((other) => other.url)))]
    return { instances: [first, ...others] as ReadonlyArray<Running>, urls }
  })

const registerOAuth = (url: string, oauth: OAuth2.OAuth2Server, count: number, expiresAt: string) =>
  registerOAuthAccounts(url, {
    key: ADMIN_KEY,
    oauth,
    clientId: CLIENT_ID,
    clientSecret: CLIENT_SECRET,
    id,
    count,
    expiresAt,
    concurrency: 10
  })

Postgres.describeWithPostgres("three instances on one PostgreSQL database", available, () => {
  it.scopedLive(
    `${ACCOUNTS} synchronized expiries refresh exactly once under ${CLIENTS} concurrent clients; acquires spread as one instance would`,
    () =>
      Effect.gen(function*() {
        yield* requireBuild
        const database = yield* Postgres.freshDatabase
        const oauth = yield* OAuth2.make({ clients: { [CLIENT_ID]: CLIENT_SECRET } })
        const github = yield* GitHub.make()
        for (const token of GH_TOKENS) github.addToken(token)
        const expiresAt = new Date(Date.now() + EXPIRY_S * 1000).toISOString()
        const { urls } = yield* cluster(
          database,
          { GITHUB_TOKENS: GH_TOKENS.join(","), GITHUB_API_URL: github.url },
          (url) => registerOAuth(url, oauth, ACCOUNTS, expiresAt)
        )
        for (const url of urls) expect((yield* call(url, "GET", "/health")).json?.accounts).toBe(ACCOUNTS + POOL)
        expect(oauth.refreshes()).toBe(0)

        // 1,000 clients, each on its own connection to one of the three, until the expiries are done
        const answers = new Map<number, number>()
        const acquired = new Map<string, number>()
        const resent = { count: 0 }
        let stop = false
        const client = (n: number) =>
          Effect.gen(function*() {
            for (let i = n; !stop; i += CLIENTS) {
              const url = urls[i % 3]!
              const acquire = i % 2 === 0
              const answer = acquire
                ? yield* call(url, "POST", "/pools/github/acquire", { key: ADMIN_KEY, resent })
                : yield* call(url, "GET", `/accounts/${id(i % ACCOUNTS)}/token`, { key: ADMIN_KEY, resent })
              answers.set(answer.status, (answers.get(answer.status) ?? 0) + 1)
              if (answer.status !== 200) console.log(`client got ${answer.status}: ${answer.text.slice(0, 300)}`)
              else if (acquire) acquired.set(answer.json.account_id, (acquired.get(answer.json.account_id) ?? 0) + 1)
              // a client's think time between requests: 1,000 of them keep ~2,000 requests a second coming
              yield* Effect.sleep(`${250 + ((i * 7919) % 500)} millis`)
            }
          })
        const clients = yield* Effect.forkScoped(
          Effect.forEach(Array.from({ length: CLIENTS }, (_, n) => n), client, { concurrency: "unbounded", discard: true })
        )
        const started = Date.now()
        yield* waitUntil(() => oauth.refreshes() >= ACCOUNTS || oauth.reuseRevocations() > 0, 150_000)
        yield* Effect.sleep("3 seconds")
        stop = true
        yield* Fiber.join(clients)

        // every instance now serves each account's one live token
        let live = 0
        let same = 0
        for (let i = 0; i < ACCOUNTS; i++) {
          const tokens = yield* Effect.forEach(urls, (url) =>
            Effect.map(call(url, "GET", `/accounts/${id(i)}/token`, { key: ADMIN_KEY }), (answer) => answer.json?.access_token as string))
          if (tokens.every((token) => oauth.isValidAccessToken(token))) live++
          if (new Set(tokens).size === 1) same++
        }
        const counts = GH_TOKENS.map((_, i) => [...acquired.values()][i] ?? 0)
        const total = counts.reduce((a, b) => a + b, 0)
        const spread = Math.max(...counts) - Math.min(...counts)
        const failed = [...answers].filter(([status]) => status !== 200).reduce((n, [, count]) => n + count, 0)
        console.log(
          `cluster: 3 instances, ${CLIENTS} clients, ${ACCOUNTS} synchronized expiries -> ${oauth.refreshes()} upstream refreshes ` +
            `(${((Date.now() - started) / 1000).toFixed(1)} s), ${oauth.reuseRevocations()} reuse revocations; ` +
            `${answers.get(200) ?? 0} answers 200, ${failed} not (${resent.count} sent again after a reset idle connection); ${live}/${ACCOUNTS} live and ${same}/${ACCOUNTS} the same on all three; ` +
            `${total} acquires over ${acquired.size}/${POOL} tokens, ${Math.min(...counts)}–${Math.max(...counts)} each (spread ${spread})`
        )
        expect(oauth.refreshes()).toBe(ACCOUNTS)
        expect(oauth.reuseRevocations()).toBe(0)
        expect(failed).toBe(0)
        expect(live).toBe(ACCOUNTS)
        expect(same).toBe(ACCOUNTS)
        expect(acquired.size).toBe(POOL)
        // strict least-recently-used over the three: no token more than a couple of turns ahead
        expect(spread).toBeLessThanOrEqual(3)
      }),
    300_000
  )

  it.scopedLive("a token limited on one instance is never handed out by another, and each instance's /events shows the others' events", () =>
    Effect.gen(function*() {
      yield* requireBuild
      const database = yield* Postgres.freshDatabase
      const github = yield* GitHub.make()
      for (const token of GH_TOKENS.slice(0, 3)) github.addToken(token)
      const { urls } = yield* cluster(
        database,
        { GITHUB_TOKENS: GH_TOKENS.slice(0, 3).join(","), GITHUB_API_URL: github.url },
        () => Effect.void
      )
      const streams = yield* Effect.forEach(urls.slice(1), (url) => openStream({ url }, "/events", ADMIN_KEY))
      const lease = yield* call(urls[0]!, "POST", "/pools/github/acquire", { key: ADMIN_KEY })
      const limitedId = lease.json.account_id as string
      const reset = Math.floor(Date.now() / 1000) + 3600
      const report = yield* call(urls[0]!, "POST", "/pools/github/report", {
        key: ADMIN_KEY,
        body: { account_id: limitedId, status: 403, headers: { "x-ratelimit-remaining": "0", "x-ratelimit-limit": "5000", "x-ratelimit-reset": String(reset) } }
      })
      expect(report.status, report.text).toBe(200)
      // at once, on the other instances: 60 acquires never return the limited token
      const handedOut = new Map<string, number>()
      for (let i = 0; i < 60; i++) {
        const answer = yield* call(urls[1 + (i % 2)]!, "POST", "/pools/github/acquire", { key: ADMIN_KEY })
        expect(answer.status, answer.text).toBe(200)
        handedOut.set(answer.json.account_id, (handedOut.get(answer.json.account_id) ?? 0) + 1)
      }
      yield* waitUntil(() => streams.every((stream) => streamEvents(stream.received()).some((e) => e.type === "rate_limited" && e.account_id === limitedId)), 10_000)
      const summaries = yield* Effect.forEach(urls, (url) => Effect.map(call(url, "GET", "/pools", { key: ADMIN_KEY }), (answer) => answer.json))
      console.log(
        `cluster: token limited on instance 1; instances 2 and 3 handed out ${[...handedOut].map(([k, v]) => `${k}×${v}`).join(", ")}; ` +
          `rate_limited event seen on ${streams.length}/${streams.length} other instances' /events`
      )
      expect(handedOut.has(limitedId)).toBe(false)
      for (const summary of summaries) expect(summary[0].rate_limited).toBe(1)
    }), 120_000)

  it.scopedLive("the instance holding a refresh lease is killed while upstream: another completes the refresh within the lease time", () =>
    Effect.gen(function*() {
      yield* requireBuild
      const database = yield* Postgres.freshDatabase
      const oauth = yield* OAuth2.make({ clients: { [CLIENT_ID]: CLIENT_SECRET } })
      const LEASE_S = 5
      // the first refresh request is never answered: its sender holds the lease, stuck upstream
      oauth.failNext("token", "timeout")
      const expiresAt = new Date(Date.now() + 75 * 1000).toISOString()
      const { instances, urls } = yield* cluster(
        database,
        { TESSERA_LEASE_TTL: `${LEASE_S}s`, API_REQUEST_TIMEOUT_MS: "120000" },
        (url) => registerOAuth(url, oauth, 1, expiresAt)
      )
      const holder = yield* Effect.scoped(Effect.provide(
        Effect.gen(function*() {
          const sql = yield* SqlClient.SqlClient
          for (;;) {
            const rows = yield* sql<{ owner: string }>`SELECT owner FROM refresh_leases`
            if (rows.length > 0 && oauth.calls("token") > 0) return rows[0]!.owner
            yield* Effect.sleep("100 millis")
          }
        }).pipe(Effect.orDie, Effect.timeout("60 seconds"), Effect.orDie),
        Postgres.client(database)
      ))
      const index = Number(/^i(\d)\//.exec(holder)?.[1]) - 1
      expect(index).toBeGreaterThanOrEqual(0)
      yield* instances[index]!.stop("SIGKILL")
      const killedAt = Date.now()
      yield* waitUntil(() => oauth.refreshes() >= 1, 60_000)
      const tookMs = Date.now() - killedAt
      const survivors = urls.filter((_, i) => i !== index)
      const tokens = yield* Effect.forEach(survivors, (url) =>
        Effect.map(call(url, "GET", `/accounts/${id(0)}/token`, { key: ADMIN_KEY }), (answer) => answer.json?.access_token as string))
      console.log(
        `cluster: lease holder ${holder} killed while upstream; the refresh completed on another instance ${(tookMs / 1000).toFixed(1)} s later ` +
          `(lease ${LEASE_S} s); ${oauth.refreshes()} refresh, ${oauth.reuseRevocations()} reuse revocations`
      )
      expect(tookMs).toBeLessThanOrEqual(LEASE_S * 1000 + 2_000)
      expect(oauth.refreshes()).toBe(1)
      expect(oauth.reuseRevocations()).toBe(0)
      for (const token of tokens) expect(oauth.isValidAccessToken(token)).toBe(true)
    }), 180_000)
})
