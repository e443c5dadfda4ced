/**
 * Weights at any capacity, as an Envoy sees them: an Envoy-emulating client keeps two
 * tenants of weights 4 and 1 backlogged through real ext_proc streams against a backend
 * capped at 1, 2, 4 and 16 requests in flight (20 ms of service each), and across two
 * replicas sharing a real redis-server; while both wait, the dispatches split 4:1.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { hashApiKey } from "../../extproc/src/identity/identify.ts";
import { flood, type Observed } from "../helpers/estimate-client.ts";
import { startTestGateway, type TestGateway } from "../helpers/gateway.ts";
import { extProcClient } from "../helpers/raw-ext-proc.ts";
import { startRedis, type TestRedis } from "../helpers/redis.ts";

for (const slots of [1, 2, 4, 16]) {
  describe(`weights 4:1 through ext_proc, ${slots} slot(s)`, () => {
    let gw: TestGateway;
    let client: ReturnType<typeof extProcClient>;
    before(async () => {
      const tenant = (id: string, tier: string) => ({ id, tier, apiKeys: [hashApiKey(`key-${id}`)] });
      gw = await startTestGateway({
        tiers: { one: { priority: 0, weight: 1 }, four: { priority: 0, weight: 4 } },
        tenants: [tenant("big", "four"), tenant("small", "one")],
        backends: [{ name: "engine", maxInFlightRequests: slots }],
        defaults: { tier: "one", limits: { maxQueued: 1000, maxQueueWaitMs: 60_000 } },
      });
      client = extProcClient(gw.gateway.grpcPort);
    });
    after(async () => {
      client.close();
      await gw.close();
    });

    it("splits the dispatches 4:1 within 10 % while both are backlogged", async () => {
      const options = { grpc: client, httpPort: gw.gateway.httpPort, serviceMs: () => 20 };
      const log: Observed[] = [];
      const until = performance.now() + 3_000;
      const depth = 2 * slots + 4;
      await Promise.all([
        flood(options, "big", depth, until, log),
        flood(options, "small", depth, until, log),
      ]);
      // Count while both were surely backlogged: the middle of the run.
      const start = (log[0]?.dispatchedAt ?? 0) + 300;
      const window = log.filter((o) => o.dispatchedAt >= start && o.dispatchedAt <= until - 300);
      const big = window.filter((o) => o.tenant === "big").length;
      const share = big / Math.max(1, window.length);
      assert.ok(window.length >= 40, `${window.length} dispatches counted`);
      assert.ok(
        Math.abs(share - 0.8) <= 0.08,
        `big got ${big} of ${window.length} dispatches (${(share * 100).toFixed(1)} %, want 80 %)`,
      );
    });
  });
}

describe("weights 4:1 through ext_proc across two replicas sharing Redis, 4 slots", () => {
  let redis: TestRedis;
  const replicas: TestGateway[] = [];
  const clients: Array<ReturnType<typeof extProcClient>> = [];
  before(async () => {
    redis = await startRedis();
    const tenant = (id: string, tier: string) => ({ id, tier, apiKeys: [hashApiKey(`key-${id}`)] });
    for (let i = 0; i < 2; i++) {
      const gw = await startTestGateway({
        store: { redis: redis.url },
        tiers: { one: { priority: 0, weight: 1 }, four: { priority: 0, weight: 4 } },
        tenants: [tenant("big", "four"), tenant("small", "one")],
        backends: [{ name: "engine", maxInFlightRequests: 4 }],
        defaults: { tier: "one", limits: { maxQueued: 1000, maxQueueWaitMs: 60_000 } },
      });
      replicas.push(gw);
      clients.push(extProcClient(gw.gateway.grpcPort));
    }
  });
  after(async () => {
    for (const client of clients) client.close();
    for (const gw of replicas) await gw.close();
    await redis.stop();
  });

  it("splits the dispatches 4:1 within 15 % while each tenant's requests reach both replicas", async () => {
    const log: Observed[] = [];
    const until = performance.now() + 4_000;
    // Like Envoy balancing streams over the replicas: each tenant's requests go to both.
    await Promise.all(
      replicas.flatMap((gw, i) => {
        const options = {
          grpc: clients[i] as ReturnType<typeof extProcClient>,
          httpPort: gw.gateway.httpPort,
          serviceMs: () => 20,
        };
        return [flood(options, "big", 6, until, log), flood(options, "small", 6, until, log)];
      }),
    );
    const start = Math.min(...log.map((o) => o.dispatchedAt)) + 500;
    const window = log.filter((o) => o.dispatchedAt >= start && o.dispatchedAt <= until - 500);
    const big = window.filter((o) => o.tenant === "big").length;
    const share = big / Math.max(1, window.length);
    assert.ok(window.length >= 100, `${window.length} dispatches counted`);
    assert.ok(
      Math.abs(share - 0.8) <= 0.12,
      `big got ${big} of ${window.length} dispatches (${(share * 100).toFixed(1)} %, want 80 %)`,
    );
  });
});
