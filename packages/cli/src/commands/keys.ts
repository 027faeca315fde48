/**
 * `tessera keys create|list|revoke`: the API keys of the HTTP service (SPEC §4.5), kept hashed
 * in the local database; a new key is printed once, when it is created.
 *
 * `tessera keys rotate`: replaces the encryption key of the local database (SPEC §4.2). With
 * a key file, a new key is written beside the old one first, every stored value is
 * re-encrypted under it in one transaction (interrupted, nothing changes), the database is
 * checked to hold nothing under the old key, and only then is the old key dropped from the
 * file. With `TESSERA_ENCRYPTION_KEY`, which cannot be rewritten from here, values are
 * re-encrypted under the variable's first key and the user is told which keys to drop.
 */
import { Args, Command, Options } from "@effect/cli"
import { Effect, Option, Redacted } from "effect"
import type { ApiKeyView } from "../Backend.js"
import * as Output from "../Output.js"
import * as Shared from "./shared.js"

const keyName = Args.text({ name: "NAME" }).pipe(Args.withDescription("The key's name: the actor the audit log shows for its requests"))

const create = Command.make("create", {
  ...Shared.global,
  name: keyName,
  scope: Options.choice("scope", ["read", "token", "admin"]).pipe(
    Options.withDescription("A scope the key grants (repeat: --scope read --scope token); admin grants everything"),
    Options.repeated
  ),
  key: Shared.secretOption("key", "Register this key instead of a generated one (at least 16 characters)").pipe(Options.optional)
}, (options) =>
  Shared.withBackend(options, ({ backend, json }) =>
    Effect.gen(function*() {
      const given = yield* Shared.optionalSecret(options.key)
      const scopes = options.scope.length === 0 ? ["read"] : options.scope
      const created = yield* backend.createApiKey(options.name, scopes, Option.getOrUndefined(given))
      if (json) return yield* Output.json({ ...created, key: Redacted.value(created.key) })
      const out = yield* Output.Output
      yield* out.line(Redacted.value(created.key))
      yield* out.error(`tessera: created API key '${created.name}' (${created.scopes.join("+")}); it is shown this once`)
    }))).pipe(
    Command.withDescription(
      "Create an API key for the HTTP service and print it (only the key, shown this once; default scope read)"
    )
  )

const printKeys = (keys: ReadonlyArray<ApiKeyView>) =>
  Effect.gen(function*() {
    const zone = yield* Shared.displayZone
    yield* Output.table(
      ["NAME", "SCOPES", "CREATED", "REVOKED"],
      keys.map((key) => [
        key.name,
        key.scopes.join("+"),
        Output.displayTime(key.created_at, zone),
        key.revoked_at === null ? null : { text: Output.displayTime(key.revoked_at, zone) ?? "", color: "red" }
      ]),
      "no API keys"
    )
  })

const list = Command.make("list", { ...Shared.global }, (options) =>
  Shared.withBackend(options, ({ backend, json }) =>
    Effect.flatMap(backend.listApiKeys, (keys) => json ? Output.json(keys) : printKeys(keys)))).pipe(
    Command.withDescription("List the API keys (names, scopes, when created and revoked; never the keys)")
  )

const revoke = Command.make("revoke", { ...Shared.global, name: keyName }, (options) =>
  Shared.withBackend(options, ({ backend, json }) =>
    Effect.flatMap(backend.revokeApiKey(options.name), (key) => json ? Output.json(key) : printKeys([key])))).pipe(
    Command.withDescription("Revoke an API key: it stops working at once and never works again")
  )

const rotate = Command.make("rotate", { ...Shared.global }, (options) =>
  Shared.withBackend(options, ({ backend, json }) =>
    Effect.gen(function*() {
      const rotation = yield* backend.rotateKey
      if (json) return yield* Output.json(rotation)
      yield* Output.record([
        ["key", rotation.key_id],
        ["keys in", rotation.key_source === "file" ? `key file ${rotation.key_file}` : "TESSERA_ENCRYPTION_KEY"],
        ["re-encrypted", `${rotation.rewritten} stored value(s)`],
        ["retired keys", rotation.retired_key_ids.length === 0 ? null : rotation.retired_key_ids.join(", ")]
      ])
      if (rotation.action !== null) {
        const out = yield* Output.Output
        yield* out.error(`tessera: next: ${rotation.action}`)
      }
    }))).pipe(
    Command.withDescription(
      "Rotate the encryption key of the local database: a new key, every stored value re-encrypted under it, the old key " +
        "dropped from the key file. Stop other processes that use the database first (or restart them after)"
    )
  )

export const command = Command.make("keys").pipe(
  Command.withDescription("API keys of the HTTP service (create, list, revoke) and the encryption key (rotate)"),
  Command.withSubcommands([create, list, revoke, rotate])
)
