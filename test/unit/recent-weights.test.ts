import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { RecentWeights } from "../../extproc/src/estimate/recent-weights.ts";

describe("RecentWeights", () => {
  it("sums the weights seen within the window, each tenant once at its latest weight", () => {
    const weights = new RecentWeights(1_000, { refreshMs: 0 });
    weights.seen(0, "a", 1);
    weights.seen(500, "b", 4);
    weights.seen(600, "a", 2);
    assert.equal(weights.totalWith(600, "c", 1), 7);
    // The probe's own weight replaces what it was seen with.
    assert.equal(weights.totalWith(600, "b", 1), 3);
    // a was last seen at 600, b at 500: at 1,550 only a is left.
    assert.equal(weights.totalWith(1_550, "c", 1), 3);
    assert.equal(weights.size, 1);
    assert.equal(weights.totalWith(5_000, "c", 1), 1);
    assert.equal(weights.size, 0);
  });

  it("a tenant seen again within the refresh time keeps its older time, and its latest weight", () => {
    const weights = new RecentWeights(10_000, { refreshMs: 1_000 });
    weights.seen(0, "a", 1);
    weights.seen(900, "a", 3);
    assert.equal(weights.totalWith(900, "c", 0), 3);
    // Seen last at 900, but kept at 0: gone after 10,000.
    assert.equal(weights.totalWith(10_001, "c", 0), 0);
    weights.seen(20_000, "a", 1);
    weights.seen(21_000, "a", 1);
    assert.equal(weights.totalWith(30_500, "c", 0), 1);
  });

  it("ignores a weight that is not a finite number", () => {
    const weights = new RecentWeights(1_000);
    weights.seen(0, "a", Number.NaN);
    weights.seen(0, "b", 2);
    assert.equal(weights.totalWith(0, "c", 1), 3);
  });

  it("matches a count over every sighting (property)", () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.record({
            gap: fc.integer({ min: 0, max: 400 }),
            tenant: fc.constantFrom("a", "b", "c", "d"),
            weight: fc.integer({ min: 1, max: 8 }),
          }),
          { maxLength: 60 },
        ),
        fc.integer({ min: 0, max: 2_000 }),
        (sightings, after) => {
          const weights = new RecentWeights(1_000, { refreshMs: 0 });
          const last = new Map<string, { weight: number; at: number }>();
          let now = 0;
          for (const { gap, tenant, weight } of sightings) {
            now += gap;
            weights.seen(now, tenant, weight);
            last.set(tenant, { weight, at: now });
          }
          const at = now + after;
          let expected = 1;
          for (const [id, entry] of last)
            if (id !== "probe" && at - entry.at <= 1_000) expected += entry.weight;
          assert.equal(weights.totalWith(at, "probe", 1), expected);
        },
      ),
    );
  });
});
