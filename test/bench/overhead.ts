/**
 * Pass-through overhead of fairgate over ext_proc: one stream per request, exactly the
 * phases Envoy sends in fairgate's processing mode (request headers → request body →
 * response headers → end). The baseline, measured in the same run on the same gRPC stack,
 * is a processor that answers CONTINUE to everything; the difference is what fairgate's
 * identification, parsing, scheduling and accounting add.
 *
 *   node --import tsx test/bench/overhead.ts [--requests N] [--json FILE]
 */
import { writeFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { hashApiKey } from "../../extproc/src/identity/identify.ts";
import { passThrough, startFakeExtProc } from "../helpers/ext-proc-fake.ts";
import { startTestGateway } from "../helpers/gateway.ts";
import { standardPolicyInput } from "../helpers/policy.ts";
import {
  extProcClient,
  openRawStream,
  requestBody,
  requestHeaders,
  responseHeaders,
} from "../helpers/raw-ext-proc.ts";

const { values } = parseArgs({
  options: { requests: { type: "string", default: "4000" }, json: { type: "string" } },
});
const totalRequests = Number(values.requests);

const chatBody = {
  model: "meta-llama/Llama-3.1-8B-Instruct",
  messages: [
    { role: "system", content: "You are a helpful assistant." },
    {
      role: "user",
      content: "Summarise the benefits of weighted fair queuing for shared inference in three bullets.",
    },
  ],
  max_tokens: 256,
  stream: true,
};

async function oneRequest(client: ReturnType<typeof extProcClient>, key: string): Promise<number> {
  const started = performance.now();
  const stream = openRawStream(client);
  stream.send(requestHeaders({ authorization: `Bearer ${key}`, "content-type": "application/json" }));
  await stream.next();
  stream.send(requestBody(chatBody));
  await stream.next();
  stream.send(responseHeaders(200));
  await stream.next();
  stream.end();
  return performance.now() - started;
}

async function measure(port: number, concurrency: number, requests: number): Promise<number[]> {
  const client = extProcClient(port);
  const latencies: number[] = [];
  // Warm-up: connection, JIT, proto caches.
  for (let i = 0; i < 200; i++) await oneRequest(client, "key-acme");
  let issued = 0;
  const worker = async (w: number) => {
    while (issued < requests) {
      issued++;
      latencies.push(await oneRequest(client, w % 2 ? "key-acme" : "key-globex"));
    }
  };
  await Promise.all(Array.from({ length: concurrency }, (_, w) => worker(w)));
  client.close();
  return latencies.sort((a, b) => a - b);
}

const percentile = (sorted: number[], p: number) =>
  sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? 0;

async function main() {
  const gateway = await startTestGateway(
    standardPolicyInput({
      backends: [{ name: "engine", maxInFlightRequests: 10_000 }],
      tenants: [
        { id: "acme", tier: "premium", apiKeys: [hashApiKey("key-acme")] },
        { id: "globex", tier: "standard", apiKeys: [hashApiKey("key-globex")] },
      ],
    }),
  );
  const baseline = await startFakeExtProc(passThrough);
  const rows: Array<Record<string, number | string>> = [];
  for (const concurrency of [1, 32]) {
    const base = await measure(baseline.port, concurrency, totalRequests);
    const fair = await measure(gateway.gateway.grpcPort, concurrency, totalRequests);
    rows.push({
      concurrency,
      requests: totalRequests,
      baseline_p50_ms: round(percentile(base, 50)),
      baseline_p99_ms: round(percentile(base, 99)),
      fairgate_p50_ms: round(percentile(fair, 50)),
      fairgate_p99_ms: round(percentile(fair, 99)),
      added_p50_ms: round(percentile(fair, 50) - percentile(base, 50)),
      added_p99_ms: round(percentile(fair, 99) - percentile(base, 99)),
      ratio_p50: round(percentile(fair, 50) / percentile(base, 50)),
    });
  }
  await baseline.close();
  await gateway.close();

  process.stdout.write(
    "ext_proc pass-through latency per request (headers → body → response headers → end)\n",
  );
  process.stdout.write(
    "| C | requests | baseline p50 | baseline p99 | fairgate p50 | fairgate p99 | added p50 | added p99 | p50 ratio |\n|---|---|---|---|---|---|---|---|---|\n",
  );
  for (const r of rows) {
    process.stdout.write(
      `| ${r.concurrency} | ${r.requests} | ${r.baseline_p50_ms} ms | ${r.baseline_p99_ms} ms | ${r.fairgate_p50_ms} ms | ${r.fairgate_p99_ms} ms | ${r.added_p50_ms} ms | ${r.added_p99_ms} ms | ${r.ratio_p50}× |\n`,
    );
  }
  if (values.json) writeFileSync(values.json, JSON.stringify(rows, null, 2));
}

function round(value: number): number {
  return Math.round(value * 1000) / 1000;
}

await main();
