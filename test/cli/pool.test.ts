/**
 * `tessera pool …` on a local database, end to end: static GitHub tokens in a pool, handed
 * out least recently used first, rate limits reported back, and `pool check` reading each
 * token's live rate limit from a fake GitHub.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import type { Wire } from "@tessera/server"
import { describe as explain, makeCli, upstreams } from "./harness.js"

type TokenInfo = typeof Wire.TokenInfo.Encoded
type Pool = typeof Wire.Pool.Encoded
type Lease = typeof Wire.Lease.Encoded
type AuditEntry = typeof Wire.AuditEntry.Encoded

interface Check {
  readonly account_id: string
  readonly valid: boolean | null
  readonly reason: string
  readonly status: string
  readonly username: string | null
  readonly rate_limit: { readonly limit: number | null; readonly remaining: number | null; readonly reset_at: string | null } | null
}

const TOKENS = ["ghp_cli_pool_token_one_0001", "ghp_cli_pool_token_two_0002", "ghp_cli_pool_token_three_03"]

describe("tessera pool (local database)", () => {
  it.scopedLive("adds tokens, lists pools, hands tokens out least recently used first and prints only the token", () =>
    Effect.gen(function*() {
      const fakes = yield* upstreams
      const cli = yield* makeCli(fakes.env)
      const ids: Array<string> = []
      for (const [index, token] of TOKENS.entries()) {
        const added = yield* cli.runWith({ stdin: `${token}\n` }, "pool", "add", "github", "--token", "-", "--label", `token ${index + 1}`, "--json")
        expect(added.code, explain(["pool", "add"], added)).toBe(0)
        const info: TokenInfo = JSON.parse(added.stdout)
        expect(info).toMatchObject({ provider: "github", pool: "github", status: "available", source: "static" })
        expect(info.account_id).toMatch(/^github-[0-9a-f]{10}$/)
        ids.push(info.account_id)
      }
      const pools = yield* cli.json<Array<Pool>>("pool", "list")
      expect(pools).toEqual([{
        pool: "github",
        provider: "github",
        total: 3,
        available: 3,
        rate_limited: 0,
        invalid: 0,
        next_reset_at: null,
        next_reset_at_local: null
      }])
      const members = yield* cli.json<Array<TokenInfo>>("pool", "list", "github")
      expect(members.map((info) => info.account_id).sort()).toEqual([...ids].sort())

      const handedOut: Array<string> = []
      for (let n = 0; n < 3; n++) {
        const acquired = yield* cli.run("pool", "acquire", "github")
        expect(acquired.code).toBe(0)
        expect(acquired.stderr).toBe("")
        handedOut.push(acquired.stdout)
      }
      // each token alone on its line, each once: least recently used first
      expect(handedOut.map((out) => out.trimEnd()).sort()).toEqual([...TOKENS].sort())
      expect(handedOut.every((out) => /^ghp_\S+\n$/.test(out))).toBe(true)
      const lease = yield* cli.json<Lease>("pool", "acquire", "github")
      expect(lease.access_token).toBe(handedOut[0]!.trimEnd())
      expect(lease).toMatchObject({ expires_at: null, rate_limit: null })

      const audit = yield* cli.json<Array<AuditEntry>>("audit")
      const acquired = audit.filter((entry) => entry.type === "acquired")
      expect(acquired.length).toBe(4)
      expect(acquired.every((entry) => entry.actor === "cli")).toBe(true)

      const unknown = yield* cli.run("pool", "acquire", "gitlab")
      expect(unknown).toMatchObject({ code: 3, stdout: "", stderr: "tessera: pool 'gitlab' does not exist\n" })
      const duplicate = yield* cli.run("pool", "add", "github", "--token", TOKENS[0]!)
      expect(duplicate.code).toBe(7)
      expect(duplicate.stderr).toMatch(/^tessera: account 'github-[0-9a-f]{10}' already exists\n$/)
      expect(duplicate.stderr).not.toContain(TOKENS[0])
      const newPool = yield* cli.run("pool", "add", "team.a", "--token", "ghp_team_token_0000")
      expect(newPool.code).toBe(2)
      expect(newPool.stderr).toContain("pool 'team.a' does not exist and is not named after a provider")
      // a pool of another name starts with `accounts add`, and then takes tokens like any other
      yield* cli.json("accounts", "add", "team-a-1", "--provider", "github", "--pool", "team.a", "--token", "ghp_team_token_0001")
      const second = yield* cli.json<TokenInfo>("pool", "add", "team.a", "--token", "ghp_team_token_0002", "--account", "team-a-2")
      expect(second).toMatchObject({ account_id: "team-a-2", provider: "github", pool: "team.a" })
    }), { timeout: 120_000 })

  it.scopedLive("reported rate limits take tokens out of rotation until every one is limited (exit status 6)", () =>
    Effect.gen(function*() {
      const fakes = yield* upstreams
      const cli = yield* makeCli(fakes.env)
      const ids: Array<string> = []
      for (const token of TOKENS.slice(0, 2)) ids.push((yield* cli.json<TokenInfo>("pool", "add", "github", "--token", token)).account_id)

      const limited = yield* cli.json<TokenInfo>(
        "pool", "report", "github", "--account", ids[0]!, "--status", "429", "--header", "Retry-After: 600"
      )
      expect(limited.status).toBe("rate_limited")
      expect(Date.parse(limited.rate_limit!.reset_at!)).toBeGreaterThan(Date.now() + 500_000)
      const counts = (yield* cli.json<Array<Pool>>("pool", "list"))[0]!
      expect(counts).toMatchObject({ total: 2, available: 1, rate_limited: 1 })

      // by token rather than account, with GitHub's own headers
      const reset = String(Math.floor(Date.now() / 1000) + 900)
      const byToken = yield* cli.json<TokenInfo>(
        "pool", "report", "github", "--token", TOKENS[1]!, "--status", "403",
        "-H", "x-ratelimit-remaining: 0", "-H", "x-ratelimit-limit: 5000", "-H", `x-ratelimit-reset: ${reset}`
      )
      expect(byToken).toMatchObject({ account_id: ids[1], status: "rate_limited", rate_limit: { remaining: 0, limit: 5000 } })

      const exhausted = yield* cli.run("pool", "acquire", "github")
      expect(exhausted.code).toBe(6)
      expect(exhausted.stdout).toBe("")
      expect(exhausted.stderr).toMatch(/^tessera: every token of pool 'github' is rate-limited; the first is usable again at .+\n$/)
      const waited = yield* cli.run("pool", "acquire", "github", "--wait", "1s")
      expect(waited.code).toBe(6)

      const badHeader = yield* cli.run("pool", "report", "github", "--account", ids[0]!, "--status", "200", "-H", "no colon here")
      expect(badHeader).toMatchObject({ code: 2, stderr: "tessera: bad --header 'no colon here': expected 'Name: value'\n" })
      const neither = yield* cli.run("pool", "report", "github", "--status", "200")
      expect(neither.code).toBe(2)
      const unknownToken = yield* cli.run("pool", "report", "github", "--token", "ghp_not_in_the_pool_0000", "--status", "200")
      expect(unknownToken).toMatchObject({ code: 3, stderr: "tessera: no account of pool 'github' holds this token\n" })
      expect(unknownToken.stderr).not.toContain("ghp_not_in_the_pool")
      const badWait = yield* cli.run("pool", "acquire", "github", "--wait", "a while")
      expect(badWait).toMatchObject({ code: 2, stderr: "tessera: bad --wait 'a while': expected a duration such as 90s, 5m or 1h30m\n" })
    }), { timeout: 120_000 })

  it.scopedLive("`pool check` validates every token upstream, shows live rate limits, counts progress and exits 4 for an invalid one", () =>
    Effect.gen(function*() {
      const fakes = yield* upstreams
      fakes.github.addToken(TOKENS[0]!, { login: "octo-one", limit: 5000, remaining: 4321 })
      fakes.github.addToken(TOKENS[1]!, { login: "octo-two", limit: 5000, remaining: 12 })
      fakes.github.addToken(TOKENS[2]!, { login: "octo-three" })
      const cli = yield* makeCli(fakes.env)
      const ids = new Map<string, string>()
      for (const token of TOKENS) ids.set(token, (yield* cli.json<TokenInfo>("pool", "add", "github", "--token", token)).account_id)

      const healthy = yield* cli.run("pool", "check", "github", "--json")
      expect(healthy.code, explain(["pool", "check"], healthy)).toBe(0)
      // stderr is not a terminal: one line with the count instead of a redrawn progress line
      expect(healthy.stderr).toBe("checking pool github: 3 items\n")
      const checks: Array<Check> = JSON.parse(healthy.stdout)
      const byAccount = new Map(checks.map((check) => [check.account_id, check]))
      expect(byAccount.get(ids.get(TOKENS[0]!)!)).toMatchObject({
        valid: true,
        status: "available",
        username: "octo-one",
        // validation reads /rate_limit (free) and /user, which uses one request
        rate_limit: { limit: 5000, remaining: 4320 }
      })
      expect(byAccount.get(ids.get(TOKENS[1]!)!)?.rate_limit?.remaining).toBe(11)
      expect(fakes.github.calls("rate_limit")).toBe(3)

      fakes.github.revoke(TOKENS[2]!)
      const table = yield* cli.run("pool", "check", "github")
      expect(table.code).toBe(4)
      expect(table.stdout.split("\n")[0]).toMatch(/^ACCOUNT\s+VALID\s+STATUS\s+USERNAME\s+REMAINING\s+RESETS\s+REASON/)
      expect(table.stdout).toMatch(new RegExp(`${ids.get(TOKENS[0]!)}\\s+valid\\s+available\\s+octo-one\\s+4319/5000`))
      expect(table.stdout).toMatch(new RegExp(`${ids.get(TOKENS[2]!)}\\s+invalid\\s+invalid`))
      expect(table.stderr).toBe("checking pool github: 3 items\ntessera: 1 of 3 token(s) are not valid\n")
      for (const token of TOKENS) expect(table.stdout + table.stderr).not.toContain(token)

      // the invalid token is out of rotation now
      const pool = (yield* cli.json<Array<Pool>>("pool", "list"))[0]!
      expect(pool).toMatchObject({ total: 3, available: 2, invalid: 1 })
      const all = yield* cli.run("token", "validate", "--all")
      expect(all.code).toBe(4)
      expect(all.stderr.split("\n")[0]).toBe("validating: 3 items")
    }), { timeout: 120_000 })
})
