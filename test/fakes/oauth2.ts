/**
 * A fake OAuth2 token endpoint (`POST /oauth/token`, form-encoded, RFC 6749) with refresh-token
 * rotation and reuse detection: every `refresh_token` grant returns a new refresh token, and
 * presenting one that was already used revokes the whole grant (all its refresh and access
 * tokens), as OAuth 2.0 Security BCP servers do. Clients authenticate with HTTP Basic or
 * `client_id` / `client_secret` form fields; `client_credentials` grants are served too.
 */
import { Effect, Option, Schema } from "effect"
import type { Scope } from "effect"
import * as Server from "./server.js"

export type Route = "token"

export interface Options {
  /** Lifetime of access tokens; 3600 unless given. */
  readonly accessTokenLifetimeSeconds?: number
  /** Whether a refresh returns a new refresh token (and retires the one used); on unless set. */
  readonly rotateRefreshTokens?: boolean
  /** Client id → secret. */
  readonly clients?: Readonly<Record<string, string>>
  /** The fake's clock (epoch milliseconds); `Date.now` unless given. */
  readonly now?: () => number
}

export interface IssuedGrant {
  readonly refreshToken: string
}

export interface OAuth2Server extends Server.FakeServer<Route> {
  readonly addClient: (clientId: string, secret: string) => void
  /** Starts a grant for the client (as an authorization-code exchange would) and returns its first refresh token. */
  readonly issueGrant: (clientId: string) => IssuedGrant
  /** Issued, unexpired on the fake's clock, and its grant not revoked. */
  readonly isValidAccessToken: (token: string) => boolean
  /** The refresh token that the grant will accept next (the latest one, unless the grant is revoked). */
  readonly isValidRefreshToken: (token: string) => boolean
  /** How many grants were revoked because a used refresh token was presented again. */
  readonly reuseRevocations: () => number
  /** How many `refresh_token` grants succeeded. */
  readonly refreshes: () => number
}

/** One authorization: the refresh tokens issued in turn, and the access tokens made from them. */
interface Grant {
  readonly clientId: string
  revoked: boolean
  /** The one refresh token the grant accepts now; all earlier ones are used. */
  current: string
}

const TokenForm = Schema.Struct({
  grant_type: Schema.String,
  refresh_token: Schema.optional(Schema.String),
  client_id: Schema.optional(Schema.String),
  client_secret: Schema.optional(Schema.String)
})

/** Basic credentials of OAuth2 clients are form-encoded before base64 (RFC 6749 §2.3.1). */
const decodeFormComponent = (value: string): string =>
  Option.getOrElse(Option.liftThrowable(decodeURIComponent)(value.replace(/\+/g, " ")), () => value)

const noStore = { "cache-control": "no-store", pragma: "no-cache" }

const oauthError = (status: number, error: string, description?: string, headers: Readonly<Record<string, string>> = {}) =>
  Server.json(status, description === undefined ? { error } : { error, error_description: description }, { ...noStore, ...headers })

export const make = (options: Options = {}): Effect.Effect<OAuth2Server, never, Scope.Scope> =>
  Effect.gen(function*() {
    const now = options.now ?? Date.now
    const lifetimeSeconds = options.accessTokenLifetimeSeconds ?? 3600
    const rotate = options.rotateRefreshTokens ?? true
    const clients = new Map(Object.entries(options.clients ?? {}))
    /** Every refresh token ever issued, with its grant. */
    const refreshTokens = new Map<string, Grant>()
    const accessTokens = new Map<string, { readonly grant: Grant | undefined; readonly expiresAt: number }>()
    let reuseRevocations = 0
    let refreshes = 0

    const newRefreshToken = (grant: Grant) => {
      grant.current = Server.randomToken("rt_", 32)
      refreshTokens.set(grant.current, grant)
      return grant.current
    }

    const newAccessToken = (grant: Grant | undefined) => {
      const token = Server.randomToken("at_", 32)
      accessTokens.set(token, { grant, expiresAt: now() + lifetimeSeconds * 1000 })
      return token
    }

    const issueGrant = (clientId: string): IssuedGrant => {
      const grant: Grant = { clientId, revoked: false, current: "" }
      return { refreshToken: newRefreshToken(grant) }
    }

    /** The client the request authenticates as: HTTP Basic first, else the form fields. */
    const authenticateClient = (request: Server.FakeRequest, form: typeof TokenForm.Type): string | undefined => {
      const basic = Server.basicCredentials(request)
      const id = basic === undefined ? form.client_id : decodeFormComponent(basic.user)
      const secret = basic === undefined ? form.client_secret : decodeFormComponent(basic.password)
      return id !== undefined && secret !== undefined && clients.get(id) === secret ? id : undefined
    }

    const tokenResponse = (accessToken: string, refreshToken?: string) =>
      Server.json(200, {
        access_token: accessToken,
        token_type: "Bearer",
        expires_in: lifetimeSeconds,
        ...(refreshToken === undefined ? {} : { refresh_token: refreshToken })
      }, noStore)

    const refreshGrant = (clientId: string, presented: string | undefined): Server.Reply => {
      if (presented === undefined) return oauthError(400, "invalid_request", "refresh_token is required")
      const grant = refreshTokens.get(presented)
      if (grant === undefined || grant.clientId !== clientId) return oauthError(400, "invalid_grant", "unknown refresh token")
      if (grant.revoked) return oauthError(400, "invalid_grant", "the grant has been revoked")
      if (presented !== grant.current) {
        grant.revoked = true
        reuseRevocations++
        return oauthError(400, "invalid_grant", "refresh token reuse detected; the grant has been revoked")
      }
      refreshes++
      const refreshToken = rotate ? newRefreshToken(grant) : undefined
      return tokenResponse(newAccessToken(grant), refreshToken)
    }

    const token = (request: Server.FakeRequest): Server.Outcome => {
      if (!request.headers["content-type"]?.toLowerCase().startsWith("application/x-www-form-urlencoded")) {
        return oauthError(400, "invalid_request", "the body must be application/x-www-form-urlencoded")
      }
      const form = Schema.decodeUnknownOption(TokenForm)(request.body)
      if (Option.isNone(form)) return oauthError(400, "invalid_request", "grant_type is required")
      const clientId = authenticateClient(request, form.value)
      if (clientId === undefined) {
        const challenge = request.headers["authorization"] === undefined ? {} : { "www-authenticate": "Basic realm=\"oauth\"" }
        return oauthError(401, "invalid_client", undefined, challenge)
      }
      switch (form.value.grant_type) {
        case "refresh_token":
          return refreshGrant(clientId, form.value.refresh_token)
        case "client_credentials":
          return tokenResponse(newAccessToken(undefined))
        default:
          return oauthError(400, "unsupported_grant_type")
      }
    }

    const server = yield* Server.make<Route>({
      now,
      routes: [{ name: "token", method: "POST", path: "/oauth/token", handle: token }]
    })

    return {
      ...server,
      addClient: (clientId, secret) => void clients.set(clientId, secret),
      issueGrant,
      isValidAccessToken: (token) => {
        const issued = accessTokens.get(token)
        return issued !== undefined && issued.grant?.revoked !== true && now() < issued.expiresAt
      },
      isValidRefreshToken: (token) => {
        const grant = refreshTokens.get(token)
        return grant !== undefined && !grant.revoked && grant.current === token
      },
      reuseRevocations: () => reuseRevocations,
      refreshes: () => refreshes
    }
  })
