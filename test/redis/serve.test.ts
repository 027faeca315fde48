/**
 * The Redis mirror end to end: the built `tessera serve` with `TESSERA_REDIS_URL` (database 6
 * of the machine's Redis, emptied first) against the fake auth service, read by a consumer the
 * way the existing service's users read it.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { AuthService } from "../fakes/index.js"
import { call, requireBuild, serve } from "../e2e/harness.js"
import { tempDir } from "../lifecycle/harness.js"
import * as Harness from "./harness.js"

const DB = 6
const ADMIN = "admin-key-for-the-redis-mirror-test-0123"

const available = await Harness.probe()

if (!available) {
  Harness.describeWithoutRedis("tessera serve with TESSERA_REDIS_URL")
} else {
  describe("tessera serve with TESSERA_REDIS_URL", () => {
    it.scopedLive("mirrors the declared accounts' tokens, the default account under the legacy keys, and a refresh through the API", () =>
      Effect.gen(function*() {
        yield* requireBuild
        const redis = yield* Harness.consumer(DB)
        const auth = yield* AuthService.make({ accounts: ["acc-1", "acc-2"] })
        const cwd = yield* tempDir
        const service = yield* serve(cwd, {
          TOKEN_REFRESH_SERVICE_URL: auth.url,
          UPSTOX_ACCOUNT_IDS: "acc-1,acc-2",
          UPSTOX_API_URL: "http://127.0.0.1:9",
          TESSERA_API_KEYS: `ops:admin:${ADMIN}`,
          TESSERA_REDIS_URL: Harness.url(DB),
          TESSERA_REDIS_TTL: "2h"
        })
        const url = yield* service.url
        const token = (id: string) => auth.account(id)!.token

        // the first declared account is the default one
        yield* Harness.eventually("the startup tokens in Redis", async () => {
          const [one, two, legacy] = await redis.mget("upstox_access_token:acc-1", "upstox_access_token:acc-2", "upstox_access_token")
          return one === token("acc-1") && two === token("acc-2") && legacy === token("acc-1") ? true : undefined
        }, 20_000)
        const tokenTtl = yield* Effect.promise(() => redis.ttl("upstox_access_token"))
        expect(tokenTtl).toBeGreaterThan(7000)
        expect(tokenTtl).toBeLessThanOrEqual(7200)

        const before = token("acc-1")
        const refreshed = yield* call(url, "POST", "/refresh-token", { key: ADMIN })
        expect(refreshed.status).toBe(200)
        expect(token("acc-1")).not.toBe(before)
        yield* Harness.eventually("the refreshed token under upstox_access_token", async () =>
          (await redis.get("upstox_access_token")) === token("acc-1") ? true : undefined)

        // token_info is the API's token status, without the token
        const status = yield* call(url, "GET", "/token/status", { key: ADMIN })
        const info = JSON.parse((yield* Effect.promise(() => redis.get("token_info")))!) as Record<string, unknown>
        expect(Object.keys(info).sort()).toEqual(Object.keys(status.json).sort())
        for (const field of ["account_id", "status", "token_preview", "expires_at", "expires_at_local", "source"]) {
          expect(info[field], field).toEqual(status.json[field])
        }
        expect(JSON.stringify(info)).not.toContain(token("acc-1"))

        // clearing through the API deletes the keys
        const cleared = yield* call(url, "DELETE", "/accounts/acc-2/token", { key: ADMIN })
        expect(cleared.status).toBe(200)
        yield* Harness.eventually("acc-2's keys deleted", async () =>
          (await redis.exists("upstox_access_token:acc-2", "token_info:acc-2")) === 0 ? true : undefined)

        expect(yield* service.stop("SIGTERM")).toBe(0)
        expect(service.output()).toContain(`Redis mirror: mirroring tokens to redis://127.0.0.1:6379/${DB}`)
        for (const secret of [before, token("acc-1"), token("acc-2"), ADMIN]) expect(service.output()).not.toContain(secret)
      }), { timeout: 60_000 })
  })
}
