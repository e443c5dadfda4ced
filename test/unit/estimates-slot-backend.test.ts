import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { runSlotScenario } from "../helpers/slot-scenario.ts";

/**
 * Estimates on a backend capped by request slots, in virtual time from a cold start
 * (test/helpers/slot-scenario.ts): tenant a asks for half of 1.3x the capacity with
 * weight 1, b and c (weights 1 and 2) stay below their shares and go nearly at once. a's
 * queue grows for 30 s. Estimating a's pace from the share at the instant of the estimate
 * (b or c waiting for a moment, or not) made its estimates swing between 0.4x and 1.7x;
 * with the variance of a's own count alone, its worst case was exceeded by 6-20 %.
 */
describe("estimates on a slot-capped backend", () => {
  // One 30 s run's median error varies with the seed (7-22 % for 4 slots, fixed service,
  // seeds 1-6; 19-28 % before the share averaging): three seeds, their mean judged.
  for (const [slots, service] of [
    [16, "uniform"],
    [4, "fixed"],
  ] as const) {
    it(`${slots} slots, ${service} service, overloaded: the backlogged tenant's waits are estimated within 15 % median (mean of 3 seeds), worst case exceeded by at most 3 % on each`, async () => {
      const medians: number[] = [];
      for (const seed of [1, 2, 3]) {
        const [a] = await runSlotScenario({ slots, service, load: 1.3, durationMs: 30_000, seed });
        assert.ok(a && a.count >= 300, `seed ${seed}: ${a?.count} of a's waits measured`);
        assert.ok(a.violations <= 0.03, `seed ${seed}: worst case exceeded by ${a.violations.toFixed(3)}`);
        assert.ok(
          a.medianError < a.naiveMedianError / 2,
          `seed ${seed}: naive ${a.naiveMedianError.toFixed(3)}`,
        );
        medians.push(a.medianError);
      }
      const mean = medians.reduce((x, y) => x + y, 0) / medians.length;
      assert.ok(mean <= 0.15, `median errors ${medians.map((m) => m.toFixed(3))}`);
    });
  }

  // A regression guard: closed loops were already estimated this well before.
  it("closed loops from a cold start: every tenant within 15 % median, worst case exceeded by at most 3 %", async () => {
    for (const tenant of await runSlotScenario({
      slots: 16,
      service: "exponential",
      load: "closed",
      durationMs: 30_000,
      seed: 1,
    })) {
      assert.ok(
        tenant.medianError <= 0.15,
        `${tenant.tenant}: median error ${tenant.medianError.toFixed(3)}`,
      );
      assert.ok(tenant.violations <= 0.03, `${tenant.tenant}: exceeded by ${tenant.violations.toFixed(3)}`);
    }
  });
});
