/**
 * Estimate accuracy on a backend capped by request slots (maxInFlightRequests), from a
 * cold start, in virtual time (test/helpers/slot-scenario.ts): 1, 4, 16 and 64 slots;
 * fixed, uniform and exponential service times of 100 ms on average; tenants a, b, c of
 * weights 1, 1, 2 in closed loops (3, 1 and 2 requests per slot outstanding) or Poisson
 * streams offering 0.9x and 1.3x the capacity (a asks for half of it, b a fifth, c the
 * rest). Next to each: the naive baseline from the same run, the requests waiting at
 * arrival x the mean time per dispatch so far. SLOTS, SVC and LOADS narrow the grid.
 */
import { runSlotScenario, type SlotScenario } from "../helpers/slot-scenario.ts";

const pct = (x: number) => `${Math.round(x * 100)}%`;
const slots = (process.env.SLOTS ?? "1,4,16,64").split(",").map(Number);
const services = (process.env.SVC ?? "fixed,uniform,exponential").split(",") as SlotScenario["service"][];
const loads = (process.env.LOADS ?? "closed,0.9,1.3")
  .split(",")
  .map((l) => (l === "closed" ? "closed" : Number(l))) as SlotScenario["load"][];

console.log(
  "Estimate accuracy on a slot-capped backend, virtual time, 30 s from a cold start (error = |waited - estimated| / max(waited, 50 ms))",
);
console.log("slots  service      load    tenant  reqs  wait p50  err p50 / p90  naive p50  viol  worst/exp");
for (const s of slots)
  for (const service of services)
    for (const load of loads)
      for (const r of await runSlotScenario({ slots: s, service, load, durationMs: 30_000, seed: 1 }))
        console.log(
          `${String(s).padStart(5)}  ${service.padEnd(11)}  ${String(load).padEnd(6)}  ${r.tenant.padEnd(6)}  ${String(r.count).padStart(4)}  ${String(Math.round(r.medianWaitMs)).padStart(5)} ms  ${pct(r.medianError).padStart(5)} / ${pct(r.p90Error).padStart(5)}  ${pct(r.naiveMedianError).padStart(9)}  ${pct(r.violations).padStart(4)}  ${r.worstOverExpected.toFixed(1).padStart(8)}x`,
        );
