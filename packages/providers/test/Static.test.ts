import { describe, expect, it } from "@effect/vitest"
import { Drivers, Static } from "@tessera/providers"
import { ConfigProvider, Effect, FastCheck as fc, Redacted } from "effect"

const tokens = (list: string) => Static.parseList(Redacted.make(list)).map(Redacted.value)

const withEnv = (env: Record<string, string>) => Effect.withConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(env))))

describe("static token pools", () => {
  it("gives a token the same id every time: the provider and 10 hex digits of its SHA-256", () => {
    const token = Redacted.make("ghp_abcdefghijklmnopqrstuvwxyz0123456789")
    const id = Static.accountId("github", token)
    expect(id).toMatch(/^github-[0-9a-f]{10}$/)
    expect(Static.accountId("github", Redacted.make("ghp_abcdefghijklmnopqrstuvwxyz0123456789"))).toBe(id)
    expect(Static.accountId("gitlab", token)).not.toBe(id)
  })

  it.prop(
    "an account id reveals nothing of its token",
    [fc.string({ minLength: 8, maxLength: 80 }).filter((s) => s.trim() === s)],
    ([token]) => {
      const id = Static.accountId("github", Redacted.make(token))
      expect(id.includes(token)).toBe(false)
      expect(id).toMatch(/^github-[0-9a-f]{10}$/)
    }
  )

  it("reads a comma-separated list: trimmed, empties ignored, duplicates once", () => {
    expect(tokens(" a1 ,b2,, a1,\tc3 ,")).toEqual(["a1", "b2", "c3"])
    expect(tokens(" , ")).toEqual([])
  })

  it.effect("declares a static account per token in the pool named after its provider", () =>
    Effect.gen(function*() {
      const entries = yield* Static.accountsFromEnv.pipe(
        withEnv({ GITHUB_TOKENS: "gh-token-1, gh-token-2,gh-token-1", GITLAB_TOKENS: "glpat-1", BITBUCKET_TOKENS: "" })
      )
      expect(entries.map(({ account }) => [account.provider, account.pool, account.source._tag])).toEqual([
        ["github", "github", "static"],
        ["github", "github", "static"],
        ["gitlab", "gitlab", "static"]
      ])
      expect(entries.map(({ token }) => Redacted.value(token))).toEqual(["gh-token-1", "gh-token-2", "glpat-1"])
      expect(entries[0]?.account.id).toBe(Static.accountId("github", Redacted.make("gh-token-1")))
      // the account carries no token: it only reaches the lifecycle as the initial token
      expect(JSON.stringify(entries.map(({ account }) => account))).not.toContain("gh-token")
    }))

  it.effect("is part of the accounts the environment declares, with the tokens they start with", () =>
    Effect.gen(function*() {
      const declared = yield* Drivers.accountsFromEnv.pipe(
        withEnv({ BITBUCKET_TOKENS: "bb-1", UPSTOX_ACCOUNT_IDS: "acc-1" })
      )
      expect(declared.map(({ account, token }) => [account.id, token === undefined ? null : Redacted.value(token.token)])).toEqual([
        ["acc-1", null],
        [Static.accountId("bitbucket", Redacted.make("bb-1")), "bb-1"]
      ])
    }))
})
