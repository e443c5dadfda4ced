import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { after, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { Redis } from "ioredis";
import { RedisBudgetStore } from "../../extproc/src/budget/redis-store.ts";
import { ReplicaRegistry } from "../../extproc/src/budget/replica-registry.ts";
import {
  type OutageMode,
  ResilientBudgetStore,
  type StoreState,
} from "../../extproc/src/budget/resilient-store.ts";
import { type AdmitRequest, StoreUnavailableError } from "../../extproc/src/budget/store.ts";
import { memoryLogger } from "../../extproc/src/log.ts";
import { freePort, startRedis, type TestRedis } from "../helpers/redis.ts";

/**
 * ResilientBudgetStore against a real redis-server made sick: SIGSTOP (socket open, no
 * answers), SIGCONT, and a stop and restart on the same port.
 */

const TIMEOUT_MS = 50;
let seq = 0;
const admitRequest = (tenant: string, limits: AdmitRequest["limits"]): AdmitRequest => ({
  tenant,
  limits,
  tokens: 10,
  leaseId: `l${++seq}`,
  leaseTtlMs: 30_000,
});

async function until(condition: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

async function timed<T>(run: () => Promise<T>): Promise<{ ms: number; value?: T; error?: unknown }> {
  const start = performance.now();
  try {
    const value = await run();
    return { ms: performance.now() - start, value };
  } catch (error) {
    return { ms: performance.now() - start, error };
  }
}

function resilient(url: string, onOutage: OutageMode, replicas = () => 1) {
  const redis = new RedisBudgetStore({ url, timeoutMs: TIMEOUT_MS, keyPrefix: "outage:" });
  const logger = memoryLogger();
  const states: StoreState[] = [];
  const store = new ResilientBudgetStore({
    redis,
    onOutage,
    replicas,
    probeIntervalMs: 100,
    logger,
    onStateChange: (state) => states.push(state),
  });
  return { redis, store, logger, states };
}

describe("ResilientBudgetStore: Redis paused with SIGSTOP", () => {
  let server: TestRedis;
  const cleanup: Array<() => Promise<void>> = [];
  after(async () => {
    for (const close of cleanup.reverse()) await close();
    await server?.stop();
  });

  it("fail-open: calls return within the timeout, local buckets scaled by the replica count, recovery on resume", async () => {
    server = await startRedis();
    const { redis, store, logger, states } = resilient(server.url, "fail-open", () => registry.count());
    const registry = new ReplicaRegistry({ store: redis, id: "self", heartbeatMs: 60_000 });
    const other = new ReplicaRegistry({ store: redis, id: "other", heartbeatMs: 60_000 });
    cleanup.push(
      () => store.close(),
      () => redis.close(),
    );
    await other.heartbeat();
    assert.equal(await registry.heartbeat(), 2);

    const limits = { rpm: 10 };
    assert.equal((await store.admit(admitRequest("warm", limits))).ok, true);
    assert.equal(store.state(), "ok");

    server.pause();
    // A late reply is answered by the fallback; three in a row make an outage.
    for (let i = 0; i < 3; i++) {
      const late = await timed(() => store.admit(admitRequest("t", limits)));
      assert.equal(late.error, undefined);
      assert.equal(late.value?.ok, true, "admitted by the local fallback");
      assert.ok(late.ms < TIMEOUT_MS + 100, `call ${i + 1} took ${late.ms.toFixed(1)} ms`);
      assert.equal(store.state(), i < 2 ? "ok" : "outage");
    }
    assert.deepEqual(states, ["outage"]);

    // rpm 10 over 2 replicas: 5 locally, three already taken.
    const rest = await timed(async () => {
      const results = [];
      for (let i = 0; i < 3; i++) results.push(await store.admit(admitRequest("t", limits)));
      return results;
    });
    assert.deepEqual(
      rest.value?.map((r) => r.ok),
      [true, true, false],
    );
    assert.ok(rest.ms < 50, `outage calls do not wait on Redis (${rest.ms.toFixed(1)} ms for 3)`);
    const refused = rest.value?.[2];
    // Headers report the tenant's real limit; what remains is this replica's share.
    assert.equal(refused && !refused.ok && refused.snapshot.requests?.limit, 10);
    assert.equal(refused && !refused.ok && refused.snapshot.requests?.remaining, 0);
    assert.equal(store.ready().ok, true, "fail-open stays ready");
    assert.equal(store.counters.outages, 1);
    assert.equal(store.counters.fallbackAdmits, 6);
    assert.equal(logger.records.filter((r) => r.level === "warn").length, 1, "logged once per outage");

    // Leases taken locally are released locally.
    const leased = admitRequest("c", { maxConcurrency: 1 });
    assert.equal((await store.admit(leased)).ok, true);
    await store.releaseLease("c", leased.leaseId);
    assert.equal((await store.admit(admitRequest("c", { maxConcurrency: 1 }))).ok, true);

    server.resume();
    await until(() => store.state() === "ok", 3_000, "recovery after SIGCONT");
    assert.deepEqual(states, ["outage", "ok"]);
    // Back on Redis, whose bucket for "t" holds 7: the three admits that timed out while
    // Redis was stopped had been sent, and Redis ran them on SIGCONT (a charge with no
    // admission — the documented cost of a timeout; nothing is resent). The fallback's
    // local admits are not copied to Redis.
    const snapshot = await store.peek("t", limits);
    assert.equal(snapshot.requests?.remaining, 7);
    assert.equal((await store.admit(admitRequest("t", limits))).ok, true);
    assert.equal((await redis.peek("t", limits)).requests?.remaining, 6);
    assert.equal(store.counters.outages, 1);
    await registry.close();
    await other.close();
  });

  it("fail-closed: admit rejects with StoreUnavailableError within the timeout, then at once; recovers on resume", async () => {
    const { redis, store, states } = resilient(server.url, "fail-closed");
    cleanup.push(
      () => store.close(),
      () => redis.close(),
    );
    const limits = { rpm: 100, maxConcurrency: 5 };
    assert.equal((await store.admit(admitRequest("fc", limits))).ok, true);

    server.pause();
    try {
      // Each late reply is refused; three in a row make an outage, after which calls fail at once.
      for (let i = 0; i < 3; i++) {
        const late = await timed(() => store.admit(admitRequest("fc", limits)));
        assert.ok(late.error instanceof StoreUnavailableError, String(late.error));
        assert.ok(late.ms < TIMEOUT_MS + 100, `call ${i + 1} took ${late.ms.toFixed(1)} ms`);
      }
      const second = await timed(() => store.admit(admitRequest("fc", limits)));
      assert.ok(second.error instanceof StoreUnavailableError);
      assert.ok(second.ms < 10, `during the outage: ${second.ms.toFixed(1)} ms`);
      await assert.rejects(store.peek("fc", limits), StoreUnavailableError);
      assert.equal(store.state(), "outage");
      assert.equal(store.ready().ok, false, "fail-closed is not ready during an outage");
      assert.ok(store.counters.unavailable >= 3);
    } finally {
      server.resume();
    }
    await until(() => store.state() === "ok", 3_000, "recovery after SIGCONT");
    assert.deepEqual(states, ["outage", "ok"]);
    assert.equal((await store.admit(admitRequest("fc", limits))).ok, true);
    assert.equal(store.ready().ok, true);
  });
});

describe("ResilientBudgetStore: Redis stopped and restarted on the same port", () => {
  let child: ChildProcess | undefined;
  const start = async (port: number) => {
    child = spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", ""], {
      stdio: "ignore",
    });
    const probe = new Redis(`redis://127.0.0.1:${port}`, { lazyConnect: true, retryStrategy: () => null });
    probe.on("error", () => {});
    try {
      for (let i = 0; ; i++) {
        try {
          await probe.connect();
          await probe.ping();
          return;
        } catch (error) {
          if (i > 100) throw error;
          await sleep(50);
        }
      }
    } finally {
      probe.disconnect();
    }
  };
  const stop = () =>
    new Promise<void>((resolve) => {
      if (!child || child.exitCode !== null || child.signalCode !== null) return resolve();
      child.once("exit", () => resolve());
      child.kill("SIGKILL");
    });
  after(stop);

  for (const mode of ["fail-closed", "fail-open"] as const) {
    it(`${mode}: recovers with no restart of the store`, async () => {
      const port = await freePort();
      await start(port);
      const { redis, store, states } = resilient(`redis://127.0.0.1:${port}`, mode);
      try {
        const limits = { rpm: 1000, tpm: 100_000 };
        assert.equal((await store.admit(admitRequest("r", limits))).ok, true);
        await stop();
        // A lost connection is an outage at once; until the client has noticed the server is
        // gone a call may only be late, and three late ones make the outage too.
        for (let i = 0; i < 3 && store.state() === "ok"; i++) {
          const during = await timed(() => store.admit(admitRequest("r", limits)));
          assert.ok(during.ms < TIMEOUT_MS + 100, `${during.ms.toFixed(1)} ms`);
          if (mode === "fail-closed") assert.ok(during.error instanceof StoreUnavailableError);
          else assert.equal(during.value?.ok, true);
        }
        assert.equal(store.state(), "outage");
        await sleep(300);
        await start(port); // an empty Redis: no keys, no scripts loaded
        await until(() => store.state() === "ok", 5_000, "recovery after restart");
        assert.deepEqual(states, ["outage", "ok"]);
        const result = await store.admit(admitRequest("r", limits));
        assert.equal(result.ok, true);
        assert.equal(result.snapshot.requests?.remaining, 999, "a fresh bucket on the new server");
      } finally {
        await store.close();
        await redis.close();
        await stop();
      }
    });
  }
});
