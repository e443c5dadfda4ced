import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { TimeSmoothed } from "../../extproc/src/estimate/time-smoothed.ts";

describe("TimeSmoothed", () => {
  it("knows nothing before the first value, and a constant signal is that constant on every time scale", () => {
    const signal = new TimeSmoothed([100, 1_000]);
    assert.equal(signal.valueAt(0, 1_000), undefined);
    assert.equal(signal.integralAt(50), 0);
    signal.set(10, 0.5);
    for (const horizon of [0, 100, 999, 1_000, 60_000]) assert.equal(signal.valueAt(5_000, horizon), 0.5);
    assert.equal(signal.integralAt(110), 50);
  });

  it("averages over the time constant the horizon reaches: a step shows at once on the short one only", () => {
    const signal = new TimeSmoothed([100, 10_000]);
    signal.set(0, 1);
    signal.set(1_000, 2);
    // 100 ms after the step: the 100 ms average has moved 63 % of the way, the 10 s one
    // (covering the 1,100 ms since the first value) about 9 %.
    assert.ok(Math.abs((signal.valueAt(1_100, 500) as number) - (2 - Math.exp(-1))) < 1e-4);
    const long = signal.valueAt(1_100, 10_000) as number;
    assert.ok(long > 1.08 && long < 1.1, `${long}`);
    // Before its time constant has gone by, an average covers only the time since the
    // first value: not pulled toward it.
    const fresh = new TimeSmoothed([10_000]);
    fresh.set(0, 1);
    fresh.set(100, 3);
    assert.ok(Math.abs((fresh.valueAt(200, 10_000) as number) - 2) < 0.01);
  });

  it("stays within the values set, and integrates exactly (property)", () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.record({
            gap: fc.integer({ min: 0, max: 5_000 }),
            value: fc.double({ min: 0, max: 100, noNaN: true }),
          }),
          {
            minLength: 1,
            maxLength: 50,
          },
        ),
        fc.integer({ min: 0, max: 20_000 }),
        (steps, horizon) => {
          const signal = new TimeSmoothed([250, 1_000, 4_000, 16_000]);
          let now = 0;
          let integral = 0;
          let last = 0;
          for (const [i, { gap, value }] of steps.entries()) {
            if (i > 0) integral += last * gap;
            now += i > 0 ? gap : 0;
            signal.set(now, value);
            last = value;
          }
          const values = steps.map((s) => s.value);
          const smoothed = signal.valueAt(now + 10, horizon) as number;
          assert.ok(smoothed >= Math.min(...values) - 1e-9 && smoothed <= Math.max(...values) + 1e-9);
          assert.ok(Math.abs(signal.integralAt(now + 10) - (integral + last * 10)) <= 1e-6 * (1 + integral));
        },
      ),
    );
  });
});
