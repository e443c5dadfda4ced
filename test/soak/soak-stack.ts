import { type ChildProcess, spawn } from "node:child_process";
import { hashApiKey } from "../../extproc/src/identity/identify.ts";
import { freePort, startRedis, type TestRedis } from "../helpers/redis.ts";
import { killLeftoverServes, type ServeProcess, startServe } from "../helpers/serve-process.ts";

/**
 * What the soak runs against, as an operator deploys it: a redis-server, `fairgate
 * sim-engine`, and `fairgate serve` with its built-in proxy — which chains the usage filter
 * in observability mode after the main ext_proc filter, as envoy/envoy.yaml does — and the
 * Redis store as policies/multi-tenant.yaml ships it (fail-open, 25 ms timeout).
 */
export interface SoakStack {
  readonly redis: TestRedis;
  readonly serve: ServeProcess;
  readonly engineUrl: string;
  stop(): Promise<void>;
}

/** Tenants, their tiers and limits; the load's mix names them. */
export const SOAK_TENANTS = [
  { id: "chat-a", tier: "premium", limits: "{ rpm: 1000000, tpm: 100000000, maxConcurrency: 200 }" },
  { id: "chat-b", tier: "premium", limits: "{ rpm: 1000000, maxConcurrency: 200 }" },
  { id: "batch", tier: "standard", limits: "{ tpm: 100000000, tokensPerDay: 1000000000000 }" },
  // 10 % of the load: at 500 rps five times its rpm, so its refusals (429) are part of the
  // mix; at 100 rps it sits at its limit.
  { id: "free", tier: "free", limits: "{ rpm: 600, maxConcurrency: 8 }" },
];

export const SOAK_MODEL = "m";

function soakPolicy(redisUrl: string, metricsUrl: string): string {
  return [
    `store: { redis: "${redisUrl}", onOutage: fail-open, timeoutMs: 25 }`,
    `backends: [{ name: sim, metrics: ["${metricsUrl}"], maxInFlightRequests: 256 }]`,
    "tiers:",
    "  premium: { priority: 0, weight: 4 }",
    "  standard: { priority: 1, weight: 2 }",
    "  free: { priority: 2, weight: 1 }",
    "tenants:",
    ...SOAK_TENANTS.flatMap((t) => [
      `  - id: ${t.id}`,
      `    tier: ${t.tier}`,
      `    apiKeys: ["${hashApiKey(`key-${t.id}`)}"]`,
      `    limits: ${t.limits}`,
    ]),
    "server: { shutdownGraceMs: 2000 }",
  ].join("\n");
}

const bin = new URL("../../bin/fairgate.js", import.meta.url).pathname;

async function startSimEngine(speed: number): Promise<{ url: string; child: ChildProcess }> {
  const port = await freePort();
  const child = spawn(
    process.execPath,
    [
      bin,
      "sim-engine",
      "--listen",
      `127.0.0.1:${port}`,
      "--served-model-name",
      SOAK_MODEL,
      "--speed",
      String(speed),
      "--seed",
      "1",
      "--log-level",
      "warn",
    ],
    { stdio: "ignore" },
  );
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 20_000;
  for (;;) {
    const healthy = await fetch(`${url}/health`).then(
      (r) => r.status === 200,
      () => false,
    );
    if (healthy) return { url, child };
    if (child.exitCode !== null || Date.now() > deadline) {
      child.kill("SIGKILL");
      throw new Error("fairgate sim-engine did not start");
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

export async function startSoakStack(options: {
  engineSpeed: number;
  messageTimeoutMs: number;
}): Promise<SoakStack> {
  const redis = await startRedis();
  const engine = await startSimEngine(options.engineSpeed).catch(async (error: unknown) => {
    await redis.stop();
    throw error;
  });
  let serve: ServeProcess;
  try {
    serve = await startServe({
      policyYaml: soakPolicy(redis.url, `${engine.url}/metrics`),
      upstream: engine.url,
      args: ["--message-timeout-ms", String(options.messageTimeoutMs)],
    });
  } catch (error) {
    engine.child.kill("SIGKILL");
    await redis.stop();
    throw error;
  }
  return {
    redis,
    serve,
    engineUrl: engine.url,
    async stop() {
      await serve.stop();
      killLeftoverServes();
      engine.child.kill("SIGKILL");
      await redis.stop();
    },
  };
}
