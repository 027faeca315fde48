/**
 * A lifecycle wired with the real sources and providers, talking over real HTTP to fake
 * upstreams on 127.0.0.1, on an in-memory or file database.
 */
import { NodeHttpClient } from "@effect/platform-node"
import { Account, Crypto, Events, Lifecycle, Source, TokenStore } from "@tessera/core"
import { Amp, Upstox } from "@tessera/providers"
import { Effect, Layer, Schema } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"

export const accountId = Schema.decodeSync(Account.AccountId)

export interface Upstreams {
  readonly ampUrl?: string
  readonly authUrl?: string
  readonly upstoxUrl?: string
}

export const drivers = (upstreams: Upstreams) =>
  Source.layerEffect(Effect.gen(function*() {
    return {
      sources: [
        yield* Amp.passwordSource({ defaultBaseUrl: upstreams.ampUrl }),
        yield* Upstox.remoteSource({ defaultServiceUrl: upstreams.authUrl })
      ],
      providers: [yield* Upstox.provider({ apiUrl: upstreams.upstoxUrl })]
    }
  })).pipe(Layer.provide(NodeHttpClient.layerUndici))

export const layer = (
  upstreams: Upstreams,
  store: { readonly filename?: string; readonly key?: Crypto.EncryptionKey } = {}
) =>
  Lifecycle.layer.pipe(
    Layer.provideMerge(Events.layer),
    Layer.provideMerge(drivers(upstreams)),
    Layer.provideMerge(store.filename === undefined ? TokenStore.layerMemory : TokenStore.layerSqlite(store.filename)),
    Layer.provideMerge(store.key === undefined ? Crypto.layerRandom : Crypto.layerKeys([store.key]))
  )

/** What the harness layer provides to a test. */
export type Services = Lifecycle.Lifecycle | Events.Events | TokenStore.TokenStore | Crypto.Keyring | Source.Drivers

export const tempDir = Effect.acquireRelease(
  Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "tessera-it-"))),
  (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
)

/** One turn of the event loop, so that I/O already under way (a loopback answer) is read. */
const eventLoopTurn = Effect.async<void>((resume) => {
  const handle = setImmediate(() => resume(Effect.void))
  return Effect.sync(() => clearImmediate(handle))
})

/**
 * Lets forked fibers run up to their next wait, the event loop turning between their steps:
 * a fake's answer that left before the test went on is read, so a retry's sleep is on the
 * TestClock before the test moves it.
 */
export const settle = Effect.repeatN(Effect.zipRight(Effect.repeatN(Effect.yieldNow(), 10), eventLoopTurn), 10)

/** Waits in real time for I/O that TestClock does not drive. */
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
