import assert from "node:assert/strict";
import { request as httpRequest } from "node:http";
import { after, before, describe, it } from "node:test";
import { policySchema } from "../../extproc/src/config/schema.ts";
import type { UsageInfo } from "../../extproc/src/pipeline/context.ts";
import { requestCost } from "../../extproc/src/queue/cost.ts";
import type { FairQueueScheduler } from "../../extproc/src/queue/fair-queue.ts";
import { getPreset } from "../../extproc/src/sim/presets.ts";
import { type SimServer, startSimServer } from "../../extproc/src/sim/sim-server.ts";
import { type FrontProxy, startBuiltinFront } from "../helpers/front-proxy.ts";
import { startTestGateway, type TestGateway } from "../helpers/gateway.ts";
import { standardPolicyInput } from "../helpers/policy.ts";

/**
 * client → built-in proxy (fairgate's filter + the usage filter in observability mode) →
 * sim-engine: fairgate learns every response's actual usage, corrects the tenant's VTC
 * counter with it, and streams keep their timing.
 */

const MODEL = "sim/test-model";
const OUTPUT_TOKENS = 60;
const MAX_TOKENS = 200;

interface Received {
  status: number;
  body: string;
  /** ms since the request was sent, one entry per chunk the client read. */
  arrivals: number[];
}

function post(url: string, body: unknown, options: { abortAfterChunks?: number } = {}): Promise<Received> {
  const payload = Buffer.from(JSON.stringify(body));
  const started = performance.now();
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      `${url}/v1/chat/completions`,
      {
        method: "POST",
        headers: {
          authorization: "Bearer key-globex",
          "content-type": "application/json",
          "content-length": payload.length,
        },
      },
      (res) => {
        const chunks: Buffer[] = [];
        const arrivals: number[] = [];
        res.on("data", (chunk: Buffer) => {
          chunks.push(chunk);
          arrivals.push(performance.now() - started);
          if (options.abortAfterChunks !== undefined && arrivals.length >= options.abortAfterChunks) {
            req.destroy();
            resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString(), arrivals });
          }
        });
        res.on("end", () =>
          resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString(), arrivals }),
        );
        res.on("error", () => {});
      },
    );
    req.on("error", (error) => {
      if (options.abortAfterChunks === undefined) reject(error);
    });
    req.end(payload);
  });
}

const chat = (extra: Record<string, unknown> = {}) => ({
  model: MODEL,
  messages: [{ role: "user", content: "Tell me a story about a lighthouse keeper." }],
  max_tokens: MAX_TOKENS,
  ...extra,
});

describe("usage accounting through the usage filter (observability mode)", () => {
  let sim: SimServer;
  let gw: TestGateway;
  let front: FrontProxy;
  const reports: UsageInfo[] = [];
  let waiters: Array<() => void> = [];
  const nextReport = async (count: number, timeoutMs = 3_000): Promise<UsageInfo> => {
    const deadline = performance.now() + timeoutMs;
    while (reports.length < count) {
      if (performance.now() > deadline) throw new Error(`no usage report #${count}`);
      await new Promise<void>((resolve) => {
        waiters.push(resolve);
        setTimeout(resolve, 50);
      });
    }
    return reports[count - 1] as UsageInfo;
  };
  const realCost = (promptTokens: number) =>
    requestCost(policySchema.parse({}).scheduling.cost, promptTokens, OUTPUT_TOKENS);
  const counter = () =>
    (gw.gateway.scheduler as FairQueueScheduler).counters().get("sim")?.get("globex") ?? 0;

  before(async () => {
    sim = await startSimServer({
      listen: "127.0.0.1:0",
      preset: getPreset("test"),
      outputLength: { median: OUTPUT_TOKENS, sigma: 0 },
      seed: 1,
    });
    gw = await startTestGateway(standardPolicyInput({ backends: [{ name: "sim" }] }), {
      onUsage: (info) => {
        reports.push(info);
        const wake = waiters;
        waiters = [];
        for (const w of wake) w();
      },
    });
    front = await startBuiltinFront(gw.gateway.grpcPort, sim.url);
  });
  after(async () => {
    await front.close();
    await gw.close();
    await sim.close();
  });

  it("a non-streamed response reports the engine's exact usage and corrects the VTC counter", async () => {
    const before = counter();
    const response = await post(front.url, chat());
    assert.equal(response.status, 200, response.body);
    const engineUsage = JSON.parse(response.body).usage;
    assert.equal(engineUsage.completion_tokens, OUTPUT_TOKENS);
    const report = await nextReport(1);
    assert.equal(report.tenant.id, "globex");
    assert.deepEqual(report.usage, {
      promptTokens: engineUsage.prompt_tokens,
      completionTokens: engineUsage.completion_tokens,
      exact: true,
      complete: true,
    });
    // VTC charged the cost of prompt + max_tokens at dispatch; completion corrected it to
    // the cost of the actual output (weight 1, the policy's default cost weights).
    const promptCounted = (report.chargedTokens ?? 0) - MAX_TOKENS;
    assert.ok(promptCounted > 0);
    assert.ok(Math.abs(counter() - before - realCost(promptCounted)) < 1e-9);
  });

  it("a streamed response reports exact usage, and its chunks still arrive spread over time", async () => {
    const before = counter();
    const response = await post(front.url, chat({ stream: true, stream_options: { include_usage: true } }));
    assert.equal(response.status, 200);
    const events = response.body
      .split("\n\n")
      .filter((e) => e.startsWith("data: {"))
      .map((e) => JSON.parse(e.slice(6)));
    const engineUsage = events.at(-1).usage;
    assert.equal(engineUsage.completion_tokens, OUTPUT_TOKENS);
    const report = await nextReport(2);
    assert.deepEqual(report.usage, {
      promptTokens: engineUsage.prompt_tokens,
      completionTokens: OUTPUT_TOKENS,
      exact: true,
      complete: true,
    });
    assert.ok(Math.abs(counter() - before - realCost((report.chargedTokens ?? 0) - MAX_TOKENS)) < 1e-9);
    // Nothing holds the stream: the client reads it piece by piece as the engine decodes.
    const span = (response.arrivals.at(-1) ?? 0) - (response.arrivals[0] ?? 0);
    assert.ok(response.arrivals.length >= 10, `only ${response.arrivals.length} reads`);
    assert.ok(span >= 50, `chunks arrived within ${span.toFixed(1)} ms`);
  });

  it("a stream without include_usage gets an estimate from the streamed text", async () => {
    const response = await post(front.url, chat({ stream: true }));
    assert.equal(response.status, 200);
    const report = await nextReport(3);
    assert.equal(report.usage?.exact, false);
    assert.equal(report.usage?.complete, true);
    // The simulator streams "token " per token; the estimate lands close to the real count.
    const estimate = report.usage?.completionTokens ?? 0;
    assert.ok(Math.abs(estimate - OUTPUT_TOKENS) <= OUTPUT_TOKENS * 0.2, `estimate ${estimate}`);
  });

  it("a client that cancels mid-stream is charged what was generated so far", async () => {
    const response = await post(front.url, chat({ stream: true }), { abortAfterChunks: 5 });
    assert.equal(response.status, 200);
    const report = await nextReport(4);
    assert.equal(report.usage?.complete, false);
    const generated = report.usage?.completionTokens ?? -1;
    assert.ok(generated > 0 && generated < OUTPUT_TOKENS, `partial ${generated}`);
    assert.equal(gw.gateway.usage.size, 0, "nothing left in the registry");
  });

  it("without the usage filter, nothing is awaited: usage is undefined and reported at once", async () => {
    const plain = await startBuiltinFront(gw.gateway.grpcPort, sim.url, undefined, { usageFilter: false });
    try {
      const response = await post(plain.url, chat());
      assert.equal(response.status, 200);
      const ended = performance.now();
      const report = await nextReport(5);
      assert.equal(report.usage, undefined);
      assert.ok(performance.now() - ended < 250, "released without waiting for the grace");
    } finally {
      await plain.close();
    }
  });

  it("sends every request's usage through one registry entry that is then gone", () => {
    const { stats } = gw.gateway.usage;
    assert.equal(stats.registered, 5);
    assert.equal(stats.missing, 1);
    // Completed responses are reported by the usage stream itself (not after the grace);
    // the cancelled one from its live view once the grace passed.
    assert.equal(stats.reported, 3);
    assert.equal(stats.partial, 1);
    assert.equal(gw.gateway.usage.size, 0);
  });
});
