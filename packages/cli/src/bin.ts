#!/usr/bin/env node
/**
 * The `tessera` command. A failure ends with one line saying why, on stderr, and exit
 * status 1: never a stack trace.
 */
import { Command } from "@effect/cli"
import { NodeContext, NodeRuntime } from "@effect/platform-node"
import { Cause, Console, Effect } from "effect"
import * as Serve from "./Serve.js"

const serve = Command.make("serve", {}, () => Serve.run).pipe(
  Command.withDescription("Run the token service on the local database")
)

const tessera = Command.make("tessera").pipe(
  Command.withDescription("Tessera keeps API tokens alive"),
  Command.withSubcommands([serve])
)

const cli = Command.run(tessera, { name: "tessera", version: "0.1.0" })

/** The one line a person needs: a tagged error's message, or a configuration error's text. */
const reason = (error: unknown): string => {
  const text = error instanceof Error || (typeof error === "object" && error !== null && "message" in error)
    ? String((error as { message: unknown }).message)
    : String(error)
  return text.replace(/^\((.*)\)$/s, "$1").split("\n")[0]!
}

cli(process.argv).pipe(
  Effect.tapErrorCause((cause) =>
    Cause.isInterruptedOnly(cause)
      ? Effect.void
      : Console.error(`tessera: ${Cause.failureOption(cause).pipe((failure) => failure._tag === "Some" ? reason(failure.value) : Cause.pretty(cause).split("\n")[0])}`)
  ),
  Effect.provide(NodeContext.layer),
  (effect) => NodeRuntime.runMain(effect, { disableErrorReporting: true })
)
