/**
 * `tessera doctor`: is this installation healthy? Configuration readable, database present
 * and readable, encryption key opening it (and kept private), configured upstreams
 * reachable. Each check is ok, warn or fail; any failure makes the exit status 1.
 */
import { Command } from "@effect/cli"
import { Effect } from "effect"
import { Verdict } from "../Backend.js"
import * as Output from "../Output.js"
import * as Shared from "./shared.js"

export const command = Command.make("doctor", { ...Shared.global }, (options) =>
  Shared.withBackend(options, ({ backend, json }) =>
    Effect.gen(function*() {
      const report = yield* backend.doctor
      if (json) yield* Output.json(report)
      else {
        yield* Output.table(
          ["CHECK", "STATUS", "DETAIL"],
          report.checks.map((check) => [check.name, Output.status(check.status), check.detail]),
          "nothing to check"
        )
      }
      const failed = report.checks.filter((check) => check.status === "fail")
      if (failed.length > 0) {
        return yield* new Verdict({ reason: `${failed.length} check(s) failed: ${failed.map((check) => check.name).join(", ")}`, exitCode: 1 })
      }
    }))).pipe(Command.withDescription("Check the configuration, database, encryption key and upstream reachability"))
