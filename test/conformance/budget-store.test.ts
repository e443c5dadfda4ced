import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import fc from "fast-check";
import { MemoryBudgetStore } from "../../extproc/src/budget/memory-store.ts";
import { RedisBudgetStore } from "../../extproc/src/budget/redis-store.ts";
import type { AdmitRequest, BudgetLimits, BudgetStore } from "../../extproc/src/budget/store.ts";
import { ManualClock } from "../../extproc/src/clock.ts";
import { startRedis, type TestRedis } from "../helpers/redis.ts";

/**
 * The contract every BudgetStore keeps, run against the in-memory store (ManualClock: time
 * moves when the test says) and the Redis store (a private redis-server; time really
 * passes, so time-dependent cases use small windows and real sleeps, and assertions on
 * bucket levels allow for the refill that happens meanwhile).
 */

interface Harness {
  readonly store: BudgetStore;
  /** Lets `ms` of store time pass. */
  advance(ms: number): Promise<void>;
  /** The wall clock the store's UTC windows use. */
  wallNow(): number;
  /** How far a bucket level may have refilled during a test step (0 for virtual time). */
  readonly slack: number;
}

interface Implementation {
  readonly name: string;
  setup(): Promise<Harness>;
  teardown(): Promise<void>;
}

const WALL_START = Date.UTC(2026, 10, 27, 15, 0, 0);

function memoryImplementation(): Implementation {
  return {
    name: "memory",
    async setup() {
      const clock = new ManualClock(1_000);
      const store = new MemoryBudgetStore({ clock, wallClock: () => WALL_START + clock.now() });
      return {
        store,
        slack: 0,
        advance: async (ms) => clock.advance(ms),
        wallNow: () => WALL_START + clock.now(),
      };
    },
    async teardown() {},
  };
}

function redisImplementation(): Implementation {
  let redis: TestRedis | undefined;
  let store: RedisBudgetStore | undefined;
  return {
    name: "redis",
    async setup() {
      redis = await startRedis();
      store = new RedisBudgetStore({ url: redis.url, timeoutMs: 2_000, keyPrefix: "conf:" });
      return { store, slack: 3, advance: (ms) => sleep(ms), wallNow: () => Date.now() };
    },
    async teardown() {
      await store?.close();
      await redis?.stop();
    },
  };
}

let tenantSeq = 0;
const nextTenant = () => `tenant-${++tenantSeq}`;
let leaseSeq = 0;

function request(tenant: string, limits: BudgetLimits, tokens = 100, leaseTtlMs = 60_000): AdmitRequest {
  return { tenant, limits, tokens, leaseId: `lease-${++leaseSeq}`, leaseTtlMs };
}

function assertNear(actual: number | undefined, expected: number, slack: number, what: string): void {
  assert.ok(actual !== undefined, `${what} is undefined`);
  assert.ok(
    actual >= expected && actual <= expected + slack,
    `${what} = ${actual}, expected ${expected}${slack ? ` (+${slack})` : ""}`,
  );
}

function msToUtcMidnight(wall: number): number {
  const d = new Date(wall);
  return Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate() + 1) - wall;
}

for (const implementation of [memoryImplementation(), redisImplementation()]) {
  describe(`BudgetStore conformance: ${implementation.name}`, () => {
    let h: Harness;
    before(async () => {
      h = await implementation.setup();
    });
    after(() => implementation.teardown());

    it("rpm 3: the 4th request is refused rate_limit_requests with 0 < retryAfterMs ≤ 60000", async () => {
      const tenant = nextTenant();
      const limits = { rpm: 3 };
      for (let i = 0; i < 3; i++) {
        const result = await h.store.admit(request(tenant, limits));
        assert.equal(result.ok, true, `request ${i + 1}`);
        assert.equal(result.snapshot.requests?.limit, 3);
        assert.equal(result.snapshot.requests?.remaining, 2 - i);
      }
      const fourth = await h.store.admit(request(tenant, limits));
      assert.equal(fourth.ok, false);
      if (fourth.ok) return;
      assert.equal(fourth.code, "rate_limit_requests");
      assert.equal(fourth.limit, "rpm");
      assert.ok(
        fourth.retryAfterMs !== undefined && fourth.retryAfterMs > 0 && fourth.retryAfterMs <= 60_000,
      );
      assert.ok(fourth.retryAfterMs > 19_000, `retryAfterMs ${fourth.retryAfterMs} ≈ 20 s`);
      assert.equal(fourth.snapshot.requests?.remaining, 0);
      const resetMs = fourth.snapshot.requests?.resetMs ?? 0;
      assert.ok(resetMs > 59_000 && resetMs <= 60_000, `resetMs ${resetMs} ≈ one minute to full`);
      assert.equal(fourth.snapshot.tokens, undefined, "no tpm configured: no tokens state");
    });

    it("a bucket refills continuously: refused, then admitted once the refill time has passed", async () => {
      const tenant = nextTenant();
      const limits = { rpm: 120, rpmBurst: 1 }; // one request per 500 ms, bucket of 1
      assert.equal((await h.store.admit(request(tenant, limits))).ok, true);
      const refused = await h.store.admit(request(tenant, limits));
      assert.equal(refused.ok, false);
      if (!refused.ok) {
        assert.equal(refused.code, "rate_limit_requests");
        assert.ok(
          refused.retryAfterMs !== undefined && refused.retryAfterMs > 0 && refused.retryAfterMs <= 500,
        );
      }
      await h.advance(550);
      assert.equal((await h.store.admit(request(tenant, limits))).ok, true);
    });

    it("burst sizes the bucket: rpmBurst 5 with rpm 60 admits 5 at once", async () => {
      const tenant = nextTenant();
      const limits = { rpm: 60, rpmBurst: 5 };
      for (let i = 0; i < 5; i++) assert.equal((await h.store.admit(request(tenant, limits))).ok, true);
      const sixth = await h.store.admit(request(tenant, limits));
      assert.equal(sixth.ok, false);
      assert.equal(sixth.snapshot.requests?.limit, 60);
    });

    it("tpm 2000 admits 1500 tokens, then refuses the next 1500 with rate_limit_tokens", async () => {
      const tenant = nextTenant();
      const limits = { tpm: 2000 };
      const first = await h.store.admit(request(tenant, limits, 1500));
      assert.equal(first.ok, true);
      assertNear(first.snapshot.tokens?.remaining, 500, h.slack, "tokens remaining");
      assert.equal(first.snapshot.tokens?.limit, 2000);
      const second = await h.store.admit(request(tenant, limits, 1500));
      assert.equal(second.ok, false);
      if (second.ok) return;
      assert.equal(second.code, "rate_limit_tokens");
      assert.equal(second.limit, "tpm");
      // 1000 tokens short at 2000/min: 30 s.
      assert.ok(
        second.retryAfterMs !== undefined && second.retryAfterMs > 29_000 && second.retryAfterMs <= 30_000,
        `retryAfterMs ${second.retryAfterMs}`,
      );
    });

    it("a request larger than the TPM bucket is request_too_large_for_limit", async () => {
      const tenant = nextTenant();
      const result = await h.store.admit(request(tenant, { tpm: 2000 }, 2500));
      assert.equal(result.ok, false);
      if (result.ok) return;
      assert.equal(result.code, "request_too_large_for_limit");
      assert.equal(result.limit, "tpm");
      assert.equal(result.retryAfterMs, undefined);
      // tpmBurst raises the bucket: the same request fits.
      assert.equal((await h.store.admit(request(tenant, { tpm: 2000, tpmBurst: 3000 }, 2500))).ok, true);
    });

    it("maxConcurrency 2: the third is refused concurrency_limit; a release frees a slot", async () => {
      const tenant = nextTenant();
      const limits = { maxConcurrency: 2 };
      const a = request(tenant, limits);
      const b = request(tenant, limits);
      const first = await h.store.admit(a);
      assert.deepEqual(first.ok && first.leased, true);
      assert.equal((await h.store.admit(b)).ok, true);
      const third = await h.store.admit(request(tenant, limits));
      assert.equal(third.ok, false);
      if (!third.ok) {
        assert.equal(third.code, "concurrency_limit");
        assert.equal(third.limit, "maxConcurrency");
        assert.equal(third.retryAfterMs, undefined);
      }
      await h.store.releaseLease(tenant, a.leaseId);
      await h.store.releaseLease(tenant, a.leaseId); // idempotent
      assert.equal((await h.store.admit(request(tenant, limits))).ok, true);
      assert.equal((await h.store.admit(request(tenant, limits))).ok, false);
    });

    it("no maxConcurrency: admits take no lease", async () => {
      const result = await h.store.admit(request(nextTenant(), { rpm: 10 }));
      assert.deepEqual(result.ok && result.leased, false);
    });

    it("an expired lease frees its slot", async () => {
      const tenant = nextTenant();
      const limits = { maxConcurrency: 1 };
      assert.equal((await h.store.admit(request(tenant, limits, 10, 200))).ok, true);
      assert.equal((await h.store.admit(request(tenant, limits, 10, 200))).ok, false);
      await h.advance(300);
      assert.equal((await h.store.admit(request(tenant, limits, 10, 200))).ok, true);
    });

    it("renewing keeps a lease past its first TTL; an expired lease cannot be renewed", async () => {
      const tenant = nextTenant();
      const limits = { maxConcurrency: 1 };
      const held = request(tenant, limits, 10, 1_000);
      assert.equal((await h.store.admit(held)).ok, true);
      await h.advance(300);
      assert.equal(await h.store.renewLease(tenant, held.leaseId, 1_000), true);
      await h.advance(800); // past the first expiry (1000), before the renewed one (1300)
      assert.equal((await h.store.admit(request(tenant, limits))).ok, false, "the renewed lease still holds");
      await h.advance(400);
      assert.equal(await h.store.renewLease(tenant, held.leaseId, 1_000), false);
      assert.equal(await h.store.renewLease(tenant, "never-admitted", 1_000), false);
      assert.equal((await h.store.admit(request(tenant, limits))).ok, true);
    });

    it("a refusal charges nothing", async () => {
      const tenant = nextTenant();
      const limits = { rpm: 5, tpm: 1000, maxConcurrency: 1, tokensPerDay: 10_000 };
      assert.equal((await h.store.admit(request(tenant, limits, 100))).ok, true);
      const before = await h.store.peek(tenant, limits);
      assert.equal(before.requests?.remaining, 4);
      assertNear(before.tokens?.remaining, 900, h.slack, "tokens before");
      // Refused by concurrency (after rpm and tpm passed), by tpm, and as too large.
      const refusals = [
        await h.store.admit(request(tenant, limits, 100)),
        await h.store.admit(request(tenant, { ...limits, maxConcurrency: 5 }, 950)),
        await h.store.admit(request(tenant, limits, 5_000)),
      ];
      assert.deepEqual(
        refusals.map((r) => (r.ok ? "ok" : r.code)),
        ["concurrency_limit", "rate_limit_tokens", "request_too_large_for_limit"],
      );
      const afterPeek = await h.store.peek(tenant, limits);
      assert.equal(afterPeek.requests?.remaining, 4);
      assertNear(afterPeek.tokens?.remaining, 900, h.slack, "tokens after");
      // The day budget was not charged either: 9,900 tokens still fit today.
      const big = await h.store.admit(request(tenant, { tokensPerDay: 10_000 }, 9_900));
      assert.equal(big.ok, true);
    });

    it("peek reports full buckets for an unknown tenant and nothing for unconfigured limits", async () => {
      const snapshot = await h.store.peek(nextTenant(), { rpm: 30, tpm: 900, tpmBurst: 1200 });
      assert.deepEqual(snapshot, {
        requests: { limit: 30, remaining: 30, resetMs: 0 },
        tokens: { limit: 900, remaining: 1200, resetMs: 0 },
      });
      assert.deepEqual(await h.store.peek(nextTenant(), { maxConcurrency: 3 }), {});
    });

    it("reconcile: a negative delta gives tokens back (capped at capacity), a positive one takes more", async () => {
      const tenant = nextTenant();
      const limits = { tpm: 2000 };
      assert.equal((await h.store.admit(request(tenant, limits, 1500))).ok, true);
      await h.store.reconcile(tenant, limits, -1000);
      assertNear((await h.store.peek(tenant, limits)).tokens?.remaining, 1500, h.slack, "after -1000");
      await h.store.reconcile(tenant, limits, -5000);
      assert.equal((await h.store.peek(tenant, limits)).tokens?.remaining, 2000, "capped at capacity");
      await h.store.reconcile(tenant, limits, 700);
      assertNear((await h.store.peek(tenant, limits)).tokens?.remaining, 1300, h.slack, "after +700");
      await h.store.reconcile(tenant, limits, 5000);
      const inDebt = await h.store.peek(tenant, limits);
      assert.equal(inDebt.tokens?.remaining, 0, "remaining never goes negative");
      const refused = await h.store.admit(request(tenant, limits, 1));
      assert.equal(refused.ok, false);
      if (!refused.ok) assert.equal(refused.code, "rate_limit_tokens");
    });

    it("reconcile corrects the day budget too", async () => {
      const tenant = nextTenant();
      const limits = { tokensPerDay: 1000 };
      assert.equal((await h.store.admit(request(tenant, limits, 900))).ok, true);
      assert.equal((await h.store.admit(request(tenant, limits, 200))).ok, false);
      await h.store.reconcile(tenant, limits, -300); // used 600
      assert.equal((await h.store.admit(request(tenant, limits, 400))).ok, true); // used 1000
      assert.equal((await h.store.admit(request(tenant, limits, 1))).ok, false);
    });

    it("tokensPerDay exhausted: token_budget_exhausted, retry at the next UTC midnight", async () => {
      const tenant = nextTenant();
      const limits = { tokensPerDay: 1000 };
      assert.equal((await h.store.admit(request(tenant, limits, 600))).ok, true);
      const wall = h.wallNow();
      const refused = await h.store.admit(request(tenant, limits, 600));
      assert.equal(refused.ok, false);
      if (refused.ok) return;
      assert.equal(refused.code, "token_budget_exhausted");
      assert.equal(refused.limit, "tokensPerDay");
      const expected = msToUtcMidnight(wall);
      assert.ok(
        refused.retryAfterMs !== undefined && Math.abs(refused.retryAfterMs - expected) <= 2_000,
        `retryAfterMs ${refused.retryAfterMs}, expected ≈ ${expected}`,
      );
      const tooLarge = await h.store.admit(request(nextTenant(), limits, 1500));
      assert.equal(!tooLarge.ok && tooLarge.code, "request_too_large_for_limit");
      assert.equal(!tooLarge.ok && tooLarge.limit, "tokensPerDay");
    });

    it("tokensPerMonth exhausted: retry at the start of the next UTC month", async () => {
      const tenant = nextTenant();
      const limits = { tokensPerMonth: 1000, tokensPerDay: 5000 };
      assert.equal((await h.store.admit(request(tenant, limits, 1000))).ok, true);
      const wall = h.wallNow();
      const refused = await h.store.admit(request(tenant, limits, 1));
      assert.equal(refused.ok, false);
      if (refused.ok) return;
      assert.equal(refused.code, "token_budget_exhausted");
      assert.equal(refused.limit, "tokensPerMonth");
      const d = new Date(wall);
      const expected = Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 1) - wall;
      assert.ok(
        refused.retryAfterMs !== undefined && Math.abs(refused.retryAfterMs - expected) <= 2_000,
        `retryAfterMs ${refused.retryAfterMs}, expected ≈ ${expected}`,
      );
    });

    it("tenants are independent", async () => {
      const limits = { rpm: 1 };
      const [a, b] = [nextTenant(), nextTenant()];
      assert.equal((await h.store.admit(request(a, limits))).ok, true);
      assert.equal((await h.store.admit(request(a, limits))).ok, false);
      assert.equal((await h.store.admit(request(b, limits))).ok, true);
    });

    it("settle: corrects the charge and releases the lease in one step, like reconcile then releaseLease", async () => {
      const tenant = nextTenant();
      const limits = { tpm: 2000, maxConcurrency: 1 };
      const held = request(tenant, limits, 1500);
      assert.equal((await h.store.admit(held)).ok, true);
      assert.equal((await h.store.admit(request(tenant, limits, 10))).ok, false, "the lease holds the slot");
      await h.store.settle(tenant, limits, held.leaseId, -1000);
      assertNear((await h.store.peek(tenant, limits)).tokens?.remaining, 1500, h.slack, "after settle -1000");
      await h.store.settle(tenant, limits, held.leaseId, 0); // idempotent for the lease
      assert.equal((await h.store.admit(request(tenant, limits, 10))).ok, true, "the slot is free");
      await h.store.settle(tenant, { tpm: 2000 }, undefined, 0); // nothing to do
    });

    it("property: settle(delta, lease) leaves what reconcile(delta) + releaseLease leave", async () => {
      await fc.assert(
        fc.asyncProperty(
          fc.record({
            tpm: fc.option(fc.integer({ min: 600, max: 3_000 }), { nil: undefined }),
            tokensPerDay: fc.option(fc.integer({ min: 3_000, max: 100_000 }), { nil: undefined }),
            leased: fc.boolean(),
          }),
          fc.integer({ min: 1, max: 600 }),
          fc.integer({ min: -1_500, max: 4_000 }),
          async ({ tpm, tokensPerDay, leased }, tokens, delta) => {
            const limits: BudgetLimits = {
              ...(tpm !== undefined ? { tpm } : {}),
              ...(tokensPerDay !== undefined ? { tokensPerDay } : {}),
              ...(leased ? { maxConcurrency: 1 } : {}),
            };
            const merged = nextTenant();
            const separate = nextTenant();
            const a = request(merged, limits, tokens);
            const b = request(separate, limits, tokens);
            assert.equal((await h.store.admit(a)).ok, true);
            assert.equal((await h.store.admit(b)).ok, true);
            await h.store.settle(merged, limits, leased ? a.leaseId : undefined, delta);
            await h.store.reconcile(separate, limits, delta);
            if (leased) await h.store.releaseLease(separate, b.leaseId);
            for (const tenant of [merged, separate]) {
              if (tpm !== undefined) {
                const level = Math.min(tpm, Math.max(-tpm, tpm - tokens - delta));
                const remaining = (await h.store.peek(tenant, limits)).tokens?.remaining;
                assertNear(remaining, Math.max(0, Math.floor(level)), h.slack, `${tenant} tpm remaining`);
              }
              if (tokensPerDay !== undefined) {
                const left = tokensPerDay - Math.max(0, tokens + delta);
                const day = { tokensPerDay };
                if (left > 0)
                  assert.equal(
                    (await h.store.admit(request(tenant, day, left))).ok,
                    true,
                    `${left} left today`,
                  );
                const over = await h.store.admit(request(tenant, day, 1));
                assert.equal(
                  !over.ok && over.code,
                  "token_budget_exhausted",
                  `${tenant}: the day budget is used up`,
                );
              }
              if (leased)
                assert.equal((await h.store.admit(request(tenant, { maxConcurrency: 1 }))).ok, true);
            }
          },
        ),
        { numRuns: implementation.name === "memory" ? 200 : 25 },
      );
    });

    if (implementation.name === "redis") {
      it("atomic across concurrent callers: 200 concurrent admits for rpm 50 admit exactly 50", async () => {
        const tenant = nextTenant();
        const limits = { rpm: 50 };
        const results = await Promise.all(
          Array.from({ length: 200 }, () => h.store.admit(request(tenant, limits))),
        );
        assert.equal(results.filter((r) => r.ok).length, 50);
      });

      it("settle is one round trip, and none when there is nothing to settle", async () => {
        const redisStore = h.store as RedisBudgetStore;
        const tenant = nextTenant();
        const limits = { tpm: 2000, tokensPerDay: 10_000, maxConcurrency: 2 };
        const held = request(tenant, limits, 500);
        assert.equal((await h.store.admit(held)).ok, true);
        const before = redisStore.replies;
        await h.store.settle(tenant, limits, held.leaseId, -200);
        assert.equal(redisStore.replies - before, 1);
        await h.store.settle(tenant, { rpm: 5 }, undefined, -200);
        assert.equal(redisStore.replies - before, 1, "no token limit, no lease: nothing sent");
      });

      it("atomic with concurrency leases: 100 concurrent admits for maxConcurrency 7 lease exactly 7", async () => {
        const tenant = nextTenant();
        const results = await Promise.all(
          Array.from({ length: 100 }, () => h.store.admit(request(tenant, { maxConcurrency: 7 }))),
        );
        assert.equal(results.filter((r) => r.ok).length, 7);
      });
    }

    if (implementation.name === "memory") {
      it("property: admitted requests never exceed burst + rpm × elapsed minutes; remaining ≥ 0", async () => {
        await fc.assert(
          fc.asyncProperty(
            fc.integer({ min: 1, max: 120 }),
            fc.option(fc.integer({ min: 1, max: 300 }), { nil: undefined }),
            fc.array(
              fc.oneof(
                fc.record({ admit: fc.integer({ min: 1, max: 5 }) }),
                fc.record({ advance: fc.integer({ min: 0, max: 20_000 }) }),
              ),
              { maxLength: 60 },
            ),
            async (rpm, rpmBurst, steps) => {
              const clock = new ManualClock(0);
              const store = new MemoryBudgetStore({ clock, wallClock: () => WALL_START + clock.now() });
              const limits = { rpm, rpmBurst, tpm: 10 * rpm, tpmBurst: rpmBurst && 10 * rpmBurst };
              const burst = rpmBurst ?? rpm;
              let admitted = 0;
              let tokens = 0;
              for (const step of steps) {
                if ("advance" in step) {
                  clock.advance(step.advance);
                  continue;
                }
                for (let i = 0; i < step.admit; i++) {
                  const result = await store.admit(request("p", limits, 7));
                  if (result.ok) {
                    admitted++;
                    tokens += 7;
                  }
                  assert.ok((result.snapshot.requests?.remaining ?? 0) >= 0);
                  assert.ok((result.snapshot.tokens?.remaining ?? 0) >= 0);
                }
                const minutes = clock.now() / 60_000;
                assert.ok(admitted <= burst + rpm * minutes + 1e-9, `${admitted} admitted by ${minutes} min`);
                assert.ok(tokens <= 10 * burst + 10 * rpm * minutes + 1e-9);
              }
            },
          ),
          { numRuns: 300 },
        );
      });
    }
  });
}
