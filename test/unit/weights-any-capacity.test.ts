/**
 * Weights hold at any capacity: backlogged tenants split the dispatched service by weight
 * whether the backend takes 1 request at a time or 256. The queue is the one `serve` runs
 * (fairQueueFromPolicy, the policy's defaults: cost model, burst credit, reservations,
 * prefill budget), on a manual clock; every request is alike and holds its slot 100 ms.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ManualClock } from "../../extproc/src/clock.ts";
import { fairQueueFromPolicy } from "../../extproc/src/queue/create.ts";
import type { SchedulingRequest } from "../../extproc/src/scheduler/types.ts";
import { policyFrom } from "../helpers/policy.ts";

const SERVICE_MS = 100;

/** Dispatches per tenant over `rounds` service times, counted after the first tenth. */
async function dispatchShares(slots: number, weights: readonly number[], rounds = 400): Promise<number[]> {
  const tiers = Object.fromEntries(weights.map((w, i) => [`w${i}`, { priority: 0, weight: w }]));
  const policy = policyFrom({
    tiers,
    tenants: weights.map((_, i) => ({ id: `t${i}`, tier: `w${i}` })),
    backends: [{ name: "b", maxInFlightRequests: slots }],
    defaults: { tier: "w0", limits: { maxQueued: 100_000, maxQueueWaitMs: 3_600_000 } },
  });
  const clock = new ManualClock(0);
  const scheduler = fairQueueFromPolicy({ policy: () => policy, clock });
  const counts = weights.map(() => 0);
  const endMs = rounds * SERVICE_MS;
  let next = 0;
  const send = (tenant: number) => {
    const request: SchedulingRequest = {
      id: `r${next++}`,
      tenant: policy.tenantFor(`t${tenant}`),
      backend: "b",
      promptTokens: 200,
      expectedOutputTokens: 100,
      maxWaitMs: 3_600_000,
    };
    scheduler.submit(request, new AbortController().signal).dispatch.then((dispatch) => {
      if (clock.now() >= endMs / 10 && clock.now() < endMs) counts[tenant] = (counts[tenant] ?? 0) + 1;
      clock.setTimeout(() => {
        dispatch.firstToken?.();
        dispatch.release({ completionTokens: 100 });
        if (clock.now() < endMs) send(tenant);
      }, SERVICE_MS);
    });
  };
  // Closed loops deep enough that every tenant always has requests waiting.
  for (let t = 0; t < weights.length; t++) for (let i = 0; i < 2 * slots + 4; i++) send(t);
  while (clock.now() < endMs) {
    await new Promise((resolve) => setImmediate(resolve));
    clock.advance(10);
  }
  const total = counts.reduce((a, b) => a + b, 0);
  return counts.map((c) => c / total);
}

describe("weights hold at any capacity (virtual time, the queue serve runs)", () => {
  for (const weights of [
    [4, 1],
    [1, 2, 3, 4],
  ]) {
    for (const slots of [1, 2, 4, 16, 256]) {
      it(`${weights.join(":")} with ${slots} slot(s): each tenant's share within 10 % of its weight's`, async () => {
        const shares = await dispatchShares(slots, weights);
        const sum = weights.reduce((a, b) => a + b, 0);
        weights.forEach((w, i) => {
          const want = w / sum;
          const got = shares[i] as number;
          assert.ok(
            Math.abs(got - want) <= 0.1 * want,
            `weight ${w}: ${(got * 100).toFixed(1)} % of dispatches, want ${(want * 100).toFixed(1)} % (shares ${shares.map((s) => (s * 100).toFixed(1)).join(" / ")})`,
          );
        });
      });
    }
  }
});
