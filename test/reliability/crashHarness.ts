/**
 * Crash safety (issue 6, part 1): a ledger of what concurrent clients wrote through the HTTP
 * API of a `tessera serve` that is killed at random moments, the observations of what a
 * restarted service and its database file hold, and the one checker that compares the two.
 *
 * What is promised, per piece of an account's state (packages/core/src/Lifecycle.ts `commit`,
 * packages/core/src/internal/pools.ts `report`), and so what the checker holds the service to:
 * - `token` (with its expiry): `POST /accounts/{id}/token/update` commits before its 2xx.
 * - `invalid`: set by a reported 401 (a static token becomes invalid), cleared by an update;
 *   both commit before the 2xx.
 * - `limited` (the token's standing): set by a 403/429 report with `remaining: 0`, cleared by
 *   a report that lifts the limit or by an update. A report that changes the standing commits
 *   it before the 2xx; one that does not change it finds it already committed. So every
 *   acknowledged report's standing is durable.
 * - `usage` (the rate-limit counters of a report that does not change the standing): coalesced
 *   and flushed every TESSERA_FLUSH_INTERVAL (default 1 s, 200 ms in this run so kills land
 *   mid-flush often), so a SIGKILL may lose up to about an interval of them (the issue 8
 *   trade-off). What is stored must still be the counters of
 *   some report that no acknowledged update (which clears them, durably) has overtaken.
 *
 * Each piece is a register. After a restart the stored value must be the value of a write W
 * (acknowledged, or sent and never answered: it may have landed any time up to the kill) that
 * no acknowledged durable write overtook, i.e. there is no durable write W' acknowledged with
 * W'.sent > W.acked; the value a restart observed is the first write of the next round. Send
 * and acknowledgement times are one logical clock in the test process, so "W' was sent after
 * W was acknowledged" is certain. Every report and update carries a unique tag (the token
 * value, its expiry, the `x-ratelimit-limit`), so a value names the write that made it.
 */
import { Crypto, Token } from "@tessera/core"
import Database from "better-sqlite3"
import { Effect, Either, Redacted } from "effect"
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { waitUntil } from "../lifecycle/harness.js"

// --- the service under test ------------------------------------------------------------------

export const POOL = "github"

/** API keys of the run: writes with admin, reports with token, reads with read+token. */
export interface Keys {
  readonly admin: string
  readonly reporter: string
  readonly reader: string
}

export const makeKeys = (): Keys => ({
  admin: `crash-admin-${randomHex(16)}`,
  reporter: `crash-reporter-${randomHex(16)}`,
  reader: `crash-reader-${randomHex(16)}`
})

/** The environment of every `tessera serve` of the run: one database, one key. */
export const serviceEnv = (options: { readonly db: string; readonly key: string; readonly keys: Keys }) => ({
  TESSERA_DB: options.db,
  TESSERA_ENCRYPTION_KEY: options.key,
  TESSERA_API_KEYS: `writer:admin:${options.keys.admin},reporter:token:${options.keys.reporter},reader:read+token:${
    options.keys.reader
  }`,
  // usage is flushed five times a second (default 1 s), so random kills often land mid-flush
  TESSERA_FLUSH_INTERVAL: "200ms",
  // nothing is validated upstream (updates say validate=false), but never leave 127.0.0.1
  GITHUB_API_URL: "http://127.0.0.1:9"
})

// --- the service process ----------------------------------------------------------------------

/** The built executable: `bin.js` and the module it runs. */
export interface Build {
  readonly bin: string
  readonly cli: string
}

/**
 * A copy of the built packages (their `dist`, `package.json` and `node_modules` links) under
 * `dir`, sharing the repository's installed dependencies: the run uses one build throughout,
 * whatever is rebuilt in the working tree meanwhile.
 */
export const snapshotBuild = (dir: string): Build => {
  const root = fileURLToPath(new URL("../../", import.meta.url))
  const target = path.join(dir, "build")
  fs.mkdirSync(path.join(target, "packages"), { recursive: true })
  fs.symlinkSync(path.join(root, "node_modules"), path.join(target, "node_modules"))
  for (const pkg of fs.readdirSync(path.join(root, "packages"))) {
    const from = path.join(root, "packages", pkg)
    if (!fs.existsSync(path.join(from, "dist"))) continue
    for (const entry of ["dist", "package.json", "node_modules"]) {
      if (fs.existsSync(path.join(from, entry))) {
        fs.cpSync(path.join(from, entry), path.join(target, "packages", pkg, entry), { recursive: true, verbatimSymlinks: true })
      }
    }
  }
  const cli = path.join(target, "packages", "cli", "dist")
  return { bin: path.join(cli, "bin.js"), cli: path.join(cli, "Cli.js") }
}

/**
 * Loads the CLI's modules (the ~1.5-3 s of a start that is only importing Effect), says
 * "warm", and on a line on stdin runs the built `bin.js` with `serve`, exactly as
 * `node bin.js serve` would, on the modules already loaded.
 */
const LAUNCHER = `
const [cli, bin] = process.argv.slice(1)
await import(cli)
process.stdout.write("warm\\n")
process.stdin.once("data", () => {
  process.stdin.pause()
  process.stdin.unref()
  process.argv = [process.argv[0], bin, "serve"]
  import(bin)
})
`

export interface Service {
  readonly output: () => string
  /** The base URL from the "listening on …" line (waits for it). */
  readonly url: Effect.Effect<string>
  readonly stop: (signal: NodeJS.Signals) => Effect.Effect<number | null>
}

export interface WarmService {
  /** Runs `tessera serve` in the warmed process. */
  readonly start: Effect.Effect<Service>
}

/**
 * A `tessera serve` process with its modules loaded ahead, so it can be prepared while the
 * previous one is still under load and start at once when that one is killed. Runs in `cwd`
 * with only `env` (and PATH); the port is chosen by the system. The scope kills it.
 */
export const warmService = (build: Build, cwd: string, env: Record<string, string>) =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const child = spawn(process.execPath, ["--input-type=module", "-e", LAUNCHER, build.cli, build.bin], {
        cwd,
        env: { PATH: process.env["PATH"] ?? "", TESSERA_PORT: "0", ...env },
        stdio: ["pipe", "pipe", "pipe"]
      })
      let output = ""
      let done = false
      child.stdout.on("data", (chunk) => (output += String(chunk)))
      child.stderr.on("data", (chunk) => (output += String(chunk)))
      child.stdin.on("error", () => {})
      const exited = new Promise<number | null>((resolve) =>
        child.on("exit", (code) => {
          done = true
          resolve(code)
        })
      )
      const listening = () => /listening on (http:\/\/[^\s]+)/.exec(output)?.[1]
      const service: Service = {
        output: () => output,
        url: Effect.zipRight(
          waitUntil(() => listening() !== undefined || done, 60_000),
          Effect.suspend(() => {
            const url = listening()
            return url === undefined ? Effect.die(new Error(`tessera serve did not start:\n${output}`)) : Effect.succeed(url)
          })
        ),
        stop: (signal) =>
          Effect.promise(() => {
            if (!done) child.kill(signal)
            return exited
          })
      }
      const warm: WarmService = {
        start: Effect.zipRight(
          waitUntil(() => output.startsWith("warm\n") || done, 60_000),
          Effect.suspend(() => {
            if (done) return Effect.die(new Error(`the launcher exited before it was warm:\n${output}`))
            output = output.slice("warm\n".length)
            child.stdin.write("go\n")
            return Effect.succeed(service)
          })
        )
      }
      return { child, warm }
    }),
    ({ child }) => Effect.sync(() => void (child.exitCode === null && child.signalCode === null && child.kill("SIGKILL")))
  ).pipe(Effect.map(({ warm }) => warm))

// --- a seeded random source (the kill delays and the clients' choices) -------------------------

export const randomHex = (chars: number) => {
  let out = ""
  while (out.length < chars) out += Math.floor(Math.random() * 0x100000000).toString(16).padStart(8, "0")
  return out.slice(0, chars)
}

/** mulberry32: a small seeded generator, so a failing run can be replayed by its seed. */
export const seeded = (seed: number) => {
  let state = seed >>> 0
  return () => {
    state = (state + 0x6d2b79f5) >>> 0
    let t = state
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

// --- the ledger ------------------------------------------------------------------------------

export const REGISTERS = ["token", "invalid", "limited", "usage"] as const
export type Register = (typeof REGISTERS)[number]

/** A register's value: the token as `token expiresAtMs`, flags, or the usage tag (null: none). */
export type Value = string | boolean | number | null

export type Kind = "add" | "update" | "ok-report" | "limit-report" | "unauthorized-report"

export interface Write {
  readonly seq: number
  readonly account: string
  readonly kind: Kind
  readonly cycle: number
  readonly values: Readonly<Partial<Record<Register, Value>>>
  /** The registers whose new value is committed before the 2xx. */
  readonly durable: ReadonlyArray<Register>
  /** Logical time the request was sent. */
  readonly sent: number
  /** Logical time the 2xx arrived; undefined while unanswered or when refused. */
  acked: number | undefined
  /** Wall-clock time of the 2xx (for the usage-loss figure). */
  ackedAtMs: number | undefined
  outcome: "pending" | "acked" | "refused" | "unanswered"
}

interface Baseline {
  readonly value: Value
  readonly at: number
  /** The write that left this value, when the ledger knows it. */
  readonly write: Write | undefined
}

/** A candidate for a register's stored value. */
interface Candidate {
  readonly value: Value
  readonly sent: number
  readonly acked: number | undefined
  readonly durable: boolean
  readonly write: Write | undefined
}

export const tokenValue = (token: string, expiresAtMs: number | null): string => `${token} ${expiresAtMs ?? "-"}`

export class Ledger {
  private clock = 0
  private seq = 0
  private readonly baselines = new Map<string, Record<Register, Baseline>>()
  /** Writes since the last observation, per account. */
  private readonly open = new Map<string, Array<Write>>()
  /** Every acknowledged update, per account, oldest first (for the negative control). */
  readonly updates = new Map<string, Array<Write>>()
  readonly counts = {
    sent: 0,
    acked: 0,
    refused: 0,
    unanswered: 0,
    /** Unanswered writes whose value a restart found stored: they landed just before the kill. */
    landed: 0,
    byKind: {} as Record<Kind, number>,
    refusals: [] as Array<string>
  }

  constructor(readonly accounts: ReadonlyArray<string>) {
    for (const account of accounts) this.open.set(account, [])
  }

  /** Records a request about to be sent. */
  send(account: string, kind: Kind, cycle: number, values: Partial<Record<Register, Value>>, durable: ReadonlyArray<Register>): Write {
    const write: Write = {
      seq: ++this.seq,
      account,
      kind,
      cycle,
      values,
      durable,
      sent: ++this.clock,
      acked: undefined,
      ackedAtMs: undefined,
      outcome: "pending"
    }
    this.open.get(account)!.push(write)
    this.counts.sent++
    return write
  }

  ack(write: Write) {
    write.acked = ++this.clock
    write.ackedAtMs = Date.now()
    write.outcome = "acked"
    this.counts.acked++
    this.counts.byKind[write.kind] = (this.counts.byKind[write.kind] ?? 0) + 1
    if (write.kind === "update" || write.kind === "add") {
      const list = this.updates.get(write.account) ?? []
      list.push(write)
      this.updates.set(write.account, list)
    }
  }

  /** A non-2xx answer: it says nothing changed, but the checker still lets it have landed. */
  refuse(write: Write, status: number, body: string) {
    write.outcome = "refused"
    this.counts.refused++
    if (this.counts.refusals.length < 20) this.counts.refusals.push(`${write.kind} ${write.account}: ${status} ${body.slice(0, 200)}`)
  }

  /** No answer: the connection died with the server. */
  unanswered(write: Write) {
    write.outcome = "unanswered"
    this.counts.unanswered++
  }

  /** Writes sent and not yet answered. */
  inFlight(): Array<Write> {
    return [...this.open.values()].flat().filter((write) => write.outcome === "pending")
  }

  /** Every value the register may hold now, with what the checker needs to judge it. */
  candidates(account: string, register: Register): Array<Candidate> {
    const base = this.baselines.get(account)?.[register]
    const out: Array<Candidate> = base === undefined
      ? []
      : [{ value: base.value, sent: base.at, acked: base.at, durable: true, write: base.write }]
    for (const write of this.open.get(account) ?? []) {
      if (!(register in write.values)) continue
      out.push({
        value: write.values[register] as Value,
        sent: write.sent,
        acked: write.acked,
        durable: write.durable.includes(register),
        write
      })
    }
    return out
  }

  /** The writes still open for an account (since the last observation). */
  writesOf(account: string): ReadonlyArray<Write> {
    return this.open.get(account) ?? []
  }

  /**
   * What a restart found becomes the starting point of the next round: the writes before it
   * can no longer land (their process is dead).
   */
  settle(observed: ReadonlyMap<string, Observed>) {
    const at = ++this.clock
    for (const account of this.accounts) {
      const seen = observed.get(account)
      if (seen === undefined) continue
      const values = registersOf(seen)
      const writes = this.open.get(account) ?? []
      for (const write of writes) {
        if (write.outcome !== "unanswered" && write.outcome !== "pending") continue
        if (write.kind === "update" && values.token === write.values.token) this.counts.landed++
      }
      const previous = this.baselines.get(account)
      const baseline = (register: Register): Baseline => {
        const value = values[register]
        // the write that left it: the last one acknowledged with this value, else the last sent
        const writers = writes.filter((write) => register in write.values && write.values[register] === value)
        const write = writers.filter((w) => w.acked !== undefined).sort((a, b) => a.acked! - b.acked!).at(-1) ??
          writers.at(-1) ??
          (previous?.[register].value === value ? previous[register].write : undefined)
        return { value, at, write }
      }
      this.baselines.set(account, {
        token: baseline("token"),
        invalid: baseline("invalid"),
        limited: baseline("limited"),
        usage: baseline("usage")
      })
      this.open.set(account, [])
    }
  }
}

// --- observations ----------------------------------------------------------------------------

/** What a restarted service, or its database file, holds for one account. */
export interface Observed {
  /** The raw token, when the source hands it out (the database; the API unless invalid). */
  readonly token: string | null
  readonly preview: string | null
  readonly expiresAtMs: number | null
  readonly invalid: boolean
  readonly limited: boolean
  /** The rate-limit snapshot's `limit`, which tags the report that wrote it; null: none. */
  readonly usage: number | null
  /** The status the API shows (not known from the database). */
  readonly status: string | null
}

const registersOf = (seen: Observed): Record<Register, Value> => ({
  token: seen.token === null ? null : tokenValue(seen.token, seen.expiresAtMs),
  invalid: seen.invalid,
  limited: seen.limited,
  usage: seen.usage
})

const previewOf = (token: string) => Token.preview(Redacted.make(token))

/** Whether a candidate value is what was observed; a token known by its preview only matches by preview and expiry. */
const matches = (register: Register, value: Value, seen: Observed): boolean => {
  if (register !== "token") return registersOf(seen)[register] === value
  if (seen.token !== null) return value === tokenValue(seen.token, seen.expiresAtMs)
  if (typeof value !== "string") return false
  const [token, expires] = value.split(" ")
  return previewOf(token!) === seen.preview && expires === String(seen.expiresAtMs ?? "-")
}

const isLimited = (remaining: number | null, limitedFlag: boolean, resetAtMs: number | null, now: number) =>
  (limitedFlag || remaining === 0) && resetAtMs !== null && resetAtMs > now

interface HttpAnswer {
  readonly status: number
  readonly json: any
}

const request = async (url: string, method: string, path: string, key: string, body?: unknown): Promise<HttpAnswer> => {
  const response = await fetch(`${url}${path}`, {
    method,
    headers: { authorization: `Bearer ${key}`, ...(body === undefined ? {} : { "content-type": "application/json" }) },
    body: body === undefined ? null : JSON.stringify(body)
  })
  const text = await response.text()
  let json: any
  try {
    json = JSON.parse(text)
  } catch {
    json = text
  }
  return { status: response.status, json }
}

/** Through the API: the pool's token list (read scope) and each raw token (token scope). */
export const observeApi = async (url: string, keys: Keys, accounts: ReadonlyArray<string>): Promise<Map<string, Observed>> => {
  const now = Date.now()
  const listed = await request(url, "GET", `/pools/${POOL}/tokens`, keys.reader)
  if (listed.status !== 200 || !Array.isArray(listed.json)) {
    throw new Error(`GET /pools/${POOL}/tokens answered ${listed.status}: ${JSON.stringify(listed.json)}`)
  }
  const raw = await Promise.all(accounts.map((id) => request(url, "GET", `/accounts/${id}/token`, keys.reader)))
  const observed = new Map<string, Observed>()
  for (const info of listed.json as Array<any>) {
    const index = accounts.indexOf(info.account_id)
    const answer = index < 0 ? undefined : raw[index]
    const rl = info.rate_limit
    const resetAtMs = rl?.reset_at ? Date.parse(rl.reset_at) : null
    const token = answer?.status === 200 ? String(answer.json.access_token) : null
    observed.set(info.account_id, {
      token,
      preview: info.token_preview ?? null,
      expiresAtMs: info.expires_at === null ? null : Date.parse(info.expires_at),
      invalid: info.status === "invalid",
      limited: info.status === "rate_limited" || isLimited(rl?.remaining ?? null, false, resetAtMs, now),
      usage: rl?.limit ?? null,
      status: info.status
    })
    // the raw token and the status must tell the same story
    if (token !== null && (previewOf(token) !== info.token_preview || Date.parse(answer!.json.expires_at) !== Date.parse(info.expires_at))) {
      throw new Error(`account ${info.account_id}: GET /accounts/{id}/token and the pool listing disagree`)
    }
  }
  return observed
}

/** `PRAGMA integrity_check` on the file, read-only; an error opening or checking it is its result. */
export const integrityCheck = (file: string): Array<string> => {
  try {
    const db = new Database(file, { readonly: true, fileMustExist: true })
    try {
      return (db.pragma("integrity_check") as Array<{ integrity_check: string }>).map((row) => row.integrity_check)
    } finally {
      db.close()
    }
  } catch (error) {
    return [`could not check: ${error instanceof Error ? error.message : String(error)}`]
  }
}

export interface DatabaseView {
  readonly observed: Map<string, Observed>
  /** Secrets (tokens and account sources) that decrypted. */
  readonly decrypted: number
  /** Secrets that did not, by row. */
  readonly undecryptable: Array<string>
}

/**
 * Straight from the file, read-only (the service may be running): every token and every
 * account source decrypted with the run's key, bound to its row as the store binds it.
 */
export const observeDatabase = (file: string, keyring: Crypto.KeyringService): DatabaseView => {
  const now = Date.now()
  const db = new Database(file, { readonly: true, fileMustExist: true })
  try {
    const rows = db.prepare(
      `SELECT a.account_id, a.source_enc, t.token_enc, t.expires_at, t.invalid_reason,
        t.rl_limit, t.rl_remaining, t.rl_reset_at, t.rl_limited
       FROM accounts a LEFT JOIN token_state t ON t.account_id = a.account_id`
    ).all() as Array<{
      account_id: string
      source_enc: Uint8Array
      token_enc: Uint8Array | null
      expires_at: number | null
      invalid_reason: string | null
      rl_limit: number | null
      rl_remaining: number | null
      rl_reset_at: number | null
      rl_limited: number | null
    }>
    const observed = new Map<string, Observed>()
    const undecryptable: Array<string> = []
    let decrypted = 0
    for (const row of rows) {
      const source = keyring.open(row.source_enc, Crypto.associatedData("accounts", row.account_id, "source"))
      if (Either.isLeft(source)) undecryptable.push(`${row.account_id} source: ${source.left.message}`)
      else decrypted++
      let token: string | null = null
      if (row.token_enc !== null) {
        const opened = keyring.open(row.token_enc, Crypto.associatedData("token_state", row.account_id, "token"))
        if (Either.isLeft(opened)) undecryptable.push(`${row.account_id} token: ${opened.left.message}`)
        else {
          decrypted++
          token = Redacted.value(opened.right)
        }
      }
      const hasRateLimit = row.rl_limit !== null || row.rl_remaining !== null || row.rl_reset_at !== null || row.rl_limited === 1
      observed.set(row.account_id, {
        token,
        preview: token === null ? null : previewOf(token),
        expiresAtMs: row.expires_at,
        invalid: row.invalid_reason !== null,
        limited: hasRateLimit && isLimited(row.rl_remaining, row.rl_limited === 1, row.rl_reset_at, now),
        usage: row.rl_limit,
        status: null
      })
    }
    return { observed, decrypted, undecryptable }
  } finally {
    db.close()
  }
}

// --- the checker -----------------------------------------------------------------------------

export interface Violation {
  /** Where the value was read: "api" or "db". */
  readonly source: string
  readonly account: string
  readonly register: Register | "account" | "status"
  readonly observed: string
  /** The last acknowledged durable value the register should hold (or one written after it). */
  readonly expected: string
  /** The acknowledged write that was lost, if the loss is of one. */
  readonly lost: { readonly seq: number; readonly kind: Kind; readonly cycle: number } | undefined
}

/** The durable candidate acknowledged last: what the register must hold unless a later write landed. */
const lastDurable = (candidates: ReadonlyArray<Candidate>): Candidate | undefined =>
  candidates
    .filter((c) => c.durable && c.acked !== undefined)
    .reduce<Candidate | undefined>((a, b) => (a === undefined || b.acked! > a.acked! ? b : a), undefined)

const show = (register: Register, value: Value, seen?: Observed): string => {
  if (register === "token" && seen !== undefined && seen.token === null) {
    return `preview ${seen.preview} expiring ${seen.expiresAtMs}`
  }
  if (register === "token" && typeof value === "string") {
    const [token, expires] = value.split(" ")
    return `${previewOf(token!)} expiring ${expires}`
  }
  return String(value)
}

/**
 * Compares what was observed after a restart with the ledger: every register of every account
 * must hold a value some write may have left there (see the module comment). Pure: the same
 * function judges the real run and the negative control.
 */
export const check = (ledger: Ledger, observed: ReadonlyMap<string, Observed>, source: string): Array<Violation> => {
  const violations: Array<Violation> = []
  for (const account of ledger.accounts) {
    const seen = observed.get(account)
    if (seen === undefined) {
      violations.push({ source, account, register: "account", observed: "missing", expected: "present", lost: undefined })
      continue
    }
    for (const register of REGISTERS) {
      const candidates = ledger.candidates(account, register)
      if (candidates.length === 0) continue
      // No durable write acknowledged after it was sent may have been overtaken.
      const horizon = Math.max(...candidates.filter((c) => c.durable && c.acked !== undefined).map((c) => c.sent))
      const allowed = candidates.filter((c) => c.acked === undefined || c.acked >= horizon)
      if (allowed.some((c) => matches(register, c.value, seen))) continue
      const last = lastDurable(candidates)
      violations.push({
        source,
        account,
        register,
        observed: show(register, registersOf(seen)[register], seen),
        expected: last === undefined
          ? `one of ${candidates.map((c) => show(register, c.value)).join(", ")}`
          : show(register, last.value),
        lost: last?.write === undefined ? undefined : { seq: last.write.seq, kind: last.write.kind, cycle: last.write.cycle }
      })
    }
    if (seen.status !== null) {
      const status = seen.invalid ? "invalid" : seen.limited ? "rate_limited" : "available"
      if (seen.status !== status) {
        violations.push({ source, account, register: "status", observed: seen.status, expected: status, lost: undefined })
      }
    }
  }
  return violations
}

/**
 * Usage lost at a kill (promised to be at most about one flush interval of it): accounts whose
 * stored counters are not those of their last acknowledged report or update, nor of a write
 * sent after it, and how long before the kill that write had been acknowledged.
 */
export const usageLoss = (ledger: Ledger, observed: ReadonlyMap<string, Observed>, killedAtMs: number) => {
  let lost = 0
  let maxAgeMs = 0
  for (const account of ledger.accounts) {
    const seen = observed.get(account)
    if (seen === undefined) continue
    const writes = ledger.writesOf(account).filter((write) => "usage" in write.values)
    const last = writes.filter((w) => w.acked !== undefined).sort((a, b) => a.acked! - b.acked!).at(-1)
    if (last === undefined) continue
    const newer = writes.filter((w) => w === last || w.sent > last.acked!)
    if (newer.some((w) => w.values.usage === seen.usage)) continue
    lost++
    maxAgeMs = Math.max(maxAgeMs, killedAtMs - last.ackedAtMs!)
  }
  return { lost, maxAgeMs }
}

export const describeViolation = (v: Violation) =>
  `[${v.source}] ${v.account} ${v.register}: stored ${v.observed}, expected ${v.expected}` +
  (v.lost === undefined ? "" : ` (acknowledged ${v.lost.kind} #${v.lost.seq} of cycle ${v.lost.cycle} lost)`)

// --- the clients -----------------------------------------------------------------------------

export interface LoadOptions {
  readonly url: string
  readonly keys: Keys
  readonly ledger: Ledger
  readonly clients: number
  readonly cycle: number
  readonly random: () => number
  /** Epoch ms the expiries of updated tokens start from (each update adds its seq in seconds). */
  readonly expiryBase: number
}

export interface Load {
  /** No client sends another request; those in flight stay in flight. */
  readonly stop: () => void
  /** Every client has finished (after `stop`, or when the server died under it). */
  readonly done: Promise<void>
}

/** The unique number that tags each write (token suffix, expiry, `x-ratelimit-limit`). */
let tags = 0

/**
 * Concurrent clients, each picking an account and a write at random: an update with a fresh
 * token and expiry (validate=false), a 200 report with counters, a 403/429 report with
 * `remaining: 0` (a primary limit an hour or more away), or a 401 report. Every write is in
 * the ledger before it is sent.
 */
export const startLoad = (options: LoadOptions): Load => {
  const { keys, ledger, random, url } = options
  let stopped = false
  const pick = <A>(items: ReadonlyArray<A>) => items[Math.floor(random() * items.length)]!

  const one = async (): Promise<boolean> => {
    const account = pick(ledger.accounts)
    const roll = random()
    const tag = ++tags
    let write: Write
    let path: string
    let key: string
    let body: unknown
    if (roll < 0.5) {
      const token = `ghp_${randomHex(12)}${tag.toString(36).padStart(6, "0")}`
      const expiresAtMs = options.expiryBase + tag * 1000
      write = ledger.send(account, "update", options.cycle, {
        token: tokenValue(token, expiresAtMs),
        invalid: false,
        limited: false,
        usage: null
      }, ["token", "invalid", "limited", "usage"])
      path = `/accounts/${account}/token/update?validate=false`
      key = keys.admin
      body = { access_token: token, expires_at: new Date(expiresAtMs).toISOString() }
    } else if (roll < 0.78) {
      const limit = 100_000 + tag
      write = ledger.send(account, "ok-report", options.cycle, { limited: false, usage: limit }, ["limited"])
      path = `/pools/${POOL}/report`
      key = keys.reporter
      body = {
        account_id: account,
        status: 200,
        headers: {
          "x-ratelimit-limit": String(limit),
          "x-ratelimit-remaining": String(1 + Math.floor(random() * 4999)),
          "x-ratelimit-reset": String(Math.floor(Date.now() / 1000) + 3600),
          "x-ratelimit-resource": "core"
        }
      }
    } else if (roll < 0.95) {
      const limit = 100_000 + tag
      write = ledger.send(account, "limit-report", options.cycle, { limited: true, usage: limit }, ["limited"])
      path = `/pools/${POOL}/report`
      key = keys.reporter
      body = {
        account_id: account,
        status: random() < 0.5 ? 403 : 429,
        headers: {
          "x-ratelimit-limit": String(limit),
          "x-ratelimit-remaining": "0",
          "x-ratelimit-reset": String(Math.floor(Date.now() / 1000) + 3600 + (tag % 3600)),
          "x-ratelimit-resource": "core"
        }
      }
    } else {
      write = ledger.send(account, "unauthorized-report", options.cycle, { invalid: true }, ["invalid"])
      path = `/pools/${POOL}/report`
      key = keys.reporter
      body = { account_id: account, status: 401, headers: {} }
    }
    let response: Response
    try {
      response = await fetch(`${url}${path}`, {
        method: "POST",
        headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
        body: JSON.stringify(body)
      })
    } catch {
      ledger.unanswered(write)
      return false
    }
    // The status line is the acknowledgement: the handler has finished before it is sent.
    if (response.ok) ledger.ack(write)
    const text = await response.text().catch(() => "")
    if (!response.ok) ledger.refuse(write, response.status, text)
    return true
  }

  const client = async () => {
    while (!stopped) {
      if (!(await one())) return
    }
  }
  const done = Promise.all(Array.from({ length: options.clients }, client)).then(() => undefined)
  return { stop: () => void (stopped = true), done }
}

/** Registers the run's static accounts over HTTP (the first start); each is an acknowledged write. */
export const addAccounts = async (url: string, keys: Keys, ledger: Ledger, expiryBase: number) => {
  for (const account of ledger.accounts) {
    const tag = ++tags
    const token = `ghp_${randomHex(12)}${tag.toString(36).padStart(6, "0")}`
    const expiresAtMs = expiryBase + tag * 1000
    const write = ledger.send(account, "add", 0, {
      token: tokenValue(token, expiresAtMs),
      invalid: false,
      limited: false,
      usage: null
    }, ["token", "invalid", "limited", "usage"])
    const answer = await request(url, "POST", `/pools/${POOL}/tokens`, keys.admin, {
      account_id: account,
      access_token: token,
      expires_at: new Date(expiresAtMs).toISOString()
    })
    if (answer.status !== 201) throw new Error(`adding ${account} answered ${answer.status}: ${JSON.stringify(answer.json)}`)
    ledger.ack(write)
  }
}
