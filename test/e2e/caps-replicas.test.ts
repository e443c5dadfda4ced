/**
 * Backend caps across three gateway replicas sharing one Redis, measured where they matter:
 * at the engine. Each replica is a whole in-process gateway with the built-in proxy in
 * front; a stand-in engine counts the requests it is serving at once, per backend. A burst
 * much larger than the cap reaches all three replicas within one exchange interval, so
 * no replica learns of the others' new requests from the periodic exchange in time: the
 * cap holds only if the replicas' claims on it add up to at most the cap.
 */
import assert from "node:assert/strict";
import type { ServerResponse } from "node:http";
import { after, before, describe, it } from "node:test";
import { Redis } from "ioredis";
import type { PolicyInput } from "../../extproc/src/config/schema.ts";
import { parseRequestBody } from "../../extproc/src/openai/parse.ts";
import { createTokenCounter } from "../../extproc/src/openai/tokens.ts";
import { httpRequest, type RecordingUpstream, startRecordingUpstream } from "../helpers/ext-proc-fake.ts";
import { type FrontProxy, startBuiltinFront } from "../helpers/front-proxy.ts";
import { startTestGateway, type TestGateway } from "../helpers/gateway.ts";
import { policyFrom, standardPolicyInput } from "../helpers/policy.ts";
import { startRedis, type TestRedis } from "../helpers/redis.ts";

const REPLICAS = 3;
const PER_REPLICA = 8;
const HOLD_MS = 150;
const PREFILL_MS = 30;
const PREFIX = "caps:";
const MESSAGE_TIMEOUT_MS = 2_000;
const MAX_IN_FLIGHT_REQUESTS = 4;
/** max_tokens of the KV-capped requests: each reserves its 22-token prompt + 1,000 KV tokens, so 3 fit. */
const KV_MAX_TOKENS = 1_000;
const MAX_IN_FLIGHT_TOKENS = 3_500;
/** A 109-token prompt (as fairgate counts it) for the prefill-capped backend: 3 fit its budget. */
const LONG_PROMPT = Array.from({ length: 45 }, (_, i) => `w${i}`).join(" ");
const MAX_PREFILL_TOKENS = 350;

const REQUESTS = policyFrom(standardPolicyInput()).source.requests;

/**
 * The engine: it prefills a request's prompt for PREFILL_MS, then sends the first bytes of
 * the response (fairgate's prefill budget frees a prompt when it sees them), and ends it at
 * HOLD_MS with max_tokens generated. It counts what it serves at once: requests and the KV
 * they reserve until the end, prompts until their first bytes.
 */
async function countingEngine(): Promise<RecordingUpstream & { peak: Map<string, Load> }> {
  const counter = await createTokenCounter("approximate");
  const active = new Map<string, Load>();
  const peak = new Map<string, Load>();
  const change = (model: string, delta: Load) => {
    const now = add(active.get(model), delta);
    active.set(model, now);
    const was = peak.get(model) ?? { requests: 0, kvTokens: 0, promptTokens: 0 };
    peak.set(model, {
      requests: Math.max(was.requests, now.requests),
      kvTokens: Math.max(was.kvTokens, now.kvTokens),
      promptTokens: Math.max(was.promptTokens, now.promptTokens),
    });
  };
  const upstream = await startRecordingUpstream((_request, response: ServerResponse, body: Buffer) => {
    // Counted as fairgate counts them, so the engine's sums compare with the caps exactly.
    const parsed = parseRequestBody("chat", body, { ...REQUESTS, counter });
    const model = parsed.model ?? "";
    const prompt = parsed.promptTokens;
    const output = parsed.expectedOutputTokens;
    const kv = prompt + output;
    change(model, { requests: 1, kvTokens: kv, promptTokens: prompt });
    setTimeout(() => {
      change(model, { requests: 0, kvTokens: 0, promptTokens: -prompt });
      response.writeHead(200, { "content-type": "application/json" });
      response.write(
        '{"object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"ok"}}],',
      );
    }, PREFILL_MS);
    setTimeout(() => {
      change(model, { requests: -1, kvTokens: -kv, promptTokens: 0 });
      response.end(`"usage":{"prompt_tokens":${prompt},"completion_tokens":${output},"total_tokens":${kv}}}`);
    }, HOLD_MS);
  });
  return Object.assign(upstream, { peak });
}

/** What the engine serves at once: requests, the KV they reserve, their prompts. */
interface Load {
  requests: number;
  kvTokens: number;
  promptTokens: number;
}

function add(load: Load | undefined, delta: Load): Load {
  return {
    requests: (load?.requests ?? 0) + delta.requests,
    kvTokens: (load?.kvTokens ?? 0) + delta.kvTokens,
    promptTokens: (load?.promptTokens ?? 0) + delta.promptTokens,
  };
}

describe("backend caps across three replicas sharing Redis", () => {
  let redis: TestRedis;
  let probe: Redis;
  let engine: Awaited<ReturnType<typeof countingEngine>>;
  const gateways: TestGateway[] = [];
  const fronts: FrontProxy[] = [];

  before(async () => {
    redis = await startRedis();
    probe = new Redis(redis.url);
    engine = await countingEngine();
    const input: PolicyInput = standardPolicyInput({
      store: { redis: redis.url, keyPrefix: PREFIX, timeoutMs: 500 },
      backends: [
        { name: "slots", models: ["slots"], maxInFlightRequests: MAX_IN_FLIGHT_REQUESTS },
        { name: "kv", models: ["kv"], maxInFlightTokens: MAX_IN_FLIGHT_TOKENS },
        { name: "prefill", models: ["prefill"], maxPrefillTokensInFlight: MAX_PREFILL_TOKENS },
      ],
    });
    for (let i = 0; i < REPLICAS; i++) {
      // Three gateways, three proxies and the engine share one event loop here: Envoy's
      // 200 ms default message timeout would answer 504 whenever that loop lags.
      const gateway = await startTestGateway(input, { messageTimeoutMs: MESSAGE_TIMEOUT_MS });
      gateways.push(gateway);
      fronts.push(
        await startBuiltinFront(gateway.gateway.grpcPort, engine.url, undefined, {
          messageTimeoutMs: MESSAGE_TIMEOUT_MS,
        }),
      );
    }
    // Every replica has joined each backend's exchange before the burst.
    const deadline = Date.now() + 5_000;
    for (const backend of ["slots", "kv", "prefill"]) {
      while ((await probe.hlen(`${PREFIX}q:{${backend}}:replicas`)) < REPLICAS) {
        if (Date.now() > deadline) throw new Error(`replicas did not join ${backend}'s exchange`);
        await new Promise((r) => setTimeout(r, 20));
      }
    }
  });
  after(async () => {
    for (const front of fronts) await front.close();
    for (const gateway of gateways) await gateway.close();
    await engine.close();
    probe.disconnect();
    await redis.stop();
  });

  /** PER_REPLICA requests at once through every replica's proxy; resolves with their statuses. */
  async function burst(
    model: string,
    content: string,
    maxTokens: number,
    tenants = ["globex", "acme"],
  ): Promise<number[]> {
    const all = fronts.flatMap((front, replica) =>
      Array.from({ length: PER_REPLICA }, (_, i) =>
        httpRequest(front.url, {
          method: "POST",
          path: "/v1/chat/completions",
          headers: {
            authorization: `Bearer key-${tenants[i % tenants.length]}`,
            "content-type": "application/json",
          },
          body: JSON.stringify({
            model,
            messages: [{ role: "user", content: `${content} (replica ${replica}, request ${i})` }],
            max_tokens: maxTokens,
          }),
        }),
      ),
    );
    return (await Promise.all(all)).map((response) => response.status);
  }

  it(`maxInFlightTokens ${MAX_IN_FLIGHT_TOKENS}: at most 3 requests of 1,022 KV tokens at once`, async () => {
    const statuses = await burst("kv", "Say ok.", KV_MAX_TOKENS);
    assert.deepEqual(statuses, Array(REPLICAS * PER_REPLICA).fill(200));
    const peak = engine.peak.get("kv");
    assert.ok(peak && peak.kvTokens <= MAX_IN_FLIGHT_TOKENS, `peak KV in flight ${peak?.kvTokens}`);
    assert.equal(peak.requests, 3);
  });

  it(`maxInFlightRequests ${MAX_IN_FLIGHT_REQUESTS}: the engine never serves more than ${MAX_IN_FLIGHT_REQUESTS} at once`, async () => {
    const statuses = await burst("slots", "Say ok.", 8);
    assert.deepEqual(statuses, Array(REPLICAS * PER_REPLICA).fill(200));
    assert.equal(engine.peak.get("slots")?.requests, MAX_IN_FLIGHT_REQUESTS);
  });

  it(`maxPrefillTokensInFlight ${MAX_PREFILL_TOKENS}: at most 3 prompts of 109 tokens prefilling at once`, async () => {
    // One tenant: with several, the gate lets a tenant with nothing in flight start one
    // request whatever the prefill backlog (share-rules.ts), on one replica as on many.
    const statuses = await burst("prefill", LONG_PROMPT, 8, ["globex"]);
    assert.deepEqual(statuses, Array(REPLICAS * PER_REPLICA).fill(200));
    const peak = engine.peak.get("prefill")?.promptTokens ?? 0;
    assert.ok(peak <= MAX_PREFILL_TOKENS, `peak prompt tokens prefilling ${peak}`);
  });
});
