import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { ManualClock } from "../../extproc/src/clock.ts";
import { FairQueueScheduler } from "../../extproc/src/queue/fair-queue.ts";
import { FcfsPolicy } from "../../extproc/src/queue/policies/fcfs.ts";
import type { Dispatch, SchedulingRequest } from "../../extproc/src/scheduler/types.ts";
import { QueueRefusal } from "../../extproc/src/scheduler/types.ts";
import { policyFrom, standardPolicyInput } from "../helpers/policy.ts";

const policy = policyFrom(
  standardPolicyInput({ backends: [{ name: "b", maxInFlightRequests: 2, maxInFlightTokens: 1_000 }] }),
);

function request(id: string, tenantId = "acme", tokens = 100, maxWaitMs = 10_000): SchedulingRequest {
  return {
    id,
    tenant: policy.tenantFor(tenantId),
    backend: "b",
    promptTokens: tokens / 2,
    expectedOutputTokens: tokens / 2,
    maxWaitMs,
  };
}

const flush = () => new Promise((resolve) => setImmediate(resolve));

const fcfs = (clock: ManualClock) =>
  // Strict FIFO: no overtaking of a request waiting for KV room, no per-tenant KV shares.
  new FairQueueScheduler({
    policy: () => policy,
    clock,
    fairness: () => new FcfsPolicy(),
    maxBypass: 0,
  });

describe("FairQueueScheduler with the FCFS policy", () => {
  it("dispatches at once under the caps and queues beyond them, in arrival order", async () => {
    const clock = new ManualClock();
    const scheduler = fcfs(clock);
    const signal = new AbortController().signal;
    const a = scheduler.submit(request("a"), signal);
    const b = scheduler.submit(request("b"), signal);
    const c = scheduler.submit(request("c", "globex"), signal);
    const d = scheduler.submit(request("d"), signal);
    assert.deepEqual([a.queued, b.queued, c.queued, d.queued], [false, false, true, true]);
    const order: string[] = [];
    c.dispatch.then(() => order.push("c"));
    d.dispatch.then(() => order.push("d"));
    clock.advance(250);
    (await a.dispatch).release();
    await flush();
    assert.deepEqual(order, ["c"]);
    const dispatchedC = await c.dispatch;
    assert.equal(dispatchedC.waitedMs, 250);
    (await b.dispatch).release();
    await flush();
    assert.deepEqual(order, ["c", "d"]);
  });

  it("refuses with queue_timeout after maxWaitMs and leaves nothing queued", async () => {
    const clock = new ManualClock();
    const scheduler = fcfs(clock);
    const signal = new AbortController().signal;
    scheduler.submit(request("a"), signal);
    scheduler.submit(request("b"), signal);
    const late = scheduler.submit(request("c", "acme", 100, 500), signal);
    clock.advance(499);
    assert.equal(scheduler.snapshot().backends[0]?.queued, 1);
    clock.advance(1);
    await assert.rejects(
      late.dispatch,
      (e: unknown) => e instanceof QueueRefusal && e.code === "queue_timeout",
    );
    assert.equal(scheduler.snapshot().backends[0]?.queued, 0);
    assert.equal(clock.pendingTimers, 0);
  });

  it("refuses with queue_full past the tenant's maxQueued", async () => {
    const scheduler = fcfs(new ManualClock());
    const signal = new AbortController().signal;
    scheduler.submit(request("a"), signal);
    scheduler.submit(request("b"), signal);
    const first = scheduler.submit(request("c", "initech"), signal);
    assert.equal(first.queued, true);
    const second = scheduler.submit(request("d", "initech"), signal);
    await assert.rejects(
      second.dispatch,
      (e: unknown) => e instanceof QueueRefusal && e.code === "queue_full",
    );
  });

  it("removes an aborted request from the queue at once", async () => {
    const clock = new ManualClock();
    const scheduler = fcfs(clock);
    const never = new AbortController().signal;
    scheduler.submit(request("a"), never);
    scheduler.submit(request("b"), never);
    const controller = new AbortController();
    const held = scheduler.submit(request("c"), controller.signal);
    controller.abort(new Error("client went away"));
    await assert.rejects(held.dispatch, /client went away/);
    assert.equal(scheduler.snapshot().backends[0]?.queued, 0);
    assert.equal(clock.pendingTimers, 0);
  });

  it("admits one oversized request on an idle backend rather than holding it forever", async () => {
    const scheduler = fcfs(new ManualClock());
    const big = scheduler.submit(request("big", "acme", 5_000), new AbortController().signal);
    assert.equal(big.queued, false);
    await big.dispatch;
  });

  it("refuses everything queued on shutdown", async () => {
    const scheduler = fcfs(new ManualClock());
    const signal = new AbortController().signal;
    scheduler.submit(request("a"), signal);
    scheduler.submit(request("b"), signal);
    const held = scheduler.submit(request("c"), signal);
    scheduler.refuseQueued();
    await assert.rejects(
      held.dispatch,
      (e: unknown) => e instanceof QueueRefusal && e.code === "shutting_down",
    );
  });

  it("estimates zero wait when there is headroom and a positive wait behind a queue", () => {
    const scheduler = fcfs(new ManualClock());
    assert.deepEqual(scheduler.estimate(request("x")), { expectedMs: 0, worstCaseMs: 0, expectedTtftMs: 0 });
    const signal = new AbortController().signal;
    scheduler.submit(request("a"), signal);
    scheduler.submit(request("b"), signal);
    scheduler.submit(request("c"), signal);
    const estimate = scheduler.estimate(request("x"));
    assert.ok(estimate.expectedMs > 0);
    assert.ok(estimate.worstCaseMs >= estimate.expectedMs);
  });

  it("property: caps hold, order is FIFO, and every request ends dispatched, timed out or aborted", async () => {
    type Op =
      | { kind: "submit"; tenant: string; tokens: number }
      | { kind: "release" }
      | { kind: "abort" }
      | { kind: "tick"; ms: number };
    const op = fc.oneof(
      fc.record({
        kind: fc.constant("submit" as const),
        tenant: fc.constantFrom("acme", "globex", "x"),
        tokens: fc.integer({ min: 2, max: 1_200 }),
      }),
      fc.constant({ kind: "release" as const }),
      fc.constant({ kind: "abort" as const }),
      fc.record({ kind: fc.constant("tick" as const), ms: fc.integer({ min: 1, max: 400 }) }),
    );
    await fc.assert(
      fc.asyncProperty(fc.array(op, { maxLength: 60 }), async (ops: Op[]) => {
        const clock = new ManualClock();
        const scheduler = fcfs(clock);
        const dispatched: Dispatch[] = [];
        const dispatchOrder: number[] = [];
        const controllers: AbortController[] = [];
        const settled: Array<Promise<unknown>> = [];
        let seq = 0;
        for (const o of ops) {
          if (o.kind === "submit") {
            const n = seq++;
            const controller = new AbortController();
            controllers.push(controller);
            const { dispatch } = scheduler.submit(
              request(String(n), o.tenant, o.tokens, 1_000),
              controller.signal,
            );
            settled.push(
              dispatch.then(
                (d) => {
                  dispatched.push(d);
                  dispatchOrder.push(n);
                },
                () => {},
              ),
            );
          } else if (o.kind === "release") {
            dispatched.shift()?.release();
          } else if (o.kind === "abort") {
            controllers.shift()?.abort(new Error("gone"));
          } else {
            clock.advance(o.ms);
          }
          await flush();
          const backend = scheduler.snapshot().backends[0];
          if (backend) {
            assert.ok(backend.inFlight <= 2, "maxInFlightRequests exceeded");
            assert.ok(backend.inFlight <= 1 || backend.inFlightTokens <= 1_000, "maxInFlightTokens exceeded");
          }
        }
        for (let i = 1; i < dispatchOrder.length; i++) {
          assert.ok(
            (dispatchOrder[i] as number) > (dispatchOrder[i - 1] as number),
            "dispatch out of arrival order",
          );
        }
        clock.advance(2_000);
        for (const d of dispatched) d.release();
        await Promise.all(settled);
        for (const d of dispatched.splice(0)) d.release();
        await flush();
        const end = scheduler.snapshot();
        assert.equal(end.tenants.length, 0, "tenant state leaked");
        assert.ok(end.backends.every((b) => b.queued === 0 && b.inFlight === 0 && b.inFlightTokens === 0));
      }),
      { numRuns: 150 },
    );
  });
});
