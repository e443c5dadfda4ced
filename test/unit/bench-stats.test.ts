import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { jainIndex, mean, percentile, weightedMaxMin } from "../../extproc/src/bench/stats.ts";

const close = (actual: number, expected: number, tolerance = 1e-9) =>
  assert.ok(Math.abs(actual - expected) <= tolerance, `${actual} != ${expected}`);

describe("percentile (nearest rank)", () => {
  it("matches the textbook example", () => {
    const values = [15, 20, 35, 40, 50];
    assert.equal(percentile(values, 5), 15);
    assert.equal(percentile(values, 30), 20);
    assert.equal(percentile(values, 40), 20);
    assert.equal(percentile(values, 50), 35);
    assert.equal(percentile(values, 100), 50);
  });

  it("sorts numerically without touching the input", () => {
    const values = [100, 9, 3, 20, 1, 7, 50, 2, 10, 5];
    const copy = [...values];
    assert.equal(percentile(values, 50), 7);
    assert.equal(percentile(values, 90), 50);
    assert.equal(percentile(values, 99), 100);
    assert.equal(percentile(values, 10), 1);
    assert.deepEqual(values, copy);
  });

  it("clamps p to the ends and is NaN on no values", () => {
    assert.equal(percentile([3, 1, 2], 0), 1);
    assert.equal(percentile([3, 1, 2], 150), 3);
    assert.equal(percentile([42], 99), 42);
    assert.ok(Number.isNaN(percentile([], 50)));
  });

  it("returns one of the values and grows with p", () => {
    fc.assert(
      fc.property(
        fc.array(fc.double({ noNaN: true, noDefaultInfinity: true }), { minLength: 1 }),
        fc.double({ min: 0, max: 100, noNaN: true }),
        fc.double({ min: 0, max: 100, noNaN: true }),
        (values, p, q) => {
          const [lo, hi] = p <= q ? [p, q] : [q, p];
          assert.ok(values.includes(percentile(values, lo)));
          assert.ok(percentile(values, lo) <= percentile(values, hi));
        },
      ),
    );
  });
});

describe("mean", () => {
  it("averages, NaN on no values", () => {
    assert.equal(mean([1, 2, 3, 6]), 3);
    assert.ok(Number.isNaN(mean([])));
  });
});

describe("jainIndex", () => {
  it("is 1 when all values are equal", () => {
    for (const n of [1, 2, 5, 100]) close(jainIndex(Array.from({ length: n }, () => 3.7)), 1);
  });

  it("is 1/n when one of n takes everything", () => {
    for (const n of [1, 2, 4, 10]) {
      const values = Array.from({ length: n }, (_, i) => (i === n - 1 ? 12 : 0));
      close(jainIndex(values), 1 / n);
    }
  });

  it("is 1 for all zeros and NaN for no values", () => {
    assert.equal(jainIndex([0, 0, 0]), 1);
    assert.ok(Number.isNaN(jainIndex([])));
  });

  it("lies in [1/n, 1] for non-negative values", () => {
    fc.assert(
      fc.property(
        fc.array(fc.double({ min: 0, max: 1e6, noNaN: true }), { minLength: 1, maxLength: 50 }),
        (values) => {
          const j = jainIndex(values);
          assert.ok(j >= 1 / values.length - 1e-9 && j <= 1 + 1e-9, `${j}`);
        },
      ),
    );
  });
});

describe("weightedMaxMin", () => {
  it("splits the remainder by weight after satisfying small demands", () => {
    const allocation = weightedMaxMin(10, [
      { id: "a", weight: 1, demand: 2 },
      { id: "b", weight: 1, demand: Number.POSITIVE_INFINITY },
      { id: "c", weight: 3, demand: Number.POSITIVE_INFINITY },
    ]);
    close(allocation.get("a") as number, 2);
    close(allocation.get("b") as number, 2);
    close(allocation.get("c") as number, 6);
  });

  it("gives everyone its demand when capacity suffices, and zero-demand tenants nothing", () => {
    const allocation = weightedMaxMin(100, [
      { id: "a", weight: 1, demand: 10 },
      { id: "b", weight: 5, demand: 20 },
      { id: "c", weight: 2, demand: 0 },
    ]);
    assert.deepEqual(Object.fromEntries(allocation), { a: 10, b: 20, c: 0 });
  });

  it("cascades: a satisfied tenant's leftover goes to the others", () => {
    // Shares 4/4/4 at first: a (demand 1) is satisfied; then 5.5 each: b (demand 5) is; c gets the rest.
    const allocation = weightedMaxMin(12, [
      { id: "a", weight: 1, demand: 1 },
      { id: "b", weight: 1, demand: 5 },
      { id: "c", weight: 1, demand: 100 },
    ]);
    close(allocation.get("a") as number, 1);
    close(allocation.get("b") as number, 5);
    close(allocation.get("c") as number, 6);
  });

  it("is capped by demand and capacity, work-conserving, and equalises allocation/weight among the unmet", () => {
    const tenantArb = fc.record({
      weight: fc.double({ min: 0.1, max: 10, noNaN: true }),
      demand: fc.oneof(
        fc.constant(Number.POSITIVE_INFINITY),
        fc.constant(0),
        fc.double({ min: 0, max: 200, noNaN: true }),
      ),
    });
    fc.assert(
      fc.property(
        fc.oneof(fc.constant(0), fc.double({ min: 0, max: 1000, noNaN: true })),
        fc.array(tenantArb, { minLength: 1, maxLength: 12 }),
        (capacity, raw) => {
          const tenants = raw.map((t, i) => ({ id: `t${i}`, ...t }));
          const allocation = weightedMaxMin(capacity, tenants);
          assert.equal(allocation.size, tenants.length);
          let total = 0;
          let totalDemand = 0;
          const unmetLevels: number[] = [];
          for (const t of tenants) {
            const given = allocation.get(t.id) as number;
            assert.ok(Number.isFinite(given) && given >= 0, `${t.id} got ${given}`);
            assert.ok(given <= t.demand + 1e-9, `${t.id} got ${given} > demand ${t.demand}`);
            total += given;
            totalDemand += t.demand;
            if (given < t.demand - 1e-6) unmetLevels.push(given / t.weight);
          }
          assert.ok(total <= capacity + 1e-6, `total ${total} > capacity ${capacity}`);
          if (totalDemand >= capacity) {
            assert.ok(Math.abs(total - capacity) <= 1e-6, `total ${total} != capacity ${capacity}`);
          } else {
            // Enough for everyone: nobody is left short.
            assert.deepEqual(unmetLevels, []);
          }
          if (unmetLevels.length > 0) {
            const level = Math.max(...unmetLevels);
            for (const l of unmetLevels)
              assert.ok(level - l <= 1e-6, `unmet levels ${unmetLevels.join(", ")}`);
            // Max-min: a satisfied tenant never got more per weight than the unmet ones.
            for (const t of tenants) {
              const given = allocation.get(t.id) as number;
              if (given >= t.demand - 1e-6)
                assert.ok(given / t.weight <= level + 1e-6, `${t.id} above ${level}`);
            }
          }
        },
      ),
      { numRuns: 500 },
    );
  });
});
