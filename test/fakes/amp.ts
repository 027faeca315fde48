/**
 * A fake AMP-style password API: `POST /user/obtain_token` trades a username and password for
 * a token, `GET /user/refresh-token` trades a valid bearer token for a new one. Tokens are
 * random (`amp_` + 24 base32 characters) and expire after a configurable lifetime on the
 * fake's clock; the response shape (token field, expiry field) is configurable to cover the
 * variants the password source must accept.
 */
import { Effect, Option, Schema } from "effect"
import type { Scope } from "effect"
import * as Server from "./server.js"

export type Route = "obtain" | "refresh"

export interface Options {
  /** Username → password. */
  readonly users?: Readonly<Record<string, string>>
  /** Lifetime of every issued token; 3600 unless given. */
  readonly tokenLifetimeSeconds?: number
  /** The field that carries the token; `"token"` unless given. */
  readonly tokenField?: "token" | "access_token"
  /** How the expiry is reported: `expires_in` seconds (default), an ISO `expires_at`, or not at all. */
  readonly expiry?: "expires_in" | "expires_at" | "none"
  /** Whether a refresh revokes the token it was made with; by default it stays valid until it expires. */
  readonly revokeOnRefresh?: boolean
  /** The fake's clock (epoch milliseconds); `Date.now` unless given. */
  readonly now?: () => number
}

/** A token the fake has issued. */
export interface IssuedToken {
  readonly token: string
  readonly username: string
  readonly issuedAt: number
  readonly expiresAt: number
  readonly revoked: boolean
}

export interface AmpServer extends Server.FakeServer<Route> {
  readonly addUser: (username: string, password: string) => void
  /** Issued, not revoked and not expired on the fake's clock. */
  readonly isValid: (token: string) => boolean
  readonly revoke: (token: string) => void
  /** Every token issued so far, oldest first. */
  readonly issued: () => ReadonlyArray<IssuedToken>
}

const Credentials = Schema.Struct({ username: Schema.String, password: Schema.String })

export const make = (options: Options = {}): Effect.Effect<AmpServer, never, Scope.Scope> =>
  Effect.gen(function*() {
    const now = options.now ?? Date.now
    const lifetimeSeconds = options.tokenLifetimeSeconds ?? 3600
    const tokenField = options.tokenField ?? "token"
    const expiry = options.expiry ?? "expires_in"
    const users = new Map(Object.entries(options.users ?? {}))
    const tokens = new Map<string, IssuedToken>()

    /** The token's record if it is issued, not revoked and not expired. */
    const valid = (token: string | undefined): IssuedToken | undefined => {
      const issued = token === undefined ? undefined : tokens.get(token)
      return issued !== undefined && !issued.revoked && now() < issued.expiresAt ? issued : undefined
    }

    const revoke = (token: string) => {
      const issued = tokens.get(token)
      if (issued !== undefined) tokens.set(token, { ...issued, revoked: true })
    }

    const issue = (username: string): Server.Reply => {
      const issuedAt = now()
      const issued: IssuedToken = {
        token: Server.randomToken("amp_"),
        username,
        issuedAt,
        expiresAt: issuedAt + lifetimeSeconds * 1000,
        revoked: false
      }
      tokens.set(issued.token, issued)
      return Server.json(200, {
        [tokenField]: issued.token,
        ...(expiry === "expires_in" ? { expires_in: lifetimeSeconds } : {}),
        ...(expiry === "expires_at" ? { expires_at: new Date(issued.expiresAt).toISOString() } : {})
      })
    }

    const obtain = (request: Server.FakeRequest): Server.Outcome => {
      const credentials = Schema.decodeUnknownOption(Credentials)(request.body)
      if (Option.isNone(credentials)) return Server.json(422, { detail: "username and password are required" })
      const { password, username } = credentials.value
      return users.get(username) === password
        ? issue(username)
        : Server.json(401, { detail: "Invalid credentials" })
    }

    const refresh = (request: Server.FakeRequest): Server.Outcome => {
      const current = valid(Server.bearerToken(request))
      if (current === undefined) return Server.json(401, { detail: "Token is invalid or expired" })
      if (options.revokeOnRefresh === true) revoke(current.token)
      return issue(current.username)
    }

    const server = yield* Server.make<Route>({
      now,
      routes: [
        { name: "obtain", method: "POST", path: "/user/obtain_token", handle: obtain },
        { name: "refresh", method: "GET", path: "/user/refresh-token", handle: refresh }
      ]
    })

    return {
      ...server,
      addUser: (username, password) => void users.set(username, password),
      isValid: (token) => valid(token) !== undefined,
      revoke,
      issued: () => [...tokens.values()]
    }
  })
