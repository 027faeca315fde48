/**
 * `tessera pool add|list|acquire|report|check POOL`: token pools (SPEC §3). `acquire` prints
 * the raw token alone unless `--json`; `check` validates every token of a pool upstream
 * (for GitHub that reads each token's live rate limit) with progress on stderr.
 */
import { Args, Command, Options } from "@effect/cli"
import { Wire } from "@tessera/server"
import { Effect, Option, Redacted, Schema } from "effect"
import { InvalidInput } from "../Backend.js"
import * as Output from "../Output.js"
import * as Shared from "./shared.js"
import { checkMany, printChecks } from "./token.js"

const add = Command.make("add", {
  ...Shared.global,
  pool: Shared.pool,
  token: Shared.secretOption("token", "The token to add"),
  account: Options.text("account").pipe(
    Options.withDescription("The new account's id (default: the provider and a hash of the token, e.g. github-3f9a0c1b2d)"),
    Options.optional
  ),
  label: Options.text("label").pipe(Options.withDescription("A note shown beside the token"), Options.optional),
  ...Shared.expiryOptions
}, (options) =>
  Shared.withBackend(options, ({ backend, json }) =>
    Effect.gen(function*() {
      const expiresAt = yield* Shared.expiry(options.expiresAt, options.expiresIn)
      const token = yield* Shared.secret(options.token)
      const info = yield* backend.addPoolToken(options.pool, {
        token,
        expiresAt,
        accountId: Option.getOrUndefined(options.account),
        label: Option.getOrUndefined(options.label)
      })
      yield* Shared.showInfo(json, info)
    }))).pipe(
    Command.withDescription(
      "Add a static token (a GitHub PAT, say) to a pool. Its provider is the pool's; a new pool must be named after its " +
        "provider (github, gitlab, bitbucket): for other names register the first token with `tessera accounts add`"
    )
  )

const list = Command.make("list", {
  ...Shared.global,
  pool: Shared.pool.pipe(Args.optional)
}, (options) =>
  Shared.withBackend(options, ({ backend, json }) =>
    Effect.gen(function*() {
      if (Option.isSome(options.pool)) {
        const infos = yield* backend.listPoolTokens(options.pool.value)
        return yield* json ? Output.json(infos) : Shared.printInfos(infos, `pool ${options.pool.value} has no tokens`)
      }
      const pools = yield* backend.listPools
      if (json) return yield* Output.json(pools)
      const zone = yield* Shared.displayZone
      yield* Output.table(
        ["POOL", "PROVIDER", "TOTAL", "AVAILABLE", "RATE LIMITED", "INVALID", "NEXT RESET"],
        pools.map((pool) => [
          pool.pool,
          pool.provider,
          pool.total,
          pool.available === 0 ? { text: "0", color: "red" } : { text: String(pool.available), color: "green" },
          pool.rate_limited === 0 ? "0" : { text: String(pool.rate_limited), color: "yellow" },
          pool.invalid === 0 ? "0" : { text: String(pool.invalid), color: "red" },
          Output.displayTime(pool.next_reset_at, zone)
        ]),
        "no pools"
      )
    }))).pipe(Command.withDescription("List the pools with their token counts; with POOL, the pool's tokens"))

const acquire = Command.make("acquire", {
  ...Shared.global,
  pool: Shared.pool,
  wait: Options.text("wait").pipe(
    Options.withPseudoName("DURATION"),
    Options.withDescription("When every token is rate-limited, wait up to this long (30s, 5m) for one to reset instead of failing"),
    Options.optional
  )
}, (options) =>
  Shared.withBackend(options, ({ backend, json }) =>
    Effect.gen(function*() {
      const wait = Option.isSome(options.wait) ? yield* Shared.parseDuration("--wait", options.wait.value) : undefined
      const lease = yield* backend.acquire(options.pool, { wait })
      if (json) return yield* Output.json(Schema.encodeSync(Wire.Lease)(lease))
      const out = yield* Output.Output
      yield* out.line(Redacted.value(lease.access_token))
    }))).pipe(
    Command.withDescription(
      "Hand out the pool's least-recently-used usable token and print it alone (--json for the account, expiry and rate limit). " +
        "Exit status 6 when every token is rate-limited, 5 when none is usable"
    )
  )

/** `Name: value` or `name=value`, as given to `--header`. */
const parseHeader = (text: string): Effect.Effect<readonly [string, string], InvalidInput> => {
  const match = /^\s*([A-Za-z0-9!#$%&'*+.^_`|~-]+)\s*[:=]\s*(.*?)\s*$/.exec(text)
  return match === null
    ? Effect.fail(new InvalidInput({ reason: `bad --header '${text}': expected 'Name: value'` }))
    : Effect.succeed([match[1]!.toLowerCase(), match[2]!] as const)
}

const report = Command.make("report", {
  ...Shared.global,
  pool: Shared.pool,
  status: Options.integer("status").pipe(Options.withDescription("The HTTP status the upstream answered")),
  account: Options.text("account").pipe(Options.withDescription("The account whose token made the request"), Options.optional),
  token: Shared.secretOption("token", "The token that made the request (instead of --account)").pipe(Options.optional),
  header: Options.text("header").pipe(
    Options.withAlias("H"),
    Options.withDescription("A response header, 'Name: value' (repeat for each: x-ratelimit-remaining, retry-after, …)"),
    Options.repeated
  )
}, (options) =>
  Shared.withBackend(options, ({ backend, json }) =>
    Effect.gen(function*() {
      if (Option.isSome(options.account) === Option.isSome(options.token)) {
        return yield* new InvalidInput({ reason: "say which token the response was for: --account ID or --token VALUE" })
      }
      if (options.status < 100 || options.status > 599) {
        return yield* new InvalidInput({ reason: `bad --status ${options.status}: expected an HTTP status (100-599)` })
      }
      const headers = Object.fromEntries(yield* Effect.forEach(options.header, parseHeader))
      const token = yield* Shared.optionalSecret(options.token)
      const info = yield* backend.report(options.pool, {
        accountId: Option.getOrUndefined(options.account),
        token: Option.getOrUndefined(token),
        status: options.status,
        headers
      })
      yield* Shared.showInfo(json, info)
    }))).pipe(
    Command.withDescription(
      "Report what an upstream answered to a request made with one of the pool's tokens (status and headers): " +
        "rate limits and 401s update the token's standing"
    )
  )

const check = Command.make("check", { ...Shared.global, pool: Shared.pool }, (options) =>
  Shared.withBackend(options, ({ backend, json }) =>
    Effect.gen(function*() {
      const checks = yield* checkMany(backend, { _tag: "pool", pool: options.pool }, `checking pool ${options.pool}`)
      yield* printChecks(json, checks, `pool ${options.pool} has no tokens`)
    }))).pipe(
    Command.withDescription(
      "Validate every token of the pool upstream and show its live rate limit (exit status 4 when a token is not valid, " +
        "5 when one could not be checked)"
    )
  )

export const command = Command.make("pool").pipe(
  Command.withDescription("Token pools: add, list, acquire, report, check"),
  Command.withSubcommands([add, list, acquire, report, check])
)
