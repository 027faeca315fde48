/**
 * A fake of the Upstox API's token check, `GET /v2/user/profile`: 200 with the user's profile
 * for a token it accepts, 401 with Upstox's `UDAPI100050` error otherwise. It accepts the tokens
 * it was told to allow and, once linked with the auth-service fake, every live token that
 * service hands out, as the real pair does.
 */
import { Effect } from "effect"
import type { Scope } from "effect"
import type { AuthServiceServer } from "./authService.js"
import * as Server from "./server.js"

export type Route = "profile"

export interface Profile {
  readonly user_id: string
  readonly user_name: string
  readonly email: string
}

export interface Options {
  /** Tokens accepted from the start. */
  readonly tokens?: Iterable<string>
  readonly profile?: Partial<Profile>
  /** The fake's clock (epoch milliseconds); `Date.now` unless given. */
  readonly now?: () => number
}

export interface UpstoxServer extends Server.FakeServer<Route> {
  /** Accepts `token` (also after an earlier `revoke`). */
  readonly allow: (token: string) => void
  /** Rejects `token` from now on, wherever it came from. */
  readonly revoke: (token: string) => void
  readonly isValid: (token: string) => boolean
  /** Also accepts every token for which `issuer` answers true (see `linkAuthService`). */
  readonly trust: (issuer: (token: string) => boolean) => void
}

const invalidToken = Server.json(401, {
  status: "error",
  errors: [{ errorCode: "UDAPI100050", message: "Invalid token used to access API" }]
})

export const make = (options: Options = {}): Effect.Effect<UpstoxServer, never, Scope.Scope> =>
  Effect.gen(function*() {
    const allowed = new Set(options.tokens ?? [])
    const revoked = new Set<string>()
    const issuers: Array<(token: string) => boolean> = []
    const profile: Profile = {
      user_id: "AB1234",
      user_name: "Test User",
      email: "test.user@example.com",
      ...options.profile
    }

    const isValid = (token: string) =>
      !revoked.has(token) && (allowed.has(token) || issuers.some((issuer) => issuer(token)))

    const getProfile = (request: Server.FakeRequest): Server.Outcome => {
      const token = Server.bearerToken(request)
      return token !== undefined && isValid(token)
        ? Server.json(200, { status: "success", data: profile })
        : invalidToken
    }

    const server = yield* Server.make<Route>({
      ...(options.now === undefined ? {} : { now: options.now }),
      routes: [{ name: "profile", method: "GET", path: "/v2/user/profile", handle: getProfile }]
    })

    return {
      ...server,
      allow: (token) => {
        revoked.delete(token)
        allowed.add(token)
      },
      revoke: (token) => {
        allowed.delete(token)
        revoked.add(token)
      },
      isValid,
      trust: (issuer) => void issuers.push(issuer)
    }
  })

/** Makes every live token of the auth-service fake valid at the Upstox fake. */
export const linkAuthService = (upstox: UpstoxServer, authService: AuthServiceServer): void =>
  upstox.trust(authService.isValidToken)
