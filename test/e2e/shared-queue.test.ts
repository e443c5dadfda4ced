/**
 * Two gateway replicas' fair queues sharing one Redis (queue/shared-state.ts): the
 * backend's caps count both replicas' requests and hold even for what arrives between two
 * exchanges (each replica dispatches within its claim on the cap), and weights hold
 * although each tenant's requests reach only one replica. Exchanges are driven by hand
 * (syncNow) so the test controls their order.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { EngineAwareGate } from "../../extproc/src/admission/gate.ts";
import { createBudgetRedisClient } from "../../extproc/src/budget/redis-client.ts";
import { ManualClock } from "../../extproc/src/clock.ts";
import { silentLogger } from "../../extproc/src/log.ts";
import { FairQueueScheduler } from "../../extproc/src/queue/fair-queue.ts";
import { queuePolicyFor } from "../../extproc/src/queue/policies/index.ts";
import { SharedQueueState } from "../../extproc/src/queue/shared-state.ts";
import type { Dispatch, SchedulingRequest } from "../../extproc/src/scheduler/types.ts";
import { policyFrom } from "../helpers/policy.ts";
import { startRedis, type TestRedis } from "../helpers/redis.ts";

const policy = policyFrom({
  tiers: { heavy: { priority: 0, weight: 4 }, light: { priority: 0, weight: 1 } },
  tenants: [
    { id: "x", tier: "heavy" },
    { id: "y", tier: "light" },
  ],
  backends: [
    { name: "b", maxInFlightRequests: 1 },
    { name: "two", maxInFlightRequests: 2 },
    { name: "four", maxInFlightRequests: 4 },
  ],
});

const flush = () => new Promise((resolve) => setImmediate(resolve));

function request(id: string, tenant: string, backend = "b"): SchedulingRequest {
  return {
    id,
    tenant: policy.tenantFor(tenant),
    backend,
    promptTokens: 100,
    expectedOutputTokens: 100,
    maxWaitMs: 3_600_000,
  };
}

interface Replica {
  scheduler: FairQueueScheduler;
  shared: SharedQueueState;
  dispatched: Dispatch[];
  close(): Promise<void>;
}

async function replica(redis: TestRedis, prefix: string, staleMs?: number): Promise<Replica> {
  const client = createBudgetRedisClient(redis.url, 1_000);
  await client.connect();
  const shared = new SharedQueueState({
    client,
    keyPrefix: prefix,
    logger: silentLogger,
    intervalMs: 3_600_000,
    ...(staleMs === undefined ? {} : { staleMs }),
  });
  const scheduler = new FairQueueScheduler({
    policy: () => policy,
    clock: new ManualClock(),
    fairness: queuePolicyFor({ policy: "vtc", starvationBound: 10 }),
    gate: new EngineAwareGate(),
    shared,
  });
  const dispatched: Dispatch[] = [];
  return {
    scheduler,
    shared,
    dispatched,
    close: async () => {
      await shared.stop();
      client.disconnect();
    },
  };
}

function submit(r: Replica, req: SchedulingRequest): void {
  r.scheduler.submit(req, new AbortController().signal).dispatch.then(
    (d) => r.dispatched.push(d),
    () => {},
  );
}

describe("fair queues of two replicas sharing Redis", () => {
  let redis: TestRedis;
  before(async () => {
    redis = await startRedis();
  });
  after(async () => redis.stop());

  it("counts both replicas' requests against the backend's cap", async () => {
    const a = await replica(redis, "cap:");
    const b = await replica(redis, "cap:");
    try {
      submit(a, request("a1", "x"));
      await flush();
      assert.equal(a.dispatched.length, 1);
      await a.shared.syncNow();
      await b.shared.syncNow();
      submit(b, request("b1", "y"));
      await flush();
      assert.equal(b.dispatched.length, 0, "replica B sees A's request holding the only slot");
      a.dispatched.shift()?.release();
      await a.shared.syncNow();
      await b.shared.syncNow();
      await flush();
      assert.equal(b.dispatched.length, 1, "the freed slot goes to B's waiting request");
    } finally {
      await a.close();
      await b.close();
    }
  });

  it("holds the cap for a burst on both replicas between two exchanges; a replica that stops renewing its claim loses it", async () => {
    const a = await replica(redis, "claims:", 400);
    const b = await replica(redis, "claims:", 400);
    try {
      // A exchanges first while nobody wants anything: it claims the whole cap of 2.
      await a.shared.syncNow();
      await b.shared.syncNow();
      for (let i = 0; i < 2; i++) submit(a, request(`a${i}`, "x", "two"));
      for (let i = 0; i < 2; i++) submit(b, request(`b${i}`, "y", "two"));
      await flush();
      // Neither has seen the other's new requests: only the claims keep them apart.
      assert.equal(a.dispatched.length, 2);
      assert.equal(b.dispatched.length, 0, "B holds no claim on the cap");
      // A goes silent (it died holding its claim): B waits while the claim is fresh...
      await b.shared.syncNow();
      await flush();
      assert.equal(b.dispatched.length, 0);
      // ...and takes the cap once A's claim is older than the staleness bound.
      await new Promise((r) => setTimeout(r, 450));
      await b.shared.syncNow();
      await flush();
      assert.equal(b.dispatched.length, 2);
    } finally {
      await a.close();
      await b.close();
    }
  });

  it("a replica short of claim takes the room nobody claimed on demand, without waiting for the next exchange", async () => {
    const a = await replica(redis, "demand:");
    const b = await replica(redis, "demand:");
    try {
      // Idle, with both replicas known: each claims 1 of the 4, half the rest stays unclaimed.
      await a.shared.syncNow();
      await b.shared.syncNow();
      await a.shared.syncNow();
      await a.shared.syncNow();
      await b.shared.syncNow();
      for (let i = 0; i < 3; i++) submit(a, request(`a${i}`, "x", "four"));
      for (let i = 0; i < 3; i++) submit(b, request(`b${i}`, "y", "four"));
      await flush();
      assert.equal(a.dispatched.length + b.dispatched.length, 2, "each within its claim of 1");
      // No exchange from here on: each asks Redis once for more, and they share the 2 left.
      const deadline = performance.now() + 2_000;
      while (a.dispatched.length + b.dispatched.length < 4 && performance.now() < deadline)
        await new Promise((r) => setTimeout(r, 5));
      await new Promise((r) => setTimeout(r, 50));
      assert.equal(a.dispatched.length + b.dispatched.length, 4, "the cap, and no more");
    } finally {
      await a.close();
      await b.close();
    }
  });

  it("keeps weights 4:1 although each tenant's requests reach a different replica", async () => {
    const a = await replica(redis, "w:");
    const b = await replica(redis, "w:");
    try {
      // x (weight 4) only through A, y (weight 1) only through B; both always backlogged.
      // (Within one exchange interval replicas do not see each other's new requests, so B
      // joins after an exchange: the cap is only as fresh as the last exchange.)
      for (let i = 0; i < 120; i++) submit(a, request(`x${i}`, "x"));
      await flush();
      await a.shared.syncNow();
      await b.shared.syncNow();
      for (let i = 0; i < 120; i++) submit(b, request(`y${i}`, "y"));
      await flush();
      const served = { x: 0, y: 0 };
      for (let round = 0; round < 100; round++) {
        await a.shared.syncNow();
        await b.shared.syncNow();
        await a.shared.syncNow();
        await flush();
        const holder = a.dispatched.length > 0 ? a : b.dispatched.length > 0 ? b : undefined;
        assert.ok(holder, `round ${round}: one replica holds the slot`);
        assert.ok(a.dispatched.length + b.dispatched.length === 1, `round ${round}: never two in flight`);
        served[holder === a ? "x" : "y"]++;
        // Releasing lets the holder dispatch again at once, unless the other replica's
        // waiting tenant is owed the slot: then it waits for that replica's next exchange.
        holder.dispatched.shift()?.release({ completionTokens: 100 });
        await flush();
      }
      const ratio = served.x / Math.max(1, served.y);
      assert.ok(ratio > 2.8 && ratio < 5.2, `dispatch ratio x:y = ${served.x}:${served.y}`);
    } finally {
      await a.close();
      await b.close();
    }
  });
});
