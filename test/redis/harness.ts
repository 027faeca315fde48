/**
 * What the Redis mirror's tests share: the machine's Redis on 127.0.0.1:6379 (each test file
 * on a database of its own, emptied before each test), whether it is there at all (absent,
 * the tests skip with a message, unless `TESSERA_REQUIRE_SERVICES=1` makes that a failure),
 * a consumer's own connection, and a TCP proxy in front of Redis that a test can stall, close
 * and reopen to make an outage without touching the real server.
 */
import { describe, it } from "@effect/vitest"
import { Effect } from "effect"
import type { Scope } from "effect"
import { Redis } from "ioredis"
import * as net from "node:net"

export const REDIS_HOST = "127.0.0.1"
export const REDIS_PORT = 6379

export const url = (db: number, port = REDIS_PORT) => `redis://${REDIS_HOST}:${port}/${db}`

/** Whether a Redis server answers PING on 127.0.0.1:6379 (within a couple of seconds). */
export const probe = async (): Promise<boolean> => {
  const client = new Redis(url(0), { lazyConnect: true, enableOfflineQueue: false, retryStrategy: () => null, connectTimeout: 2000 })
  client.on("error", () => {})
  try {
    await client.connect()
    return (await client.ping()) === "PONG"
  } catch {
    return false
  } finally {
    client.disconnect()
  }
}

const required = process.env["TESSERA_REQUIRE_SERVICES"] === "1"

/**
 * What stands for a file's tests when there is no Redis: a skipped test saying why, or, with
 * `TESSERA_REQUIRE_SERVICES=1`, a failing one.
 */
export const describeWithoutRedis = (name: string) => {
  const absent = `no Redis answers on ${REDIS_HOST}:${REDIS_PORT}`
  if (!required) console.warn(`${absent}: the Redis mirror tests are skipped (TESSERA_REQUIRE_SERVICES=1 makes that a failure, as in CI)`)
  describe(name, () => {
    if (required) {
      it("needs Redis on 127.0.0.1:6379 (TESSERA_REQUIRE_SERVICES=1)", () => {
        throw new Error(`${absent}, and TESSERA_REQUIRE_SERVICES=1 requires it`)
      })
    } else {
      it.skip(`${absent}: skipped (TESSERA_REQUIRE_SERVICES=1 makes that a failure)`, () => {})
    }
  })
}

/** A consumer's connection to database `db`, emptied first; closed with the scope. */
export const consumer = (db: number): Effect.Effect<Redis, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.promise(async () => {
      const client = new Redis(url(db))
      client.on("error", () => {})
      await client.flushdb()
      return client
    }),
    (client) => Effect.promise(() => client.quit().catch(() => ""))
  )

export interface Proxy {
  readonly port: number
  readonly url: (db: number) => string
  /** Connections stay open but nothing passes either way (a hung Redis); `open` lets it through. */
  readonly stall: () => void
  /** Stops listening and cuts every connection: Redis is unreachable. */
  readonly close: Effect.Effect<void>
  /** Listens again on the same port and lets everything through. */
  readonly open: Effect.Effect<void>
  readonly connections: () => number
}

/** A TCP proxy on 127.0.0.1 (a port of its own) to the machine's Redis. */
export const proxy: Effect.Effect<Proxy, never, Scope.Scope> = Effect.gen(function*() {
  const sockets = new Set<net.Socket>()
  let stalled = false
  let accepted = 0
  const server = net.createServer((client) => {
    accepted++
    const upstream = net.connect(REDIS_PORT, REDIS_HOST)
    sockets.add(client)
    sockets.add(upstream)
    const cut = () => {
      client.destroy()
      upstream.destroy()
      sockets.delete(client)
      sockets.delete(upstream)
    }
    client.pipe(upstream)
    upstream.pipe(client)
    if (stalled) client.pause()
    client.on("error", cut)
    upstream.on("error", cut)
    client.on("close", cut)
    upstream.on("close", cut)
  })
  const listen = (port: number) =>
    Effect.async<number>((resume) => {
      server.listen(port, REDIS_HOST, () => resume(Effect.succeed((server.address() as net.AddressInfo).port)))
    })
  const port = yield* listen(0)
  const close = Effect.async<void>((resume) => {
    for (const socket of sockets) socket.destroy()
    sockets.clear()
    if (!server.listening) return resume(Effect.void)
    server.close(() => resume(Effect.void))
  })
  yield* Effect.addFinalizer(() => close)
  return {
    port,
    url: (db) => url(db, port),
    stall: () => {
      stalled = true
      for (const socket of sockets) socket.pause()
    },
    close,
    open: Effect.suspend(() => {
      stalled = false
      for (const socket of sockets) socket.resume()
      return server.listening ? Effect.void : Effect.asVoid(listen(port))
    }),
    connections: () => accepted
  }
})

/** Polls `check` in real time until it holds; fails with `what` after `timeoutMs`. */
export const eventually = <A>(
  what: string,
  check: () => Promise<A | undefined>,
  timeoutMs = 10_000
): Effect.Effect<A> =>
  Effect.promise(async () => {
    const started = Date.now()
    let last: A | undefined
    while (Date.now() - started < timeoutMs) {
      last = await check()
      if (last !== undefined) return last
      await new Promise((resolve) => setTimeout(resolve, 5))
    }
    throw new Error(`not seen within ${timeoutMs} ms: ${what}`)
  })
