/**
 * The command line itself: `--help` on every command, shell completions, and failures as one
 * line on stderr with a distinct exit status and never a stack trace.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import * as fs from "node:fs"
import { makeCli } from "./harness.js"

const COMMANDS = [
  [],
  ["serve"],
  ["accounts"],
  ["accounts", "list"],
  ["accounts", "add"],
  ["accounts", "remove"],
  ["token"],
  ["token", "get"],
  ["token", "status"],
  ["token", "validate"],
  ["token", "update"],
  ["token", "refresh"],
  ["token", "clear"],
  ["pool"],
  ["pool", "add"],
  ["pool", "list"],
  ["pool", "acquire"],
  ["pool", "report"],
  ["pool", "check"],
  ["audit"],
  ["keys"],
  ["keys", "create"],
  ["keys", "list"],
  ["keys", "revoke"],
  ["keys", "rotate"],
  ["doctor"]
] as const

describe("tessera command line", () => {
  it.scopedLive("every command has --help", () =>
    Effect.gen(function*() {
      const cli = yield* makeCli()
      const results = yield* Effect.forEach(COMMANDS, (command) => cli.run(...command, "--help"), { concurrency: 4 })
      for (const [index, result] of results.entries()) {
        const command = COMMANDS[index]!
        expect(result.code, command.join(" ")).toBe(0)
        expect(result.stdout, command.join(" ")).toContain("USAGE")
        expect(result.stdout).toContain(`$ ${command.at(-1) ?? "tessera"}`)
      }
      expect(results[0]!.stdout).toContain("Exit status")
      // nothing was created by asking for help
      expect(fs.existsSync(cli.db)).toBe(false)
    }), { timeout: 180_000 })

  it.scopedLive("prints shell completions for bash, zsh and fish", () =>
    Effect.gen(function*() {
      const cli = yield* makeCli()
      const bash = yield* cli.run("--completions", "bash")
      expect(bash.code).toBe(0)
      expect(bash.stdout).toContain("complete -F _tessera_bash_completions")
      expect(bash.stdout).toContain("rotate")
      const zsh = yield* cli.run("--completions", "zsh")
      expect(zsh.code).toBe(0)
      expect(zsh.stdout).toContain("#compdef tessera")
      const fish = yield* cli.run("--completions", "fish")
      expect(fish.code).toBe(0)
      expect(fish.stdout).toContain("complete -c tessera")
      expect((yield* cli.run("--version")).stdout).toContain("0.1.0")
    }), { timeout: 60_000 })

  it.scopedLive("a failure is one line on stderr with its own exit status, never a stack trace", () =>
    Effect.gen(function*() {
      const cli = yield* makeCli()
      const cases: ReadonlyArray<readonly [ReadonlyArray<string>, number, RegExp]> = [
        [["bogus"], 2, /^tessera: Invalid subcommand for tessera - use one of .*\n$/],
        [["audit", "--bogus"], 2, /^tessera: Received unknown argument: '--bogus'\n$/],
        [["accounts", "add", "x"], 2, /^tessera: Expected to find option: '--provider'\n$/],
        [["audit", "--limit", "many"], 2, /^tessera: .*integer.*\n$/],
        [["token", "status"], 3, /^tessera: no database at .*tessera\.db: set TESSERA_DB, .*\n$/],
        [["accounts", "add", "bad id!", "--provider", "github", "--token", "ghp_x_0000000000000"], 2, /^tessera: id: account id must be .*\n$/],
        [["accounts", "add", "acc", "--provider", "github"], 2, /^tessera: say how the account's token is obtained with --source .*\n$/],
        [["accounts", "add", "acc", "--provider", "amp", "--username", "u"], 2, /^tessera: a password account needs --password\n$/],
        [["pool", "list", "--server", "ftp://example"], 2, /^tessera: bad --server 'ftp:\/\/example': the URL must use http or https\n$/],
        [["--server", "http://127.0.0.1:9", "pool", "list"], 5, /^tessera: cannot reach the server at http:\/\/127\.0\.0\.1:9: .*ECONNREFUSED.*\n$/]
      ]
      for (const [args, code, stderr] of cases) {
        const result = yield* cli.run(...args)
        expect(result.code, args.join(" ")).toBe(code)
        expect(result.stderr, args.join(" ")).toMatch(stderr)
        expect(result.stderr).not.toMatch(/\n\s+at /)
        expect(result.stdout, args.join(" ")).toBe("")
      }
      const badSetting = yield* cli.runWith({ env: { TESSERA_TIMEZONE: "Mars/Olympus" } }, "pool", "add", "github", "--token", "ghp_tz_0000000000000")
      expect(badSetting.code).toBe(8)
      expect(badSetting.stderr).toBe("tessera: TESSERA_TIMEZONE must be a time zone such as Asia/Kolkata or UTC (got 'Mars/Olympus')\n")
      const badKey = yield* cli.runWith({ env: { TESSERA_ENCRYPTION_KEY: "c2hvcnQ=" } }, "pool", "add", "github", "--token", "ghp_key_000000000000")
      expect(badKey.code).toBe(8)
      expect(badKey.stderr).toBe("tessera: invalid encryption key: TESSERA_ENCRYPTION_KEY: a key must be exactly 32 bytes but this one has 5 (generate one with: openssl rand -base64 32)\n")
      const malformed = yield* cli.run("pool", "add", "github", "--token", "has space")
      expect(malformed.code).toBe(2)
      expect(malformed.stderr).not.toContain("has space")
    }), { timeout: 120_000 })
})
