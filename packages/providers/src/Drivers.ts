/**
 * Every built-in source and provider, configured from the environment
 * (`AMP_API_URL`, `TOKEN_REFRESH_SERVICE_URL`, `UPSTOX_API_URL`, `GITHUB_API_URL`,
 * `GITLAB_API_URL`, `BITBUCKET_API_URL`), and the accounts the environment declares
 * (`AMP_*`, `UPSTOX_ACCOUNT_IDS`, `GITHUB_TOKENS`, `GITLAB_TOKENS`, `BITBUCKET_TOKENS`).
 */
import type { HttpClient } from "@effect/platform"
import { Source } from "@tessera/core"
import type { Lifecycle } from "@tessera/core"
import { Config, Effect, Option } from "effect"
import type { ConfigError, Layer } from "effect"
import * as Amp from "./Amp.js"
import * as Bitbucket from "./Bitbucket.js"
import * as GitHub from "./GitHub.js"
import * as GitLab from "./GitLab.js"
import * as OAuth2 from "./OAuth2.js"
import * as Static from "./Static.js"
import * as Upstox from "./Upstox.js"

const optionalUrl = (name: string) =>
  Effect.map(Config.option(Config.url(name)), (url) => Option.getOrUndefined(Option.map(url, (u) => u.toString())))

export const layerConfig: Layer.Layer<Source.Drivers, ConfigError.ConfigError, HttpClient.HttpClient> = Source.layerEffect(
  Effect.gen(function*() {
    return {
      sources: [
        yield* Amp.passwordSource({ defaultBaseUrl: yield* optionalUrl("AMP_API_URL") }),
        yield* Upstox.remoteSource({ defaultServiceUrl: yield* optionalUrl("TOKEN_REFRESH_SERVICE_URL") }),
        yield* OAuth2.source()
      ],
      providers: [
        yield* Upstox.provider({ apiUrl: yield* optionalUrl("UPSTOX_API_URL") }),
        yield* GitHub.provider({ apiUrl: yield* optionalUrl("GITHUB_API_URL") }),
        yield* GitLab.provider({ baseUrl: yield* optionalUrl("GITLAB_API_URL") }),
        yield* Bitbucket.provider({ apiUrl: yield* optionalUrl("BITBUCKET_API_URL") })
      ]
    }
  })
)

/**
 * The accounts the environment declares, static ones with the token they start with: what
 * `Lifecycle.DeclaredAccounts` takes.
 */
export const accountsFromEnv: Effect.Effect<ReadonlyArray<Lifecycle.Declared>, ConfigError.ConfigError> = Effect.gen(
  function*() {
    const amp = yield* Amp.accountFromEnv
    const upstox = yield* Upstox.accountsFromEnv
    const tokens = yield* Static.accountsFromEnv
    return [
      ...[...Option.toArray(amp), ...upstox].map((account): Lifecycle.Declared => ({ account })),
      ...tokens.map(({ account, token }): Lifecycle.Declared => ({ account, token: { token } }))
    ]
  }
)
