/**
 * `tessera doctor`, end to end: every check ok on a healthy installation; a readable key
 * file, an unreachable upstream, a wrong key and a missing database reported as such.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import * as crypto from "node:crypto"
import * as fs from "node:fs"
import { makeCli, upstreams } from "./harness.js"

interface Doctor {
  readonly ok: boolean
  readonly checks: ReadonlyArray<{ readonly name: string; readonly status: "ok" | "warn" | "fail"; readonly detail: string }>
}

const statuses = (report: Doctor) => Object.fromEntries(report.checks.map((check) => [check.name, check.status]))

describe("tessera doctor", () => {
  it.scopedLive("checks configuration, database, key, key file permissions and each upstream", () =>
    Effect.gen(function*() {
      const fakes = yield* upstreams
      const cli = yield* makeCli(fakes.env)
      yield* cli.json("accounts", "add", "acc-1", "--provider", "upstox")
      yield* cli.json("pool", "add", "github", "--token", "ghp_doctor_token_000001")

      const healthy = yield* cli.json<Doctor>("doctor")
      expect(healthy.ok).toBe(true)
      expect(statuses(healthy)).toEqual({
        configuration: "ok",
        key: "ok",
        database: "ok",
        "key opens the database": "ok",
        [`upstream ${fakes.amp.url}/`]: "ok",
        [`upstream ${fakes.auth.url}/`]: "ok",
        [`upstream ${fakes.upstox.url}/`]: "ok",
        [`upstream ${fakes.github.url}/`]: "ok"
      })
      expect(healthy.checks.find((check) => check.name === "database")!.detail).toContain("2 account(s) and 2 token(s) read and decrypted")

      const table = yield* cli.run("doctor")
      expect(table.code).toBe(0)
      expect(table.stdout).toMatch(/^CHECK\s+STATUS\s+DETAIL\n/)
      expect(table.stdout).toMatch(/\ndatabase\s+ok\s+/)

      fs.chmodSync(cli.keyFile, 0o644)
      const down = yield* cli.runWith({ env: { GITHUB_API_URL: "http://127.0.0.1:9" } }, "doctor", "--json")
      expect(down.code).toBe(1)
      const report: Doctor = JSON.parse(down.stdout)
      expect(report.ok).toBe(false)
      expect(statuses(report)).toMatchObject({ key: "warn", "upstream http://127.0.0.1:9/": "fail", database: "ok" })
      expect(report.checks.find((check) => check.name === "key")!.detail).toContain("chmod 600")
      expect(report.checks.find((check) => check.name === "upstream http://127.0.0.1:9/")!.detail).toMatch(/^unreachable: .*ECONNREFUSED/)
      expect(down.stderr).toBe("tessera: 1 check(s) failed: upstream http://127.0.0.1:9/\n")

      const wrongKey = crypto.randomBytes(32).toString("base64")
      const wrong = yield* cli.runWith({ env: { TESSERA_ENCRYPTION_KEY: wrongKey } }, "doctor", "--json")
      expect(wrong.code).toBe(1)
      expect(statuses(JSON.parse(wrong.stdout))).toMatchObject({ key: "ok", "key opens the database": "fail" })
      expect(wrong.stdout + wrong.stderr).not.toContain(wrongKey)

      const badSetting = yield* cli.runWith({ env: { TESSERA_REFRESH_WINDOW: "soonish" } }, "doctor", "--json")
      const settingCheck = (JSON.parse(badSetting.stdout) as Doctor).checks.find((check) => check.name === "configuration")!
      expect(settingCheck).toMatchObject({ status: "fail" })
      expect(settingCheck.detail).toContain("TESSERA_REFRESH_WINDOW must be a duration")
    }), { timeout: 120_000 })

  it.scopedLive("reports a missing database without creating one", () =>
    Effect.gen(function*() {
      const cli = yield* makeCli()
      const result = yield* cli.run("doctor", "--json")
      expect(result.code).toBe(1)
      const report: Doctor = JSON.parse(result.stdout)
      expect(statuses(report)).toMatchObject({ configuration: "ok", database: "fail", key: "warn" })
      expect(fs.existsSync(cli.db)).toBe(false)
      expect(fs.existsSync(cli.keyFile)).toBe(false)
    }), { timeout: 60_000 })
})
