/**
 * `make demo`: fairgate in embedded mode (memory store) with its built-in Envoy-faithful
 * proxy in front of a small OpenAI-compatible stand-in engine that serves at most four
 * requests at a time. Three tenants send traffic; the noisy one floods. The demo prints
 * what each client saw (status, wait headers) and the live queue, then exits.
 * The engine simulator issue replaces the stand-in with `fairgate sim-engine`.
 */
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { fileURLToPath } from "node:url";
import { loadPolicyFile } from "../extproc/src/config/load.ts";
import { startGateway } from "../extproc/src/gateway.ts";
import { SHIPPED_MAX_MESSAGE_TIMEOUT_MS } from "../extproc/src/grpc/processing-mode.ts";
import { silentLogger } from "../extproc/src/log.ts";
import { startExtProcProxy } from "../extproc/src/proxy/proxy-server.ts";

const ENGINE_SLOTS = 4;
const GENERATION_MS = 300;

async function main(): Promise<void> {
  const loaded = await loadPolicyFile(fileURLToPath(new URL("../policies/demo.yaml", import.meta.url)));
  if (!loaded.ok) throw new Error("policies/demo.yaml is invalid; run fairgate validate on it");
  // The stand-in engine serves ENGINE_SLOTS requests at a time, so the gateway caps at that.
  const policy = loaded.policy;
  const capped = {
    ...policy,
    backends: policy.backends.map((b) => ({ ...b, maxInFlightRequests: ENGINE_SLOTS })),
  };

  let busy = 0;
  const engine = createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on("data", (c: Buffer) => chunks.push(c));
    request.on("end", () => {
      busy++;
      setTimeout(() => {
        busy--;
        const body = JSON.stringify({
          object: "chat.completion",
          choices: [{ index: 0, message: { role: "assistant", content: "ok" }, finish_reason: "stop" }],
          usage: { prompt_tokens: 10, completion_tokens: 1, total_tokens: 11 },
        });
        response.writeHead(200, {
          "content-type": "application/json",
          "content-length": Buffer.byteLength(body),
        });
        response.end(body);
      }, GENERATION_MS);
    });
  });
  await new Promise<void>((resolve) => engine.listen(0, "127.0.0.1", resolve));
  const enginePort = (engine.address() as AddressInfo).port;

  const gateway = await startGateway({
    policy: () => capped as typeof policy,
    grpcListen: "127.0.0.1:0",
    httpListen: "127.0.0.1:0",
    logger: silentLogger,
  });
  const proxy = await startExtProcProxy({
    listen: "127.0.0.1:0",
    upstream: `http://127.0.0.1:${enginePort}`,
    extProc: {
      grpcTarget: `127.0.0.1:${gateway.grpcPort}`,
      maxMessageTimeoutMs: SHIPPED_MAX_MESSAGE_TIMEOUT_MS,
    },
    logger: silentLogger,
  });
  out(
    `fairgate demo: proxy ${proxy.url} → fairgate (gRPC :${gateway.grpcPort}, HTTP :${gateway.httpPort}) → engine (${ENGINE_SLOTS} slots)\n\n`,
  );

  const send = async (tenant: string, extra: Record<string, string> = {}) => {
    const started = performance.now();
    const response = await fetch(`${proxy.url}/v1/chat/completions`, {
      method: "POST",
      headers: { authorization: `Bearer demo-key-${tenant}`, "content-type": "application/json", ...extra },
      body: JSON.stringify({ model: "demo", messages: [{ role: "user", content: "hello" }], max_tokens: 64 }),
    });
    const text = await response.text();
    return {
      tenant,
      status: response.status,
      ms: Math.round(performance.now() - started),
      waited: response.headers.get("x-fairgate-queue-wait-ms"),
      estimated: response.headers.get("x-fairgate-estimated-wait-ms"),
      worst: response.headers.get("x-fairgate-worst-case-wait-ms"),
      code: response.status === 200 ? "" : (JSON.parse(text) as { error: { code: string } }).error.code,
    };
  };

  out("1. an unknown key and a malformed body are refused at the gateway:\n");
  const unknown = await fetch(`${proxy.url}/v1/chat/completions`, {
    method: "POST",
    headers: { authorization: "Bearer not-a-key" },
    body: "{}",
  });
  out(`   unknown key → ${unknown.status} ${await unknown.text()}\n`);
  const malformed = await fetch(`${proxy.url}/v1/chat/completions`, {
    method: "POST",
    headers: { authorization: "Bearer demo-key-victim-a" },
    body: "{not json",
  });
  out(`   bad JSON    → ${malformed.status} ${await malformed.text()}\n\n`);

  out("2. noisy sends 24 requests at once; victim-a and victim-b send one each just after:\n");
  const flood = Array.from({ length: 24 }, () => send("noisy"));
  await sleep(50);
  const victims = [send("victim-a"), send("victim-b")];
  const ticker = setInterval(async () => {
    const queue = (await (await fetch(`http://127.0.0.1:${gateway.httpPort}/v1/queue`)).json()) as {
      tenants: Array<{ tenant: string; queued: number; in_flight: number; worst_case_wait_ms: number }>;
    };
    const line = queue.tenants
      .map((t) => `${t.tenant}: ${t.queued} queued/${t.in_flight} running`)
      .join("  ");
    out(`   [queue] engine busy ${busy}/${ENGINE_SLOTS}  ${line}\n`);
  }, 400);
  const results = await Promise.all([...flood, ...victims]);
  clearInterval(ticker);

  out("\n   tenant     status  total ms  held ms  estimated ms  worst-case ms\n");
  for (const r of results.slice(-4)) {
    out(
      `   ${r.tenant.padEnd(10)} ${String(r.status).padEnd(7)} ${String(r.ms).padStart(8)}  ${String(r.waited).padStart(7)}  ${String(r.estimated).padStart(12)}  ${String(r.worst).padStart(13)}\n`,
    );
  }

  out("\n3. a client that will not wait longer than 100 ms is told at once:\n");
  const blockers = Array.from({ length: 8 }, () => send("noisy"));
  await sleep(20);
  const impatient = await send("victim-a", { "x-fairgate-max-wait-ms": "100" });
  out(`   victim-a with x-fairgate-max-wait-ms: 100 → ${impatient.status} ${impatient.code}\n`);
  await Promise.all(blockers);

  const metrics = await (await fetch(`http://127.0.0.1:${gateway.httpPort}/metrics`)).text();
  const admitted = metrics.split("\n").filter((l) => l.startsWith("fairgate_requests_total{"));
  out(`\nSummary (/metrics):\n${admitted.map((l) => `   ${l}`).join("\n")}\n`);
  out(
    "\nToday's scheduler is FIFO (what vLLM does alone): the victims waited behind noisy's flood.\n" +
      "The weighted fair queue (next issues) serves them ahead of it; `fairgate bench --compare` will measure it.\n",
  );

  await proxy.close();
  await gateway.shutdown(0);
  engine.close();
  engine.closeAllConnections();
}

function out(text: string): void {
  process.stdout.write(text);
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

await main();
