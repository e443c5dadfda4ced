/**
 * The fuzz run: `node --expose-gc --import tsx test/fuzz/fuzz.ts [--cases N] [--seed S]
 * [--store redis|memory] [--concurrency C]`. N (default 100000) is split into ext_proc
 * streams (70 %), request bodies (20 %) and policy files (10 %). Exits 1 on any violation.
 */
import { parseArgs } from "node:util";
import { runFuzz } from "./run.ts";

const { values } = parseArgs({
  options: {
    cases: { type: "string", default: "100000" },
    seed: { type: "string" },
    store: { type: "string", default: "redis" },
    concurrency: { type: "string", default: "24" },
  },
});
const total = Number(values.cases);
const seed = values.seed === undefined ? Date.now() % 2 ** 31 : Number(values.seed);
const store = values.store === "memory" ? "memory" : "redis";
const streams = Math.round(total * 0.7);
const bodies = Math.round(total * 0.2);
const report = await runFuzz({
  seed,
  streams,
  bodies,
  policies: total - streams - bodies,
  concurrency: Number(values.concurrency),
  store,
  log: (line) => console.error(`[fuzz] ${line}`),
});
console.log(JSON.stringify({ seed, store, ...report }, null, 2));
process.exitCode = report.violations.length > 0 ? 1 : 0;
