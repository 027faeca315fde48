import { describe, expect, it } from "@effect/vitest"
import { Account, Events, Lifecycle, TokenStore } from "@tessera/core"
import { Chunk, Effect, Logger, LogLevel, Queue, Redacted, Schema, TestClock } from "effect"
import * as TestUpstream from "./utils/TestUpstream.js"

const PASSWORD = "canary-password-7f3a9c"
const MANUAL = "canary-manual-token-5d1e8b"

describe("events and audit", () => {
  it.scoped("every operation publishes its events and writes exactly the same records to the audit log, with the actor", () =>
    Effect.gen(function*() {
      const upstream = yield* TestUpstream.make()
      yield* upstream.accept(MANUAL)
      yield* Effect.gen(function*() {
        const lifecycle = yield* Lifecycle.Lifecycle
        const events = yield* Events.Events
        const store = yield* TokenStore.TokenStore
        const subscription = yield* events.subscribe
        const seen: Array<string> = []

        yield* Effect.gen(function*() {
          yield* lifecycle.add(TestUpstream.testAccount("acme"))
          const lease = yield* lifecycle.get("acme")
          seen.push(Redacted.value(lease.token))
          yield* lifecycle.refresh("acme")
          yield* lifecycle.update("acme", Redacted.make(MANUAL))
          yield* Effect.flip(lifecycle.update("acme", Redacted.make("canary-rejected-token-0000")))
          yield* lifecycle.validate("acme")
          yield* lifecycle.clear("acme")
          yield* lifecycle.remove("acme")
          yield* lifecycle.add(
            new Account.NewAccount({
              id: TestUpstream.accountId("pw"),
              provider: "amp",
              source: new Account.PasswordSource({ baseUrl: "http://127.0.0.1:9", username: "u", password: Redacted.make(PASSWORD) })
            })
          )
        }).pipe(Events.withActor("alice"))

        const published = Chunk.toReadonlyArray(yield* Queue.takeAll(subscription))
        const audit = [...(yield* store.audit({ limit: 1000 }))].reverse()
        expect(published.map((e) => e.type)).toEqual([
          "account_added", "obtained", "refreshed", "updated", "updated", "validated", "cleared", "account_removed", "account_added"
        ])
        expect(published.find((e) => e.type === "updated" && e.outcome === "failure")).toBeDefined()
        expect(audit.map(({ id: _, ...rest }) => rest)).toEqual(published.map((e) => ({ ...e })))
        expect(new Set(audit.map((e) => e.actor))).toEqual(new Set(["alice"]))

        const everything = JSON.stringify([published, audit, yield* lifecycle.list])
        for (const secret of [...seen, MANUAL, PASSWORD, "canary-rejected-token-0000"]) {
          expect(everything).not.toContain(secret)
        }
        for (const event of published) expect(Schema.is(Events.TokenEvent)(event)).toBe(true)
      }).pipe(Effect.provide(TestUpstream.layer(upstream)))
    }))

  it.scoped("the scheduler acts as 'scheduler' and a library caller as 'library'", () =>
    Effect.gen(function*() {
      const upstream = yield* TestUpstream.make()
      yield* Effect.gen(function*() {
        const lifecycle = yield* Lifecycle.Lifecycle
        const store = yield* TokenStore.TokenStore
        yield* lifecycle.add(TestUpstream.testAccount("acme"), { token: Redacted.make("manual-token-0001-abcdef"), expiresAt: 60_000 })
        yield* TestClock.adjust("1 second")
        yield* Effect.repeatN(Effect.yieldNow(), 50)
        const audit = yield* store.audit({})
        expect(audit.map((e) => [e.type, e.actor])).toEqual([["refreshed", "scheduler"], ["account_added", "library"]])
      }).pipe(Effect.provide(TestUpstream.layer(upstream)))
    }))

  it.live("the logged hub logs every event, hand-outs only at debug level", () =>
    Effect.gen(function*() {
      const lines: Array<string> = []
      const logger = Logger.make(({ logLevel, message }) => {
        lines.push(`${logLevel.label} ${Array.isArray(message) ? message.join(" ") : String(message)}`)
      })
      const publishBoth = Effect.gen(function*() {
        const events = yield* Events.Events
        const id = Schema.decodeSync(Account.AccountId)("gh-1")
        yield* events.publish(yield* Events.make({ type: "acquired", accountId: id, detail: "token handed out" }))
        yield* events.publish(yield* Events.make({ type: "refreshed", accountId: id }))
        yield* Effect.sleep("50 millis")
      })
      const run = (level: LogLevel.LogLevel) =>
        Effect.scoped(publishBoth.pipe(
          Effect.provide(Events.layerLogged),
          Effect.provide(Logger.replace(Logger.defaultLogger, logger)),
          Logger.withMinimumLogLevel(level)
        ))
      yield* run(LogLevel.Info)
      expect(lines).toEqual(["INFO refreshed gh-1 success (by library)"])
      lines.length = 0
      yield* run(LogLevel.Debug)
      expect(lines).toEqual(["DEBUG acquired gh-1 success: token handed out (by library)", "INFO refreshed gh-1 success (by library)"])
    }))

  it.scoped("a burst larger than a subscriber's backlog (a busy pool's flush) reaches a subscriber that keeps up whole", () =>
    Effect.gen(function*() {
      const events = yield* Events.Events
      const subscription = yield* events.subscribe
      let seen = 0
      yield* Queue.takeBetween(subscription, 1, Number.MAX_SAFE_INTEGER).pipe(
        Effect.tap((batch) => Effect.sync(() => (seen += Chunk.size(batch)))),
        Effect.forever,
        Effect.forkScoped
      )
      const burst = Array.from({ length: 20_000 }, (_, i) =>
        new Events.TokenEvent({ type: "acquired", accountId: `p${i % 100}`, at: i, actor: "bench", outcome: "success", detail: "", data: {} }))
      yield* events.publishAll(burst)
      yield* Effect.repeatN(Effect.yieldNow(), 10)
      expect(seen).toBe(20_000)
    }).pipe(Effect.provide(Events.layer)))
})
