/**
 * Two fairgate replicas sharing one budget store, as several replicas share Redis: Envoy
 * load-balances the two ext_proc streams of a request independently, so the main filter
 * may talk to replica A while the usage filter talks to replica B. B then reconciles the
 * tenant's budgets itself from the request's x-fairgate-tenant / x-fairgate-charged-tokens
 * headers; A keeps out of it. Either way the TPM bucket ends at the actual usage.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { Redis } from "ioredis";
import { MemoryBudgetStore } from "../../extproc/src/budget/memory-store.ts";
import type { BudgetLimits } from "../../extproc/src/budget/store.ts";
import { ManualClock } from "../../extproc/src/clock.ts";
import { SHIPPED_MAX_MESSAGE_TIMEOUT_MS } from "../../extproc/src/config/envoy-timeouts.ts";
import type { PolicyInput } from "../../extproc/src/config/schema.ts";
import { silentLogger } from "../../extproc/src/log.ts";
import { usageFilterConfig } from "../../extproc/src/proxy/config.ts";
import { type ExtProcProxy, startExtProcProxy } from "../../extproc/src/proxy/proxy-server.ts";
import { FairQueueScheduler } from "../../extproc/src/queue/fair-queue.ts";
import { httpRequest, type RecordingUpstream, startRecordingUpstream } from "../helpers/ext-proc-fake.ts";
import { startTestGateway, type TestGateway } from "../helpers/gateway.ts";
import { standardPolicyInput } from "../helpers/policy.ts";
import { startRedis, type TestRedis } from "../helpers/redis.ts";

const TPM = 100_000;
const MAX_TOKENS = 500;
const PROMPT_USED = 30;
const COMPLETION_USED = 20;

/** The shared store; it records every reconcile delta. Its clock stands still, so the
 * buckets do not refill during the test and their levels can be compared exactly. */
class CountingStore extends MemoryBudgetStore {
  readonly deltas: number[] = [];
  override reconcile(tenant: string, limits: BudgetLimits, delta: number): Promise<void> {
    this.deltas.push(delta);
    return super.reconcile(tenant, limits, delta);
  }
  /** A request's own settle carries its correction (the lease release rides along). */
  override settle(
    tenant: string,
    limits: BudgetLimits,
    leaseId: string | undefined,
    delta: number,
  ): Promise<void> {
    if (delta !== 0) this.deltas.push(delta);
    return super.settle(tenant, limits, leaseId, delta);
  }
  override async close(): Promise<void> {
    // Shared by both gateways: each closes it on shutdown.
  }
}

async function until(check: () => boolean, what: string, timeoutMs = 3_000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!check()) {
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** globex with a TPM budget, so its requests carry the budget handoff headers. */
function globexWithTpm(overrides: Partial<PolicyInput> = {}): PolicyInput {
  const input = standardPolicyInput(overrides);
  input.tenants = (input.tenants ?? []).map((t) => (t.id === "globex" ? { ...t, limits: { tpm: TPM } } : t));
  return input;
}

/** An engine that answers every request with PROMPT_USED + COMPLETION_USED tokens used. */
function startEngine(): Promise<RecordingUpstream> {
  return startRecordingUpstream((_request, response) => {
    const payload = JSON.stringify({
      choices: [{ index: 0, message: { role: "assistant", content: "Packets flow like streams" } }],
      usage: {
        prompt_tokens: PROMPT_USED,
        completion_tokens: COMPLETION_USED,
        total_tokens: PROMPT_USED + COMPLETION_USED,
      },
    });
    response.writeHead(200, {
      "content-type": "application/json",
      "content-length": Buffer.byteLength(payload),
    });
    response.end(payload);
  });
}

/** The built-in proxy with fairgate's main filter on one replica and its usage filter on another. */
function startProxy(upstream: string, mainPort: number, usagePort: number): Promise<ExtProcProxy> {
  return startExtProcProxy({
    listen: "127.0.0.1:0",
    upstream,
    extProc: {
      grpcTarget: `127.0.0.1:${mainPort}`,
      maxMessageTimeoutMs: SHIPPED_MAX_MESSAGE_TIMEOUT_MS,
      failureModeAllow: false,
      maxRequestBodyBytes: 4 * 1024 * 1024,
    },
    observers: [usageFilterConfig(`127.0.0.1:${usagePort}`)],
    logger: silentLogger,
  });
}

function post(url: string, maxTokens: number | null = MAX_TOKENS) {
  return httpRequest(url, {
    method: "POST",
    path: "/v1/chat/completions",
    headers: {
      authorization: "Bearer key-globex",
      "content-type": "application/json",
      // A client cannot forge the handoff: every x-fairgate-* request header is stripped.
      "x-fairgate-charged-tokens": "1",
    },
    body: JSON.stringify({
      model: "m",
      messages: [{ role: "user", content: "Write a haiku about load balancers." }],
      ...(maxTokens === null ? {} : { max_tokens: maxTokens }),
    }),
  });
}

describe("budget reconciliation when the usage stream reaches another replica", () => {
  const store = new CountingStore({ clock: new ManualClock() });
  let a: TestGateway;
  let b: TestGateway;
  let upstream: RecordingUpstream;
  const proxies: ExtProcProxy[] = [];

  const proxy = async (mainPort: number, usagePort: number) => {
    const started = await startProxy(upstream.url, mainPort, usagePort);
    proxies.push(started);
    return started;
  };

  const remaining = async () => (await store.peek("globex", { tpm: TPM })).tokens?.remaining ?? Number.NaN;

  before(async () => {
    a = await startTestGateway(globexWithTpm(), { budgetStore: store });
    b = await startTestGateway(globexWithTpm(), { budgetStore: store });
    upstream = await startEngine();
  });
  after(async () => {
    for (const p of proxies) await p.close();
    await a.close();
    await b.close();
    await upstream.close();
  });

  it("main stream on A, usage stream on B: B reconciles once and the TPM bucket holds the actual usage", async () => {
    const front = await proxy(a.gateway.grpcPort, b.gateway.grpcPort);
    const before = await remaining();
    const response = await post(front.url);
    assert.equal(response.status, 200, response.body.toString());

    // The upstream got the charge A made at admission, not the client's forgery.
    const sent = upstream.requests.at(-1)?.headers ?? {};
    assert.equal(sent["x-fairgate-tenant"], "globex");
    const charged = Number(sent["x-fairgate-charged-tokens"]);
    const prompt = Number(sent["x-fairgate-prompt-tokens"]);
    assert.ok(prompt > 0);
    assert.equal(charged, prompt + MAX_TOKENS);

    await until(() => b.gateway.usage.stats.orphanReconciled === 1, "B's orphan reconcile");
    await until(() => a.gateway.usage.stats.missing === 1, "A's usage to settle");
    assert.deepEqual(store.deltas, [PROMPT_USED + COMPLETION_USED - charged], "exactly one reconcile");
    assert.equal(await remaining(), before - (PROMPT_USED + COMPLETION_USED));
    // A kept out of it: its registration settled as missing (no usage stream attached there).
    assert.equal(a.gateway.usage.stats.registered, 1);
    assert.equal(a.gateway.usage.stats.orphaned, 0);
    assert.equal(b.gateway.usage.stats.registered, 0);
    assert.equal(b.gateway.usage.stats.orphaned, 1);

    const metrics = await (await fetch(`http://127.0.0.1:${b.gateway.httpPort}/metrics`)).text();
    assert.match(metrics, /^fairgate_usage_reports_total\{outcome="orphaned"\} 1$/m);
    assert.match(metrics, /^fairgate_usage_reports_total\{outcome="orphan_reconciled"\} 1$/m);
  });

  it("both streams on A: A's main stream reconciles, once, and the bucket holds the actual usage", async () => {
    const front = await proxy(a.gateway.grpcPort, a.gateway.grpcPort);
    const before = await remaining();
    const reconciles = store.deltas.length;
    const response = await post(front.url);
    assert.equal(response.status, 200, response.body.toString());
    const charged = Number(upstream.requests.at(-1)?.headers["x-fairgate-charged-tokens"]);
    await until(() => a.gateway.usage.stats.reported === 1, "A's usage report");
    await until(() => store.deltas.length > reconciles, "A's reconcile");
    await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(store.deltas.slice(reconciles), [PROMPT_USED + COMPLETION_USED - charged]);
    assert.equal(await remaining(), before - (PROMPT_USED + COMPLETION_USED));
    assert.equal(a.gateway.usage.stats.orphaned, 0);
    assert.equal(a.gateway.usage.stats.orphanReconciled, 0);
  });

  it("without max_tokens, A charges the output it learned from globex's completion, not the default", async () => {
    // The previous test's usage reached A's main stream: it learned globex answers in 20 tokens.
    const front = await proxy(a.gateway.grpcPort, a.gateway.grpcPort);
    const response = await post(front.url, null);
    assert.equal(response.status, 200, response.body.toString());
    const sent = upstream.requests.at(-1)?.headers ?? {};
    const charged = Number(sent["x-fairgate-charged-tokens"]);
    const prompt = Number(sent["x-fairgate-prompt-tokens"]);
    assert.equal(charged, prompt + COMPLETION_USED);
  });
});

describe("with Redis, the usage another replica received corrects the admitting replica's fair queue", () => {
  const store = new CountingStore({ clock: new ManualClock() });
  const PREFIX = "relay:";
  let redis: TestRedis;
  let probe: Redis;
  let a: TestGateway;
  let b: TestGateway;
  let upstream: RecordingUpstream;
  const proxies: ExtProcProxy[] = [];

  /** globex's virtual counter on the default backend, as replica A holds it. */
  const counterOnA = () => {
    const scheduler = a.gateway.scheduler;
    assert.ok(scheduler instanceof FairQueueScheduler);
    return scheduler.counters().get("default")?.get("globex");
  };
  /** globex's cluster-wide counter in Redis, the sum of every replica's charges. */
  const counterInRedis = async () => Number(await probe.hget(`${PREFIX}q:{default}:vtc`, "globex"));

  before(async () => {
    redis = await startRedis();
    probe = new Redis(redis.url);
    // Plain token counting, so counters are prompt + output tokens exactly.
    const input = globexWithTpm({
      store: { redis: redis.url, keyPrefix: PREFIX, timeoutMs: 500 },
      scheduling: { cost: { promptToken: 1, outputToken: 1, contextPerOutputToken: 0 } },
    });
    // Budgets in the counting store, to see every reconcile; queue state and relay in Redis.
    a = await startTestGateway(input, { budgetStore: store });
    b = await startTestGateway(input, { budgetStore: store });
    upstream = await startEngine();
  });
  after(async () => {
    for (const p of proxies) await p.close();
    await a.close();
    await b.close();
    await upstream.close();
    probe.disconnect();
    await redis.stop();
  });

  it("main stream on A, usage stream on B: B reconciles the budgets, A's VTC counter and output predictor learn the actual usage, once", async () => {
    const front = await startProxy(upstream.url, a.gateway.grpcPort, b.gateway.grpcPort);
    proxies.push(front);
    const response = await post(front.url);
    assert.equal(response.status, 200, response.body.toString());
    const sent = upstream.requests.at(-1)?.headers ?? {};
    const prompt = Number(sent["x-fairgate-prompt-tokens"]);
    const charged = Number(sent["x-fairgate-charged-tokens"]);
    assert.ok(prompt > 0);
    assert.equal(charged, prompt + MAX_TOKENS);
    assert.match(String(sent["x-fairgate-request-id"]), /^[0-9a-f-]{36}@[0-9a-f-]{36}$/);

    await until(() => b.gateway.usage.stats.orphanRelayed === 1, "B's relay");
    await until(() => a.gateway.usage.stats.relayApplied === 1, "A applying the relayed usage");
    await until(() => b.gateway.usage.stats.orphanReconciled === 1, "B's orphan reconcile");
    // B's budgets reconcile as before, once; A's main stream kept out of it.
    assert.deepEqual(store.deltas, [PROMPT_USED + COMPLETION_USED - charged]);
    assert.equal(a.gateway.usage.stats.missing, 1);

    // Dispatch charged prompt + max_tokens (nothing learned yet); the relay corrected it to
    // prompt + the 20 tokens generated, on A and, through A's next exchange, cluster-wide.
    assert.equal(counterOnA(), prompt + COMPLETION_USED);
    const deadline = performance.now() + 3_000;
    while ((await counterInRedis()) !== prompt + COMPLETION_USED && performance.now() < deadline)
      await new Promise((r) => setTimeout(r, 20));
    assert.equal(await counterInRedis(), prompt + COMPLETION_USED);
    // Exactly once: later exchanges of either replica leave it there.
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(await counterInRedis(), prompt + COMPLETION_USED);
    assert.equal(counterOnA(), prompt + COMPLETION_USED);

    const metricsB = await (await fetch(`http://127.0.0.1:${b.gateway.httpPort}/metrics`)).text();
    assert.match(metricsB, /^fairgate_usage_reports_total\{outcome="orphan_relayed"\} 1$/m);
    const metricsA = await (await fetch(`http://127.0.0.1:${a.gateway.httpPort}/metrics`)).text();
    assert.match(metricsA, /^fairgate_usage_reports_total\{outcome="relay_applied"\} 1$/m);
  });

  it("A's output predictor learned globex's 20-token answers from the relay: a request without max_tokens is charged that", async () => {
    // Both streams on A now, but the charge is made at admission, before this request's usage.
    const front = await startProxy(upstream.url, a.gateway.grpcPort, a.gateway.grpcPort);
    proxies.push(front);
    const response = await post(front.url, null);
    assert.equal(response.status, 200, response.body.toString());
    const sent = upstream.requests.at(-1)?.headers ?? {};
    assert.equal(
      Number(sent["x-fairgate-charged-tokens"]),
      Number(sent["x-fairgate-prompt-tokens"]) + COMPLETION_USED,
    );
  });
});
