/**
 * A fake of the Upstox-style internal auth service that holds one token per account:
 * `GET /accounts/{account_id}/token` returns the account's current token and expiry,
 * `POST /accounts/{account_id}/refresh` replaces it with a new one. It can be taken down (every
 * request reset or answered 503) to test startup and background retries, and it reports
 * `expires_at` as ISO-8601 UTC or, like some deployments, as epoch seconds.
 */
import { Effect } from "effect"
import type { Scope } from "effect"
import * as Server from "./server.js"

export type Route = "token" | "refresh"

/** How the service fails while it is down. */
export type DownMode = "reset" | "unavailable"

export interface Options {
  /** Accounts known from the start, each with a fresh token. */
  readonly accounts?: ReadonlyArray<string>
  /** Lifetime of tokens the service makes; 86400 unless given. */
  readonly tokenLifetimeSeconds?: number
  /** `expires_at` as an ISO-8601 UTC string (default) or as epoch seconds. */
  readonly expiresAtFormat?: "iso" | "epoch-seconds"
  /** What `down()` does unless told otherwise; `"reset"` unless given. */
  readonly downMode?: DownMode
  /** Whether replacing an account's token revokes the old one; by default it stays valid until it expires. */
  readonly revokeOnRefresh?: boolean
  /** The fake's clock (epoch milliseconds); `Date.now` unless given. */
  readonly now?: () => number
}

export interface AccountToken {
  readonly token: string
  readonly expiresAt: Date
}

/** What `setAccount` is told; the rest is made up. */
export interface AccountTokenInit {
  readonly token?: string
  readonly expiresAt?: Date
}

export interface AuthServiceServer extends Server.FakeServer<Route> {
  /** Makes the account known with this token and expiry (a fresh token, one lifetime from now, unless given). */
  readonly setAccount: (accountId: string, init?: AccountTokenInit) => AccountToken
  readonly removeAccount: (accountId: string) => void
  readonly account: (accountId: string) => AccountToken | undefined
  readonly knownAccounts: () => ReadonlyArray<string>
  /** Until `up()`, every request is reset or answered 503 (still counted). */
  readonly down: (mode?: DownMode) => void
  readonly up: () => void
  /** A token this service handed out that is neither revoked nor expired on its clock. */
  readonly isValidToken: (token: string) => boolean
}

export const make = (options: Options = {}): Effect.Effect<AuthServiceServer, never, Scope.Scope> =>
  Effect.gen(function*() {
    const now = options.now ?? Date.now
    const lifetimeMs = (options.tokenLifetimeSeconds ?? 86_400) * 1000
    const accounts = new Map<string, AccountToken>()
    const issued = new Map<string, { expiresAt: number; revoked: boolean }>()
    let downMode: DownMode | undefined

    const setAccount = (accountId: string, init: AccountTokenInit = {}): AccountToken => {
      const next: AccountToken = {
        token: init.token ?? Server.randomToken("ups_"),
        expiresAt: init.expiresAt ?? new Date(now() + lifetimeMs)
      }
      const previous = accounts.get(accountId)
      if (previous !== undefined && options.revokeOnRefresh === true) {
        issued.set(previous.token, { expiresAt: previous.expiresAt.getTime(), revoked: true })
      }
      accounts.set(accountId, next)
      issued.set(next.token, { expiresAt: next.expiresAt.getTime(), revoked: false })
      return next
    }

    const tokenBody = (token: AccountToken) =>
      Server.json(200, {
        access_token: token.token,
        expires_at: options.expiresAtFormat === "epoch-seconds"
          ? Math.floor(token.expiresAt.getTime() / 1000)
          : token.expiresAt.toISOString()
      })

    const unknown = Server.json(404, { detail: "unknown account" })

    const getToken = (request: Server.FakeRequest): Server.Outcome => {
      const token = accounts.get(request.params["accountId"] ?? "")
      return token === undefined ? unknown : tokenBody(token)
    }

    const refresh = (request: Server.FakeRequest): Server.Outcome => {
      const accountId = request.params["accountId"] ?? ""
      return accounts.has(accountId) ? tokenBody(setAccount(accountId)) : unknown
    }

    const whileDown = (): Server.Outcome | undefined => {
      switch (downMode) {
        case undefined:
          return undefined
        case "reset":
          return "reset"
        case "unavailable":
          return Server.json(503, { detail: "service unavailable" })
      }
    }

    for (const accountId of options.accounts ?? []) setAccount(accountId)

    const server = yield* Server.make<Route>({
      now,
      intercept: whileDown,
      routes: [
        { name: "token", method: "GET", path: "/accounts/:accountId/token", handle: getToken },
        { name: "refresh", method: "POST", path: "/accounts/:accountId/refresh", handle: refresh }
      ]
    })

    return {
      ...server,
      setAccount,
      removeAccount: (accountId) => void accounts.delete(accountId),
      account: (accountId) => accounts.get(accountId),
      knownAccounts: () => [...accounts.keys()],
      down: (mode = options.downMode ?? "reset") => {
        downMode = mode
      },
      up: () => {
        downMode = undefined
      },
      isValidToken: (token) => {
        const record = issued.get(token)
        return record !== undefined && !record.revoked && now() < record.expiresAt
      }
    }
  })
