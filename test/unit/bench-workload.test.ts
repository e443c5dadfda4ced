import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { type ArrivalProcess, nextArrival, sampleLength } from "../../extproc/src/bench/workload.ts";
import { seededRandom } from "../../extproc/src/sim/random.ts";

/** Every arrival of `process` from startMs to endMs, chained as the simulator does. */
function arrivals(process: ArrivalProcess, startMs: number, endMs: number, seed: number): number[] {
  const random = seededRandom(seed);
  const out: number[] = [];
  let now = startMs;
  for (;;) {
    const at = nextArrival(process, now, startMs, endMs, random);
    if (at === undefined) return out;
    out.push(at);
    now = at;
  }
}

describe("sampleLength", () => {
  it("draws an empirical distribution's percentiles, interpolating between its points", () => {
    const dist = {
      kind: "empirical" as const,
      points: [
        [0, 10],
        [50, 100],
        [100, 1_000],
      ] as const,
    };
    const random = seededRandom(3);
    const draws = Array.from({ length: 20_000 }, () => sampleLength(dist, random)).sort((a, b) => a - b);
    assert.ok((draws[0] as number) >= 10 && (draws.at(-1) as number) <= 1_000);
    const median = draws[10_000] as number;
    assert.ok(median >= 90 && median <= 115, `median ${median}`);
    const p75 = draws[15_000] as number;
    assert.ok(p75 >= 510 && p75 <= 590, `p75 ${p75}`);
  });

  it("keeps lognormal draws within [min, max]", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 4000 }),
        fc.double({ min: 0, max: 4, noNaN: true }),
        fc.integer({ min: 1, max: 2000 }),
        fc.integer({ min: 0, max: 4000 }),
        fc.integer(),
        (median, sigma, min, span, seed) => {
          const max = min + span;
          const random = seededRandom(seed);
          for (let i = 0; i < 50; i++) {
            const n = sampleLength({ kind: "lognormal", median, sigma, min, max }, random);
            assert.ok(Number.isInteger(n) && n >= min && n <= max, `${n} outside [${min}, ${max}]`);
          }
        },
      ),
    );
  });

  it("keeps lognormal draws at least 1 without bounds", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 100 }),
        fc.double({ min: 0, max: 6, noNaN: true }),
        fc.integer(),
        (median, sigma, seed) => {
          const random = seededRandom(seed);
          for (let i = 0; i < 50; i++) {
            const n = sampleLength({ kind: "lognormal", median, sigma }, random);
            assert.ok(Number.isInteger(n) && n >= 1, `${n}`);
          }
        },
      ),
    );
  });

  it("keeps uniform draws within [min, max]", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 5000 }),
        fc.integer({ min: 0, max: 5000 }),
        fc.integer(),
        (min, span, seed) => {
          const max = min + span;
          const random = seededRandom(seed);
          for (let i = 0; i < 50; i++) {
            const n = sampleLength({ kind: "uniform", min, max }, random);
            assert.ok(Number.isInteger(n) && n >= min && n <= max, `${n} outside [${min}, ${max}]`);
          }
        },
      ),
    );
  });

  it("returns a fixed length as is", () => {
    assert.equal(sampleLength({ kind: "fixed", tokens: 128 }, seededRandom(1)), 128);
  });
});

describe("nextArrival", () => {
  it("poisson: the mean rate is within 10% of rps", () => {
    for (const [rps, seed] of [
      [5, 1],
      [0.5, 2],
      [40, 3],
    ] as const) {
      const durationMs = (4000 / rps) * 1000; // ~4000 arrivals expected
      const count = arrivals({ kind: "poisson", rps }, 0, durationMs, seed).length;
      const rate = count / (durationMs / 1000);
      assert.ok(Math.abs(rate - rps) / rps < 0.1, `rps ${rps}: measured ${rate}`);
    }
  });

  it("poisson with rps 0 never arrives", () => {
    assert.equal(nextArrival({ kind: "poisson", rps: 0 }, 0, 0, 1000, seededRandom(1)), undefined);
  });

  it("on-off: never returns a time inside an off period", () => {
    fc.assert(
      fc.property(
        fc.double({ min: 0.5, max: 50, noNaN: true }),
        fc.integer({ min: 1, max: 5000 }),
        fc.integer({ min: 1, max: 5000 }),
        fc.boolean(),
        fc.integer({ min: 0, max: 10_000 }),
        fc.integer(),
        (rps, onMs, offMs, startOn, startMs, seed) => {
          const period = onMs + offMs;
          const shift = startOn ? 0 : onMs;
          const times = arrivals(
            { kind: "on-off", rps, onMs, offMs, startOn },
            startMs,
            startMs + 20 * period,
            seed,
          );
          for (const at of times) {
            const phase = (((at - startMs + shift) % period) + period) % period;
            // A phase a hair below `period` is the start of the next on period (float rounding).
            const inOff = phase >= onMs && period - phase > 1e-6;
            assert.ok(!inOff, `arrival at ${at} is ${phase} into a period (${onMs} on, ${offMs} off)`);
          }
        },
      ),
    );
  });

  it("on-off: startOn false begins with an off period", () => {
    const times = arrivals(
      { kind: "on-off", rps: 100, onMs: 1000, offMs: 1000, startOn: false },
      0,
      10_000,
      7,
    );
    assert.ok(times.length > 0);
    assert.ok((times[0] as number) >= 1000 - 1e-6, `first arrival ${times[0]}`);
  });

  it("ramp: more arrivals in the last quarter than in the first", () => {
    for (const seed of [1, 2, 3]) {
      const endMs = 1_000_000;
      const times = arrivals({ kind: "ramp", fromRps: 1, toRps: 10 }, 0, endMs, seed);
      const first = times.filter((t) => t < endMs / 4).length;
      const last = times.filter((t) => t >= (3 * endMs) / 4).length;
      assert.ok(last > 2 * first, `first quarter ${first}, last quarter ${last}`);
    }
  });

  it("closed: always undefined", () => {
    assert.equal(
      nextArrival({ kind: "closed", concurrency: 4 }, 0, 0, 1_000_000, seededRandom(1)),
      undefined,
    );
  });

  it("never returns a time at or after endMs, nor before nowMs", () => {
    const processArb = fc.oneof(
      fc.record({
        kind: fc.constant("poisson" as const),
        rps: fc.double({ min: 0.01, max: 1000, noNaN: true }),
      }),
      fc.record({
        kind: fc.constant("on-off" as const),
        rps: fc.double({ min: 0.01, max: 1000, noNaN: true }),
        onMs: fc.integer({ min: 1, max: 10_000 }),
        offMs: fc.integer({ min: 1, max: 10_000 }),
        startOn: fc.boolean(),
      }),
      fc.record({
        kind: fc.constant("burst" as const),
        size: fc.integer({ min: 1, max: 10 }),
        everyMs: fc.integer({ min: 1, max: 10_000 }),
      }),
      fc.record({
        kind: fc.constant("ramp" as const),
        fromRps: fc.double({ min: 0, max: 100, noNaN: true }),
        toRps: fc.double({ min: 0, max: 100, noNaN: true }),
      }),
    );
    fc.assert(
      fc.property(
        processArb,
        fc.integer({ min: 0, max: 10_000 }),
        fc.integer({ min: 0, max: 20_000 }),
        fc.integer({ min: 1, max: 20_000 }),
        fc.integer(),
        (process, startMs, offset, length, seed) => {
          const endMs = startMs + length;
          const nowMs = Math.min(startMs + offset, endMs);
          const random = seededRandom(seed);
          for (let i = 0; i < 20; i++) {
            const at = nextArrival(process, nowMs, startMs, endMs, random);
            if (at === undefined) continue;
            assert.ok(at < endMs, `${at} >= endMs ${endMs}`);
            assert.ok(at >= nowMs, `${at} < nowMs ${nowMs}`);
          }
        },
      ),
    );
  });
});
