import type { Server, ServerResponse } from "node:http";
import type { FairgateError } from "../errors.ts";
import type { MetricsText } from "./api-source.ts";

export function sendJson(
  response: ServerResponse,
  status: number,
  body: unknown,
  headers: Readonly<Record<string, string>> = {},
): void {
  const text = JSON.stringify(body);
  response.writeHead(status, {
    ...headers,
    "content-type": "application/json",
    "content-length": Buffer.byteLength(text),
  });
  response.end(text);
}

/** A refusal as the OpenAI error envelope, with the error's headers (retry-after, www-authenticate). */
export function sendError(response: ServerResponse, error: FairgateError): void {
  sendJson(response, error.status, error.toEnvelope(), error.headers);
}

/** The Prometheus exposition. */
export async function sendMetrics(response: ServerResponse, metrics: MetricsText): Promise<void> {
  response.writeHead(200, { "content-type": metrics.contentType });
  response.end(metrics.body);
}

/** Stops accepting and drops idle keep-alive connections. */
export function closeServer(server: Server): Promise<void> {
  return new Promise<void>((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections();
  });
}
