/**
 * The key file on disk: its text format (one base64 key per line, the first is the current
 * key, blank lines and `#` comments ignored) and how it is written. A key file is written to
 * a private temporary file, flushed, and only then published under its name, so a crash or
 * a concurrent start never leaves a half-written or silently replaced key: `replace` renames
 * over the old file (rotation), `create` hard-links and leaves an existing file untouched
 * (first start). Key text is `Redacted` everywhere but in the bytes written.
 */
import { FileSystem, Path } from "@effect/platform"
import type { PlatformError } from "@effect/platform/Error"
import { Effect, Redacted } from "effect"
import * as NodeCrypto from "node:crypto"
import { platform } from "node:os"

/** Read and write for the owner only. */
export const OWNER_ONLY = 0o600

/** Whether a file mode lets anyone but the owner in (mode bits mean nothing on Windows). */
export const isShared = (mode: number): boolean => platform() !== "win32" && (mode & 0o077) !== 0

/** One key of a key file, with its line number for error messages. */
export interface KeyLine {
  readonly line: number
  readonly text: Redacted.Redacted<string>
}

export const parse = (content: string): ReadonlyArray<KeyLine> =>
  content.split("\n").flatMap((raw, index) => {
    const text = raw.trim()
    return text === "" || text.startsWith("#") ? [] : [{ line: index + 1, text: Redacted.make(text) }]
  })

const HEADER = [
  "# Tessera encryption keys, one base64 AES-256 key per line. The first key encrypts;",
  "# the others only decrypt values written before a key rotation. Keep this file private",
  "# (mode 0600) and backed up: without it the stored tokens and credentials cannot be read."
]

export const format = (keys: ReadonlyArray<Redacted.Redacted<string>>): string =>
  [...HEADER, ...keys.map(Redacted.value)].join("\n") + "\n"

const isAlreadyExists = (error: PlatformError): boolean => error._tag === "SystemError" && error.reason === "AlreadyExists"

export const isNotFound = (error: PlatformError): boolean => error._tag === "SystemError" && error.reason === "NotFound"

/**
 * Writes `content` to `target` with mode 0600, creating its directory (0700) if needed.
 * `replace` overwrites an existing file atomically; `create` publishes only if no file is
 * there yet and returns `false` when another writer got there first.
 */
export const write = (
  target: string,
  content: string,
  mode: "replace" | "create"
): Effect.Effect<boolean, PlatformError, FileSystem.FileSystem | Path.Path> =>
  Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    const path = yield* Path.Path
    yield* fs.makeDirectory(path.dirname(target), { recursive: true, mode: 0o700 })
    const temp = `${target}.${NodeCrypto.randomBytes(6).toString("hex")}.tmp`
    const publish = Effect.gen(function*() {
      yield* Effect.scoped(Effect.gen(function*() {
        const file = yield* fs.open(temp, { flag: "wx", mode: OWNER_ONLY })
        yield* file.writeAll(new TextEncoder().encode(content))
        yield* file.sync
      }))
      // The umask may have taken bits from the mode given at creation.
      yield* fs.chmod(temp, OWNER_ONLY)
      if (mode === "replace") return yield* Effect.as(fs.rename(temp, target), true)
      return yield* fs.link(temp, target).pipe(
        Effect.as(true),
        Effect.catchIf(isAlreadyExists, () => Effect.succeed(false))
      )
    })
    return yield* Effect.ensuring(publish, Effect.ignore(fs.remove(temp, { force: true })))
  })
