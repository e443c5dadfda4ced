/**
 * The HTTP API's source on a `serve --workers` primary: every serving worker is asked, and
 * the answers are combined into the host's (host-view.ts); /metrics sums the workers'
 * registries by each metric's aggregator (prom-client's AggregatorRegistry).
 */
import { AggregatorRegistry } from "prom-client";
import type { ApiSource } from "../http/api-source.ts";
import { hostEstimate, hostQueue, hostReadiness } from "./host-view.ts";
import type { WorkerChannel } from "./worker-channel.ts";

export interface HostApiOptions {
  /** How many workers the host runs when whole. */
  readonly workers: number;
  /** The workers serving now (started and announced). */
  serving(): readonly WorkerChannel[];
  isShuttingDown(): boolean;
}

export function hostApiSource(options: HostApiOptions): ApiSource {
  const all = async <T>(ask: (channel: WorkerChannel) => Promise<T>): Promise<T[]> => {
    const channels = options.serving();
    if (channels.length === 0) throw new Error("no worker is serving");
    return await Promise.all(channels.map(ask));
  };
  return {
    async readiness() {
      const answers = await Promise.all(
        options.serving().map((channel) =>
          channel.ask({ kind: "readiness" }).then(
            (readiness) => ({ slot: channel.slot, readiness }),
            (error: Error) => ({ slot: channel.slot, error: error.message }),
          ),
        ),
      );
      return hostReadiness(options.workers, answers, options.isShuttingDown());
    },
    queue: async () => hostQueue(await all((channel) => channel.ask({ kind: "queue" }))),
    estimate: async (query) => hostEstimate(await all((channel) => channel.ask({ kind: "estimate", query }))),
    async metrics() {
      const registries = await all((channel) => channel.ask({ kind: "metrics" }));
      const host = AggregatorRegistry.aggregate(registries);
      return { contentType: host.contentType, body: await host.metrics() };
    },
  };
}
