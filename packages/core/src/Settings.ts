/**
 * Lifecycle settings (SPEC §5): the proactive refresh window, the daily refresh schedule
 * and the zone it is read in, and how hard to retry in the background. Defaults are the
 * existing systems' (5 minutes, no daily refresh, UTC); `layerConfig` reads them from the
 * environment (`TESSERA_REFRESH_WINDOW`, `TESSERA_REFRESH_CRON`, `TESSERA_TIMEZONE`).
 */
import { Config, ConfigError, Context, Cron, DateTime, Duration, Effect, Either, Layer, Option } from "effect"
import * as crypto from "node:crypto"
import * as os from "node:os"

export interface SettingsShape {
  readonly refreshWindow: Duration.Duration
  /** The daily (or any cron) refresh of every refreshable account, in `timeZone`. */
  readonly refreshCron: Option.Option<Cron.Cron>
  readonly timeZone: DateTime.TimeZone
  /** How many accounts are fetched at once at startup and when due. */
  readonly concurrency: number
  /** The longest pause between background attempts for an account whose fetch keeps failing. */
  readonly backgroundRetryMax: Duration.Duration
  /** How often usage (last use, rate-limit counters, acquire counts) is written to the store. */
  readonly flushInterval: Duration.Duration
  /**
   * How long a refresh lease lasts unless its holder extends it: how soon another process
   * sharing the database takes over the renewals of one that died holding them.
   */
  readonly leaseTtl: Duration.Duration
  /**
   * This process's name where instances share a database (the holder of a refresh lease):
   * unique per running process; generated unless `TESSERA_INSTANCE_ID` names it.
   */
  readonly instanceId: string
  /**
   * How acquires reach the audit log: `each` as a record of its own (the service's default),
   * or `counted`, one record per key, account and flush with a count (the library's default:
   * an application acquiring hundreds of thousands of times a second does not want a row each).
   */
  readonly auditAcquires: "each" | "counted"
}

export class Settings extends Context.Reference<Settings>()("@tessera/core/Settings", {
  defaultValue: (): SettingsShape => ({
    refreshWindow: Duration.minutes(5),
    refreshCron: Option.none(),
    timeZone: DateTime.zoneUnsafeMakeNamed("UTC"),
    concurrency: 32,
    backgroundRetryMax: Duration.minutes(5),
    flushInterval: Duration.seconds(1),
    leaseTtl: Duration.seconds(30),
    instanceId: generatedInstanceId(),
    auditAcquires: "counted"
  })
}) {}

/** Host, process and a random part: unique among the instances of one database. */
const generatedInstanceId = () => `${os.hostname()}-${process.pid}-${crypto.randomBytes(4).toString("hex")}`

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }

/**
 * Parses a duration: compact (`5m`, `90s`, `1h30m`, `250ms`), Effect's long form
 * (`5 minutes`), or a bare number of seconds.
 */
export const parseDuration = (text: string): Option.Option<Duration.Duration> => {
  const trimmed = text.trim().toLowerCase()
  if (/^\d+(\.\d+)?$/.test(trimmed)) return Option.some(Duration.seconds(Number(trimmed)))
  const compact = /^(\d+(?:\.\d+)?(?:ms|s|m|h|d))+$/.test(trimmed)
  if (compact) {
    let total = 0
    for (const [, amount, unit] of trimmed.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h|d)/g)) total += Number(amount) * UNITS[unit!]!
    return Option.some(Duration.millis(total))
  }
  // Duration would read "-5 minutes" as zero: a negative duration is no duration.
  return trimmed.startsWith("-") ? Option.none() : Duration.decodeUnknown(trimmed)
}

/** A `Config` for a duration in any form `parseDuration` accepts. */
export const duration = (name: string): Config.Config<Duration.Duration> =>
  Config.mapOrFail(Config.string(name), (text) =>
    Option.match(parseDuration(text), {
      onNone: () =>
        Either.left(ConfigError.InvalidData([], `${name} must be a duration such as 5m, 90s or 1h (got '${text}')`)),
      onSome: Either.right
    }))

/** A `Config` for an IANA time zone name (`Asia/Kolkata`) or a fixed offset. */
export const timeZone = (name: string): Config.Config<DateTime.TimeZone> =>
  Config.mapOrFail(Config.string(name), (text) =>
    Option.match(DateTime.zoneFromString(text), {
      onNone: () => Either.left(ConfigError.InvalidData([], `${name} must be a time zone such as Asia/Kolkata or UTC (got '${text}')`)),
      onSome: Either.right
    }))

const zoneName = (zone: DateTime.TimeZone): string =>
  zone._tag === "Named" ? zone.id : DateTime.zoneToString(zone)

/** Parses a cron expression to run in `zone`. */
export const parseCron = (expression: string, zone: DateTime.TimeZone): Either.Either<Cron.Cron, string> =>
  Either.mapLeft(Cron.parse(expression, zoneName(zone)), (error) => `invalid cron expression '${expression}': ${error.message}`)

/** The settings from the environment; a bad value is a `ConfigError` naming the variable. */
export const settingsConfig: Effect.Effect<SettingsShape, ConfigError.ConfigError> = Effect.gen(function*() {
  const zone = yield* timeZone("TESSERA_TIMEZONE").pipe(Config.withDefault(DateTime.zoneUnsafeMakeNamed("UTC")))
  const cronText = yield* Config.option(Config.string("TESSERA_REFRESH_CRON"))
  const refreshCron = yield* Option.match(cronText, {
    onNone: () => Effect.succeed(Option.none<Cron.Cron>()),
    onSome: (text) =>
      Either.match(parseCron(text, zone), {
        onLeft: (reason) => Effect.fail(ConfigError.InvalidData(["TESSERA_REFRESH_CRON"], reason)),
        onRight: (cron) => Effect.succeed(Option.some(cron))
      })
  })
  return {
    refreshWindow: yield* duration("TESSERA_REFRESH_WINDOW").pipe(Config.withDefault(Duration.minutes(5))),
    refreshCron,
    timeZone: zone,
    concurrency: yield* Config.integer("TESSERA_CONCURRENCY").pipe(
      Config.validate({ message: "TESSERA_CONCURRENCY must be at least 1", validation: (n) => n >= 1 }),
      Config.withDefault(32)
    ),
    backgroundRetryMax: yield* duration("TESSERA_BACKGROUND_RETRY_MAX").pipe(Config.withDefault(Duration.minutes(5))),
    flushInterval: yield* duration("TESSERA_FLUSH_INTERVAL").pipe(Config.withDefault(Duration.seconds(1))),
    leaseTtl: yield* duration("TESSERA_LEASE_TTL").pipe(Config.withDefault(Duration.seconds(30))),
    instanceId: yield* Config.nonEmptyString("TESSERA_INSTANCE_ID").pipe(Config.withDefault(generatedInstanceId())),
    auditAcquires: yield* Config.literal("each", "counted")("TESSERA_AUDIT_ACQUIRES").pipe(Config.withDefault("each" as const))
  }
})

export const layerConfig = Layer.effect(Settings, settingsConfig)
