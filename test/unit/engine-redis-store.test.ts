import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { Redis } from "ioredis";
import { createBudgetRedisClient } from "../../extproc/src/budget/redis-client.ts";
import { ManualClock } from "../../extproc/src/clock.ts";
import { loadPolicyText } from "../../extproc/src/config/load.ts";
import { parseEngineMetrics } from "../../extproc/src/engine/engine-state.ts";
import type { EndpointEngineState } from "../../extproc/src/engine/engine-state-store.ts";
import { EnginePoller } from "../../extproc/src/engine/poller.ts";
import {
  engineStateKey,
  engineStateTtlMs,
  RedisEngineStateStore,
} from "../../extproc/src/engine/redis-engine-state.ts";
import { startRedis, type TestRedis } from "../helpers/redis.ts";

const URL_A = "http://engine-a:8000/metrics";
const INTERVAL = 100;
const BACKENDS = [{ name: "llm", metrics: [URL_A], scrapeIntervalMs: INTERVAL }];

function metricsBody(kv: number, waiting = "0.0"): string {
  return [
    'vllm:num_requests_running{engine="0",model_name="m"} 3.0',
    `vllm:num_requests_waiting{engine="0",model_name="m"} ${waiting}`,
    `vllm:kv_cache_usage_perc{engine="0",model_name="m"} ${kv}`,
    "",
  ].join("\n");
}

function stateAt(at: number, kv: number, waiting = "0.0"): EndpointEngineState {
  const parsed = parseEngineMetrics(metricsBody(kv, waiting), at);
  assert.ok(parsed.ok);
  return {
    backend: "llm",
    url: URL_A,
    healthUrl: "http://engine-a:8000/health",
    intervalMs: INTERVAL,
    status: "serving",
    snapshot: parsed.snapshot,
    lastScrapeOkAt: at,
    lastAttemptAt: at,
    health: 200,
    loadDurationsMs: [1234],
    tokensPerSecond: 42,
  };
}

/** Two processes: separate performance clocks (different origins), one wall clock. */
function twoProcesses() {
  let wall = 1_700_000_000_000;
  const writerClock = new ManualClock(5_000);
  const readerClock = new ManualClock(900_000);
  return {
    writerClock,
    readerClock,
    wallNow: () => wall,
    /** Time passes for everyone. */
    advance(ms: number) {
      wall += ms;
      writerClock.advance(ms);
      readerClock.advance(ms);
    },
  };
}

describe("RedisEngineStateStore against redis-server", () => {
  let redis: TestRedis;
  let admin: Redis;
  let prefixSeq = 0;
  const clients: Redis[] = [];
  const client = async () => {
    const c = createBudgetRedisClient(redis.url, 100);
    await c.connect();
    clients.push(c);
    return c;
  };

  before(async () => {
    redis = await startRedis();
    admin = new Redis(redis.url);
  });
  after(async () => {
    for (const c of clients) c.disconnect();
    admin.disconnect();
    await redis.stop();
  });

  it("publishes under {prefix}engine:{backend}:{url-hash} with a TTL; another process reads it in its own clock", async () => {
    const keyPrefix = `t${++prefixSeq}:`;
    const world = twoProcesses();
    const writer = new RedisEngineStateStore({
      client: await client(),
      keyPrefix,
      publish: true,
      clock: world.writerClock,
      wallNow: world.wallNow,
    });
    const updates: string[] = [];
    const reader = new RedisEngineStateStore({
      client: await client(),
      keyPrefix,
      publish: false,
      clock: world.readerClock,
      wallNow: world.wallNow,
      onRemoteUpdate: (s) => updates.push(s.backend),
    });
    const readerPoller = new EnginePoller({ backends: BACKENDS, clock: world.readerClock, store: reader });

    // Scraped 40 ms ago by the writer, with an unknown (NaN → +Infinity) waiting gauge.
    writer.write(stateAt(world.writerClock.now() - 40, 0.97, "NaN"));
    await writer.flush();
    assert.equal(writer.lastError, undefined);

    const key = engineStateKey(keyPrefix, "llm", URL_A);
    assert.match(key, new RegExp(`^${keyPrefix}engine:llm:[0-9a-f]{16}$`));
    const ttl = await admin.pttl(key);
    assert.ok(ttl > 0 && ttl <= engineStateTtlMs(INTERVAL), `PTTL ${ttl}`);
    assert.equal(engineStateTtlMs(INTERVAL), 2_000, "2 × max(3 × interval, 1 s)");
    const stored = JSON.parse((await admin.get(key)) ?? "{}");
    assert.equal(stored.lastScrapeOkAt, world.wallNow() - 40, "wall-clock time in Redis");
    assert.equal(stored.snapshot.waiting, "Infinity");

    assert.equal(readerPoller.signals("llm")?.fresh, false, "nothing read yet: saturated");
    await reader.refresh();
    assert.deepEqual(updates, ["llm"]);
    const [seen] = reader.read("llm");
    assert.equal(seen?.lastScrapeOkAt, world.readerClock.now() - 40, "converted to the reader's clock");
    assert.equal(seen?.snapshot?.scrapedAt, world.readerClock.now() - 40);
    assert.equal(seen?.snapshot?.waiting, Number.POSITIVE_INFINITY);
    assert.deepEqual(seen?.loadDurationsMs, [1234]);
    assert.deepEqual(readerPoller.signals("llm"), {
      running: 3,
      waiting: Number.POSITIVE_INFINITY,
      kvCacheUsage: 0.97,
      tokensPerSecond: 42,
      fresh: true,
    });

    // A refresh with nothing newer changes nothing and reports nothing.
    await reader.refresh();
    assert.deepEqual(updates, ["llm"]);

    // No newer publish: past the staleness bound (max(3 × 100, 1000) ms) it is stale.
    world.advance(900);
    assert.equal(readerPoller.signals("llm")?.fresh, true);
    world.advance(200);
    assert.equal(readerPoller.signals("llm")?.fresh, false, "stale → saturated");

    // The writer publishes a fresh drained state: the reader takes it on its next refresh.
    writer.write(stateAt(world.writerClock.now(), 0.1));
    await writer.flush();
    await reader.refresh();
    assert.deepEqual(updates, ["llm", "llm"]);
    assert.equal(readerPoller.signals("llm")?.kvCacheUsage, 0.1);
    assert.equal(readerPoller.signals("llm")?.fresh, true);
  });

  it("a local state newer than Redis' is kept; a timestamp from the future (clock skew) counts as now", async () => {
    const keyPrefix = `t${++prefixSeq}:`;
    const world = twoProcesses();
    const writer = new RedisEngineStateStore({
      client: await client(),
      keyPrefix,
      publish: true,
      clock: world.writerClock,
      wallNow: () => world.wallNow() + 60_000, // a minute ahead
    });
    const local = new RedisEngineStateStore({
      client: await client(),
      keyPrefix,
      publish: true,
      clock: world.readerClock,
      wallNow: world.wallNow,
    });
    new EnginePoller({ backends: BACKENDS, clock: world.readerClock, store: local });
    writer.write(stateAt(world.writerClock.now(), 0.5));
    await writer.flush();
    await local.refresh();
    assert.equal(local.read("llm")[0]?.lastScrapeOkAt, world.readerClock.now(), "clamped to now");

    world.advance(10);
    local.write(stateAt(world.readerClock.now(), 0.2));
    await local.flush();
    writer.write(stateAt(world.writerClock.now() - 70_000, 0.9)); // older than the local one
    await writer.flush();
    await local.refresh();
    assert.equal(local.read("llm")[0]?.snapshot?.kvCacheUsage, 0.2);
  });

  it("remove deletes the key; an endpoint no longer configured leaves the cache", async () => {
    const keyPrefix = `t${++prefixSeq}:`;
    const store = new RedisEngineStateStore({ client: await client(), keyPrefix, publish: true });
    const poller = new EnginePoller({ backends: BACKENDS, store });
    store.write(stateAt(performance.now(), 0.3));
    await store.flush();
    assert.equal(await admin.exists(engineStateKey(keyPrefix, "llm", URL_A)), 1);
    poller.configure([{ name: "llm", metrics: [], scrapeIntervalMs: INTERVAL }]);
    await store.flush();
    assert.equal(await admin.exists(engineStateKey(keyPrefix, "llm", URL_A)), 0);
    assert.deepEqual(store.all(), []);
  });

  it("with Redis down, refreshes fail quietly and the cached view is served until it goes stale", async () => {
    const own = await startRedis();
    const keyPrefix = "down:";
    const world = twoProcesses();
    const writerClient = createBudgetRedisClient(own.url, 100);
    const readerClient = createBudgetRedisClient(own.url, 100);
    await Promise.all([writerClient.connect(), readerClient.connect()]);
    try {
      const writer = new RedisEngineStateStore({
        client: writerClient,
        keyPrefix,
        publish: true,
        clock: world.writerClock,
        wallNow: world.wallNow,
      });
      const reader = new RedisEngineStateStore({
        client: readerClient,
        keyPrefix,
        publish: false,
        clock: world.readerClock,
        wallNow: world.wallNow,
      });
      const poller = new EnginePoller({ backends: BACKENDS, clock: world.readerClock, store: reader });
      writer.write(stateAt(world.writerClock.now(), 0.4));
      await writer.flush();
      await reader.refresh();
      assert.equal(poller.signals("llm")?.fresh, true);

      await own.stop();
      world.advance(500);
      await reader.refresh(); // resolves: never throws
      assert.ok(reader.lastError, "the failure is recorded");
      assert.equal(reader.read("llm").length, 1, "the local view is kept");
      assert.deepEqual(poller.signals("llm"), {
        running: 3,
        waiting: 0,
        kvCacheUsage: 0.4,
        tokensPerSecond: 42,
        fresh: true,
      });
      writer.write(stateAt(world.writerClock.now(), 0.1));
      await writer.flush(); // a failed publish resolves too
      assert.ok(writer.lastError);

      world.advance(600);
      await reader.refresh();
      assert.equal(poller.signals("llm")?.fresh, false, "stale after the bound: saturated");
      assert.equal(poller.signals("llm")?.kvCacheUsage, 1);
    } finally {
      writerClient.disconnect();
      readerClient.disconnect();
      await own.stop();
    }
  });

  it("start() refreshes on a timer every scrape interval and stop() ends it", async () => {
    const keyPrefix = `t${++prefixSeq}:`;
    const writer = new RedisEngineStateStore({ client: await client(), keyPrefix, publish: true });
    const changed: string[] = [];
    const reader = new RedisEngineStateStore({
      client: await client(),
      keyPrefix,
      publish: false,
      onRemoteUpdate: (s) => changed.push(String(s.snapshot?.kvCacheUsage)),
    });
    const poller = new EnginePoller({ backends: BACKENDS, store: reader });
    reader.start();
    try {
      writer.write(stateAt(performance.now(), 0.6));
      await writer.flush();
      const deadline = Date.now() + 2_000;
      while (poller.signals("llm")?.fresh !== true) {
        assert.ok(Date.now() < deadline, "refreshed within an interval or two");
        await new Promise((r) => setTimeout(r, 20));
      }
      assert.deepEqual(changed, ["0.6"]);
    } finally {
      await reader.stop();
    }
  });
});

describe("server.enginePoller", () => {
  it("defaults to in-process; external with the memory store is an error at server.enginePoller", () => {
    const plain = loadPolicyText("backends: [{ name: llm }]\n");
    assert.ok(plain.ok);
    assert.equal(plain.policy.source.server.enginePoller, "in-process");

    const bad = loadPolicyText("server:\n  enginePoller: external\n");
    assert.equal(bad.ok, false);
    assert.ok(!bad.ok);
    assert.equal(bad.errors[0]?.path, "server.enginePoller");
    assert.equal(bad.errors[0]?.line, 2);
    assert.match(bad.errors[0]?.message ?? "", /external needs the Redis store/);

    const good = loadPolicyText(
      "store: { redis: redis://127.0.0.1:6379 }\nserver: { enginePoller: external }\n",
    );
    assert.ok(good.ok);
    assert.equal(good.policy.source.server.enginePoller, "external");

    const typo = loadPolicyText("server: { enginePoller: sidecar }\n");
    assert.ok(!typo.ok);
    assert.match(typo.errors[0]?.message ?? "", /must be one of "in-process", "external"/);
  });
});
