/**
 * The machine's services the tests use (PostgreSQL, Redis): whether a suite that needs one
 * runs, skips or fails. Absent, its tests are skipped with a message saying what is missing,
 * unless `TESSERA_REQUIRE_SERVICES=1` (set by `.ci/run`) makes that a failure: CI must never
 * pass by skipping them.
 */
import { describe, it } from "@effect/vitest"

/** Whether a missing service fails the run (CI) rather than skipping its tests. */
export const required = process.env["TESSERA_REQUIRE_SERVICES"] === "1"

/** The message for a missing service: what is missing and what the tests then do. */
export const absentMessage = (service: string, what: string) =>
  `${service} is not reachable: ${what} are skipped (set TESSERA_REQUIRE_SERVICES=1 to make that a failure, as CI does)`

/**
 * Declares the suite `name` with `body` when the service is `available`; otherwise one test
 * that is skipped with `message`, or, when services are required, fails with it.
 */
export const describeWith = (name: string, available: boolean, message: string, body: () => void): void => {
  if (available) {
    describe(name, body)
    return
  }
  console.warn(message)
  describe(name, () => {
    it.skipIf(!required)(message, () => {})
    it.runIf(required)(`${name}: the service is required here (TESSERA_REQUIRE_SERVICES=1)`, () => {
      throw new Error(message)
    })
  })
}
