import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ManualClock } from "../../extproc/src/clock.ts";
import { BackendEstimator } from "../../extproc/src/estimate/backend-estimator.ts";
import { ProgressMeter } from "../../extproc/src/estimate/progress-meter.ts";
import { RecentValues } from "../../extproc/src/estimate/recent-values.ts";
import { FairQueueScheduler } from "../../extproc/src/queue/fair-queue.ts";
import { fairnessPolicyFor } from "../../extproc/src/queue/policies/index.ts";
import type { SchedulingRequest, WaitEstimate } from "../../extproc/src/scheduler/types.ts";
import { policyFrom, standardPolicyInput } from "../helpers/policy.ts";

describe("ProgressMeter", () => {
  it("counts only time with requests waiting, and movement at one instant", () => {
    const meter = new ProgressMeter({ windowMs: 10_000, buckets: 10 });
    assert.equal(meter.rate(0), null);
    // 600 ms busy moving 60 units, in steps that include several at the same instant.
    meter.record(300, 20, 300);
    meter.record(300, 10, 0);
    meter.record(600, 30, 300);
    assert.equal(meter.rate(600), 60 / 600);
    // A long idle stretch (not recorded) does not dilute the rate.
    meter.record(5_000, 10, 100);
    assert.equal(meter.rate(5_000), 70 / 700);
  });

  it("keeps the last rate once the window has emptied", () => {
    const meter = new ProgressMeter({ windowMs: 1_000, buckets: 4 });
    meter.record(600, 60, 600);
    assert.equal(meter.rate(600), 0.1);
    assert.equal(meter.rate(60_000), 0.1);
  });
});

describe("RecentValues", () => {
  it("gives the mean and nearest-rank quantiles of the last values only", () => {
    const values = new RecentValues(4);
    assert.equal(values.mean(), undefined);
    for (const v of [100, 1, 2, 3, 4]) values.add(v);
    assert.equal(values.size, 4);
    assert.equal(values.mean(), 2.5);
    assert.equal(values.quantile(0.5), 2);
    assert.equal(values.quantile(0.97), 4);
  });
});

describe("BackendEstimator", () => {
  const event = (tenantId: string, level = 0) => ({ tenantId, level, levelClock: 0, tokens: 100 });

  it("a backlogged tenant waits for its queued requests at its own measured pace", () => {
    const estimator = new BackendEstimator();
    // Tenant a keeps 10 waiting and gets one dispatched every 100 ms.
    for (let i = 0; i < 10; i++) estimator.queued(0, event("a"));
    for (let t = 100; t <= 3_000; t += 100) {
      estimator.dispatched(t, event("a"), true);
      estimator.queued(t, event("a"));
    }
    const estimate = estimator.estimate(
      3_000,
      {
        tenantId: "a",
        level: 0,
        distance: 1_000,
        tenantPaced: true,
        aheadTokens: 1_000,
        tenantQueued: 10,
      },
      100,
      1,
    );
    assert.equal(estimate.expectedMs, 1_050);
    assert.ok(estimate.worstCaseMs > estimate.expectedMs && estimate.worstCaseMs < 3 * estimate.expectedMs);
  });

  it("a request the policy serves next waits for completions to make room", () => {
    const estimator = new BackendEstimator();
    for (let t = 0; t <= 2_000; t += 50) estimator.completed(t, 100);
    const standing = {
      tenantId: "b",
      level: 0,
      distance: 0,
      tenantPaced: true,
      aheadTokens: 0,
      tenantQueued: 0,
    };
    assert.equal(estimator.estimate(2_000, standing, 100, 1).expectedMs, 50);
    // Four times the footprint a completion frees waits for about four completions.
    assert.equal(estimator.estimate(2_000, standing, 400, 1).expectedMs, 200);
  });
});

/**
 * A closed simulation through the real fair queue: one slot-limited backend where every
 * request takes 100 ms, a heavy tenant keeping 30 requests queued and a light tenant that
 * takes half the capacity. Under VTC the heavy tenant gets the other half, so a wait
 * computed from the backend's whole throughput would be half the real one.
 */
describe("estimates through the fair queue", () => {
  const policy = policyFrom(standardPolicyInput({ backends: [{ name: "b", maxInFlightRequests: 4 }] }));
  const request = (id: string, tenantId: string): SchedulingRequest => ({
    id,
    tenant: policy.tenantFor(tenantId),
    backend: "b",
    promptTokens: 50,
    expectedOutputTokens: 50,
    maxWaitMs: 600_000,
  });
  const flush = () => new Promise((resolve) => setImmediate(resolve));

  it("the heavy tenant's expected wait is within 15 % of what it then waits, and within its worst case", async () => {
    const clock = new ManualClock(0);
    const scheduler = new FairQueueScheduler({
      policy: () => policy,
      clock,
      fairness: fairnessPolicyFor({ policy: "vtc", starvationBound: 10 }),
    });
    let next = 0;
    const probes: Array<{ estimate: WaitEstimate; waited?: number }> = [];
    const send = (tenantId: string, probe = false) => {
      const req = request(`r${next++}`, tenantId);
      const estimate = scheduler.estimate(req);
      const record: { estimate: WaitEstimate; waited?: number } | undefined = probe
        ? { estimate }
        : undefined;
      if (record) probes.push(record);
      scheduler.submit(req, new AbortController().signal).dispatch.then((dispatch) => {
        if (record) record.waited = dispatch.waitedMs;
        clock.setTimeout(() => {
          dispatch.release({ completionTokens: 50 });
          if (tenantId === "heavy") send("heavy", clock.now() >= 10_000 && probes.length < 20);
        }, 100);
      });
    };
    for (let i = 0; i < 34; i++) send("heavy");
    const light = () => {
      send("light");
      if (clock.now() < 30_000) clock.setTimeout(light, 50);
    };
    light();
    while (clock.now() < 30_000 && (probes.length < 20 || probes.some((p) => p.waited === undefined))) {
      clock.advance(5);
      await flush();
    }
    const done = probes.filter((p) => p.waited !== undefined);
    assert.ok(done.length >= 10, `only ${done.length} probes were served`);
    const errors = done
      .map((p) => Math.abs((p.waited as number) - p.estimate.expectedMs) / (p.waited as number))
      .sort((a, b) => a - b);
    const median = errors[Math.floor(errors.length / 2)] as number;
    assert.ok(
      median <= 0.15,
      `median error ${median.toFixed(2)} (errors ${errors.map((e) => e.toFixed(2))})`,
    );
    for (const p of done) {
      assert.ok(
        (p.waited as number) <= p.estimate.worstCaseMs,
        `waited ${p.waited} ms, worst case ${p.estimate.worstCaseMs} ms`,
      );
    }
  });
});
