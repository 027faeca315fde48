/**
 * A tiny real HTTP server on 127.0.0.1 that answers from a script: for testing the retry
 * policy against real sockets. The product's integration tests use the richer fakes in
 * the repository's `test/fakes`.
 */
import { Effect } from "effect"
import * as http from "node:http"
import type { AddressInfo } from "node:net"

export type Reply =
  | { readonly status: number; readonly body?: unknown; readonly headers?: Record<string, string> }
  | "hang"
  | "reset"

export interface ScriptedServer {
  readonly url: string
  readonly calls: () => number
  readonly times: () => ReadonlyArray<number>
}

/** Serves `script` in order, then repeats its last reply. `now` stamps each arrival. */
export const make = (script: ReadonlyArray<Reply>, now: () => number = Date.now) =>
  Effect.acquireRelease(
    Effect.async<{ server: http.Server; state: { calls: number; times: Array<number> } }>((resume) => {
      const state = { calls: 0, times: [] as Array<number> }
      const server = http.createServer((req, res) => {
        const reply = script[Math.min(state.calls, script.length - 1)]!
        state.calls++
        state.times.push(now())
        req.resume()
        if (reply === "hang") return
        if (reply === "reset") return void req.socket.destroy()
        res.writeHead(reply.status, { "content-type": "application/json", ...reply.headers })
        res.end(reply.body === undefined ? "" : typeof reply.body === "string" ? reply.body : JSON.stringify(reply.body))
      })
      server.listen(0, "127.0.0.1", () => resume(Effect.succeed({ server, state })))
    }),
    ({ server }) =>
      Effect.async<void>((resume) => {
        server.closeAllConnections()
        server.close(() => resume(Effect.void))
      })
  ).pipe(
    Effect.map(({ server, state }): ScriptedServer => ({
      url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
      calls: () => state.calls,
      times: () => state.times
    }))
  )

/** Waits (in real time) until `condition` holds: for I/O that TestClock does not drive. */
export const waitUntil = (condition: () => boolean, timeoutMs = 5000) =>
  Effect.promise(() =>
    new Promise<void>((resolve, reject) => {
      const started = Date.now()
      const poll = () => {
        if (condition()) return resolve()
        if (Date.now() - started > timeoutMs) return reject(new Error("condition not met in time"))
        setTimeout(poll, 2)
      }
      poll()
    })
  )

/** One turn of the event loop, so that I/O already under way (a loopback answer) is read. */
const eventLoopTurn = Effect.async<void>((resume) => {
  const handle = setImmediate(() => resume(Effect.void))
  return Effect.sync(() => clearImmediate(handle))
})

/** Lets forked fibers run up to their next wait, the event loop turning between their steps. */
export const settle = Effect.repeatN(Effect.zipRight(Effect.repeatN(Effect.yieldNow(), 10), eventLoopTurn), 10)
