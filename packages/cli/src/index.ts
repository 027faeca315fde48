/** `@tessera/cli`: the `tessera` command's building blocks. */
export * as Serve from "./Serve.js"
