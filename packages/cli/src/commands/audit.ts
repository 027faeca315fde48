/**
 * `tessera audit`: the append-only audit log, newest first: who did what to which token, and
 * how it went. Entries never hold a secret.
 */
import { Command, Options } from "@effect/cli"
import { Effect, Option } from "effect"
import { InvalidInput } from "../Backend.js"
import * as Output from "../Output.js"
import * as Shared from "./shared.js"

export const command = Command.make("audit", {
  ...Shared.global,
  account: Options.text("account").pipe(Options.withDescription("Only this account's entries"), Options.optional),
  limit: Options.integer("limit").pipe(Options.withDescription("How many entries (1-1000)"), Options.withDefault(100))
}, (options) =>
  Shared.withBackend(options, ({ backend, json }) =>
    Effect.gen(function*() {
      if (options.limit < 1 || options.limit > 1000) {
        return yield* new InvalidInput({ reason: `bad --limit ${options.limit}: expected 1 to 1000` })
      }
      const entries = yield* backend.audit({ accountId: Option.getOrUndefined(options.account), limit: options.limit })
      if (json) return yield* Output.json(entries)
      const zone = yield* Shared.displayZone
      yield* Output.table(
        ["TIME", "ACTOR", "EVENT", "ACCOUNT", "OUTCOME", "DETAIL"],
        entries.map((entry) => [
          Output.displayTime(entry.at, zone),
          entry.actor,
          entry.type,
          entry.account_id,
          { text: entry.outcome, color: entry.outcome === "success" ? undefined : "red" },
          entry.detail === "" ? null : entry.detail
        ]),
        "no audit entries"
      )
    }))).pipe(Command.withDescription("Show the audit log, newest first"))
