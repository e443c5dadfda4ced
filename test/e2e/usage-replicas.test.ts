/**
 * Two fairgate replicas sharing one budget store, as several replicas share Redis: Envoy
 * load-balances the two ext_proc streams of a request independently, so the main filter
 * may talk to replica A while the usage filter talks to replica B. B then reconciles the
 * tenant's budgets itself from the request's x-fairgate-tenant / x-fairgate-charged-tokens
 * headers; A keeps out of it. Either way the TPM bucket ends at the actual usage.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { MemoryBudgetStore } from "../../extproc/src/budget/memory-store.ts";
import type { BudgetLimits } from "../../extproc/src/budget/store.ts";
import { ManualClock } from "../../extproc/src/clock.ts";
import { SHIPPED_MAX_MESSAGE_TIMEOUT_MS } from "../../extproc/src/grpc/processing-mode.ts";
import { silentLogger } from "../../extproc/src/log.ts";
import { usageFilterConfig } from "../../extproc/src/proxy/config.ts";
import { type ExtProcProxy, startExtProcProxy } from "../../extproc/src/proxy/proxy-server.ts";
import { httpRequest, type RecordingUpstream, startRecordingUpstream } from "../helpers/ext-proc-fake.ts";
import { startTestGateway, type TestGateway } from "../helpers/gateway.ts";
import { standardPolicyInput } from "../helpers/policy.ts";

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

describe("budget reconciliation when the usage stream reaches another replica", () => {
  const store = new CountingStore({ clock: new ManualClock() });
  let a: TestGateway;
  let b: TestGateway;
  let upstream: RecordingUpstream;
  const proxies: ExtProcProxy[] = [];

  const proxy = async (mainPort: number, usagePort: number) => {
    const started = await startExtProcProxy({
      listen: "127.0.0.1:0",
      upstream: upstream.url,
      extProc: {
        grpcTarget: `127.0.0.1:${mainPort}`,
        maxMessageTimeoutMs: SHIPPED_MAX_MESSAGE_TIMEOUT_MS,
        failureModeAllow: false,
        maxRequestBodyBytes: 4 * 1024 * 1024,
      },
      observers: [usageFilterConfig(`127.0.0.1:${usagePort}`)],
      logger: silentLogger,
    });
    proxies.push(started);
    return started;
  };

  const remaining = async () => (await store.peek("globex", { tpm: TPM })).tokens?.remaining ?? Number.NaN;

  const post = (url: string, maxTokens: number | null = MAX_TOKENS) =>
    httpRequest(url, {
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

  before(async () => {
    const input = standardPolicyInput();
    input.tenants = (input.tenants ?? []).map((t) =>
      t.id === "globex" ? { ...t, limits: { tpm: TPM } } : t,
    );
    a = await startTestGateway(input, { budgetStore: store });
    b = await startTestGateway(input, { budgetStore: store });
    upstream = await startRecordingUpstream((_request, response) => {
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
