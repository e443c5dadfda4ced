import { createServer, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { vllmMetricsWithKv } from "./gate-hold.ts";

/**
 * An engine stand-in the fault tests steer while load runs: how long a completion takes,
 * whether it fails (a 5xx storm, or connections reset), and how its vLLM /metrics behaves
 * (answers, never answers, or trickles its body).
 */
export type CompletionMode = "ok" | 500 | 503 | "reset";
export type MetricsMode = "ok" | "stall" | "trickle";

export interface StandInEngine {
  readonly url: string;
  readonly metricsUrl: string;
  delayMs: number;
  completions: CompletionMode;
  metrics: MetricsMode;
  /** KV-cache usage /metrics reports. */
  kv: number;
  /** Completions received, by request id (x-fairgate-request-id), still unanswered. */
  readonly inFlight: Set<string>;
  /** Completions received in all, and answered 200. */
  readonly received: () => number;
  readonly succeeded: () => number;
  /** /metrics requests received, and answered in full. */
  readonly scrapes: () => { received: number; answered: number };
  close(): Promise<void>;
}

export async function startStandInEngine(
  options: { delayMs?: number; kv?: number } = {},
): Promise<StandInEngine> {
  let received = 0;
  let succeeded = 0;
  const scrapes = { received: 0, answered: 0 };
  const inFlight = new Set<string>();
  const held = new Set<ServerResponse>();
  const timers = new Set<NodeJS.Timeout>();
  const later = (ms: number, run: () => void) => {
    const timer = setTimeout(() => {
      timers.delete(timer);
      run();
    }, ms);
    timers.add(timer);
  };

  const answerMetrics = (response: ServerResponse) => {
    scrapes.received++;
    const body = vllmMetricsWithKv(engine.kv);
    if (engine.metrics === "stall") {
      // Accepts the connection and the request, then says nothing.
      held.add(response);
      response.on("close", () => held.delete(response));
      return;
    }
    if (engine.metrics === "trickle") {
      // Headers at once, then one byte every 100 ms: the whole body would take minutes.
      response.writeHead(200, { "content-type": "text/plain", "content-length": Buffer.byteLength(body) });
      held.add(response);
      let sent = 0;
      const drip = () => {
        if (response.destroyed) return;
        response.write(body.slice(sent, sent + 1));
        sent++;
        if (sent >= body.length) {
          held.delete(response);
          response.end();
          scrapes.answered++;
        } else later(100, drip);
      };
      response.on("close", () => held.delete(response));
      drip();
      return;
    }
    response.writeHead(200, { "content-type": "text/plain" }).end(body);
    scrapes.answered++;
  };

  const server = createServer((request, response) => {
    if (request.url === "/metrics") return answerMetrics(response);
    if (request.url === "/health") return void response.writeHead(200).end();
    const chunks: Buffer[] = [];
    request.on("data", (chunk: Buffer) => chunks.push(chunk));
    request.on("end", () => {
      received++;
      const id = String(request.headers["x-fairgate-request-id"] ?? `anonymous-${received}`);
      const maxTokens = Number(
        (JSON.parse(Buffer.concat(chunks).toString() || "{}") as { max_tokens?: number }).max_tokens ?? 16,
      );
      const mode = engine.completions;
      inFlight.add(id);
      response.on("close", () => inFlight.delete(id));
      later(engine.delayMs, () => {
        if (response.destroyed) return;
        if (mode === "reset") return void response.socket?.destroy();
        const failed = mode === 500 || mode === 503;
        const payload = JSON.stringify(
          failed
            ? { error: { message: "engine overloaded", type: "server_error", param: null, code: mode } }
            : {
                object: "chat.completion",
                choices: [
                  { index: 0, message: { role: "assistant", content: "ok" }, finish_reason: "length" },
                ],
                usage: { prompt_tokens: 10, completion_tokens: maxTokens, total_tokens: 10 + maxTokens },
              },
        );
        if (!failed) succeeded++;
        response.writeHead(failed ? mode : 200, {
          "content-type": "application/json",
          "content-length": Buffer.byteLength(payload),
          ...(mode === 503 ? { "retry-after": "1" } : {}),
        });
        response.end(payload);
      });
    });
  });
  server.keepAliveTimeout = 1_000;
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
  const { port } = server.address() as AddressInfo;
  const url = `http://127.0.0.1:${port}`;
  const engine: StandInEngine = {
    url,
    metricsUrl: `${url}/metrics`,
    delayMs: options.delayMs ?? 0,
    completions: "ok",
    metrics: "ok",
    kv: options.kv ?? 0.1,
    inFlight,
    received: () => received,
    succeeded: () => succeeded,
    scrapes: () => ({ ...scrapes }),
    close: () =>
      new Promise<void>((resolve) => {
        for (const timer of timers) clearTimeout(timer);
        for (const response of held) response.destroy();
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
  return engine;
}
