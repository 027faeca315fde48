// `pnpm bench`: every benchmark, one after the other, printed as a table and as JSON.
// `node --expose-gc bench/run.mjs <word>…` runs only the sections whose name holds one of the words.
import * as cluster from "./cluster.mjs"
import * as http from "./http.mjs"
import * as lifecycle from "./lifecycle.mjs"
import * as pool from "./pool.mjs"

const fmt = (n) => typeof n === "number" ? n.toLocaleString("en-US", { maximumFractionDigits: 3 }) : String(n)

const sections = [
  ["lifecycle (10,000 accounts)", lifecycle],
  ["pool acquire", pool],
  ["http", http],
  ["postgres acquire", cluster]
]
const words = process.argv.slice(2)
const chosen = words.length === 0 ? sections : sections.filter(([name]) => words.some((word) => name.includes(word)))
if (chosen.length === 0) throw new Error(`no section matches ${words.join(", ")}: ${sections.map(([name]) => name).join(", ")}`)
const all = {}
for (const [name, bench] of chosen) {
  const results = await bench.run()
  all[name] = results
  console.log(`\n## ${name}`)
  for (const [k, v] of Object.entries(results)) console.log(`${k.padEnd(32)} ${fmt(v)}`)
}
console.log(`\n${JSON.stringify(all)}`)
