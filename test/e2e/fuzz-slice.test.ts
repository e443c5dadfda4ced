import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { runFuzz } from "../fuzz/run.ts";

/** The seeded slice of test/fuzz/fuzz.ts that runs in `make test` (the full run is 100,000 cases). */
const SEED = 20_261_204;

describe("fuzz slice: generated ext_proc streams, bodies and policy files", () => {
  it("every answer is from the catalog or a gRPC status in time, and nothing is left behind", async () => {
    const report = await runFuzz({
      seed: SEED,
      streams: 1_500,
      bodies: 1_500,
      policies: 500,
      concurrency: 16,
      store: "redis",
    });
    assert.deepEqual(report.violations, []);
    assert.deepEqual(report.leftover, { queued: 0, inFlight: 0, leases: 0 });
    // The slice must reach the deep paths, not only the early refusals.
    const counted = report.gatewayOutcomes;
    for (const outcome of ["dispatched", "passthrough", "refused queue_timeout", "refused json_too_deep"]) {
      assert.ok((counted[outcome] ?? 0) > 0, `no ${outcome} among ${JSON.stringify(counted)}`);
    }
    assert.ok(report.heapGrowthMb < 200, `heap grew ${report.heapGrowthMb} MB`);
  });
});
