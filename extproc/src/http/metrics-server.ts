import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { FairgateError } from "../errors.ts";
import type { Logger } from "../log.ts";
import type { ApiSource } from "./api-source.ts";
import { listenOn } from "./listen.ts";
import { closeServer, sendError, sendMetrics } from "./respond.ts";
import type { HttpApi } from "./server.ts";

export interface MetricsServerOptions {
  listen: string;
  source: Pick<ApiSource, "metrics">;
  logger: Logger;
}

/**
 * `/metrics` on a listener of its own (`--metrics-listen`, `server.metricsListen`), so
 * Prometheus can scrape an internal address while the HTTP API listens elsewhere. Like
 * `/metrics` on the main listener it is unauthenticated.
 */
export async function startMetricsServer(options: MetricsServerOptions): Promise<HttpApi> {
  const handle = async (request: IncomingMessage, response: ServerResponse) => {
    const path = new URL(request.url ?? "/", "http://fairgate.local").pathname;
    try {
      if (request.method !== "GET" && request.method !== "HEAD") {
        throw new FairgateError("method_not_allowed", {
          message: `${request.method} is not allowed; use GET.`,
          headers: { allow: "GET, HEAD" },
        });
      }
      if (path !== "/metrics") throw new FairgateError("not_found", { message: `No route for ${path}.` });
      await sendMetrics(response, await options.source.metrics());
    } catch (error) {
      if (error instanceof FairgateError) return sendError(response, error);
      options.logger.error("metrics request failed", { error: String(error) });
      sendError(response, new FairgateError("internal_error"));
    }
  };
  const server = createServer((request, response) => void handle(request, response));
  server.keepAliveTimeout = 5_000;
  await listenOn(server, options.listen);
  return { port: (server.address() as AddressInfo).port, server, close: () => closeServer(server) };
}
