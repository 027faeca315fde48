/**
 * What the `tessera` command writes: aligned tables and key/value lists for people, JSON for
 * scripts, status colours only when stdout is a terminal (and `NO_COLOR` is unset), times in
 * the configured zone, and progress on stderr for commands that touch many accounts. The
 * `Output` service owns the two streams, so commands never write to them directly and nothing
 * else (the argument parser's own messages, say) can interleave with a command's answer.
 */
import { Config, ConfigError, Context, DateTime, Effect, Layer } from "effect"

export interface OutputService {
  /** Writes one line (a trailing newline is added) to stdout. */
  readonly line: (text: string) => Effect.Effect<void>
  /** Writes one line to stderr. */
  readonly error: (text: string) => Effect.Effect<void>
  /** Redraws the current stderr line (terminals only): for progress. */
  readonly redraw: (text: string) => Effect.Effect<void>
  /** Whether status colours are used on stdout. */
  readonly colors: boolean
  /** Whether stderr is a terminal: progress then redraws one line instead of printing a count. */
  readonly interactive: boolean
}

export class Output extends Context.Tag("@tessera/cli/Output")<Output, OutputService>() {}

const noColor = Effect.map(
  Config.all([Config.string("NO_COLOR").pipe(Config.withDefault("")), Config.string("TERM").pipe(Config.withDefault(""))]),
  ([noColor, term]) => noColor !== "" || term === "dumb"
).pipe(Effect.orElseSucceed(() => false))

/** The process's own streams; colours only on a terminal, and not with `NO_COLOR` or `TERM=dumb`. */
export const layerNode: Layer.Layer<Output> = Layer.effect(
  Output,
  Effect.map(noColor, (plain): OutputService => ({
    line: (text) => Effect.sync(() => void process.stdout.write(`${text}\n`)),
    error: (text) => Effect.sync(() => void process.stderr.write(`${text}\n`)),
    redraw: (text) => Effect.sync(() => void process.stderr.write(`\r\x1b[2K${text}`)),
    colors: process.stdout.isTTY === true && !plain,
    interactive: process.stderr.isTTY === true
  }))
)

// --- JSON --------------------------------------------------------------------------------

/** Prints a value as indented JSON. */
export const json = (value: unknown): Effect.Effect<void, never, Output> =>
  Effect.flatMap(Output, (out) => out.line(JSON.stringify(value, null, 2)))

// --- colours -----------------------------------------------------------------------------

const ANSI = {
  green: "\x1b[32m",
  yellow: "\x1b[33m",
  red: "\x1b[31m",
  magenta: "\x1b[35m",
  dim: "\x1b[2m",
  bold: "\x1b[1m",
  reset: "\x1b[0m"
} as const

export type Color = Exclude<keyof typeof ANSI, "reset">

const paint = (colors: boolean, color: Color | undefined, text: string) =>
  colors && color !== undefined ? `${ANSI[color]}${text}${ANSI.reset}` : text

/** The colour of a token status or check outcome. */
export const statusColor = (status: string): Color | undefined => {
  switch (status) {
    case "available":
    case "ok":
    case "valid":
      return "green"
    case "rate_limited":
    case "warn":
    case "missing":
      return "yellow"
    case "invalid":
    case "expired":
    case "fail":
      return "red"
    default:
      return undefined
  }
}

// eslint-disable-next-line no-control-regex
const ANSI_PATTERN = /\x1b\[[0-9;]*m/g

const visibleLength = (text: string) => [...text.replace(ANSI_PATTERN, "")].length

// --- tables ------------------------------------------------------------------------------

/** A table cell: text, optionally coloured. */
export interface Cell {
  readonly text: string
  readonly color?: Color | undefined
}

export type CellInput = string | number | null | undefined | Cell

const cell = (input: CellInput): Cell =>
  input === null || input === undefined
    ? { text: "-", color: "dim" }
    : typeof input === "object"
    ? input
    : { text: String(input) }

/** A coloured cell for a status word. */
export const status = (value: string): Cell => ({ text: value, color: statusColor(value) })

/**
 * Prints rows under a header, columns aligned, the last column unpadded. An empty table
 * prints `empty` instead (on stdout, so a script reading the table sees it is empty).
 */
export const table = (
  header: ReadonlyArray<string>,
  rows: ReadonlyArray<ReadonlyArray<CellInput>>,
  empty: string
): Effect.Effect<void, never, Output> =>
  Effect.gen(function*() {
    const out = yield* Output
    if (rows.length === 0) return yield* out.line(empty)
    const cells = rows.map((row) => row.map(cell))
    const widths = header.map((title, column) =>
      Math.max(visibleLength(title), ...cells.map((row) => visibleLength(row[column]?.text ?? "")))
    )
    const render = (row: ReadonlyArray<Cell>) =>
      row.map((c, column) => {
        const text = paint(out.colors, c.color, c.text)
        return column === row.length - 1 ? text : text + " ".repeat(widths[column]! - visibleLength(c.text))
      }).join("  ").trimEnd()
    yield* out.line(render(header.map((title) => ({ text: title, color: "bold" }))))
    for (const row of cells) yield* out.line(render(row))
  })

/** Prints `label  value` lines, labels aligned: one record for people. */
export const record = (fields: ReadonlyArray<readonly [label: string, value: CellInput]>): Effect.Effect<void, never, Output> =>
  Effect.gen(function*() {
    const out = yield* Output
    const width = Math.max(...fields.map(([label]) => label.length))
    for (const [label, value] of fields) {
      const c = cell(value)
      yield* out.line(`${label.padEnd(width)}  ${paint(out.colors, c.color, c.text)}`)
    }
  })

// --- times -------------------------------------------------------------------------------

/** An instant in `zone`, with its offset, as the HTTP API gives `expires_at_local`. */
const isoLocal = (epochMs: number, zone: DateTime.TimeZone): string =>
  DateTime.formatIsoOffset(DateTime.unsafeMakeZoned(epochMs, { timeZone: zone }))

/** A time for a table: `2026-11-24 03:30:00+05:30`, in the zone it is given in. */
export const displayTime = (isoTime: string | null | undefined, zone: DateTime.TimeZone): string | null => {
  if (isoTime === null || isoTime === undefined) return null
  const at = Date.parse(isoTime)
  if (Number.isNaN(at)) return isoTime
  return isoLocal(at, zone).replace("T", " ").replace(/\.\d{3}/, "")
}

/** `3h 12m`, `45s`, `2d 4h`: how far off a time is, for people. */
export const humanDuration = (ms: number): string => {
  const seconds = Math.round(Math.abs(ms) / 1000)
  const units: ReadonlyArray<readonly [string, number]> = [["d", 86_400], ["h", 3_600], ["m", 60], ["s", 1]]
  const parts: Array<string> = []
  let rest = seconds
  for (const [unit, size] of units) {
    if (rest >= size || (unit === "s" && parts.length === 0)) {
      parts.push(`${Math.floor(rest / size)}${unit}`)
      rest %= size
    }
    if (parts.length === 2) break
  }
  return parts.join(" ")
}

/** `2026-11-24 03:30:00+05:30 (in 16h 29m)`. */
export const timeWithDistance = (isoTime: string | null | undefined, zone: DateTime.TimeZone, now: number): string | null => {
  const shown = displayTime(isoTime, zone)
  if (shown === null || isoTime === null || isoTime === undefined) return null
  const delta = Date.parse(isoTime) - now
  return `${shown} (${delta >= 0 ? `in ${humanDuration(delta)}` : `${humanDuration(delta)} ago`})`
}

// --- progress ----------------------------------------------------------------------------

export interface Progress {
  /** One more item done. */
  readonly step: (item: string) => Effect.Effect<void>
  /** Clears the progress line (on a terminal). */
  readonly done: Effect.Effect<void>
}

/**
 * Progress of `total` items on stderr: a line redrawn in place on a terminal, else one line
 * saying how many items the command is about to go through.
 */
export const progress = (label: string, total: number): Effect.Effect<Progress, never, Output> =>
  Effect.gen(function*() {
    const out = yield* Output
    if (!out.interactive) {
      yield* out.error(`${label}: ${total} ${total === 1 ? "item" : "items"}`)
      return { step: () => Effect.void, done: Effect.void } satisfies Progress
    }
    let count = 0
    yield* out.redraw(`${label}: 0/${total}`)
    return {
      step: (item: string) => Effect.suspend(() => out.redraw(`${label}: ${++count}/${total} ${item}`)),
      done: out.redraw("")
    }
  })

// --- errors ------------------------------------------------------------------------------

const describeConfigError = (error: ConfigError.ConfigError): string => {
  switch (error._op) {
    case "And":
    case "Or":
      return describeConfigError(error.left)
    case "InvalidData":
    case "MissingData":
    case "SourceUnavailable":
    case "Unsupported": {
      const name = error.path.join(".")
      if (name === "" || error.message.includes(name)) return error.message
      return error._op === "MissingData" ? `${name} is not set` : `${name}: ${error.message}`
    }
  }
}

/** The innermost cause's message: `connect ECONNREFUSED 127.0.0.1:9` rather than `fetch failed`. */
const innermost = (error: unknown): string | undefined => {
  let found: string | undefined
  let current: unknown = error
  for (let depth = 0; depth < 6 && typeof current === "object" && current !== null && "cause" in current; depth++) {
    current = current.cause
    if (current instanceof Error && current.message !== "") found = current.message
  }
  return found
}

/**
 * The one line a person needs from any failure: a tagged error's own message, a
 * configuration error's variable and problem, a transport error's innermost cause. Tessera's
 * errors never carry a secret, so neither does this line.
 */
export const describeError = (error: unknown): string => {
  if (ConfigError.isConfigError(error)) return describeConfigError(error)
  const tag = typeof error === "object" && error !== null && "_tag" in error ? String(error._tag) : ""
  const message = typeof error === "object" && error !== null && "message" in error && typeof error.message === "string"
    ? error.message
    : String(error)
  const text = tag === "RequestError" || tag === "ResponseError" || tag === "SystemError"
    ? [message, innermost(error)].filter((part) => part !== undefined && part !== "").join(": ")
    : message
  return text.replace(/^\((.*)\)$/s, "$1").split("\n")[0]!.trim()
}
