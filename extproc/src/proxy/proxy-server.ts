import * as http from "node:http";
import type { AddressInfo, Socket } from "node:net";
import { type Clock, systemClock } from "../clock.ts";
import { splitListen } from "../http/listen.ts";
import { type Logger, silentLogger } from "../log.ts";
import { type ExtProcFilterConfig, resolveFilterConfig } from "./config.ts";
import type { ExtProcFilter, ExtProcFilterDeps } from "./ext-proc-filter.ts";
import { createExtProcClient, type ExtProcClient } from "./ext-proc-stream.ts";
import { type ExtProcFilterStats, emptyFilterStats } from "./filter-stats.ts";
import { MutationChecker } from "./mutation-rules.ts";
import { handleExchange } from "./proxy-exchange.ts";
import { createUpstream } from "./upstream.ts";

/**
 * The built-in HTTP/1.1 proxy: Envoy's ext_proc HTTP filter in front of one upstream,
 * driving the real ExternalProcessor/Process protocol (see docs/envoy-fidelity.md).
 */

export interface ExtProcProxyOptions {
  /** host:port; port 0 picks a free one. */
  listen: string;
  /** http://host:port of the upstream (the inference engine). */
  upstream: string;
  extProc: ExtProcFilterConfig;
  /**
   * Further ext_proc filters after `extProc` in the filter chain (Envoy's http_filters
   * order), each in observability mode — e.g. fairgate's usage filter (`usageFilterConfig`).
   * Requests pass `extProc` first, responses pass these first (encoder order is reversed).
   */
  observers?: ExtProcFilterConfig[];
  logger?: Logger;
  clock?: Clock;
}

export interface ExtProcProxy {
  readonly url: string;
  readonly port: number;
  /** Envoy-named counters summed over every request so far. */
  readonly stats: Readonly<ExtProcFilterStats>;
  /** The same counters for each of `observers`, in order. */
  readonly observerStats: readonly Readonly<ExtProcFilterStats>[];
  close(): Promise<void>;
}

export async function startExtProcProxy(options: ExtProcProxyOptions): Promise<ExtProcProxy> {
  const config = resolveFilterConfig(options.extProc);
  const observerConfigs = (options.observers ?? []).map(resolveFilterConfig);
  if (observerConfigs.some((c) => !c.observabilityMode)) {
    throw new Error(
      "invalid ext_proc filter config: the built-in proxy chains further ext_proc filters only in observability mode",
    );
  }
  const { host, port } = splitListen(options.listen);
  const upstream = createUpstream(options.upstream);
  // Filters naming the same target share one channel, as Envoy's filters share a cluster.
  const clients = new Map<string, ExtProcClient>();
  const clientFor = (target: string) => {
    let client = clients.get(target);
    if (!client) {
      client = createExtProcClient(target);
      clients.set(target, client);
    }
    return client;
  };
  const client = clientFor(config.grpcTarget);
  const logger = options.logger ?? silentLogger;
  const clock = options.clock ?? systemClock;
  const stats = emptyFilterStats();
  const observers: ExtProcFilterDeps[] = observerConfigs.map((observer) => ({
    config: observer,
    client: clientFor(observer.grpcTarget),
    checker: new MutationChecker(observer.mutationRules),
    clock,
    logger,
    stats: emptyFilterStats(),
  }));
  const live = new Set<ExtProcFilter>();
  const deps = {
    config,
    client,
    checker: new MutationChecker(config.mutationRules),
    clock,
    logger,
    stats,
    observers,
    upstream,
    track(filter: ExtProcFilter) {
      live.add(filter);
      return () => live.delete(filter);
    },
  };

  // Envoy's connection manager has no request timeout by default; node's 300 s one would
  // cut off requests a processor holds in a queue.
  const server = http.createServer({ requestTimeout: 0 }, (request, response) => {
    handleExchange(request, response, deps).catch((error: unknown) => {
      logger.error("proxy exchange failed", { error: (error as Error).message });
      if (!response.headersSent) response.writeHead(500, { "content-length": "0" }).end();
      else response.destroy();
    });
  });
  const sockets = new Set<Socket>();
  server.on("connection", (socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
  });

  try {
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, host, () => {
        server.off("error", reject);
        resolve();
      });
    });
  } catch (error) {
    for (const c of clients.values()) c.close();
    upstream.agent.destroy();
    throw error;
  }

  const address = server.address() as AddressInfo;
  const urlHost = host === undefined || host === "0.0.0.0" || host === "::" ? "127.0.0.1" : host;
  const url = `http://${urlHost.includes(":") ? `[${urlHost}]` : urlHost}:${address.port}`;
  let closing: Promise<void> | undefined;

  return {
    url,
    port: address.port,
    stats,
    observerStats: observers.map((o) => o.stats),
    close() {
      closing ??= (async () => {
        const closed = new Promise<void>((resolve) => server.close(() => resolve()));
        for (const socket of sockets) socket.destroy();
        for (const filter of live) filter.forceClose();
        await closed;
        upstream.agent.destroy();
        for (const c of clients.values()) c.close();
      })();
      return closing;
    },
  };
}
