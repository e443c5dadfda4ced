import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { kthCompletionMs } from "../../extproc/src/estimate/next-completion.ts";

const expectedKthCompletionMs = (ages: readonly number[], holds: readonly number[], k = 1) =>
  kthCompletionMs(ages, holds, k)?.expected;

const near = (actual: number | undefined, expected: number, tolerance: number) =>
  assert.ok(
    actual !== undefined && Math.abs(actual - expected) <= tolerance,
    `${actual} is not within ${tolerance} of ${expected}`,
  );

describe("kthCompletionMs", () => {
  const fixed = Array.from({ length: 100 }, () => 50);

  it("with a fixed hold, is what the oldest requests have left", () => {
    near(expectedKthCompletionMs([40, 30, 20, 10], fixed), 10, 1);
    near(expectedKthCompletionMs([40, 30, 20, 10], fixed, 2), 20, 1.5);
    near(expectedKthCompletionMs([40, 30, 20, 10], fixed, 4), 40, 2);
    near(expectedKthCompletionMs([0, 0, 0, 0], fixed), 50, 2);
  });

  it("with a spread of holds, is the mean residual for the request's age", () => {
    // Holds uniform in 20..80 ms: a fresh request has 50 ms left on average.
    const uniform = Array.from({ length: 121 }, (_, i) => 20 + i / 2);
    near(expectedKthCompletionMs([0], uniform), 50, 1);
    // At 50 ms of age it has (80 - 50) / 2 = 15 ms left.
    near(expectedKthCompletionMs([50], uniform), 15, 1);
    // The sooner of two fresh ones: 20 + 60/3 = 40 ms.
    near(expectedKthCompletionMs([0, 0], uniform), 40, 1);
  });

  it("gives the time by which the k-th has finished in 97 % of cases", () => {
    // One fresh request, holds uniform in 20..80 ms: 97 % finish by 78.2 ms.
    const uniform = Array.from({ length: 121 }, (_, i) => 20 + i / 2);
    const one = kthCompletionMs([0], uniform);
    assert.ok(one !== undefined && Math.abs(one.high - 78.2) <= 2, `${one?.high}`);
    // A fixed hold leaves no spread: the high is the expected.
    const fixedOne = kthCompletionMs([40, 30, 20, 10], fixed, 2);
    assert.ok(
      fixedOne !== undefined && Math.abs(fixedOne.high - fixedOne.expected) <= 2,
      JSON.stringify(fixedOne),
    );
  });

  it("leaves out requests older than every recorded hold, and needs k of the rest", () => {
    near(expectedKthCompletionMs([500, 30], fixed), 20, 1);
    assert.equal(expectedKthCompletionMs([500, 30], fixed, 2), undefined);
    assert.equal(expectedKthCompletionMs([500], fixed), undefined);
    assert.equal(expectedKthCompletionMs([10], []), undefined);
    assert.equal(expectedKthCompletionMs([10], fixed, 0), undefined);
    assert.equal(expectedKthCompletionMs([10, 20], fixed, 1.5), undefined);
  });

  it("lies between now and the longest hold's end, grows with k, and its high is no sooner", () => {
    fc.assert(
      fc.property(
        fc.array(fc.integer({ min: 1, max: 10_000 }), { minLength: 1, maxLength: 64 }),
        fc.array(fc.integer({ min: 0, max: 5_000 }), { minLength: 1, maxLength: 32 }),
        (holds, ages) => {
          const sorted = [...holds].sort((a, b) => a - b);
          const longest = sorted[sorted.length - 1] as number;
          let previous = 0;
          for (let k = 1; k <= ages.length; k++) {
            const result = kthCompletionMs(ages, sorted, k);
            if (result === undefined) return;
            const t = result.expected;
            assert.ok(t >= 0 && t <= longest - Math.min(...ages) + 1, `k=${k}: ${t}`);
            assert.ok(t >= previous - 1e-6, `k=${k}: ${t} < ${previous}`);
            assert.ok(
              result.high >= t && result.high <= longest - Math.min(...ages) + 1,
              `k=${k}: high ${result.high}`,
            );
            previous = t;
          }
        },
      ),
    );
  });
});
