import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import type { PolicyInput } from "../../extproc/src/config/schema.ts";
import { memoryLogger } from "../../extproc/src/log.ts";
import { httpRequest, startRecordingUpstream } from "../helpers/ext-proc-fake.ts";
import { type FrontProxy, startBuiltinFront } from "../helpers/front-proxy.ts";
import { startTestGateway, type TestGateway } from "../helpers/gateway.ts";
import { standardPolicyInput } from "../helpers/policy.ts";

/** Envoy configured as the operator had it: max_message_timeout 120 s. */
const ENVOY_MAX_MESSAGE_TIMEOUT_MS = 120_000;

/** One engine slot; each request takes 600 ms, three times Envoy's 200 ms message_timeout. */
function policy(envoy: Record<string, number> | undefined): PolicyInput {
  const base = standardPolicyInput({ backends: [{ name: "engine", maxInFlightRequests: 1 }] });
  return {
    ...base,
    tenants: (base.tenants ?? []).map((t) => ({ ...t, limits: { ...t.limits, maxQueueWaitMs: 120_000 } })),
    ...(envoy ? { server: { envoy } } : {}),
  };
}

const chat = JSON.stringify({ model: "m", messages: [{ role: "user", content: "hi" }], max_tokens: 8 });

async function setup(envoy: Record<string, number> | undefined) {
  const logger = memoryLogger();
  const gw = await startTestGateway(policy(envoy), { logger });
  const upstream = await startRecordingUpstream((_req, res) => {
    setTimeout(() => {
      res.writeHead(200, { "content-type": "application/json", "content-length": 2 });
      res.end("{}");
    }, 600);
  });
  const front = await startBuiltinFront(gw.gateway.grpcPort, upstream.url, undefined, {
    maxMessageTimeoutMs: ENVOY_MAX_MESSAGE_TIMEOUT_MS,
  });
  // One request first: a cold process (JIT, first gRPC connection) can take Envoy's whole
  // 200 ms on its first message, which is not what these tests are about.
  const warm = await httpRequest(front.url, {
    method: "POST",
    path: "/v1/chat/completions",
    headers: { authorization: "Bearer key-acme", "content-type": "application/json" },
    body: chat,
  });
  assert.ok(warm.status === 200 || warm.status === 504, `warm-up: ${warm.status}`);
  return { gw, upstream, front, logger };
}

/** Two requests at once: the second waits in fairgate's queue behind the first. */
async function oneQueued(front: FrontProxy): Promise<number[]> {
  const send = (key: string) =>
    httpRequest(front.url, {
      method: "POST",
      path: "/v1/chat/completions",
      headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
      body: chat,
    });
  const first = send("key-acme");
  await new Promise((r) => setTimeout(r, 50));
  const second = send("key-globex");
  return (await Promise.all([first, second])).map((r) => r.status);
}

const ignoredCount = async (gw: TestGateway) =>
  (await gw.gateway.metrics.registry.getSingleMetric("fairgate_envoy_override_ignored_total")?.get())
    ?.values[0]?.value ?? 0;

describe("Envoy's max_message_timeout stated in the policy", () => {
  const cleanups: Array<() => Promise<void>> = [];
  after(async () => {
    for (const cleanup of cleanups) await cleanup();
  });
  const track = (parts: Awaited<ReturnType<typeof setup>>) =>
    cleanups.push(async () => {
      await parts.front.close();
      await parts.upstream.close();
      await parts.gw.close();
    });

  it("with server.envoy.maxMessageTimeoutMs equal to Envoy's, a queued request is served, not a 504", async () => {
    const parts = await setup({ maxMessageTimeoutMs: ENVOY_MAX_MESSAGE_TIMEOUT_MS });
    track(parts);
    assert.deepEqual(await oneQueued(parts.front), [200, 200]);
    assert.equal(await ignoredCount(parts.gw), 0);
    const ready = await parts.gw.gateway.readiness();
    assert.deepEqual(ready.warnings, []);
  });

  it("told nothing while Envoy's ceiling is lower, fairgate says why the queued request got a 504", async () => {
    const parts = await setup(undefined);
    track(parts);
    // fairgate believes the shipped 300 s and asks for 120.5 s; Envoy ignores it (above its 120 s).
    assert.deepEqual(await oneQueued(parts.front), [200, 504]);
    assert.deepEqual(await oneQueued(parts.front), [200, 504]);
    assert.equal(parts.front.proxy.stats.override_message_timeout_ignored, 2);
    assert.equal(await ignoredCount(parts.gw), 2);
    const warnings = parts.logger.records.filter((r) => r.level === "warn" && /ignored/.test(r.msg));
    assert.equal(warnings.length, 1, "logged once per cause");
    assert.match(warnings[0]?.msg ?? "", /server\.envoy\.maxMessageTimeoutMs/);
    assert.equal(warnings[0]?.overrideMs, 120_500);
    const ready = await parts.gw.gateway.readiness();
    assert.equal(ready.ready, true);
    assert.equal(ready.warnings?.[0]?.code, "envoy_override_ignored");
    assert.equal(ready.warnings?.[0]?.count, 2);
  });

  it("never asks Envoy for more than its max_message_timeout, even for a tenant allowed longer", async () => {
    // maxQueueWaitMs equals the ceiling: held 119 s at most, override 119.5 s (≤ 120 s).
    const parts = await setup({ maxMessageTimeoutMs: ENVOY_MAX_MESSAGE_TIMEOUT_MS });
    track(parts);
    assert.deepEqual(await oneQueued(parts.front), [200, 200]);
    // What Envoy itself counts: the override was honoured, none ignored.
    const stats = parts.front.proxy.stats;
    assert.ok(stats.override_message_timeout_received >= 1);
    assert.equal(stats.override_message_timeout_ignored, 0);
  });
});
