import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import type { RedisBudgetStore } from "../../extproc/src/budget/redis-store.ts";
import { ResilientBudgetStore, type StoreState } from "../../extproc/src/budget/resilient-store.ts";
import { type AdmitResult, StoreUnavailableError } from "../../extproc/src/budget/store.ts";
import { ManualClock } from "../../extproc/src/clock.ts";
import { memoryLogger } from "../../extproc/src/log.ts";

/** A stand-in for RedisBudgetStore that is up or down on command. */
function fakeRedis() {
  const fake = {
    up: true,
    /** undefined: every failure is a lost connection; true: a late reply on a live one. */
    connected: undefined as boolean | undefined,
    admits: 0,
    pings: 0,
    /** Calls answered, as RedisBudgetStore counts them. */
    replies: 0,
    fail(): never {
      throw new StoreUnavailableError("fake redis down");
    },
    answer() {
      if (!fake.up) fake.fail();
      fake.replies++;
    },
    async admit(): Promise<AdmitResult> {
      fake.answer();
      fake.admits++;
      return { ok: true, snapshot: {}, leased: false };
    },
    async reconcile() {
      fake.answer();
    },
    async renewLease() {
      fake.answer();
      return true;
    },
    async releaseLease(_tenant: string, _leaseId: string) {
      fake.answer();
    },
    /** Every settle that reached this fake: [leaseId, delta]. */
    settles: [] as Array<[string | undefined, number]>,
    async settle(_tenant: string, _limits: unknown, leaseId: string | undefined, delta: number) {
      fake.answer();
      fake.settles.push([leaseId, delta]);
    },
    async peek() {
      fake.answer();
      return {};
    },
    async ping() {
      fake.pings++;
      fake.answer();
    },
    closed: 0,
    async close() {
      fake.closed++;
    },
  };
  return fake;
}

const admitReq = (limits = {}) => ({
  tenant: "t",
  limits,
  tokens: 1,
  leaseId: `l${Math.random()}`,
  leaseTtlMs: 1_000,
});

describe("ResilientBudgetStore", () => {
  it("scales local limits by the replica count, rounding up, at least 1", () => {
    let replicas = 3;
    const store = new ResilientBudgetStore({
      redis: fakeRedis() as unknown as RedisBudgetStore,
      onOutage: "fail-open",
      replicas: () => replicas,
    });
    assert.deepEqual(store.localLimits({ rpm: 10, tpm: 1000, maxConcurrency: 2, tokensPerDay: 1 }), {
      rpm: 4,
      tpm: 334,
      rpmBurst: undefined,
      tpmBurst: undefined,
      maxConcurrency: 1,
      tokensPerDay: 1,
      tokensPerMonth: undefined,
    });
    replicas = 0;
    assert.equal(store.localLimits({ rpm: 10 }).rpm, 10, "a count below 1 counts as 1");
  });

  it("fail-open: one outage logged and counted, local admits, probe until Redis is back", async () => {
    const redis = fakeRedis();
    const logger = memoryLogger();
    const states: StoreState[] = [];
    const store = new ResilientBudgetStore({
      redis: redis as unknown as RedisBudgetStore,
      onOutage: "fail-open",
      probeIntervalMs: 20,
      logger,
      onStateChange: (state) => states.push(state),
    });
    assert.equal((await store.admit(admitReq({ rpm: 2 }))).ok, true);
    redis.up = false;
    const results = [];
    for (let i = 0; i < 3; i++) results.push((await store.admit(admitReq({ rpm: 2 }))).ok);
    assert.deepEqual(results, [true, true, false], "local bucket of rpm 2");
    assert.equal(store.state(), "outage");
    assert.deepEqual(store.ready(), { ok: true, detail: "redis unreachable (fail-open): fake redis down" });
    await store.reconcile("t", { tpm: 10 }, 5);
    assert.equal(await store.renewLease("t", "redis-lease", 1_000), true);
    await store.releaseLease("t", "redis-lease");
    await sleep(70);
    assert.ok(redis.pings >= 2, `probed ${redis.pings} times`);
    redis.up = true;
    await sleep(50);
    assert.equal(store.state(), "ok");
    assert.deepEqual(states, ["outage", "ok"]);
    assert.equal(logger.records.filter((r) => r.level === "warn").length, 1);
    assert.equal(store.counters.outages, 1);
    assert.equal(store.counters.fallbackAdmits, 3);
    const before = redis.admits;
    assert.equal((await store.admit(admitReq())).ok, true);
    assert.equal(redis.admits, before + 1, "back on Redis");
    await store.close();
  });

  it("fail-closed: rejects with StoreUnavailableError and is not ready during an outage", async () => {
    const redis = fakeRedis();
    const store = new ResilientBudgetStore({
      redis: redis as unknown as RedisBudgetStore,
      onOutage: "fail-closed",
      probeIntervalMs: 10_000,
    });
    redis.up = false;
    await assert.rejects(store.admit(admitReq()), StoreUnavailableError);
    await assert.rejects(store.peek("t", {}), StoreUnavailableError);
    assert.equal(store.ready().ok, false);
    assert.equal(store.counters.unavailable, 2);
    await store.close();
    assert.equal(redis.closed, 1, "close() closes the wrapped Redis store");
  });

  it("three late replies make an outage even with calls between them that needed no reply from Redis", async () => {
    const redis = fakeRedis();
    redis.connected = true;
    // A reconcile for a tenant without token limits sends nothing to Redis.
    redis.reconcile = async () => {};
    const store = new ResilientBudgetStore({
      redis: redis as unknown as RedisBudgetStore,
      onOutage: "fail-open",
      probeIntervalMs: 10_000,
    });
    redis.up = false;
    for (let i = 0; i < 3; i++) {
      assert.equal(store.state(), "ok", `still ok before late reply ${i + 1}`);
      await store.admit(admitReq({ rpm: 100 }));
      await store.reconcile("t", { rpm: 100 }, 5);
    }
    assert.equal(store.state(), "outage");
    await store.close();
  });

  it("fail-open: a Redis lease ended during an outage is still released in Redis, and the outage stands", async () => {
    const redis = fakeRedis();
    const released: string[] = [];
    redis.releaseLease = async (_tenant: string, leaseId: string) => {
      redis.answer();
      released.push(leaseId);
    };
    const store = new ResilientBudgetStore({
      redis: redis as unknown as RedisBudgetStore,
      onOutage: "fail-open",
      probeIntervalMs: 10_000,
    });
    const leased = admitReq({ maxConcurrency: 2 });
    assert.equal((await store.admit(leased)).ok, true, "a lease held in Redis");
    redis.up = false;
    await store.admit(admitReq({ maxConcurrency: 2 }));
    assert.equal(store.state(), "outage");
    await store.releaseLease("t", "unreachable-lease");
    redis.up = true; // answering again; the probe has not seen it yet
    await store.releaseLease("t", leased.leaseId);
    assert.deepEqual(released, [leased.leaseId]);
    assert.equal(store.state(), "outage", "only the probe ends an outage");
    await store.close();
  });

  for (const onOutage of ["fail-open", "fail-closed"] as const) {
    it(`${onOutage}: an admit without an answer in time is followed by a release of its lease in Redis`, async () => {
      const redis = fakeRedis();
      redis.connected = true;
      const released: string[] = [];
      redis.releaseLease = async (_tenant: string, leaseId: string) => {
        released.push(leaseId);
      };
      const store = new ResilientBudgetStore({
        redis: redis as unknown as RedisBudgetStore,
        onOutage,
        probeIntervalMs: 10_000,
      });
      redis.up = false; // late, not gone: Redis may still run the admit
      const late = admitReq({ maxConcurrency: 2 });
      const outcome = await store.admit(late).then(
        (result) => result.ok,
        (error: unknown) => error instanceof StoreUnavailableError,
      );
      assert.equal(outcome, true, onOutage === "fail-open" ? "admitted locally" : "refused");
      assert.deepEqual(released, [late.leaseId]);
      await store.admit(admitReq({ rpm: 10 })).catch(() => {});
      assert.deepEqual(released, [late.leaseId], "nothing to withdraw without maxConcurrency");
      await store.close();
    });
  }

  it("errors other than StoreUnavailableError are not outages", async () => {
    const redis = fakeRedis();
    redis.admit = async () => {
      throw new TypeError("bug");
    };
    const store = new ResilientBudgetStore({
      redis: redis as unknown as RedisBudgetStore,
      onOutage: "fail-open",
    });
    await assert.rejects(store.admit(admitReq()), TypeError);
    assert.equal(store.state(), "ok");
    await store.close();
  });

  it("fail-open continues from Redis's latest levels in every outage, not from an earlier outage's buckets", async () => {
    const redis = fakeRedis();
    let remaining = 30;
    redis.admit = async () => {
      if (!redis.up) redis.fail();
      return { ok: true, snapshot: { requests: { limit: 60, remaining, resetMs: 0 } }, leased: false };
    };
    const clock = new ManualClock();
    const store = new ResilientBudgetStore({
      redis: redis as unknown as RedisBudgetStore,
      onOutage: "fail-open",
      probeIntervalMs: 10,
      replicas: () => 3,
      clock,
    });
    const limits = { rpm: 60 };
    const admitted = async (n: number) => {
      let ok = 0;
      for (let i = 0; i < n; i++) if ((await store.admit(admitReq(limits))).ok) ok++;
      return ok;
    };
    assert.equal(await admitted(1), 1);
    redis.up = false;
    assert.equal(await admitted(20), 10, "first outage: this replica's third of the 30 left");
    redis.up = true;
    await sleep(40);
    assert.equal(store.state(), "ok");
    clock.advance(60_000); // the local buckets would be full again by now
    remaining = 0; // but Redis says the tenant has drained its bucket
    assert.equal(await admitted(1), 1);
    redis.up = false;
    assert.equal(await admitted(20), 0, "second outage: seeded from Redis's 0, not a refilled local bucket");
    await store.close();
  });

  it("fail-open: a request the tenant's real limit allows is rate limited, not refused as too large, and headers show the real limit", async () => {
    const redis = fakeRedis();
    const store = new ResilientBudgetStore({
      redis: redis as unknown as RedisBudgetStore,
      onOutage: "fail-open",
      probeIntervalMs: 10_000,
      replicas: () => 3,
    });
    redis.up = false;
    const big = { ...admitReq({ tpm: 2000 }), tokens: 1510 };
    const first = await store.admit(big);
    assert.equal(first.ok, true, "the share's bucket grows to hold a request the real limit allows");
    assert.equal(first.snapshot.tokens?.limit, 2000);
    const second = await store.admit(big);
    assert.equal(second.ok, false);
    assert.equal(!second.ok && second.code, "rate_limit_tokens");
    const huge = await store.admit({ ...admitReq({ tpm: 2000 }), tokens: 2500 });
    assert.equal(
      !huge.ok && huge.code,
      "request_too_large_for_limit",
      "above the real limit stays too large",
    );
    await store.close();
  });

  it("settle: one Redis call while healthy; a local lease is released locally; during an outage, as release and reconcile", async () => {
    const redis = fakeRedis();
    const store = new ResilientBudgetStore({
      redis: redis as unknown as RedisBudgetStore,
      onOutage: "fail-open",
      probeIntervalMs: 60_000,
    });
    const before = redis.replies;
    await store.settle("t", { tpm: 100, maxConcurrency: 2 }, "redis-lease", -5);
    assert.deepEqual(redis.settles, [["redis-lease", -5]]);
    assert.equal(redis.replies - before, 1);
    redis.up = false;
    const local = admitReq({ maxConcurrency: 1 });
    assert.equal((await store.admit(local)).ok, true, "admitted by the local fallback");
    assert.equal(store.state(), "outage");
    await store.settle("t", { maxConcurrency: 1 }, local.leaseId, 0);
    assert.equal(
      (await store.admit(admitReq({ maxConcurrency: 1 }))).ok,
      true,
      "the local slot is free again",
    );
    await store.settle("t", { tpm: 100, maxConcurrency: 2 }, "other-redis-lease", -5);
    assert.deepEqual(redis.settles, [["redis-lease", -5]], "no settle sent to a Redis in outage");
    await store.close();
  });
});
