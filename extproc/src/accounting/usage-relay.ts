/**
 * Carries an orphaned usage report (its usage stream reached a replica other than the one
 * holding its main stream, usage-registry.ts) to the replica that admitted the request,
 * named in the request id (request-id.ts), over a Redis pub/sub channel per replica. Only
 * that replica knows what its fair queue charged and feeds its output predictor, so the
 * correction is applied there, once (late-usage.ts), and reaches the other replicas as a
 * counter delta through the shared queue state. Delivery is at most once: a report sent
 * while the admitting replica is disconnected is lost, and it keeps its prediction, as
 * it did before reports were relayed.
 */
import type { Redis } from "ioredis";
import type { Logger } from "../log.ts";
import { replicaOf } from "./request-id.ts";
import type { Usage } from "./usage.ts";

export interface RelayedUsage {
  readonly requestId: string;
  readonly usage: Usage;
}

export interface UsageRelayOptions {
  /** Publishes; may be shared with other work (a publish is one ordinary command). */
  publisher: Redis;
  /** Subscribes: a connection of its own, which pub/sub takes over. */
  subscriber: Redis;
  keyPrefix: string;
  replicaId: string;
  logger: Logger;
  /** A report another replica relayed for a request this one admitted. */
  onReport(report: RelayedUsage): void;
}

export class RedisUsageRelay {
  readonly #options: UsageRelayOptions;
  readonly #channel: string;
  #closed = false;

  constructor(options: UsageRelayOptions) {
    this.#options = options;
    this.#channel = channelOf(options.keyPrefix, options.replicaId);
    options.subscriber.on("message", (channel: string, message: string) => {
      if (channel !== this.#channel) return;
      const report = parseReport(message);
      if (report) options.onReport(report);
      else options.logger.debug("usage relay: unreadable report ignored", { message: message.slice(0, 200) });
    });
  }

  /** Subscribes to this replica's channel (ioredis subscribes again after a reconnect). */
  async start(): Promise<void> {
    try {
      await this.#options.subscriber.subscribe(this.#channel);
    } catch (error) {
      // Closed before Redis answered: nothing to report.
      if (!this.#closed) throw error;
    }
  }

  /**
   * Sends an orphaned report to the replica its request id names; true when that replica
   * was listening. False at once for an id naming no replica, or this one.
   */
  async forward(requestId: string, usage: Usage): Promise<boolean> {
    const replica = replicaOf(requestId);
    if (this.#closed || replica === undefined || replica === this.#options.replicaId) return false;
    const receivers = await this.#options.publisher.publish(
      channelOf(this.#options.keyPrefix, replica),
      JSON.stringify({ requestId, usage }),
    );
    return receivers > 0;
  }

  async close(): Promise<void> {
    this.#closed = true;
    await this.#options.subscriber.unsubscribe(this.#channel).catch(() => {});
    this.#options.subscriber.disconnect();
  }
}

function channelOf(prefix: string, replicaId: string): string {
  return `${prefix}usage:${replicaId}`;
}

function parseReport(message: string): RelayedUsage | undefined {
  try {
    const { requestId, usage } = JSON.parse(message) as { requestId?: unknown; usage?: Partial<Usage> };
    if (typeof requestId !== "string" || !usage) return undefined;
    const { promptTokens, completionTokens, exact, complete } = usage;
    if (!isCount(completionTokens) || (promptTokens !== undefined && !isCount(promptTokens)))
      return undefined;
    return {
      requestId,
      usage: { promptTokens, completionTokens, exact: exact === true, complete: complete === true },
    };
  } catch {
    return undefined;
  }
}

function isCount(value: unknown): value is number {
  return typeof value === "number" && Number.isInteger(value) && value >= 0;
}
