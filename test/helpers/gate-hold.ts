import assert from "node:assert/strict";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import type { TestGateway } from "./gateway.ts";
import {
  chatBody,
  type extProcClient,
  openRawStream,
  type RawStream,
  requestBody,
  requestHeaders,
} from "./raw-ext-proc.ts";

/**
 * The admission gate's behaviour on a saturated engine, as Envoy sees it: the idle backend
 * takes one request, two more are held in the fair queue while the engine stays full, and
 * both go within `releaseWithinMs` once `drain()` makes the engine report room.
 */
export async function assertHeldUntilDrained(options: {
  gw: TestGateway;
  client: ReturnType<typeof extProcClient>;
  drain: () => void;
  releaseWithinMs: number;
}): Promise<void> {
  const { gw, client } = options;
  const first = openRawStream(client);
  first.send(requestHeaders({ authorization: "Bearer key-acme" }));
  await first.next();
  first.send(requestBody(chatBody()));
  assert.ok((await first.next()).request_body, "first request dispatched to the idle backend");

  const held: RawStream[] = [];
  for (const tenant of ["globex", "acme"]) {
    const stream = openRawStream(client);
    stream.send(requestHeaders({ authorization: `Bearer key-${tenant}` }));
    await stream.next();
    stream.send(requestBody(chatBody()));
    const reply = await stream.next();
    assert.ok(reply.override_message_timeout, `${tenant}'s request is held in the fair queue`);
    held.push(stream);
  }
  // Several scrapes later the engine is still full: nothing moves.
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(gw.gateway.scheduler.snapshot().backends[0]?.queued, 2);
  assert.equal(gw.gateway.scheduler.snapshot().backends[0]?.inFlight, 1);

  options.drain();
  const startedAt = Date.now();
  for (const stream of held) {
    const reply = await stream.next(options.releaseWithinMs + 1_000);
    assert.ok(reply.request_body, "released once the engine reports room");
  }
  const waited = Date.now() - startedAt;
  assert.ok(waited < options.releaseWithinMs, `released ${waited} ms after the engine drained`);
  assert.equal(gw.gateway.scheduler.snapshot().backends[0]?.queued, 0);
  for (const stream of [first, ...held]) stream.end();
}

/** A vLLM /metrics exposition reporting the given KV-cache usage (one engine, one running). */
export function vllmMetricsWithKv(kv: number): string {
  return [
    "# HELP vllm:num_requests_running Number of requests in model execution batches.",
    "# TYPE vllm:num_requests_running gauge",
    'vllm:num_requests_running{engine="0",model_name="test-model"} 1.0',
    "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.",
    "# TYPE vllm:num_requests_waiting gauge",
    'vllm:num_requests_waiting{engine="0",model_name="test-model"} 0.0',
    "# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.",
    "# TYPE vllm:kv_cache_usage_perc gauge",
    `vllm:kv_cache_usage_perc{engine="0",model_name="test-model"} ${kv}`,
    "",
  ].join("\n");
}

/** Polls `probe` every 20 ms until it holds; fails after `timeoutMs`. */
export async function until(what: string, probe: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!probe()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** A vLLM stand-in on a free port: /metrics reports `kv()`, /health is 200. */
export async function startFakeVllm(kv: () => number): Promise<{ server: Server; metricsUrl: string }> {
  const server = createServer((req, res) => {
    if (req.url === "/metrics")
      res.writeHead(200, { "content-type": "text/plain" }).end(vllmMetricsWithKv(kv()));
    else if (req.url === "/health") res.writeHead(200).end();
    else res.writeHead(404).end();
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return { server, metricsUrl: `http://127.0.0.1:${(server.address() as AddressInfo).port}/metrics` };
}
