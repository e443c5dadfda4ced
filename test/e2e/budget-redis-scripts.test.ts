import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { Redis } from "ioredis";
import { dayWindow, monthWindow } from "../../extproc/src/budget/memory-store.ts";
import { loadLua } from "../../extproc/src/budget/redis-scripts.ts";
import { RedisBudgetStore } from "../../extproc/src/budget/redis-store.ts";
import { ReplicaRegistry } from "../../extproc/src/budget/replica-registry.ts";
import { StoreUnavailableError } from "../../extproc/src/budget/store.ts";
import { freePort, startRedis, type TestRedis } from "../helpers/redis.ts";

/** The Redis store's scripts and keys, seen from Redis itself. */

describe("RedisBudgetStore scripts and keys", () => {
  let server: TestRedis;
  let raw: Redis;
  let store: RedisBudgetStore;
  before(async () => {
    server = await startRedis();
    raw = new Redis(server.url);
    store = new RedisBudgetStore({ url: server.url, timeoutMs: 2_000 });
  });
  after(async () => {
    await store.close();
    raw.disconnect();
    await server.stop();
  });

  it("every script file has a KEYS/ARGV header", async () => {
    for (const name of ["admit", "reconcile", "renew", "release", "settle", "peek", "heartbeat"]) {
      const lua = loadLua(name);
      assert.match(lua, /^--\[\[[\s\S]*KEYS\[1\][\s\S]*ARGV\[1\][\s\S]*\]\]/, name);
      assert.doesNotMatch(lua, /@include/, `${name}: includes resolved`);
    }
  });

  it("keys sit under the prefix with the tenant as a hash tag, and all carry a TTL", async () => {
    const limits = { rpm: 10, tpm: 1000, maxConcurrency: 2, tokensPerDay: 5000, tokensPerMonth: 50_000 };
    const result = await store.admit({ tenant: "acme", limits, tokens: 10, leaseId: "x", leaseTtlMs: 5_000 });
    assert.equal(result.ok, true);
    const keys = (await raw.keys("fairgate:*")).sort();
    assert.deepEqual(keys, [
      "fairgate:b:{acme}:day",
      "fairgate:b:{acme}:leases",
      "fairgate:b:{acme}:month",
      "fairgate:b:{acme}:rpm",
      "fairgate:b:{acme}:tpm",
    ]);
    for (const key of keys) {
      const ttl = await raw.pttl(key);
      assert.ok(ttl > 0, `${key} has a TTL (${ttl})`);
    }
    // Buckets expire about when they would be full again (+1 s): an idle tenant costs nothing.
    assert.ok((await raw.pttl("fairgate:b:{acme}:rpm")) <= 60_000 / 10 + 1_000);
    assert.ok((await raw.pttl("fairgate:b:{acme}:leases")) <= 6_000);
  });

  it("a refusal writes nothing", async () => {
    const before = await raw.dbsize();
    const refused = await store.admit({
      tenant: "untouched",
      limits: { tpm: 100, tokensPerDay: 1000 },
      tokens: 500,
      leaseId: "y",
      leaseTtlMs: 1_000,
    });
    assert.equal(refused.ok, false);
    assert.equal(await raw.dbsize(), before);
  });

  it("survives SCRIPT FLUSH (NOSCRIPT → the script is sent again)", async () => {
    const limits = { rpm: 100 };
    const admit = () => store.admit({ tenant: "flush", limits, tokens: 1, leaseId: "z", leaseTtlMs: 1_000 });
    assert.equal((await admit()).ok, true);
    await raw.script("FLUSH");
    assert.equal((await admit()).ok, true);
    assert.equal((await store.peek("flush", limits)).requests?.remaining, 98);
  });

  it("UTC day and month windows in Lua agree with the JavaScript ones", async () => {
    const lua = `${loadLua("renew").split("local ttl")[0]}
      local now = tonumber(ARGV[1])
      local d, de = day_window(now)
      local m, me = month_window(now)
      return { d, de, m, me }`;
    const instants = [
      Date.UTC(2026, 10, 27, 15, 0, 0),
      Date.UTC(2026, 11, 31, 23, 59, 59, 999),
      Date.UTC(2027, 0, 1, 0, 0, 0),
      Date.UTC(2028, 1, 29, 12, 0, 0),
      Date.UTC(2100, 1, 28, 23, 0, 0),
      Date.UTC(2000, 1, 29, 0, 0, 0),
      Date.UTC(1999, 11, 31, 23, 59, 59),
    ];
    for (let t = Date.UTC(2024, 0, 1); t < Date.UTC(2030, 0, 1); t += 86_400_000 * 13 + 3_600_000 * 7)
      instants.push(t);
    for (const at of instants) {
      const reply = (await raw.eval(lua, 0, at)) as number[];
      const day = dayWindow(at);
      const month = monthWindow(at);
      assert.deepEqual(reply, [day.id, day.end, month.id, month.end], new Date(at).toISOString());
    }
  });

  it("a replica registry counts replicas seen in the window and removes itself on close", async () => {
    const a = new ReplicaRegistry({ store, id: "a", windowMs: 400 });
    const b = new ReplicaRegistry({ store, id: "b", windowMs: 400 });
    assert.equal(await a.heartbeat(), 1);
    assert.equal(await b.heartbeat(), 2);
    assert.equal(a.count(), 1, "count() is the last heartbeat's answer");
    await b.close();
    assert.equal(await a.heartbeat(), 1);
    await b.heartbeat().catch(() => {}); // a closed registry does not update its count
    await new Promise((r) => setTimeout(r, 500));
    const c = new ReplicaRegistry({ store, id: "c", windowMs: 400 });
    assert.equal(await c.heartbeat(), 1, "replicas not seen within the window are not counted");
    await a.close();
    await c.close();
  });

  it("a refused connection is a StoreUnavailableError, not a hang", async () => {
    const port = await freePort();
    const dead = new RedisBudgetStore({ url: `redis://127.0.0.1:${port}`, timeoutMs: 25 });
    const start = performance.now();
    await assert.rejects(
      dead.admit({ tenant: "t", limits: { rpm: 1 }, tokens: 1, leaseId: "l", leaseTtlMs: 1_000 }),
      StoreUnavailableError,
    );
    await assert.rejects(dead.ping(), StoreUnavailableError);
    assert.ok(performance.now() - start < 500);
    await dead.close();
  });
});
