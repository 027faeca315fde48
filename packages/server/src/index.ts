/**
 * `@tessera/server`: the HTTP service (SPEC §6). Not built yet: it is the subject of the
 * HTTP service issue. Until then `tessera serve` runs the lifecycle without HTTP.
 */
export {}
