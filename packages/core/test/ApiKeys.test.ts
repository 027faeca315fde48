import { describe, expect, it } from "@effect/vitest"
import { ApiKeys, Crypto, TokenStore } from "@tessera/core"
import { ConfigProvider, Context, Effect, Either, Layer, Option, Redacted, Schema, TestClock } from "effect"
import * as crypto from "node:crypto"
import { apiKeysLayer, describeEachDatabase } from "./utils/databases.js"
import type { TestDatabase } from "./utils/databases.js"

const name = Schema.decodeSync(ApiKeys.ApiKeyName)
const SECRET = "ci-secret-0123456789-abcdef"

const withKeys = <A, E>(layer: Layer.Layer<ApiKeys.ApiKeys, unknown>, body: (keys: ApiKeys.ApiKeysService) => Effect.Effect<A, E>) =>
  Effect.scoped(Effect.flatMap(ApiKeys.ApiKeys, body).pipe(Effect.provide(layer)))

const keysOn = (db: TestDatabase, key: Crypto.EncryptionKey) => apiKeysLayer(db.database, [key])

describeEachDatabase("ApiKeys", (backend) => {
  /** `body` with the keys of a fresh database. */
  const fresh = <A, E>(body: (keys: ApiKeys.ApiKeysService) => Effect.Effect<A, E>) =>
    Effect.scoped(Effect.gen(function*() {
      const db = yield* backend.fresh
      return yield* withKeys(keysOn(db, yield* Crypto.generateKey), body)
    }))

  it.effect("creates a tsr_ key shown once, verifies it, and never lists the secret", () =>
    fresh((keys) =>
      Effect.gen(function*() {
        expect(yield* keys.hasActive).toBe(false)
        const created = yield* keys.create(name("deploy"), ["read", "token"])
        const secret = Redacted.value(created.secret)
        expect(secret.startsWith("tsr_")).toBe(true)
        expect(secret.length).toBeGreaterThanOrEqual(40)
        expect(created.key.scopes).toEqual(["read", "token"])
        expect(yield* keys.hasActive).toBe(true)

        const verified = yield* keys.verify(created.secret)
        expect(Option.map(verified, (key) => key.name)).toEqual(Option.some("deploy"))
        expect(Option.isNone(yield* keys.verify(Redacted.make(`${secret}x`)))).toBe(true)
        expect(Option.isNone(yield* keys.verify(Redacted.make("")))).toBe(true)

        const listed = yield* keys.list
        expect(listed.map((key) => key.name)).toEqual(["deploy"])
        expect(JSON.stringify(listed)).not.toContain(secret)
      })))

  it.scoped("a key revoked by another process sharing the database stops verifying within a second; one revoked here at once", () =>
    Effect.gen(function*() {
      const db = yield* backend.fresh
      const key = yield* Crypto.generateKey
      const here = Context.get(yield* Layer.build(keysOn(db, key)), ApiKeys.ApiKeys)
      const elsewhere = Context.get(yield* Layer.build(keysOn(db, key)), ApiKeys.ApiKeys)
      const ops = yield* here.create(name("ops"), ["admin"])
      const ci = yield* here.create(name("ci"), ["read"])
      expect(Option.isSome(yield* here.verify(ops.secret))).toBe(true)
      yield* elsewhere.revoke("ops")
      // read less than a second ago: still the keys as they were
      yield* TestClock.adjust(ApiKeys.ACTIVE_KEYS_TTL_MS - 1)
      expect(Option.isSome(yield* here.verify(ops.secret))).toBe(true)
      yield* TestClock.adjust(1)
      expect(Option.isNone(yield* here.verify(ops.secret))).toBe(true)
      yield* here.revoke("ci")
      expect(Option.isNone(yield* here.verify(ci.secret))).toBe(true)
      expect(yield* here.hasActive).toBe(false)
    }))

  it.effect("refuses a second active key of the same name, and short or reused secrets", () =>
    fresh((keys) =>
      Effect.gen(function*() {
        yield* keys.create(name("ops"), ["admin"], Redacted.make(SECRET))
        const twice = yield* Effect.flip(keys.create(name("ops"), ["read"]))
        expect(twice._tag).toBe("ApiKeyExists")
        const short = yield* Effect.flip(keys.create(name("short"), ["read"], Redacted.make("tiny")))
        expect(short._tag).toBe("InvalidApiKey")
        expect(short.message).not.toContain("tiny")
        const reused = yield* Effect.flip(keys.create(name("other"), ["read"], Redacted.make(SECRET)))
        expect(reused._tag).toBe("InvalidApiKey")
        expect(reused.message).not.toContain(SECRET)
      })))

  it.effect("a revoked key stops verifying, stays listed, and its secret can never come back", () =>
    fresh((keys) =>
      Effect.gen(function*() {
        const created = yield* keys.create(name("laptop"), ["read"])
        const revoked = yield* keys.revoke("laptop")
        expect(revoked.revokedAt).not.toBeNull()
        expect(Option.isNone(yield* keys.verify(created.secret))).toBe(true)
        expect(yield* keys.hasActive).toBe(false)
        expect((yield* keys.list).map((key) => [key.name, key.revokedAt !== null])).toEqual([["laptop", true]])
        expect((yield* Effect.flip(keys.revoke("laptop")))._tag).toBe("ApiKeyNotFound")
        // the name is free again, the secret is not
        const again = yield* Effect.flip(keys.create(name("laptop"), ["read"], created.secret))
        expect(again._tag).toBe("InvalidApiKey")
        yield* keys.create(name("laptop"), ["read"])
        expect(yield* keys.hasActive).toBe(true)
      })))

  it.scoped("keys survive a restart, and the database holds their hashes only", () =>
    Effect.gen(function*() {
      const db = yield* backend.fresh
      const key = yield* Crypto.generateKey
      const created = yield* withKeys(keysOn(db, key), (keys) => keys.create(name("deploy"), ["token"]))
      const verified = yield* withKeys(keysOn(db, key), (keys) => keys.verify(created.secret))
      expect(Option.map(verified, (k) => k.scopes)).toEqual(Option.some(["token"]))
      const contents = yield* db.contents
      for (const bytes of contents) expect(bytes.includes(Redacted.value(created.secret))).toBe(false)
      // what was read does hold the key's name and its hash
      const digest = crypto.createHash("sha256").update(Redacted.value(created.secret)).digest()
      expect(Buffer.concat(contents).includes(digest)).toBe(true)
      expect(Buffer.concat(contents).includes("deploy")).toBe(true)
    }))

  it.scoped("key changes are audited in the store's log, with the name and never the secret", () =>
    Effect.gen(function*() {
      const db = yield* backend.fresh
      const key = yield* Crypto.generateKey
      const created = yield* withKeys(keysOn(db, key), (keys) =>
        Effect.zipLeft(keys.create(name("deploy"), ["token"]), keys.revoke("deploy")))
      const log = yield* db.contents
      for (const bytes of log) expect(bytes.includes(Redacted.value(created.secret))).toBe(false)
      const audit = yield* Effect.scoped(Effect.flatMap(
        Effect.map(Layer.build(keysOn(db, key)), (context) => Context.get(context, TokenStore.TokenStore)),
        (store) => store.audit({})
      ))
      expect(audit.map((entry) => entry.type)).toEqual(["api_key_revoked", "api_key_created"])
      expect(audit.every((entry) => entry.detail.includes("deploy"))).toBe(true)
    }))
  it.effect("bootstrap is idempotent, updates scopes, replaces a changed secret and leaves revoked secrets revoked", () =>
    fresh((keys) =>
      Effect.gen(function*() {
        const declared: Array<ApiKeys.Declared> = [
          { name: name("ci"), scopes: ["read"], secret: Redacted.make(SECRET) },
          { name: name("ops"), scopes: ["admin"], secret: Redacted.make(`${SECRET}-ops`) }
        ]
        expect(yield* keys.bootstrap(declared)).toEqual({ created: ["ci", "ops"], updated: [], revoked: [] })
        expect(yield* keys.bootstrap(declared)).toEqual({ created: [], updated: [], revoked: [] })
        expect((yield* keys.list).length).toBe(2)

        const widened = yield* keys.bootstrap([{ ...declared[0]!, scopes: ["read", "token"] }])
        expect(widened.updated).toEqual(["ci"])
        expect(Option.map(yield* keys.verify(Redacted.make(SECRET)), (key) => key.scopes)).toEqual(Option.some(["read", "token"]))

        const rotated = yield* keys.bootstrap([{ ...declared[0]!, secret: Redacted.make(`${SECRET}-new`) }])
        expect(rotated.updated).toEqual(["ci"])
        expect(Option.isNone(yield* keys.verify(Redacted.make(SECRET)))).toBe(true)
        expect(Option.isSome(yield* keys.verify(Redacted.make(`${SECRET}-new`)))).toBe(true)

        yield* keys.revoke("ops")
        const again = yield* keys.bootstrap(declared.slice(1))
        expect(again.revoked).toEqual(["ops"])
        expect(Option.isNone(yield* keys.verify(Redacted.make(`${SECRET}-ops`)))).toBe(true)
      })))
})

describe("ApiKeys", () => {
  it.effect("admin grants every scope; read and token grant only themselves", () =>
    Effect.sync(() => {
      expect(ApiKeys.allows({ scopes: ["admin"] }, "token")).toBe(true)
      expect(ApiKeys.allows({ scopes: ["admin"] }, "read")).toBe(true)
      expect(ApiKeys.allows({ scopes: ["read"] }, "token")).toBe(false)
      expect(ApiKeys.allows({ scopes: ["token"] }, "read")).toBe(false)
      expect(ApiKeys.allows({ scopes: ["read", "token"] }, "admin")).toBe(false)
    }))

  it.effect("TESSERA_API_KEYS is read as name:scope[+scope]:key, and a bad entry is named without its key", () =>
    Effect.gen(function*() {
      const read = (value: string) =>
        Effect.either(Effect.withConfigProvider(
          ApiKeys.declaredConfig,
          ConfigProvider.fromMap(new Map([["TESSERA_API_KEYS", value]]))
        ))
      const ok = yield* read(` ci:read+token:${SECRET}, ops:admin:${SECRET}:with:colons `)
      expect(Either.isRight(ok)).toBe(true)
      if (Either.isRight(ok)) {
        expect(ok.right.map((d) => [d.name, d.scopes, Redacted.value(d.secret)])).toEqual([
          ["ci", ["read", "token"], SECRET],
          ["ops", ["admin"], `${SECRET}:with:colons`]
        ])
      }
      for (const bad of [`ci:write:${SECRET}`, `ci:read:short`, "no-colons", `bad name:read:${SECRET}`, `a:read:${SECRET},a:admin:${SECRET}x`]) {
        const result = yield* read(bad)
        expect(Either.isLeft(result)).toBe(true)
        if (Either.isLeft(result)) {
          expect(String(result.left)).toContain("TESSERA_API_KEYS")
          expect(String(result.left)).not.toContain(SECRET)
          expect(String(result.left)).not.toContain("short")
        }
      }
      const unset = yield* Effect.withConfigProvider(ApiKeys.declaredConfig, ConfigProvider.fromMap(new Map()))
      expect(unset).toEqual([])
    }))
})
