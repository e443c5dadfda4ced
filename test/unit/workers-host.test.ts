import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { QueueState } from "../../extproc/src/http/api-source.ts";
import { hostEstimate, hostQueue, hostReadiness } from "../../extproc/src/workers/host-view.ts";
import {
  MAX_FAILED_STARTS,
  MAX_RESTART_DELAY_MS,
  RestartPolicy,
  STABLE_AFTER_MS,
} from "../../extproc/src/workers/restart-policy.ts";
import { parseWorkerCount } from "../../extproc/src/workers/worker-count.ts";

const tenant = (id: string, queued: number, inFlight: number, waitMs: number) => ({
  tenant: id,
  tier: "standard",
  queued,
  inFlight,
  queuedTokens: queued * 10,
  inFlightTokens: inFlight * 10,
  estimatedWaitMs: waitMs,
  worstCaseWaitMs: waitMs * 2,
});

function worker(a: {
  queued: number;
  inFlight: number;
  wait: number;
  rate: number | null;
  counter: number;
}): QueueState {
  return {
    snapshot: {
      policy: "vtc",
      backends: [
        {
          backend: "b",
          queued: a.queued,
          inFlight: a.inFlight,
          inFlightTokens: a.inFlight * 10,
          serviceRateTokensPerSec: a.rate,
        },
      ],
      tenants: [tenant("t", a.queued, a.inFlight, a.wait)],
    },
    counters: new Map([["b", new Map([["t", a.counter]])]]),
  };
}

describe("a host's view from its workers", () => {
  it("adds queued and in-flight work and service rates, keeps the longest wait and the largest counter", () => {
    const host = hostQueue([
      worker({ queued: 2, inFlight: 1, wait: 300, rate: 100, counter: 50 }),
      worker({ queued: 3, inFlight: 2, wait: 100, rate: null, counter: 70 }),
    ]);
    assert.deepEqual(host.snapshot.backends, [
      { backend: "b", queued: 5, inFlight: 3, inFlightTokens: 30, serviceRateTokensPerSec: 100 },
    ]);
    assert.deepEqual(host.snapshot.tenants, [
      { ...tenant("t", 5, 3, 300), queuedTokens: 50, inFlightTokens: 30 },
    ]);
    assert.equal(host.counters?.get("b")?.get("t"), 70);
  });

  it("promises the longest wait any worker predicts", () => {
    assert.deepEqual(
      hostEstimate([
        { expectedMs: 10, worstCaseMs: 90, expectedTtftMs: 20 },
        { expectedMs: 40, worstCaseMs: 60, expectedTtftMs: 50 },
      ]),
      { expectedMs: 40, worstCaseMs: 90, expectedTtftMs: 50 },
    );
  });

  it("is ready only when every slot's worker is", () => {
    const ok = { ready: true, checks: { store: { ok: true } } };
    assert.equal(
      hostReadiness(
        2,
        [
          { slot: 1, readiness: ok },
          { slot: 2, readiness: ok },
        ],
        false,
      ).ready,
      true,
    );
    const missing = hostReadiness(2, [{ slot: 1, readiness: ok }], false);
    assert.equal(missing.ready, false);
    assert.deepEqual(missing.checks.workers, { ok: false, detail: "1 of 2 ready" });
    const silent = hostReadiness(
      2,
      [
        { slot: 1, readiness: ok },
        { slot: 2, error: "timed out" },
      ],
      false,
    );
    assert.deepEqual(silent.checks["worker-2"], { ok: false, detail: "timed out" });
    assert.equal(
      hostReadiness(
        2,
        [
          { slot: 1, readiness: ok },
          { slot: 2, readiness: ok },
        ],
        true,
      ).ready,
      false,
    );
  });
});

describe("restarting workers", () => {
  it("doubles the delay per crash up to the maximum, and starts over after a stable run", () => {
    const policy = new RestartPolicy();
    const delays = Array.from({ length: 9 }, () => {
      const d = policy.exited(1_000);
      return d.restart ? d.delayMs : -1;
    });
    assert.deepEqual(delays, [
      100,
      200,
      400,
      800,
      1_600,
      3_200,
      6_400,
      MAX_RESTART_DELAY_MS,
      MAX_RESTART_DELAY_MS,
    ]);
    assert.deepEqual(policy.exited(STABLE_AFTER_MS), { restart: true, delayMs: 100 });
  });

  it(`gives up after ${MAX_FAILED_STARTS} exits in a row before serving`, () => {
    const policy = new RestartPolicy();
    assert.equal(policy.exited(undefined).restart, true);
    assert.equal(policy.exited(undefined).restart, true);
    assert.deepEqual(policy.exited(undefined), { restart: false });
    const served = new RestartPolicy();
    served.exited(undefined);
    served.exited(undefined);
    served.exited(5);
    assert.equal(served.exited(undefined).restart, true, "a worker that served resets the count");
  });
});

describe("--workers", () => {
  it("takes auto (the cores), a count, or refuses", () => {
    assert.deepEqual(parseWorkerCount(undefined), { ok: true, workers: 1 });
    assert.deepEqual(
      parseWorkerCount("auto", () => 6),
      { ok: true, workers: 6 },
    );
    assert.deepEqual(parseWorkerCount("3"), { ok: true, workers: 3 });
    for (const bad of ["0", "-1", "two", "1.5", "257"]) assert.equal(parseWorkerCount(bad).ok, false, bad);
  });
});
