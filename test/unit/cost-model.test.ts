/**
 * What a request costs (queue/cost.ts) and what the fair queue predicts of a tenant's
 * output (queue/output-predictor.ts).
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { policySchema } from "../../extproc/src/config/schema.ts";
import { outputTokensCost, requestCost, TOKEN_COUNTING } from "../../extproc/src/queue/cost.ts";
import { OutputPredictor } from "../../extproc/src/queue/output-predictor.ts";

const defaults = policySchema.parse({}).scheduling.cost;

describe("requestCost", () => {
  it("token counting charges prompt + output alike", () => {
    assert.equal(requestCost(TOKEN_COUNTING, 1_000, 200), 1_200);
  });

  it("by default an output token also pays for the context it is generated in", () => {
    // 1,000 prompt + 200 output + 0.006 x 200 x (1,000 + 199/2)
    assert.ok(Math.abs(requestCost(defaults, 1_000, 200) - (1_200 + 0.006 * 200 * 1_099.5)) < 1e-9);
    // A long context's output costs more per token than a short one's.
    const long = requestCost(defaults, 30_000, 300) - requestCost(defaults, 30_000, 0);
    const short = requestCost(defaults, 300, 300) - requestCost(defaults, 300, 0);
    assert.ok(long > 5 * short, `${long} vs ${short}`);
  });

  it("the cost accrued token by token as a response streams adds up to the request's cost (property)", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 50_000 }),
        fc.array(fc.integer({ min: 1, max: 40 }), { maxLength: 30 }),
        (prompt, chunks) => {
          let generated = 0;
          let accrued = requestCost(defaults, prompt, 0);
          for (const count of chunks) {
            accrued += outputTokensCost(defaults, prompt, generated, count);
            generated += count;
          }
          const whole = requestCost(defaults, prompt, generated);
          return Math.abs(accrued - whole) <= 1e-9 * Math.max(1, whole);
        },
      ),
    );
  });
});

describe("OutputPredictor", () => {
  it("charges max_tokens before anything completed, then every tenant's mean to a tenant not seen yet", () => {
    const predictor = new OutputPredictor();
    assert.equal(predictor.predict("new", 1_024), 1_024);
    predictor.observe("a", 100);
    assert.equal(predictor.predict("b", 1_024), 100);
    assert.equal(predictor.predict("b", 50), 50, "capped by the request's own max_tokens");
  });

  it("reserves max_tokens until a tenant has completed enough, then a high quantile of its recent outputs", () => {
    const predictor = new OutputPredictor({ minSamples: 8, window: 32, quantile: 0.9 });
    for (let i = 1; i <= 7; i++) predictor.observe("a", i * 10);
    assert.equal(predictor.reserve("a", 1_024), 1_024);
    for (let i = 8; i <= 10; i++) predictor.observe("a", i * 10);
    // 10..100: the 90th percentile of ten is the ninth, 90.
    assert.equal(predictor.reserve("a", 1_024), 90);
    assert.equal(predictor.reserve("a", 60), 60);
    // The window forgets: 32 short outputs later the reservation is short.
    for (let i = 0; i < 32; i++) predictor.observe("a", 5);
    assert.equal(predictor.reserve("a", 1_024), 5);
  });
});
