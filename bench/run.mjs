// `pnpm bench`: every benchmark, one after the other, printed as a table and as JSON.
import * as http from "./http.mjs"
import * as lifecycle from "./lifecycle.mjs"
import * as pool from "./pool.mjs"

const fmt = (n) => typeof n === "number" ? (Number.isInteger(n) ? n.toLocaleString("en-US") : n.toFixed(1)) : String(n)

const sections = [["lifecycle (10,000 accounts)", lifecycle], ["pool acquire", pool], ["http", http]]
const all = {}
for (const [name, bench] of sections) {
  const results = await bench.run()
  all[name] = results
  console.log(`\n## ${name}`)
  for (const [k, v] of Object.entries(results)) console.log(`${k.padEnd(32)} ${fmt(v)}`)
}
console.log(`\n${JSON.stringify(all)}`)
