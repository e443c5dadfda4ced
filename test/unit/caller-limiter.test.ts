import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { CallerRateLimiter, retryAfterSeconds } from "../../extproc/src/http/caller-limiter.ts";

const RATE = { perSecond: 20, burst: 40 };

function limiterAt(start = 0, maxCallers?: number) {
  let now = start;
  const limiter = new CallerRateLimiter({
    now: () => now,
    ...(maxCallers === undefined ? {} : { maxCallers }),
  });
  return {
    limiter,
    advance: (ms: number) => {
      now += ms;
    },
  };
}

describe("CallerRateLimiter", () => {
  it("lets a fresh caller burst, then refuses with the time until one request has refilled", () => {
    const { limiter } = limiterAt();
    for (let i = 0; i < 40; i++) {
      const taken = limiter.take("a", RATE);
      assert.deepEqual(taken, { ok: true, remaining: 39 - i });
    }
    assert.deepEqual(limiter.take("a", RATE), { ok: false, retryAfterMs: 50 });
  });

  it("refills at perSecond: the retry time shrinks as time passes and the request succeeds once due", () => {
    const { limiter, advance } = limiterAt();
    for (let i = 0; i < 40; i++) limiter.take("a", RATE);
    advance(30);
    const early = limiter.take("a", RATE);
    assert.equal(early.ok, false);
    assert.ok(!early.ok && Math.abs(early.retryAfterMs - 20) < 1e-9, JSON.stringify(early));
    advance(20);
    assert.equal(limiter.take("a", RATE).ok, true);
    assert.equal(limiter.take("a", RATE).ok, false);
  });

  it("keeps callers apart", () => {
    const { limiter } = limiterAt();
    for (let i = 0; i < 40; i++) limiter.take("a", RATE);
    assert.equal(limiter.take("a", RATE).ok, false);
    assert.deepEqual(limiter.take("b", RATE), { ok: true, remaining: 39 });
  });

  it("derives the retry time from the rate, not a constant", () => {
    const { limiter } = limiterAt();
    const slow = { perSecond: 0.25, burst: 1 };
    assert.equal(limiter.take("a", slow).ok, true);
    const refused = limiter.take("a", slow);
    assert.deepEqual(refused, { ok: false, retryAfterMs: 4_000 });
    assert.equal(retryAfterSeconds(!refused.ok ? refused.retryAfterMs : 0), "4");
  });

  it("caps what a bucket holds at the burst in force (a reload lowering it applies at once)", () => {
    const { limiter } = limiterAt();
    limiter.take("a", RATE);
    const lowered = { perSecond: 20, burst: 2 };
    assert.deepEqual(limiter.take("a", lowered), { ok: true, remaining: 1 });
    assert.deepEqual(limiter.take("a", lowered), { ok: true, remaining: 0 });
    assert.equal(limiter.take("a", lowered).ok, false);
  });

  it("drops callers idle long enough to have refilled, keeping the active ones", () => {
    const { limiter, advance } = limiterAt();
    for (let i = 0; i < 100; i++) limiter.take(`idle-${i}`, RATE);
    for (let i = 0; i < 40; i++) limiter.take("busy", RATE);
    assert.equal(limiter.size, 101);
    advance(1_999); // a full refill takes burst / perSecond = 2 s
    limiter.take("busy", RATE);
    assert.equal(limiter.size, 101, "nobody has been idle for 2 s yet");
    advance(1);
    limiter.take("busy", RATE);
    assert.equal(limiter.size, 1, "the idle callers are gone, busy stays");
    // busy's state survived: it has only what refilled in the last 2 s.
    // 39.98 refilled by 1999 ms less one, plus 0.02 less one: 38, then this one leaves 37.
    assert.deepEqual(limiter.take("busy", RATE), { ok: true, remaining: 37 });
  });

  it("never tracks more than maxCallers, dropping the least recently used", () => {
    const { limiter } = limiterAt(0, 3);
    for (let i = 0; i < 40; i++) limiter.take("a", RATE);
    limiter.take("b", RATE);
    limiter.take("c", RATE);
    limiter.take("a", RATE); // a is now the most recently used, b the least
    limiter.take("d", RATE);
    assert.equal(limiter.size, 3);
    assert.equal(limiter.take("a", RATE).ok, false, "a kept its empty bucket");
    assert.deepEqual(limiter.take("b", RATE), { ok: true, remaining: 39 }, "b was evicted: a fresh bucket");
  });

  it("admits at most burst + perSecond × elapsed requests for any arrival pattern (property)", () => {
    fc.assert(
      fc.property(
        fc.array(fc.record({ gapMs: fc.integer({ min: 0, max: 200 }), caller: fc.constantFrom("a", "b") }), {
          maxLength: 400,
        }),
        (arrivals) => {
          const { limiter, advance } = limiterAt();
          const admitted = { a: 0, b: 0 };
          let elapsed = 0;
          for (const { gapMs, caller } of arrivals) {
            advance(gapMs);
            elapsed += gapMs;
            const result = limiter.take(caller, RATE);
            if (result.ok) admitted[caller]++;
            else if (result.retryAfterMs <= 0 || result.retryAfterMs > 50) return false;
          }
          const bound = RATE.burst + (RATE.perSecond * elapsed) / 1000;
          return admitted.a <= bound && admitted.b <= bound;
        },
      ),
    );
  });
});

describe("retryAfterSeconds", () => {
  it("rounds up to whole seconds, at least 1", () => {
    assert.equal(retryAfterSeconds(50), "1");
    assert.equal(retryAfterSeconds(1_000), "1");
    assert.equal(retryAfterSeconds(1_001), "2");
    assert.equal(retryAfterSeconds(0), "1");
  });
});
