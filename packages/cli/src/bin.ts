#!/usr/bin/env node
/**
 * The `tessera` executable: runs the command line and exits with its status. A reader that
 * closes the pipe early (`tessera audit | head`) ends the command quietly.
 */
import { main } from "./Cli.js"

process.stdout.on("error", (error: NodeJS.ErrnoException) => {
  if (error.code === "EPIPE") process.exit(0)
})

main(process.argv)
