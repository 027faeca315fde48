/**
 * Secrets (issue 6, part 4; SPEC §4.3): canary passwords, client secrets, refresh tokens,
 * access tokens, API keys and the encryption key are run through every feature of the built
 * `tessera serve` (HTTP, the `/events` stream, metrics, the audit log, error answers for bad
 * requests and upstream failures) and of the `tessera` command line (remote and local, tables
 * and `--json`, `keys rotate`, `doctor`). Then every canary is looked for, raw and in its
 * encoded forms (base64, base64url, URL-encoded, HTTP Basic) and as fragments of ten
 * characters, in the server's output, every error body, every event, the audit log (over HTTP
 * and in the database), every status and list output, and the raw bytes of the database, its
 * WAL and its shared-memory file, while the server runs and after it stops. The raw token is
 * allowed only in the answers whose purpose is to hand it out (`GET /accounts/{id}/token`,
 * `acquire`, `tessera token get`, `tessera pool acquire`), and there only the token handed out.
 *
 * Every secret known to the test counts as a canary: the ones it chose, the ones the fakes
 * issued (every access and refresh token), the ones seen in any request to a fake, and every
 * value decrypted from the database at the end.
 */
import { describe, expect, it } from "@effect/vitest"
import { Crypto } from "@tessera/core"
import Database from "better-sqlite3"
import { Effect, Either, Redacted } from "effect"
import * as crypto from "node:crypto"
import * as fs from "node:fs"
import * as path from "node:path"
import { run as runCli } from "../cli/harness.js"
import { requireBuild, serve } from "../e2e/harness.js"
import { Amp, AuthService, GitHub, OAuth2, Upstox } from "../fakes/index.js"
import { tempDir, waitUntil } from "../lifecycle/harness.js"
import type { FakeServer } from "../fakes/index.js"

// --- canaries --------------------------------------------------------------------------------

const hex = (bytes: number) => crypto.randomBytes(bytes).toString("hex")

/** The secrets this test chooses: distinctive random strings, each found nowhere else. */
const chosen = {
  apiKeyAdmin: `tsr_${hex(20)}`,
  apiKeyReader: `tsr_${hex(20)}`,
  apiKeyTokens: `tsr_${hex(20)}`,
  apiKeyUnknown: `tsr_${hex(20)}`,
  encryptionKey: crypto.randomBytes(32).toString("base64"),
  encryptionKeyNext: crypto.randomBytes(32).toString("base64"),
  ampPassword: `pw${hex(16)}`,
  ampPasswordSecond: `pw${hex(16)}`,
  clientSecret: `cs${hex(16)}`,
  upstoxStart1: `ups_${hex(16)}`,
  upstoxStart2: `ups_${hex(16)}`,
  upstoxManual: `ups_${hex(16)}`,
  upstoxRejected: hex(20),
  github: [`ghp_${hex(16)}`, `ghp_${hex(16)}`, `ghp_${hex(16)}`],
  githubAdded: `ghp_${hex(16)}`,
  githubPool: `ghp_${hex(16)}`,
  githubManual: `ghp_${hex(16)}`,
  githubUnknown: `ghp_${hex(16)}`,
  staticAccount: `ghp_${hex(16)}`
}

/** The forms a secret could leak in besides itself. */
const formsOf = (value: string): Array<string> => {
  const forms = new Set([
    value,
    Buffer.from(value).toString("base64"),
    Buffer.from(value).toString("base64").replace(/=+$/, ""),
    Buffer.from(value).toString("base64url"),
    encodeURIComponent(value),
    JSON.stringify(value).slice(1, -1)
  ])
  return [...forms]
}

/** Ten-character pieces of a secret (past a shared prefix): a partial leak, such as a quoted snippet. */
const fragmentsOf = (value: string): Array<string> => {
  const start = Math.max(0, (/^[a-z]+_/.exec(value)?.[0].length ?? 0) - 4)
  const pieces: Array<string> = []
  for (let i = start; i + 10 <= value.length; i++) pieces.push(value.slice(i, i + 10))
  return pieces
}

const count = (haystack: string | Buffer, needle: string): number => {
  if (needle.length === 0) return 0
  let found = 0
  let at = haystack.indexOf(needle)
  while (at >= 0) {
    found++
    at = haystack.indexOf(needle, at + needle.length)
  }
  return found
}

// --- what was seen -----------------------------------------------------------------------------

type Place =
  | "server output"
  | "HTTP error bodies"
  | "HTTP status and list answers"
  | "HTTP hand-out answers (other secrets)"
  | "/events stream"
  | "/metrics"
  | "/audit (HTTP)"
  | "audit_log rows (database)"
  | "CLI output"
  | "CLI hand-out output (other secrets)"
  | "CLI error output"
  | "database file, server running"
  | "WAL file, server running"
  | "shm file, server running"
  | "database file, after stop"
  | "WAL file, after stop"
  | "shm file, after stop"

interface Seen {
  readonly place: Place
  readonly label: string
  readonly content: string | Buffer
  /** The token this answer exists to hand out: allowed here, and only here. */
  readonly handsOut?: string | undefined
}

const sleep = (ms: number) => Effect.promise(() => new Promise((resolve) => setTimeout(resolve, ms)))

/** Every credential a request to a fake carried: bearer and basic credentials, and secret fields of its body. */
const credentialsSentTo = (fake: FakeServer.FakeServer<string>): Array<string> =>
  fake.requests().flatMap((request) => {
    const found: Array<string> = []
    const authorization = request.headers["authorization"]
    if (authorization !== undefined) {
      const credential = authorization.replace(/^\S+\s+/, "")
      found.push(credential)
      if (/^basic\s/i.test(authorization)) {
        const decoded = Buffer.from(credential, "base64").toString("utf8")
        found.push(...decoded.split(":").slice(1).join(":").split("\n"))
      }
    }
    const body = request.body
    if (typeof body === "object" && body !== null) {
      for (const field of ["password", "refresh_token", "client_secret", "access_token", "token"]) {
        const value = (body as Record<string, unknown>)[field]
        if (typeof value === "string") found.push(value)
      }
    }
    return found
  })

/** Every secret the database holds, decrypted with `keys`: tokens and the secrets of sources. */
const secretsIn = (file: string, keys: ReadonlyArray<string>): Array<string> => {
  const keyring = Crypto.make(
    keys.map((key) => Either.getOrThrow(Crypto.EncryptionKey.fromBase64(key))) as unknown as readonly [Crypto.EncryptionKey]
  )
  const db = new Database(file, { readonly: true })
  try {
    const found: Array<string> = []
    for (const row of db.prepare("SELECT account_id, token_enc FROM token_state WHERE token_enc IS NOT NULL").all() as Array<any>) {
      const token = keyring.open(row.token_enc, Crypto.associatedData("token_state", row.account_id, "token"))
      found.push(Redacted.value(Either.getOrThrow(token)))
    }
    for (const row of db.prepare("SELECT account_id, source_enc FROM accounts").all() as Array<any>) {
      const sealed = keyring.open(row.source_enc, Crypto.associatedData("accounts", row.account_id, "source"))
      const source = JSON.parse(Redacted.value(Either.getOrThrow(sealed)))
      for (const field of ["password", "clientSecret", "refreshToken"]) if (typeof source[field] === "string") found.push(source[field])
    }
    return found
  } finally {
    db.close()
  }
}

describe("secrets", () => {
  it.scopedLive("canary secrets run through every feature appear nowhere but where a token is handed out", () =>
    Effect.gen(function*() {
      yield* requireBuild
      const dir = yield* tempDir
      const file = path.join(dir, "data", "tessera.db")
      const seen: Array<Seen> = []
      const note = (place: Place, label: string, content: string | Buffer, handsOut?: string) =>
        void seen.push({ place, label, content, handsOut })

      // --- fakes ---------------------------------------------------------------------------------
      const amp = yield* Amp.make({ users: { trader: chosen.ampPassword, second: chosen.ampPasswordSecond } })
      const auth = yield* AuthService.make({})
      auth.setAccount("acc-1", { token: chosen.upstoxStart1 })
      auth.setAccount("acc-2", { token: chosen.upstoxStart2 })
      const upstox = yield* Upstox.make()
      Upstox.linkAuthService(upstox, auth)
      upstox.allow(chosen.upstoxManual)
      const github = yield* GitHub.make()
      const knownToGitHub = [...chosen.github, chosen.githubAdded, chosen.githubPool, chosen.githubManual, chosen.staticAccount]
      for (const [i, token] of knownToGitHub.entries()) {
        github.addToken(token, { login: `octo${i}` })
      }
      const oauth = yield* OAuth2.make({ clients: { tessera: chosen.clientSecret } })
      const grant = oauth.issueGrant("tessera")

      /**
       * The tokens the fakes have issued so far, and every token handed out: taken after each
       * request, so a token replaced by a later refresh is a canary too.
       */
      const harvested = new Set<string>()
      const harvest = (handedOut?: string) => {
        for (const issued of amp.issued()) harvested.add(issued.token)
        for (const id of ["acc-1", "acc-2"]) {
          const current = auth.account(id)?.token
          if (current !== undefined) harvested.add(current)
        }
        if (handedOut !== undefined) harvested.add(handedOut)
      }

      // --- the service -----------------------------------------------------------------------------
      const env = {
        TESSERA_DB: file,
        TESSERA_ENCRYPTION_KEY: chosen.encryptionKey,
        TESSERA_API_KEYS: `admin:admin:${chosen.apiKeyAdmin},reader:read:${chosen.apiKeyReader},tokens:token:${chosen.apiKeyTokens}`,
        INTERNAL_API_ACCOUNT_ID: "acc-1",
        AMP_API_URL: amp.url,
        AMP_USERNAME: "trader",
        AMP_PASSWORD: chosen.ampPassword,
        TOKEN_REFRESH_SERVICE_URL: auth.url,
        UPSTOX_ACCOUNT_IDS: "acc-1,acc-2",
        UPSTOX_API_URL: upstox.url,
        GITHUB_TOKENS: chosen.github.join(","),
        GITHUB_API_URL: github.url,
        API_RETRY_MAX_ATTEMPTS: "2",
        API_RETRY_BASE_DELAY_MS: "20",
        API_RETRY_MAX_DELAY_MS: "100",
        API_REQUEST_TIMEOUT_MS: "2000",
        TESSERA_FLUSH_INTERVAL: "50ms",
        TESSERA_BACKGROUND_RETRY_MAX: "500ms"
      }
      const server = yield* serve(dir, env)
      const url = yield* server.url

      /** One request, its answer noted where it belongs. */
      const http = (
        label: string,
        method: string,
        route: string,
        options: { readonly key?: string; readonly body?: unknown; readonly raw?: string; readonly authorization?: string } = {}
      ) =>
        Effect.promise(async () => {
          const headers: Record<string, string> = {}
          if (options.key !== undefined) headers["authorization"] = `Bearer ${options.key}`
          if (options.authorization !== undefined) headers["authorization"] = options.authorization
          let body: string | null = null
          if (options.raw !== undefined) body = options.raw
          else if (options.body !== undefined) body = JSON.stringify(options.body)
          if (body !== null) headers["content-type"] = "application/json"
          const response = await fetch(`${url}${route}`, { method, headers, body })
          const text = await response.text()
          let json: any
          try {
            json = JSON.parse(text)
          } catch {
            json = undefined
          }
          const handingOut = route.endsWith("/acquire") || (method === "GET" && /^\/accounts\/[^/]+\/token$/.test(route))
          const handsOut = response.ok && handingOut ? json?.access_token as string : undefined
          const where: Place = !response.ok
            ? "HTTP error bodies"
            : handsOut !== undefined
            ? "HTTP hand-out answers (other secrets)"
            : route === "/metrics"
            ? "/metrics"
            : route.startsWith("/audit")
            ? "/audit (HTTP)"
            : "HTTP status and list answers"
          note(
            where,
            `${label}: ${method} ${route} → ${response.status}`,
            `${JSON.stringify([...response.headers])}\n${text}`,
            handsOut
          )
          harvest(handsOut)
          return { status: response.status, text, json }
        })
      /** A request that must answer `status`, when one is given. */
      const step = (label: string, method: string, route: string, key: string, body?: unknown, status?: number) =>
        Effect.tap(http(label, method, route, { key, ...(body === undefined ? {} : { body }) }), (answer) => {
          if (status !== undefined) expect(answer.status, `${label}: ${answer.text}`).toBe(status)
        })
      const get = (label: string, route: string, key: string, status?: number) => step(label, "GET", route, key, undefined, status)
      const post = (label: string, route: string, key: string, body?: unknown, status?: number) => step(label, "POST", route, key, body, status)
      const del = (label: string, route: string, key: string, status?: number) => step(label, "DELETE", route, key, undefined, status)

      for (let i = 0; i < 300; i++) {
        const health = yield* http("health", "GET", "/health")
        if (health.json?.tokens_available === 6) break
        yield* sleep(50)
      }

      // the live event stream, for the whole run
      const controller = new AbortController()
      let events = ""
      const stream = yield* Effect.promise(() =>
        fetch(`${url}/events`, { headers: { authorization: `Bearer ${chosen.apiKeyReader}` }, signal: controller.signal })
      )
      const reader = stream.body!.getReader()
      const pumped = (async () => {
        const decoder = new TextDecoder()
        for (;;) {
          const chunk = await reader.read().catch(() => ({ done: true as const, value: undefined }))
          if (chunk.done) return
          events += decoder.decode(chunk.value, { stream: true })
        }
      })()
      yield* Effect.addFinalizer(() => Effect.promise(() => (controller.abort(), pumped)))
      yield* waitUntil(() => events.includes(": connected"), 5000)

      const { apiKeyAdmin: admin, apiKeyReader: readKey, apiKeyTokens: tokenKey } = chosen
      const accounts0 = (yield* http("accounts", "GET", "/accounts", { key: readKey })).json as Array<any>
      const githubIds = accounts0.filter((a) => a.pool === "github").map((a) => a.account_id as string).sort()

      // --- every HTTP feature --------------------------------------------------------------------
      yield* http("health", "GET", "/health")
      yield* get("default status", "/token/status", readKey)
      for (const id of ["amp", "acc-1", "acc-2", ...githubIds]) yield* get("status", `/accounts/${id}/token/status`, readKey)
      yield* get("default validate", "/token/validate", readKey)
      for (const id of ["amp", "acc-2", githubIds[0]!]) yield* get("validate", `/accounts/${id}/token/validate`, readKey)

      yield* post("update accepted", "/token/update", admin, { access_token: chosen.upstoxManual }, 200)
      yield* post("update rejected upstream", "/accounts/acc-2/token/update", admin, { access_token: chosen.upstoxRejected }, 422)
      yield* post("update, not validated", `/accounts/${githubIds[1]}/token/update?validate=false`, admin, { access_token: chosen.githubManual }, 200)
      yield* post("update of an unknown account", "/accounts/nobody/token/update", admin, { access_token: chosen.upstoxRejected }, 404)

      yield* post("refresh default", "/refresh-token", admin)
      yield* post("refresh amp", "/accounts/amp/token/refresh", admin)
      yield* post("refresh a static token", `/accounts/${githubIds[0]}/token/refresh`, admin)

      // accounts registered over HTTP: OAuth2 with a client secret and refresh token, a second password account, a static one
      const oauthSource = {
        type: "oauth2",
        token_url: `${oauth.url}/oauth/token`,
        client_id: "tessera",
        client_secret: chosen.clientSecret,
        refresh_token: grant.refreshToken
      }
      const password = (username: string, secret: string) => ({ type: "password", base_url: amp.url, username, password: secret })
      const staticAccount = { account_id: "static-1", provider: "github", pool: "github", source: { type: "static" }, access_token: chosen.staticAccount }
      const added = yield* post("add oauth2", "/accounts", admin, { account_id: "oauth", provider: "oauth2", source: oauthSource }, 201)
      expect(added.json.token.status).toBe("available")
      yield* post("add password", "/accounts", admin, { account_id: "amp-2", provider: "amp", source: password("second", chosen.ampPasswordSecond) }, 201)
      yield* post("add static", "/accounts", admin, staticAccount, 201)
      yield* post("add a duplicate", "/accounts", admin, staticAccount, 409)
      yield* post("add with wrong credentials", "/accounts", admin, { account_id: "amp-wrong", provider: "amp", source: password("trader", chosen.ampPasswordSecond) }, 201)
      yield* post("pool token add", "/pools/github/tokens", admin, { access_token: chosen.githubPool }, 201)
      yield* post("pool token add, account id", "/pools/github/tokens", admin, { access_token: chosen.githubAdded, account_id: "gh-added", label: "added" }, 201)
      // (each OAuth2 access token is fetched once, so the test knows it)
      yield* get("get oauth2 token", "/accounts/oauth/token", tokenKey)
      yield* post("refresh oauth2 (rotates the refresh token)", "/accounts/oauth/token/refresh", admin)
      yield* get("get oauth2 token", "/accounts/oauth/token", tokenKey)
      yield* post("refresh oauth2 again", "/accounts/oauth/token/refresh", admin)

      // tokens handed out
      for (const id of ["amp", "acc-1", "acc-2", "oauth", "amp-2", githubIds[0]!]) yield* get("get token", `/accounts/${id}/token`, tokenKey)
      for (let i = 0; i < 4; i++) yield* post("acquire", "/pools/github/acquire", tokenKey)

      // reports: by account, by token, by an unknown token, a 401
      const exhausted = { "x-ratelimit-remaining": "0", "x-ratelimit-reset": String(Math.ceil(Date.now() / 1000) + 3600) }
      yield* post("report by account", "/pools/github/report", tokenKey, { account_id: githubIds[2], status: 403, headers: exhausted })
      const quota = { "x-ratelimit-remaining": "4000", "x-ratelimit-limit": "5000" }
      yield* post("report by token", "/pools/github/report", tokenKey, { access_token: chosen.githubPool, status: 200, headers: quota })
      yield* post("report an unknown token", "/pools/github/report", tokenKey, { access_token: chosen.githubUnknown, status: 200 }, 404)
      yield* post("report a 401", "/pools/github/report", tokenKey, { access_token: chosen.github[0], status: 401 })
      yield* get("validate an invalidated token", `/accounts/${githubIds[0]}/token/validate`, readKey)

      // clear, fetch again, remove
      yield* del("clear", "/accounts/acc-2/token", admin)
      yield* get("get after clear", "/accounts/acc-2/token", tokenKey)
      yield* del("remove", "/accounts/static-1", admin, 204)

      // denied
      const basic = `Basic ${Buffer.from(`admin:${chosen.apiKeyUnknown}`).toString("base64")}`
      expect((yield* http("no key", "GET", "/accounts")).status).toBe(401)
      expect((yield* http("basic credentials", "GET", "/accounts", { authorization: basic })).status).toBe(401)
      yield* get("unknown key", "/accounts", chosen.apiKeyUnknown, 401)
      yield* post("read key on an admin route", "/accounts/acc-1/token/refresh", readKey, undefined, 403)
      yield* get("read key on a token route", "/accounts/acc-1/token", readKey, 403)
      yield* get("token key on /audit", "/audit", tokenKey, 403)

      // bad requests that carry secrets
      const bad = [
        { label: "malformed JSON, bare token", raw: `{"access_token": ${chosen.upstoxRejected}}` },
        { label: "malformed JSON, cut off", raw: `{"access_token": "${chosen.upstoxRejected}` },
        { label: "malformed JSON, trailing garbage", raw: `{"access_token": "${chosen.upstoxRejected}" ${chosen.upstoxRejected}}` },
        { label: "access_token of the wrong type", body: { access_token: [chosen.upstoxRejected] } },
        { label: "token with a space", body: { access_token: `${chosen.upstoxRejected} x` } },
        { label: "bad expires_at", body: { access_token: chosen.upstoxRejected, expires_at: "tomorrow" } },
        { label: "unknown field types", body: { access_token: chosen.upstoxRejected, account_id: 42 } },
        { label: "oversized body", raw: JSON.stringify({ access_token: chosen.upstoxRejected, padding: "x".repeat(70_000) }) }
      ]
      for (const request of bad) {
        const payload = request.raw === undefined ? { body: request.body } : { raw: request.raw }
        const answer = yield* http(request.label, "POST", "/accounts/acc-2/token/update", { key: admin, ...payload })
        expect(answer.status, `${request.label}: ${answer.text}`).toBeGreaterThanOrEqual(400)
        expect(answer.status, `${request.label}: ${answer.text}`).toBeLessThan(500)
      }
      const badAccounts = [
        { label: "unknown source type", body: { account_id: "x-1", provider: "amp", source: { ...password("trader", chosen.ampPassword), type: "passwd" } } },
        { label: "password of the wrong type", body: { account_id: "x-2", provider: "amp", source: { ...password("trader", chosen.ampPassword), password: [chosen.ampPassword] } } },
        { label: "bad account id", body: { account_id: "no spaces", provider: "oauth2", source: oauthSource } },
        { label: "bad token url", body: { account_id: "x-3", provider: "oauth2", source: { ...oauthSource, token_url: "not a url" } } },
        { label: "missing username", body: { account_id: "x-4", provider: "amp", source: { type: "password", password: chosen.ampPassword } } },
        { label: "extra secret field", body: { account_id: "x-5", provider: "github", source: { type: "static", token: chosen.githubUnknown }, access_token: 7 } }
      ]
      for (const request of badAccounts) {
        const answer = yield* http(request.label, "POST", "/accounts", { key: admin, body: request.body })
        expect(answer.status, `${request.label}: ${answer.text}`).toBeGreaterThanOrEqual(400)
        expect(answer.status, `${request.label}: ${answer.text}`).toBeLessThan(500)
      }
      const neither = { status: 401, headers: { authorization: `Bearer ${chosen.githubUnknown}` } }
      yield* post("report without account or token", "/pools/github/report", tokenKey, neither, 400)

      // upstream failures (faults queued for exactly the attempts made: 2 for retried ones, else 1)
      amp.failNext("refresh", { status: 503 }, 2)
      amp.failNext("obtain", { status: 503 }, 2)
      yield* http("refresh, upstream down", "POST", "/accounts/amp/token/refresh", { key: admin })
      amp.failNext("refresh", { status: 401 })
      amp.failNext("obtain", "garbage-html")
      yield* http("refresh, upstream answers garbage", "POST", "/accounts/amp/token/refresh", { key: admin })
      auth.down("reset")
      yield* http("refresh, auth service unreachable", "POST", "/accounts/acc-1/token/refresh", { key: admin })
      auth.up()
      upstox.failNext("profile", { status: 500 }, 2)
      yield* http("validate, upstream 500", "GET", "/accounts/acc-1/token/validate", { key: readKey })
      oauth.failNext("token", "truncated-json")
      yield* http("refresh oauth2, truncated answer", "POST", "/accounts/oauth/token/refresh", { key: admin })
      yield* http("refresh amp after the failures", "POST", "/accounts/amp/token/refresh", { key: admin })

      // upstreams that quote back the credential they were sent, in the message Tessera repeats
      const echo = (message: string) => ({
        status: 401 as const,
        body: JSON.stringify({ error: "unauthorized", error_description: message })
      })
      amp.failNext("obtain", echo(`wrong password '${chosen.ampPasswordSecond}' for user second`))
      yield* http("clear amp-2", "DELETE", "/accounts/amp-2/token", { key: admin })
      yield* http("obtain, the upstream quotes the password", "GET", "/accounts/amp-2/token", { key: tokenKey })
      const upstoxToken = auth.account("acc-1")!.token
      const upstoxError = { status: "error", errors: [{ errorCode: "UDAPI100050", message: `Invalid token used to access API: ${upstoxToken}` }] }
      upstox.failNext("profile", { status: 401, body: JSON.stringify(upstoxError) })
      yield* http("validate, the upstream quotes the token", "GET", "/accounts/acc-1/token/validate", { key: readKey })
      github.failNext("rate_limit", { status: 401, body: JSON.stringify({ message: `Bad credentials: ${chosen.githubPool}` }) })
      const pooled = ((yield* http("pool tokens", "GET", "/pools/github/tokens", { key: readKey })).json as Array<any>)
        .find((info) => info.token_preview?.endsWith(chosen.githubPool.slice(-4)))
      yield* http("validate, GitHub quotes the token", "GET", `/accounts/${pooled.account_id}/token/validate`, { key: readKey })
      oauth.failNext("token", echo(`client authentication failed for secret ${chosen.clientSecret}`))
      yield* http("refresh oauth2, the server quotes the client secret", "POST", "/accounts/oauth/token/refresh", { key: admin })
      const refreshToken = secretsIn(file, [chosen.encryptionKey]).find((secret) => secret.startsWith("rt_"))!
      oauth.failNext("token", echo(`refresh token ${refreshToken} is not valid for this client`))
      yield* http("refresh oauth2, the server quotes the refresh token", "POST", "/accounts/oauth/token/refresh", { key: admin })
      yield* http("get oauth2 token after the failures", "GET", "/accounts/oauth/token", { key: tokenKey })

      // the read-only views, at the end
      yield* sleep(200)
      yield* http("accounts", "GET", "/accounts", { key: readKey })
      yield* http("pools", "GET", "/pools", { key: readKey })
      yield* http("pool tokens", "GET", "/pools/github/tokens", { key: readKey })
      yield* http("metrics", "GET", "/metrics", { key: readKey })
      yield* http("audit", "GET", "/audit?limit=1000", { key: admin })
      yield* http("openapi", "GET", "/openapi.json")

      // --- the command line, against the server and on the database ----------------------------
      const cli = (place: "remote" | "local", args: ReadonlyArray<string>, extra: Record<string, string> = {}, stdin?: string) =>
        Effect.gen(function*() {
          const cliEnv = place === "remote" ? { TESSERA_API_KEY: admin, ...extra } : { ...env, ...extra }
          const full = place === "remote" ? [...args, "--server", url] : args
          const result = yield* runCli(dir, cliEnv, full, stdin)
          const handingOut = (args[0] === "token" && args[1] === "get") || (args[0] === "pool" && args[1] === "acquire")
          const handsOut = result.code === 0 && handingOut
            ? (args.includes("--json") ? JSON.parse(result.stdout).access_token as string : result.stdout.trim())
            : undefined
          const label = `tessera ${full.join(" ")} → ${result.code}`
          harvest(handsOut)
          const where = result.code !== 0
            ? "CLI error output"
            : handsOut !== undefined
            ? "CLI hand-out output (other secrets)"
            : "CLI output"
          note(where, label, `${result.stdout}\n${result.stderr}`, handsOut)
          return result
        })
      // Each command with and without --json, once against the server and once on the database.
      type Run = readonly [place: "remote" | "local", args: ReadonlyArray<string>, extra?: Record<string, string>, stdin?: string]
      const runs: Array<Run> = [
        ["remote", ["token", "status", "--all"]],
        ["local", ["token", "status", "--all", "--json"]],
        ["remote", ["accounts", "list", "--json"]],
        ["local", ["accounts", "list"]],
        ["remote", ["pool", "list", "github"]],
        ["local", ["pool", "list", "github", "--json"]],
        ["remote", ["audit", "--limit", "1000", "--json"]],
        ["local", ["audit", "--limit", "1000"]],
        ["remote", ["token", "get", "amp"]],
        ["local", ["token", "get", "amp", "--json"]],
        ["remote", ["pool", "acquire", "github", "--json"], { TESSERA_API_KEY: tokenKey }],
        ["local", ["keys", "list"]],
        ["local", ["doctor"]],
        // failures: a token the upstream rejects (from stdin), a bad source, an unknown API key, a wrong encryption key
        ["remote", ["token", "update", "acc-2", "--token", "-"], {}, `${chosen.upstoxRejected}\n`],
        ["remote", [
          "accounts", "add", "cli-oauth", "--provider", "oauth2", "--token-url", "not-a-url", "--client-id", "tessera",
          "--client-secret", chosen.clientSecret
        ]],
        ["remote", ["token", "status"], { TESSERA_API_KEY: chosen.apiKeyUnknown }],
        ["local", ["token", "status"], { TESSERA_ENCRYPTION_KEY: chosen.encryptionKeyNext }]
      ]
      yield* Effect.forEach(runs, ([place, args, extra, stdin]) => cli(place, args, extra, stdin), { concurrency: 3, discard: true })

      // the database while the server runs
      yield* sleep(200)
      const raw = (when: "server running" | "after stop") => {
        for (const [suffix, name] of [["", "database file"], ["-wal", "WAL file"], ["-shm", "shm file"]] as const) {
          const bytes = fs.existsSync(`${file}${suffix}`) ? fs.readFileSync(`${file}${suffix}`) : Buffer.alloc(0)
          note(`${name}, ${when}` as Place, `${path.basename(file)}${suffix} (${bytes.length} bytes)`, bytes)
        }
      }
      raw("server running")
      const runningKeys = [chosen.encryptionKey]
      const storedWhileRunning = secretsIn(file, runningKeys)

      // --- stop; rotate the key; the command line on the stopped service's database ----------------
      controller.abort()
      yield* Effect.promise(() => pumped)
      expect(yield* server.stop("SIGTERM")).toBe(0)
      note("server output", "tessera serve stdout and stderr", server.output())
      note("/events stream", `/events (${events.split("\n").filter((l) => l.startsWith("data: ")).length} events)`, events)
      const auditDb = new Database(file, { readonly: true })
      note("audit_log rows (database)", "SELECT * FROM audit_log", JSON.stringify(auditDb.prepare("SELECT * FROM audit_log").all()))
      auditDb.close()

      const rotateEnv = { TESSERA_ENCRYPTION_KEY: `${chosen.encryptionKeyNext},${chosen.encryptionKey}` }
      expect((yield* cli("local", ["keys", "rotate", "--json"], rotateEnv)).code).toBe(0)
      expect((yield* cli("local", ["keys", "rotate"], rotateEnv)).code).toBe(0)
      const rotated = { TESSERA_ENCRYPTION_KEY: chosen.encryptionKeyNext }
      yield* Effect.forEach(
        [["token", "status", "--all"], ["token", "get", "oauth"], ["doctor", "--json"]],
        (args) => cli("local", args, rotated),
        { concurrency: 3, discard: true }
      )
      raw("after stop")
      const storedAfter = secretsIn(file, [chosen.encryptionKeyNext])

      // --- every canary ------------------------------------------------------------------------------
      const canaries = new Map<string, string>()
      const add = (group: string, value: string | undefined) => {
        if (value !== undefined && value.length >= 12 && !canaries.has(value)) canaries.set(value, group)
      }
      add("API key", chosen.apiKeyAdmin)
      add("API key", chosen.apiKeyReader)
      add("API key", chosen.apiKeyTokens)
      add("API key", chosen.apiKeyUnknown)
      add("encryption key", chosen.encryptionKey)
      add("encryption key", chosen.encryptionKeyNext)
      add("password", chosen.ampPassword)
      add("password", chosen.ampPasswordSecond)
      add("client secret", chosen.clientSecret)
      add("refresh token", grant.refreshToken)
      for (
        const value of [
          chosen.upstoxStart1,
          chosen.upstoxStart2,
          chosen.upstoxManual,
          chosen.upstoxRejected,
          ...chosen.github,
          chosen.githubAdded,
          chosen.githubPool,
          chosen.githubManual,
          chosen.githubUnknown,
          chosen.staticAccount
        ]
      ) add("access token", value)
      harvest()
      for (const token of harvested) add("access token", token)
      for (const fake of [amp, auth, upstox, github, oauth] as ReadonlyArray<FakeServer.FakeServer<string>>) {
        for (const credential of credentialsSentTo(fake)) {
          const basicCredential = /^[A-Za-z0-9+/]+=*$/.test(credential) && credential.length > 40
          add(credential.startsWith("rt_") ? "refresh token" : basicCredential ? "HTTP Basic credential" : "sent upstream", credential)
        }
      }
      for (const value of [...storedWhileRunning, ...storedAfter]) add(value.startsWith("rt_") ? "refresh token" : "stored secret", value)

      // --- count ------------------------------------------------------------------------------------
      const places = [...new Set(seen.map((s) => s.place))]
      interface Row {
        readonly place: Place
        readonly items: number
        bytes: number
        full: number
        encoded: number
        fragments: number
        allowed: number
        readonly hits: Array<string>
      }
      const rows: Array<Row> = []
      for (const place of places) {
        const items = seen.filter((s) => s.place === place)
        const row: Row = { place, items: items.length, bytes: 0, full: 0, encoded: 0, fragments: 0, allowed: 0, hits: [] }
        for (const item of items) {
          row.bytes += Buffer.byteLength(item.content)
          for (const [value, group] of canaries) {
            if (value === item.handsOut) {
              row.allowed += count(item.content, value)
              continue
            }
            const full = count(item.content, value)
            const encoded = formsOf(value).slice(1).reduce((sum, form) => sum + count(item.content, form), 0)
            const fragments = full + encoded > 0 ? 0 : fragmentsOf(value).reduce((sum, piece) => sum + count(item.content, piece), 0)
            row.full += full
            row.encoded += encoded
            row.fragments += fragments
            if (full + encoded + fragments > 0) {
              row.hits.push(`${group} ${value.slice(0, 6)}… ×${full}/${encoded}/${fragments} in ${item.label}`)
            }
          }
        }
        rows.push(row)
      }
      const widths = [40, 5, 9, 4, 7, 9, 20]
      const line = (cells: ReadonlyArray<string | number>) =>
        "  " + cells.map((cell, i) => (i === 0 ? String(cell).padEnd(widths[i]!) : String(cell).padStart(widths[i]!))).join(" ")
      const groups = new Map<string, number>()
      for (const group of canaries.values()) groups.set(group, (groups.get(group) ?? 0) + 1)
      console.log(
        `secrets: ${canaries.size} canaries (${[...groups].map(([group, n]) => `${n} ${group}`).join(", ")}), each looked for raw, ` +
          `encoded (base64, base64url, URL, JSON) and as 10-character fragments\n` +
          line(["where", "items", "bytes", "raw", "encoded", "fragments", "handed out (allowed)"]) + "\n" +
          rows.map((row) => line([row.place, row.items, row.bytes, row.full, row.encoded, row.fragments, row.allowed])).join("\n") +
          rows.flatMap((row) => row.hits.map((hit) => `\n  LEAK ${row.place}: ${hit}`)).join("")
      )
      // the places looked at hold what they should (so an empty count is not an empty file or stream)
      const content = (place: Place) => seen.filter((s) => s.place === place).map((s) => String(s.content)).join("\n")
      expect(count(content("WAL file, server running") + content("database file, server running"), "account_added")).toBeGreaterThan(0)
      expect(count(content("database file, after stop"), "account_added")).toBeGreaterThan(0)
      expect(count(content("/events stream"), "\"type\":\"refreshed\"")).toBeGreaterThan(0)
      expect(count(content("server output"), "refreshed")).toBeGreaterThan(0)
      // every hand-out answer really handed out its token (the allowed column is not empty by accident)
      expect(rows.find((row) => row.place === "HTTP hand-out answers (other secrets)")!.allowed).toBeGreaterThanOrEqual(10)
      expect(rows.find((row) => row.place === "CLI hand-out output (other secrets)")!.allowed).toBeGreaterThanOrEqual(4)
      expect(places.length).toBe(17)
      expect(rows.flatMap((row) => row.hits)).toEqual([])
    }), { timeout: 240_000 })
})
