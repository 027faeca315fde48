/**
 * The README's start command, end to end: the built `tessera serve` as a child process,
 * against fake AMP and auth-service servers on 127.0.0.1 (listening on a port the system
 * picks, so test files can run side by side).
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { Amp, AuthService } from "../fakes/index.js"
import { tempDir, waitUntil } from "../lifecycle/harness.js"
import { requireBuild, serve } from "./harness.js"

const PASSWORD = "canary-amp-password-91c2"

describe("tessera serve (the README's start command)", () => {
  it.scopedLive("registers the declared accounts, fetches their tokens, restores them after a restart and stops cleanly", () =>
    Effect.gen(function*() {
      yield* requireBuild
      const cwd = yield* tempDir
      const amp = yield* Amp.make({ users: { trader: PASSWORD } })
      const auth = yield* AuthService.make({ accounts: ["acc-1"] })
      const env = {
        AMP_API_URL: amp.url,
        AMP_USERNAME: "trader",
        AMP_PASSWORD: PASSWORD,
        TOKEN_REFRESH_SERVICE_URL: auth.url,
        UPSTOX_ACCOUNT_IDS: "acc-1, acc-2",
        UPSTOX_API_URL: "http://127.0.0.1:9"
      }

      const first = yield* serve(cwd, env)
      yield* waitUntil(() => first.output().includes("acc-2: missing"), 15_000)
      const log = first.output()
      expect(log).toContain("obtained amp success")
      expect(log).toContain("obtained acc-1 success")
      expect(log).toContain("amp: available")
      expect(log).toContain("acc-1: available")
      expect(log).toMatch(/acc-2: missing \(.*unknown account/)
      expect(yield* first.stop("SIGTERM")).toBe(0)
      expect(amp.calls("obtain")).toBe(1)

      const db = path.join(cwd, "data", "tessera.db")
      const key = path.join(cwd, "data", "tessera.key")
      expect(fs.statSync(key).mode & 0o777).toBe(0o600)
      const tokens = amp.issued().map((t) => t.token)
      for (const file of [db, `${db}-wal`].filter(fs.existsSync)) {
        const bytes = fs.readFileSync(file)
        for (const secret of [PASSWORD, ...tokens]) expect(bytes.includes(secret)).toBe(false)
      }

      const second = yield* serve(cwd, env)
      yield* waitUntil(() => second.output().includes("acc-2:"), 15_000)
      expect(second.output()).toContain("amp: available")
      expect(yield* second.stop("SIGINT")).toBe(0)
      expect(amp.calls("obtain")).toBe(1)
      expect(amp.calls("refresh")).toBe(0)

      for (const secret of [PASSWORD, ...tokens, auth.account("acc-1")!.token]) {
        expect(first.output() + second.output()).not.toContain(secret)
      }
    }), { timeout: 60_000 })

  it.scopedLive("a wrong encryption key is a clear startup error, not garbage", () =>
    Effect.gen(function*() {
      const cwd = yield* tempDir
      const amp = yield* Amp.make({ users: { trader: PASSWORD } })
      const env = { AMP_API_URL: amp.url, AMP_USERNAME: "trader", AMP_PASSWORD: PASSWORD }
      const first = yield* serve(cwd, env)
      yield* waitUntil(() => first.output().includes("amp: available"), 15_000)
      yield* first.stop("SIGTERM")
      const wrongKey = Buffer.alloc(32, 7).toString("base64")
      const second = yield* serve(cwd, { ...env, TESSERA_ENCRYPTION_KEY: wrongKey })
      // it exits by itself; the signal only ends a process that would (wrongly) go on serving
      yield* Effect.exit(waitUntil(() => second.exited(), 30_000))
      const code = yield* second.stop("SIGTERM")
      expect(code).not.toBe(0)
      expect(second.output()).toMatch(/not configured|encryption key/i)
      expect(second.output()).not.toContain(wrongKey)
    }), { timeout: 60_000 })
})
