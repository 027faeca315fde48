/**
 * The machine's services the tests use (PostgreSQL, Redis): whether a suite that needs one
 * runs, skips or fails. Absent, its tests are skipped with a message saying what is missing,
 * unless `TESSERA_REQUIRE_SERVICES=1` (set by `.ci/run`) makes that a failure: CI must never
 * pass by skipping them.
 */
import { describe, it } from "@effect/vitest"

/** Whether a missing service fails the run (CI) rather than skipping its tests. */
export const required = process.env["TESSERA_REQUIRE_SERVICES"] === "1"

export interface Service {
  /** What is needed, and where: "PostgreSQL on 127.0.0.1:5432 (user postgres)". */
  readonly name: string
  /** The tests that need it: "the PostgreSQL store tests". */
  readonly tests: string
}

/** Said when the service is missing and its tests are skipped. */
export const absentMessage = (service: Service) =>
  `${service.name} is not reachable: ${service.tests} are skipped ` +
  "(set TESSERA_REQUIRE_SERVICES=1 to make that a failure, as CI does)"

/** The failure when the service is missing and TESSERA_REQUIRE_SERVICES=1. */
export const requiredMessage = (service: Service) =>
  `${service.name} is not reachable, and TESSERA_REQUIRE_SERVICES=1 requires it for ${service.tests}`

/**
 * Declares the suite `name` with `body` when the service is `available`; otherwise one test
 * that is skipped with a message, or, when services are required, fails saying what is missing.
 */
export const describeWith = (name: string, available: boolean, service: Service, body: () => void): void => {
  if (available) {
    describe(name, body)
    return
  }
  describe(name, () => {
    if (!required) {
      console.warn(absentMessage(service))
      return void it.skip(absentMessage(service), () => {})
    }
    it(`needs ${service.name}`, () => {
      throw new Error(requiredMessage(service))
    })
  })
}
