/**
 * The API declaration serves as a typed client too: `HttpApiClient.make(Api.TesseraApi)`
 * decodes answers and errors into the same schemas the server encodes them with.
 */
import { HttpApiClient, HttpClient, HttpClientRequest } from "@effect/platform"
import { NodeHttpClient } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { Account } from "@tessera/core"
import { Effect, Redacted, Schema } from "effect"
import { Api, ApiError } from "@tessera/server"
import * as H from "./harness.js"

const id = Schema.decodeSync(Account.AccountId)
const pool = Schema.decodeSync(Account.PoolId)

describe("a client from the API declaration", () => {
  it.scopedLive("calls routes with typed input and output, and fails with the API's error classes", () =>
    Effect.gen(function*() {
      const running = yield* H.start()
      const client = (key: string) =>
        HttpApiClient.make(Api.TesseraApi, {
          baseUrl: running.url,
          transformClient: HttpClient.mapRequest(HttpClientRequest.bearerToken(key))
        })
      const reader = yield* client(running.keys.read)
      const info = yield* reader.token.status({ path: { id: id("acc-1") } })
      expect(info).toMatchObject({ account_id: "acc-1", status: "available" })
      const missing = yield* Effect.flip(reader.token.status({ path: { id: id("nobody") } }))
      expect(missing).toBeInstanceOf(ApiError.NotFound)
      const denied = yield* Effect.flip(reader.token.defaultRefresh())
      expect(denied).toBeInstanceOf(ApiError.Forbidden)

      const tokens = yield* client(running.keys.token)
      const lease = yield* tokens.pools.acquire({ path: { pool: pool("github") }, urlParams: {} })
      expect(Redacted.value(lease.access_token)).toBe(H.GH_TOKENS[0])
      const report = yield* tokens.pools.report({
        path: { pool: pool("github") },
        payload: { account_id: id("gh-1"), status: 429, headers: { "retry-after": "60" } }
      })
      expect(report.status).toBe("rate_limited")
    }).pipe(Effect.provide(NodeHttpClient.layerUndici)))
})
