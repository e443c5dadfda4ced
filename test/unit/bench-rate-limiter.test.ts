import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { LocalRateLimiter } from "../../extproc/src/bench/rate-limiter.ts";
import { FairgateError } from "../../extproc/src/errors.ts";

const policy = {
  tenants: new Map([
    ["a", { weight: 1 }],
    ["b", { weight: 1 }],
  ]),
};

/** 600 rpm and 1.2M tpm shared by two equal tenants: 300 rpm and 600k tpm each. */
const limiter = () =>
  new LocalRateLimiter({
    capacityRequestsPerMinute: 600,
    capacityTokensPerMinute: 1_200_000,
    policy: () => policy,
  });

/** Admits `tenant` until the first refusal; returns how many got in and the refusal. */
function drain(rl: LocalRateLimiter, tenant: string, nowMs: number, tokens = 100, cap = 10_000) {
  for (let admitted = 0; admitted < cap; admitted++) {
    const refusal = rl.admit(tenant, 1, tokens, nowMs);
    if (refusal) return { admitted, refusal };
  }
  throw new Error(`never refused after ${cap}`);
}

function retryAfter(error: FairgateError): number {
  return Number(error.headers["retry-after"]);
}

describe("LocalRateLimiter", () => {
  it("admits a tenant's weighted share of a minute at once, then refuses with rate_limit_requests", () => {
    const rl = limiter();
    const { admitted, refusal } = drain(rl, "a", 0);
    assert.equal(admitted, 300);
    assert.ok(refusal instanceof FairgateError);
    assert.equal(refusal.code, "rate_limit_requests");
    assert.equal(refusal.status, 429);
    const seconds = retryAfter(refusal);
    assert.ok(Number.isInteger(seconds) && seconds >= 1, `retry-after ${seconds}`);
    // One request refills in 60/300 = 0.2 s, rounded up to a whole second.
    assert.equal(seconds, 1);
  });

  it("keeps tenants' buckets apart", () => {
    const rl = limiter();
    assert.equal(drain(rl, "a", 0).admitted, 300);
    assert.equal(drain(rl, "b", 0).admitted, 300);
  });

  it("sizes shares by weight", () => {
    const weighted = {
      tenants: new Map([
        ["a", { weight: 1 }],
        ["b", { weight: 3 }],
      ]),
    };
    const rl = new LocalRateLimiter({
      capacityRequestsPerMinute: 400,
      capacityTokensPerMinute: 1_000_000,
      policy: () => weighted,
    });
    let a = 0;
    while (!rl.admit("a", 1, 1, 0)) a++;
    let b = 0;
    while (!rl.admit("b", 3, 1, 0)) b++;
    assert.deepEqual([a, b], [100, 300]);
  });

  it("refills over time at the tenant's rate, up to one minute's allowance", () => {
    const rl = limiter();
    assert.equal(drain(rl, "a", 0).admitted, 300);
    // 300 rpm = 5 per second: after 2 s, 10 more (allow one for float rounding).
    const after2s = drain(rl, "a", 2_000).admitted;
    assert.ok(after2s >= 9 && after2s <= 10, `${after2s} after 2 s`);
    // A long pause refills the bucket to its burst size, no more.
    assert.equal(drain(rl, "a", 600_000).admitted, 300);
  });

  it("a refusal consumes nothing", () => {
    const rl = limiter();
    drain(rl, "a", 0);
    for (let i = 0; i < 50; i++) assert.ok(rl.admit("a", 1, 100, 0));
    const after1s = drain(rl, "a", 1_000).admitted;
    assert.ok(after1s >= 4 && after1s <= 5, `${after1s} after 1 s`);
  });

  it("refuses a request bigger than the token bucket with rate_limit_tokens", () => {
    const rl = limiter();
    const refusal = rl.admit("a", 1, 600_001, 0);
    assert.ok(refusal instanceof FairgateError);
    assert.equal(refusal.code, "rate_limit_tokens");
    assert.ok(retryAfter(refusal) >= 1);
    // The refusal took nothing: a request that fits still gets in.
    assert.equal(rl.admit("a", 1, 600_000, 0), undefined);
  });

  it("refuses on tokens once the minute's tokens are spent, and refills them", () => {
    const rl = limiter();
    const { admitted, refusal } = drain(rl, "a", 0, 200_000);
    assert.equal(admitted, 3);
    assert.equal(refusal.code, "rate_limit_tokens");
    // 200k tokens at 600k tpm = 20 s.
    assert.equal(retryAfter(refusal), 20);
    assert.ok(rl.admit("a", 1, 200_000, 19_000));
    assert.equal(rl.admit("a", 1, 200_000, 20_000), undefined);
  });
});
