/**
 * Issue 6 §6, concurrency: two `tessera serve` processes on one SQLite file, 200 OAuth2
 * accounts whose tokens expire together, against a token endpoint that rotates refresh tokens
 * and revokes the whole grant when a used one comes back. Both processes schedule the same 200
 * refreshes at the same moment and clients ask both for the tokens meanwhile; the refresh
 * leases in the database must make it exactly 200 upstream refreshes, with no reuse, no
 * `SQLITE_BUSY` reaching anyone, and both processes serving the same live tokens afterwards.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber } from "effect"
import { OAuth2 } from "../fakes/index.js"
import { tempDir, waitUntil } from "../lifecycle/harness.js"
import { call, registerOAuth, requireBuild, serve } from "../e2e/harness.js"

const ACCOUNTS = 200
const CLIENTS = 8
const ADMIN_KEY = "concurrency-admin-key-0123456789"
const CLIENT_ID = "tessera-concurrency"
const CLIENT_SECRET = "concurrency-client-secret-0123456789"
/**
 * The registered tokens expire this long after the test starts, and are due for refresh 60 s
 * (the hand-out margin) before: time enough to register them and start the second process
 * on this busy 2-core machine.
 */
const SYNCHRONIZED_EXPIRY_S = 100

const id = (i: number) => `oauth-${String(i).padStart(3, "0")}`

describe("two processes on one database", () => {
  it.scopedLive(
    `refresh ${ACCOUNTS} synchronized expiries exactly once between them, with no reuse and no SQLITE_BUSY`,
    () =>
      Effect.gen(function*() {
        yield* requireBuild
        const cwd = yield* tempDir
        const oauth = yield* OAuth2.make({ clients: { [CLIENT_ID]: CLIENT_SECRET } })
        const env = {
          TESSERA_DB: `${cwd}/shared.db`,
          TESSERA_ENCRYPTION_KEY: Buffer.alloc(32, 7).toString("base64"),
          TESSERA_API_KEYS: `ops:admin:${ADMIN_KEY}`,
          TESSERA_REFRESH_WINDOW: "10s",
          TESSERA_FLUSH_INTERVAL: "200ms"
        }

        const a = yield* serve(cwd, env)
        const urlA = yield* a.url
        // Every account is registered with a token that expires at the same instant: both
        // processes will schedule its refresh for that instant minus 60 s.
        const expiresAt = new Date(Date.now() + SYNCHRONIZED_EXPIRY_S * 1000).toISOString()
        yield* registerOAuth(urlA, {
          key: ADMIN_KEY,
          oauth,
          clientId: CLIENT_ID,
          clientSecret: CLIENT_SECRET,
          id,
          count: ACCOUNTS,
          expiresAt,
          concurrency: 16
        })
        const setup = oauth.refreshes()
        expect(setup).toBe(0)

        const b = yield* serve(cwd, env)
        const urlB = yield* b.url
        expect((yield* call(urlB, "GET", "/health")).json?.accounts).toBe(ACCOUNTS)

        expect(oauth.refreshes()).toBe(0)
        // Clients ask both processes for tokens while the expiries come due.
        const answers = new Map<number, number>()
        let stop = false
        const client = (n: number) =>
          Effect.gen(function*() {
            let i = n
            while (!stop) {
              const url = i % 2 === 0 ? urlA : urlB
              const answer = yield* call(url, "GET", `/accounts/${id((i * 37) % ACCOUNTS)}/token`, { key: ADMIN_KEY })
              answers.set(answer.status, (answers.get(answer.status) ?? 0) + 1)
              if (answer.status !== 200) console.log(`client got ${answer.status}: ${answer.text}`)
              i += CLIENTS
            }
          })
        const clients = yield* Effect.forkScoped(Effect.forEach(Array.from({ length: CLIENTS }, (_, n) => n), client, { concurrency: "unbounded" }))

        const started = Date.now()
        yield* waitUntil(() => oauth.refreshes() - setup >= ACCOUNTS || oauth.reuseRevocations() > 0, 120_000)
        // Give a second refresh of any account (the failure we look for) time to happen.
        yield* Effect.sleep("3 seconds")
        stop = true
        yield* Fiber.join(clients)

        const refreshes = oauth.refreshes() - setup
        const served = answers.get(200) ?? 0
        const failed = [...answers].filter(([status]) => status !== 200).reduce((n, [, count]) => n + count, 0)

        // Both processes now serve every account's one live token.
        const tokenOf = (url: string, i: number) =>
          Effect.map(call(url, "GET", `/accounts/${id(i)}/token`, { key: ADMIN_KEY }), (answer) => answer.json?.access_token as string)
        let same = 0
        let live = 0
        for (let i = 0; i < ACCOUNTS; i++) {
          const [fromA, fromB] = yield* Effect.all([tokenOf(urlA, i), tokenOf(urlB, i)])
          if (fromA === fromB) same++
          if (oauth.isValidAccessToken(fromA) && oauth.isValidAccessToken(fromB)) live++
        }
        const busy = (a.output() + b.output()).match(/SQLITE_BUSY|database is locked/g)?.length ?? 0

        console.log(
          `concurrency: 2 processes, ${ACCOUNTS} synchronized expiries -> ${refreshes} upstream refreshes ` +
            `(${((Date.now() - started) / 1000).toFixed(1)} s), ${oauth.reuseRevocations()} reuse revocations, ` +
            `${served} client answers 200 and ${failed} not, ${busy} SQLITE_BUSY in the logs, ` +
            `${same}/${ACCOUNTS} accounts with one token in both processes, ${live}/${ACCOUNTS} live upstream`
        )
        expect(refreshes).toBe(ACCOUNTS)
        expect(oauth.reuseRevocations()).toBe(0)
        expect(failed).toBe(0)
        expect(served).toBeGreaterThan(0)
        expect(busy).toBe(0)
        expect(same).toBe(ACCOUNTS)
        expect(live).toBe(ACCOUNTS)
      }),
    180_000
  )
})
