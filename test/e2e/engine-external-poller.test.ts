import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import type { Server } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { Redis } from "ioredis";
import { engineStateKey } from "../../extproc/src/engine/redis-engine-state.ts";
import { assertHeldUntilDrained, startFakeVllm, until } from "../helpers/gate-hold.ts";
import { startTestGateway, type TestGateway } from "../helpers/gateway.ts";
import { standardPolicyInput } from "../helpers/policy.ts";
import { extProcClient } from "../helpers/raw-ext-proc.ts";
import { startRedis, type TestRedis } from "../helpers/redis.ts";

const root = new URL("../../", import.meta.url).pathname;
const dir = mkdtempSync(join(tmpdir(), "fairgate-external-poller-"));

describe("server.enginePoller: external — one `fairgate poll` publishes engine state to Redis for the gateway", () => {
  let kv = 0.99;
  let engine: Server;
  let redis: TestRedis;
  let admin: Redis;
  let poll: ChildProcess;
  let pollOutput = "";
  let pollExited: Promise<number | null>;
  let gw: TestGateway;
  let client: ReturnType<typeof extProcClient>;
  let metricsUrl: string;
  const keyPrefix = "ext:";

  before(async () => {
    const fake = await startFakeVllm(() => kv);
    engine = fake.server;
    metricsUrl = fake.metricsUrl;
    redis = await startRedis();
    admin = new Redis(redis.url);

    const config = join(dir, "policy.yaml");
    writeFileSync(
      config,
      [
        `store: { redis: "${redis.url}", keyPrefix: "${keyPrefix}" }`,
        "server: { enginePoller: external }",
        "backends:",
        "  - name: engine",
        `    metrics: ["${metricsUrl}"]`,
        "    scrapeIntervalMs: 50",
        "",
      ].join("\n"),
    );
    poll = spawn(process.execPath, [join(root, "bin", "fairgate.js"), "poll", "--config", config], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    poll.stdout?.on("data", (d) => (pollOutput += d));
    poll.stderr?.on("data", (d) => (pollOutput += d));
    pollExited = new Promise((resolve) => poll.once("exit", (code) => resolve(code)));

    gw = await startTestGateway(
      standardPolicyInput({
        store: { redis: redis.url, keyPrefix },
        server: { enginePoller: "external" },
        backends: [
          {
            name: "engine",
            metrics: [metricsUrl],
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
    client?.close();
    await gw?.close();
    if (poll && poll.exitCode === null && poll.signalCode === null) {
      poll.kill("SIGKILL");
      await pollExited;
    }
    admin?.disconnect();
    await redis?.stop();
    await new Promise<void>((r) => {
      engine.close(() => r());
      engine.closeAllConnections();
    });
    rmSync(dir, { recursive: true, force: true });
  });

  it("the gate holds requests while the polled engine reports KV 0.99 and releases them once it reports 0.1", async () => {
    await until("the poller's first publish reaching the gateway", () => {
      const signals = gw.gateway.engine.signals("engine");
      return signals?.fresh === true && signals.kvCacheUsage === 0.99;
    });
    assert.match(
      pollOutput,
      /publishing engine state to Redis redis:\/\/127\.0\.0\.1:\d+\/? \(keys ext:engine:\*\)/,
    );
    const stored = JSON.parse((await admin.get(engineStateKey(keyPrefix, "engine", metricsUrl))) ?? "{}");
    assert.equal(stored.status, "serving");
    assert.ok(Math.abs(stored.lastScrapeOkAt - Date.now()) < 5_000, "wall-clock timestamps in Redis");

    await assertHeldUntilDrained({
      gw,
      client,
      drain: () => {
        kv = 0.1;
      },
      releaseWithinMs: 2_000,
    });
  });

  it("the gateway does not scrape itself: with the poller stopped its view goes stale (saturated)", async () => {
    assert.equal(gw.gateway.engine.signals("engine")?.fresh, true);
    poll.kill("SIGTERM");
    assert.equal(await pollExited, 0);
    // Staleness bound max(3 × 50 ms, 1 s), while the engine itself still answers.
    await until(
      "the engine state to go stale",
      () => gw.gateway.engine.signals("engine")?.fresh === false,
      5_000,
    );
    assert.equal(gw.gateway.engine.signals("engine")?.kvCacheUsage, 1);
  });
});
