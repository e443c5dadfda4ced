import assert from "node:assert/strict";
import type { Server } from "node:http";
import { after, before, describe, it } from "node:test";
import { assertHeldUntilDrained, startFakeVllm, until } from "../helpers/gate-hold.ts";
import { startTestGateway, type TestGateway } from "../helpers/gateway.ts";
import { standardPolicyInput } from "../helpers/policy.ts";
import { extProcClient } from "../helpers/raw-ext-proc.ts";

describe("engine-aware admission through the gateway (poller in-process)", () => {
  let kv = 0.99;
  let engine: Server;
  let gw: TestGateway;
  let client: ReturnType<typeof extProcClient>;

  before(async () => {
    const fake = await startFakeVllm(() => kv);
    engine = fake.server;
    gw = await startTestGateway(
      standardPolicyInput({
        backends: [
          {
            name: "engine",
            metrics: [fake.metricsUrl],
            scrapeIntervalMs: 50,
            maxInFlightRequests: 64,
            kvCacheHighWatermark: 0.85,
          },
        ],
      }),
    );
    client = extProcClient(gw.gateway.grpcPort);
  });

  after(async () => {
    client.close();
    await gw.close();
    await new Promise<void>((r) => {
      engine.close(() => r());
      engine.closeAllConnections();
    });
  });

  it("holds requests while the engine's KV cache is above the watermark and releases them when it drains", async () => {
    await until("the poller's first scrape", () => gw.gateway.engine.signals("engine")?.fresh === true);
    assert.equal(gw.gateway.engine.signals("engine")?.kvCacheUsage, 0.99);

    await assertHeldUntilDrained({
      gw,
      client,
      drain: () => {
        kv = 0.1;
      },
      releaseWithinMs: 1_000,
    });
  });

  it("a backend without metrics URLs has no engine signals (caps only)", () => {
    assert.equal(gw.gateway.engine.signals("some-other-backend"), undefined);
  });
});
