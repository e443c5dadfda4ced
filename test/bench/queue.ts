/**
 * The fair queue at scale: 10,000 tenants and 100,000 queued requests. Time per submit
 * (including the wait estimate), per dispatch, per cancel, and memory per queued request,
 * for fairgate's policy (VTC in priority levels) next to plain FCFS measured in the same
 * run on the same FairQueueScheduler.
 *
 *   node --import tsx test/bench/queue.ts [--tenants N] [--queued N]
 */
import { parseArgs } from "node:util";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { EngineAwareGate } from "../../extproc/src/admission/gate.ts";
import { ManualClock } from "../../extproc/src/clock.ts";
import { compilePolicy } from "../../extproc/src/config/policy.ts";
import { policySchema } from "../../extproc/src/config/schema.ts";
import { FairQueueScheduler } from "../../extproc/src/queue/fair-queue.ts";
import { queuePolicyFor } from "../../extproc/src/queue/policies/index.ts";
import type { Dispatch, SchedulingRequest } from "../../extproc/src/scheduler/types.ts";

const { values } = parseArgs({
  options: { tenants: { type: "string", default: "10000" }, queued: { type: "string", default: "100000" } },
});
const TENANTS = Number(values.tenants);
const QUEUED = Number(values.queued);

setFlagsFromString("--expose-gc");
const gc = runInNewContext("gc") as () => void;

const tiers = {
  bronze: { priority: 1, weight: 1 },
  silver: { priority: 1, weight: 2 },
  gold: { priority: 0, weight: 4 },
};
const tierNames = Object.keys(tiers);
const policy = compilePolicy(
  policySchema.parse({
    tiers,
    tenants: Array.from({ length: TENANTS }, (_, i) => ({
      id: `t${i}`,
      tier: tierNames[i % tierNames.length],
      limits: { maxQueueWaitMs: 3_600_000 },
    })),
    backends: [{ name: "b", maxInFlightRequests: 1 }],
  }),
);
const tenants = Array.from({ length: TENANTS }, (_, i) => policy.tenantFor(`t${i}`));

/** Spreads requests over every tenant in a scrambled order. */
function tenantOf(n: number) {
  const index = (n * 7919 + Math.floor(n / 97)) % TENANTS;
  return tenants[(index + TENANTS) % TENANTS] as (typeof tenants)[number];
}

function request(n: number): SchedulingRequest {
  return {
    id: String(n),
    tenant: tenantOf(n),
    backend: "b",
    promptTokens: 100 + (n % 900),
    expectedOutputTokens: 50 + (n % 450),
    maxWaitMs: 3_600_000,
  };
}

interface Result {
  policy: string;
  submitUs: number;
  dispatchUs: number;
  cancelUs: number;
  bytesPerQueued: number;
}

async function measure(name: "vtc" | "fcfs"): Promise<Result> {
  const scheduler = new FairQueueScheduler({
    policy: () => policy,
    clock: new ManualClock(),
    fairness: queuePolicyFor({ policy: name, starvationBound: 10 }),
    gate: new EngineAwareGate(),
  });
  const never = new AbortController().signal;
  // One request holds the only slot, so everything else queues.
  let current: Dispatch | undefined;
  scheduler.submit(request(-1), never).dispatch.then((d) => {
    current = d;
  });
  await Promise.resolve();

  gc();
  const heapBefore = process.memoryUsage().heapUsed;
  const dispatched: Array<Promise<Dispatch>> = [];
  let start = performance.now();
  for (let n = 0; n < QUEUED; n++) {
    scheduler.estimate(request(n));
    dispatched.push(scheduler.submit(request(n), new AbortController().signal).dispatch);
  }
  const submitUs = ((performance.now() - start) * 1000) / QUEUED;
  gc();
  const bytesPerQueued = (process.memoryUsage().heapUsed - heapBefore) / QUEUED;

  // Each release frees the slot and dispatches the next request in policy order.
  start = performance.now();
  for (let n = 0; n < QUEUED; n++) {
    current?.release({ completionTokens: 40 + (n % 300) });
    current = await nextDispatch(dispatched, n);
  }
  const dispatchUs = ((performance.now() - start) * 1000) / QUEUED;
  current?.release();

  // Cancellation: queue again behind a held slot, then abort every one.
  scheduler.submit(request(-2), never);
  const controllers = Array.from({ length: QUEUED }, () => new AbortController());
  for (let n = 0; n < QUEUED; n++) {
    scheduler.submit(request(n), (controllers[n] as AbortController).signal).dispatch.catch(() => {});
  }
  start = performance.now();
  for (const controller of controllers) controller.abort();
  const cancelUs = ((performance.now() - start) * 1000) / QUEUED;
  return {
    policy: name === "vtc" ? "fairgate (vtc)" : "fcfs (baseline)",
    submitUs,
    dispatchUs,
    cancelUs,
    bytesPerQueued,
  };
}

/** The n-th dispatch in order of resolution, whichever request it is. */
let resolvedOrder: Dispatch[] = [];
let watching: Array<Promise<Dispatch>> | undefined;
async function nextDispatch(all: Array<Promise<Dispatch>>, n: number): Promise<Dispatch> {
  if (watching !== all) {
    watching = all;
    resolvedOrder = [];
    for (const p of all) p.then((d) => resolvedOrder.push(d));
  }
  while (resolvedOrder.length <= n) await Promise.resolve();
  return resolvedOrder[n] as Dispatch;
}

const results: Result[] = [];
for (const name of ["fcfs", "vtc"] as const) results.push(await measure(name));
const base = results[0] as Result;
const fmt = (v: number) => v.toFixed(2);
console.log(`\nFair queue at scale: ${TENANTS} tenants, ${QUEUED} queued requests (one engine slot)\n`);
console.log("| policy | submit + estimate µs/op | dispatch µs/op | cancel µs/op | bytes / queued request |");
console.log("| --- | ---: | ---: | ---: | ---: |");
for (const r of results) {
  console.log(
    `| ${r.policy} | ${fmt(r.submitUs)} (${fmt(r.submitUs / base.submitUs)}×) | ${fmt(r.dispatchUs)} (${fmt(r.dispatchUs / base.dispatchUs)}×) | ${fmt(r.cancelUs)} (${fmt(r.cancelUs / base.cancelUs)}×) | ${Math.round(r.bytesPerQueued)} |`,
  );
}
