import assert from "node:assert/strict";
import fc from "fast-check";
import { Redis } from "ioredis";
import { loadPolicyText } from "../../extproc/src/config/load.ts";
import type { PolicyInput } from "../../extproc/src/config/schema.ts";
import { FairgateError } from "../../extproc/src/errors.ts";
import { parseRequestBody } from "../../extproc/src/openai/parse.ts";
import { approximateCounter } from "../../extproc/src/openai/tokens.ts";
import { startTestGateway } from "../helpers/gateway.ts";
import { standardPolicyInput } from "../helpers/policy.ts";
import { extProcClient } from "../helpers/raw-ext-proc.ts";
import { startRedis } from "../helpers/redis.ts";
import { bodyArbitrary, FUZZ_MAX_BODY_BYTES, type StreamCase, streamCase } from "./cases.ts";
import { runCase } from "./driver.ts";
import { policyText } from "./policy-cases.ts";

export interface FuzzOptions {
  seed: number;
  /** Generated ext_proc streams. */
  streams: number;
  /** Generated policy files, and request bodies for the parser. */
  policies: number;
  bodies: number;
  /** Streams in flight at once (so requests queue, time out and get cancelled together). */
  concurrency: number;
  store: "memory" | "redis";
  log?: (line: string) => void;
}

export interface FuzzReport {
  cases: { streams: number; policies: number; bodies: number; total: number };
  /** How the streams ended: HTTP status of the immediate response, "continued", or grpc:N. */
  outcomes: Record<string, number>;
  /** What fairgate counted (fairgate_requests_total by outcome and code). */
  gatewayOutcomes: Record<string, number>;
  violations: string[];
  heapGrowthMb: number;
  leftover: { queued: number; inFlight: number; leases: number };
  seconds: number;
}

/** A policy whose limits are small enough for generated traffic to hit every refusal. */
function fuzzPolicy(redisUrl: string | undefined): PolicyInput {
  const base = standardPolicyInput({
    backends: [{ name: "engine", maxInFlightRequests: 2 }],
    requests: { maxBodyBytes: FUZZ_MAX_BODY_BYTES, maxTokensCeiling: 100_000, defaultMaxTokens: 256 },
  });
  const limits: Record<string, Record<string, number>> = {
    acme: { maxConcurrency: 2, maxQueued: 8, maxQueueWaitMs: 400, maxContextTokens: 4096 },
    globex: { rpm: 100_000, tpm: 50_000, maxQueueWaitMs: 300 },
    initech: { maxQueued: 1, maxQueueWaitMs: 200, tokensPerDay: 10_000_000 },
  };
  return {
    ...base,
    ...(redisUrl
      ? { store: { redis: redisUrl, onOutage: "fail-closed", timeoutMs: 500, leaseTtlMs: 30_000 } }
      : {}),
    tenants: (base.tenants ?? []).map((t) => ({ ...t, limits: { ...t.limits, ...limits[t.id] } })),
    defaults: { tier: "standard", limits: { maxQueueWaitMs: 300 } },
  };
}

const heapMb = () => {
  (globalThis as { gc?: () => void }).gc?.();
  return process.memoryUsage().heapUsed / 2 ** 20;
};

export async function runFuzz(options: FuzzOptions): Promise<FuzzReport> {
  const started = Date.now();
  const log = options.log ?? (() => {});
  const violations: string[] = [];
  const outcomes: Record<string, number> = {};
  const gatewayOutcomes: Record<string, number> = {};
  /** A failed property, with its (shrunk) counterexample cut short: some are megabytes. */
  const record = <T>(what: string, details: fc.RunDetails<T>) => {
    if (!details.failed) return;
    const example = String(fc.stringify(details.counterexample)).slice(0, 400);
    violations.push(
      `${what} case (seed ${options.seed}, path ${details.counterexamplePath}): ${String(details.errorInstance).slice(0, 300)}; input ${example}`,
    );
  };

  // 1. Policy files: an answer, never a throw; every error names a line inside the file.
  record(
    "policy",
    fc.check(
      fc.property(policyText, (text) => {
        const result = loadPolicyText(text);
        if (result.ok) return;
        assert.ok(result.errors.length > 0, "a refused policy names at least one error");
        const lines = text.split("\n").length;
        for (const error of result.errors) {
          assert.ok(error.message.length > 0);
          assert.ok(
            error.line === undefined || (error.line >= 1 && error.line <= lines),
            `line ${error.line}`,
          );
        }
      }),
      { seed: options.seed, numRuns: options.policies },
    ),
  );
  log(`policies: ${options.policies} cases`);

  // 2. The body parser alone: a FairgateError from the catalog, never anything else.
  record(
    "body",
    fc.check(
      fc.property(
        bodyArbitrary,
        fc.constantFrom("chat", "completions", "embeddings" as const),
        (bytes, kind) => {
          try {
            parseRequestBody(kind as "chat", bytes, {
              maxBodyBytes: FUZZ_MAX_BODY_BYTES,
              maxTokensCeiling: 100_000,
              defaultMaxTokens: 256,
              counter: approximateCounter,
            });
          } catch (error) {
            assert.ok(error instanceof FairgateError, `threw ${String(error)}`);
            assert.ok(error.status >= 400 && error.status < 500, `${error.code} is ${error.status}`);
          }
        },
      ),
      { seed: options.seed, numRuns: options.bodies },
    ),
  );
  log(`bodies: ${options.bodies} cases`);

  // 3. ext_proc streams against a real gateway over gRPC.
  const redis = options.store === "redis" ? await startRedis() : undefined;
  const gw = await startTestGateway(fuzzPolicy(redis?.url));
  const client = extProcClient(gw.gateway.grpcPort);
  const heapBefore = heapMb();
  let leftover = { queued: 0, inFlight: 0, leases: 0 };
  try {
    // Generated a batch at a time: all of them at once would hold gigabytes of bodies, and
    // the heap measured here is meant to be the gateway's.
    const BATCH = 500;
    let batch: StreamCase[] = [];
    let batchStart = 0;
    const caseAt = (index: number): StreamCase | undefined => {
      if (index >= options.streams) return undefined;
      if (index >= batchStart + batch.length || index < batchStart) {
        batchStart = index - (index % BATCH);
        batch = fc.sample(streamCase, {
          seed: options.seed + batchStart / BATCH,
          numRuns: Math.min(BATCH, options.streams - batchStart),
        });
      }
      return batch[index - batchStart];
    };
    let next = 0;
    const worker = async () => {
      while (next < options.streams) {
        const index = next++;
        const testCase = caseAt(index);
        if (!testCase) continue;
        const outcome = await runCase(client, testCase);
        outcomes[outcome.result] = (outcomes[outcome.result] ?? 0) + 1;
        for (const v of outcome.violations) {
          if (violations.length < 50) violations.push(`stream case ${index} (seed ${options.seed}): ${v}`);
        }
        if (index > 0 && index % 10_000 === 0)
          log(`streams: ${index}/${options.streams}, heap ${heapMb().toFixed(0)} MB`);
      }
    };
    await Promise.all(Array.from({ length: options.concurrency }, worker));
    leftover = await settle(gw.gateway.httpPort, redis?.url);
    const counted = await gw.gateway.metrics.requests.get();
    for (const v of counted.values) {
      const key = `${v.labels.outcome}${v.labels.code ? ` ${v.labels.code}` : ""}`;
      gatewayOutcomes[key] = (gatewayOutcomes[key] ?? 0) + v.value;
    }
    if (leftover.queued || leftover.inFlight || leftover.leases) {
      violations.push(`left behind after every stream ended: ${JSON.stringify(leftover)}`);
    }
  } finally {
    client.close();
    await gw.close();
    await redis?.stop();
  }
  const heapGrowthMb = heapMb() - heapBefore;
  log(`streams: ${options.streams} cases, outcomes ${JSON.stringify(outcomes)}`);
  return {
    cases: {
      streams: options.streams,
      policies: options.policies,
      bodies: options.bodies,
      total: options.streams + options.policies + options.bodies,
    },
    outcomes,
    gatewayOutcomes,
    violations,
    heapGrowthMb,
    leftover,
    seconds: (Date.now() - started) / 1000,
  };
}

/** What is still held once every stream is over and the usage grace has passed: queue
 * entries and slots (from /v1/queue) and concurrency leases (the Redis keys). */
async function settle(httpPort: number, redisUrl: string | undefined) {
  const deadline = Date.now() + 5_000;
  for (;;) {
    const view = (await (await fetch(`http://127.0.0.1:${httpPort}/v1/queue`)).json()) as {
      backends: Array<{ queued: number; in_flight: number }>;
    };
    const queued = view.backends.reduce((s, b) => s + b.queued, 0);
    const inFlight = view.backends.reduce((s, b) => s + b.in_flight, 0);
    let leases = 0;
    if (redisUrl) {
      const redis = new Redis(redisUrl);
      try {
        for (const key of await redis.keys("fairgate:b:*:leases")) leases += await redis.zcard(key);
      } finally {
        redis.disconnect();
      }
    }
    if ((queued === 0 && inFlight === 0 && leases === 0) || Date.now() > deadline)
      return { queued, inFlight, leases };
    await new Promise((r) => setTimeout(r, 100));
  }
}
