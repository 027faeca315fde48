/**
 * The built `tessera serve` as a child process: its output, the URL it says it listens on,
 * and a way to stop it with a signal. The scope kills a process still running.
 */
import { expect } from "@effect/vitest"
import { Effect } from "effect"
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import { fileURLToPath } from "node:url"
import type { OAuth2 } from "../fakes/index.js"
import { waitUntil } from "../lifecycle/harness.js"

export const BIN = fileURLToPath(new URL("../../packages/cli/dist/bin.js", import.meta.url))

export interface Running {
  readonly output: () => string
  /** The base URL from the "listening on …" line (waits for it). */
  readonly url: Effect.Effect<string>
  readonly stop: (signal: NodeJS.Signals) => Effect.Effect<number | null>
  readonly exited: () => boolean
}

export const requireBuild = Effect.suspend(() =>
  fs.existsSync(BIN) ? Effect.void : Effect.die(new Error(`build first: ${BIN} is missing (pnpm test builds it)`))
)

/** Runs `tessera serve` in `cwd` with only `env` (and PATH); a port is chosen by the system unless given. */
export const serve = (cwd: string, env: Record<string, string>) =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const child = spawn(process.execPath, [BIN, "serve"], {
        cwd,
        env: { PATH: process.env["PATH"] ?? "", TESSERA_PORT: "0", ...env },
        stdio: ["ignore", "pipe", "pipe"]
      })
      let output = ""
      child.stdout.on("data", (chunk) => (output += String(chunk)))
      child.stderr.on("data", (chunk) => (output += String(chunk)))
      let done = false
      const exited = new Promise<number | null>((resolve) =>
        child.on("exit", (code) => {
          done = true
          resolve(code)
        })
      )
      const listening = () => /listening on (http:\/\/[^\s]+)/.exec(output)?.[1]
      const running: Running = {
        output: () => output,
        url: Effect.zipRight(
          waitUntil(() => listening() !== undefined || done, 15_000),
          Effect.suspend(() => {
            const url = listening()
            return url === undefined ? Effect.die(new Error(`tessera serve did not start:\n${output}`)) : Effect.succeed(url)
          })
        ),
        stop: (signal) =>
          Effect.promise(() => {
            child.kill(signal)
            return exited
          }),
        exited: () => done
      }
      return { child, running }
    }),
    ({ child }) => Effect.sync(() => void (child.exitCode === null && child.kill("SIGKILL")))
  ).pipe(Effect.map(({ running }) => running))

/**
 * A request to a running service; the body as JSON when it parses. With `resent`, a request
 * whose connection fails before any answer (a keep-alive connection the server closed while
 * idle, picked by a client whose event loop is late) is sent again once, as any HTTP client
 * does, and counted there; a failure that remains is the answer, with status 0.
 */
export const call = (
  url: string,
  method: string,
  path: string,
  options: { readonly key?: string; readonly body?: unknown; readonly resent?: { count: number } } = {}
) =>
  Effect.promise(async () => {
    for (let attempt = 0; ; attempt++) {
      let response: Response
      try {
        response = await fetch(`${url}${path}`, {
          method,
          headers: {
            ...(options.key === undefined ? {} : { authorization: `Bearer ${options.key}` }),
            ...(options.body === undefined ? {} : { "content-type": "application/json" })
          },
          body: options.body === undefined ? null : JSON.stringify(options.body)
        })
      } catch (error) {
        if (options.resent === undefined) throw error
        const code = (error as { cause?: { code?: string } }).cause?.code
        if (attempt === 0 && (code === "ECONNRESET" || code === "UND_ERR_SOCKET")) {
          options.resent.count++
          continue
        }
        return { status: 0, text: `${code ?? ""} ${String(error)}`, json: undefined, headers: new Headers() }
      }
      const text = await response.text()
      let json: any
      try {
        json = JSON.parse(text)
      } catch {
        json = undefined
      }
      return { status: response.status, text, json, headers: response.headers }
    }
  })

/**
 * Registers OAuth2 accounts `id(0)`..`id(count - 1)` with `oauth` through the API, each with a
 * grant of its own and an access token that expires at `expiresAt` (all at once, so their
 * refreshes fall due together).
 */
export const registerOAuth = (
  url: string,
  options: {
    readonly key: string
    readonly oauth: OAuth2.OAuth2Server
    readonly clientId: string
    readonly clientSecret: string
    readonly id: (i: number) => string
    readonly count: number
    readonly expiresAt: string
    readonly concurrency: number
  }
) =>
  Effect.forEach(
    Array.from({ length: options.count }, (_, i) => i),
    (i) =>
      Effect.flatMap(
        call(url, "POST", "/accounts", {
          key: options.key,
          body: {
            account_id: options.id(i),
            provider: "oauth2",
            source: {
              type: "oauth2",
              token_url: `${options.oauth.url}/oauth/token`,
              client_id: options.clientId,
              client_secret: options.clientSecret,
              refresh_token: options.oauth.issueGrant(options.clientId).refreshToken
            },
            access_token: `at_initial_${options.id(i)}_0123456789abcdef`,
            expires_at: options.expiresAt
          }
        }),
        (answer) => Effect.sync(() => expect(answer.status, answer.text).toBe(201))
      ),
    { concurrency: options.concurrency, discard: true }
  )
