/**
 * The built `tessera` command line as a child process (`packages/cli/dist/bin.js`), in a
 * temporary directory with its own database, against the fake upstreams on 127.0.0.1: each
 * call returns the exit status and what the command wrote to stdout and stderr.
 */
import { Effect } from "effect"
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { Amp, AuthService, GitHub, Upstox } from "../fakes/index.js"
import { tempDir, waitUntil } from "../lifecycle/harness.js"

export const MAIN = fileURLToPath(new URL("../../packages/cli/dist/bin.js", import.meta.url))

export interface Result {
  readonly code: number | null
  readonly stdout: string
  readonly stderr: string
}

export interface RunOptions {
  readonly env?: Record<string, string | undefined>
  /** Written to the command's stdin, which is then closed. */
  readonly stdin?: string
}

export const requireBuild = Effect.suspend(() =>
  fs.existsSync(MAIN) ? Effect.void : Effect.die(new Error(`build first: ${MAIN} is missing (pnpm test builds it)`))
)

/** Runs `tessera ...args` in `cwd` with only `env` (and PATH). */
export const run = (cwd: string, env: Record<string, string | undefined>, args: ReadonlyArray<string>, stdin?: string) =>
  Effect.async<Result>((resume) => {
    const clean = Object.fromEntries(Object.entries(env).filter((entry): entry is [string, string] => entry[1] !== undefined))
    const child = spawn(process.execPath, [MAIN, ...args], {
      cwd,
      env: { PATH: process.env["PATH"] ?? "", ...clean },
      stdio: ["pipe", "pipe", "pipe"]
    })
    let stdout = ""
    let stderr = ""
    child.stdout.on("data", (chunk) => (stdout += String(chunk)))
    child.stderr.on("data", (chunk) => (stderr += String(chunk)))
    child.on("close", (code) => resume(Effect.succeed({ code, stdout, stderr })))
    child.stdin.end(stdin ?? "")
    return Effect.sync(() => void (child.exitCode === null && child.kill("SIGKILL")))
  })

export interface Cli {
  readonly dir: string
  readonly db: string
  readonly keyFile: string
  readonly env: Record<string, string>
  /** `tessera ...args`. */
  readonly run: (...args: ReadonlyArray<string>) => Effect.Effect<Result>
  /** `tessera ...args` with more environment or stdin. */
  readonly runWith: (options: RunOptions, ...args: ReadonlyArray<string>) => Effect.Effect<Result>
  /** `tessera ...args --json`, which must succeed: its output parsed. */
  readonly json: <A>(...args: ReadonlyArray<string>) => Effect.Effect<A>
}

/** What a failed run looks like in an assertion message. */
export const describe = (args: ReadonlyArray<string>, result: Result) =>
  `tessera ${args.join(" ")} exited ${result.code}\nstdout: ${result.stdout}\nstderr: ${result.stderr}`

/** A command line on a fresh directory and database, with the given environment. */
export const makeCli = (env: Record<string, string> = {}) =>
  Effect.gen(function*() {
    yield* requireBuild
    const dir = yield* tempDir
    const db = path.join(dir, "data", "tessera.db")
    const base: Record<string, string> = {
      TESSERA_DB: db,
      API_RETRY_MAX_ATTEMPTS: "2",
      API_RETRY_BASE_DELAY_MS: "20",
      API_RETRY_MAX_DELAY_MS: "100",
      API_REQUEST_TIMEOUT_MS: "2000",
      ...env
    }
    const runWith = (options: RunOptions, ...args: ReadonlyArray<string>) =>
      run(dir, { ...base, ...options.env }, args, options.stdin)
    const cli: Cli = {
      dir,
      db,
      keyFile: path.join(dir, "data", "tessera.key"),
      env: base,
      run: (...args) => runWith({}, ...args),
      runWith,
      json: (...args) =>
        Effect.flatMap(runWith({}, ...args, "--json"), (result) =>
          result.code === 0
            ? Effect.try(() => JSON.parse(result.stdout)).pipe(Effect.orDie)
            : Effect.die(new Error(describe([...args, "--json"], result))))
    }
    return cli
  })

/** The fake upstreams every CLI test may use, and the environment that points Tessera at them. */
export const upstreams = Effect.gen(function*() {
  const amp = yield* Amp.make({ users: { trader: "canary-amp-password-3e1f" } })
  const auth = yield* AuthService.make({ accounts: ["acc-1", "acc-2"] })
  const upstox = yield* Upstox.make()
  Upstox.linkAuthService(upstox, auth)
  const github = yield* GitHub.make()
  const env = {
    AMP_API_URL: amp.url,
    TOKEN_REFRESH_SERVICE_URL: auth.url,
    UPSTOX_API_URL: upstox.url,
    GITHUB_API_URL: github.url
  }
  return { amp, auth, upstox, github, env }
})

/** `tessera serve` (of the same build) as a child process on a port the system picks; the scope stops it. */
export const serve = (cli: Cli, env: Record<string, string> = {}) =>
  Effect.gen(function*() {
    const child = yield* Effect.acquireRelease(
      Effect.sync(() =>
        spawn(process.execPath, [MAIN, "serve"], {
          cwd: cli.dir,
          env: { PATH: process.env["PATH"] ?? "", ...cli.env, TESSERA_PORT: "0", ...env },
          stdio: ["ignore", "pipe", "pipe"]
        })
      ),
      (child) =>
        Effect.promise(() =>
          new Promise<void>((resolve) => {
            if (child.exitCode !== null) return resolve()
            child.on("exit", () => resolve())
            child.kill("SIGTERM")
          })
        )
    )
    let output = ""
    child.stdout.on("data", (chunk) => (output += String(chunk)))
    child.stderr.on("data", (chunk) => (output += String(chunk)))
    const listening = () => /listening on (http:\/\/[^\s]+)/.exec(output)?.[1]
    yield* waitUntil(() => listening() !== undefined || child.exitCode !== null, 20_000)
    const url = listening()
    if (url === undefined) return yield* Effect.die(new Error(`tessera serve did not start:\n${output}`))
    return { url, output: () => output }
  })
