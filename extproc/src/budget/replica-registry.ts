/**
 * How many gateway replicas share the Redis store: each replica heartbeats its id into a
 * ZSET scored with the server's time (lua/heartbeat.lua) and counts the members seen within
 * the window. A fail-open replica divides its local fallback limits by the last count it
 * saw, so N replicas falling back together stay near the cluster-wide limit.
 */
import { randomUUID } from "node:crypto";
import type { RedisBudgetStore } from "./redis-store.ts";

export interface ReplicaRegistryOptions {
  readonly store: RedisBudgetStore;
  /** This replica's id (default: a random UUID). */
  readonly id?: string;
  /** Heartbeat period, ms (default 3000). */
  readonly heartbeatMs?: number;
  /** Replicas not seen within this window are not counted, ms (default 15 000). */
  readonly windowMs?: number;
}

export class ReplicaRegistry {
  readonly id: string;
  readonly #store: RedisBudgetStore;
  readonly #windowMs: number;
  readonly #heartbeatMs: number;
  #count = 1;
  #timer: NodeJS.Timeout | undefined;
  #closed = false;

  constructor(options: ReplicaRegistryOptions) {
    this.#store = options.store;
    this.id = options.id ?? randomUUID();
    this.#heartbeatMs = options.heartbeatMs ?? 3_000;
    this.#windowMs = options.windowMs ?? 15_000;
  }

  get key(): string {
    return `${this.#store.keyPrefix}replicas`;
  }

  /** Replicas seen in the last window, as of the last successful heartbeat (at least 1). */
  count(): number {
    return this.#count;
  }

  /** Sends one heartbeat now and starts the periodic ones. */
  async start(): Promise<void> {
    await this.heartbeat().catch(() => {});
    if (this.#closed || this.#timer) return;
    this.#timer = setInterval(() => {
      this.heartbeat().catch(() => {
        // Redis unreachable: keep the last count; the outage is the budget store's to report.
      });
    }, this.#heartbeatMs);
    this.#timer.unref();
  }

  /** One heartbeat; returns the replica count. Rejects (StoreUnavailableError) if Redis fails. */
  async heartbeat(): Promise<number> {
    const count = await this.#store.call("heartbeat", () =>
      this.#store.client.fairgateReplicaHeartbeat(this.key, this.id, this.#windowMs),
    );
    if (!this.#closed) this.#count = Math.max(1, count);
    return this.#count;
  }

  /** Stops heartbeating and removes this replica from the set (best effort). */
  async close(): Promise<void> {
    this.#closed = true;
    clearInterval(this.#timer);
    this.#timer = undefined;
    await this.#store
      .call("replica-remove", () => this.#store.client.zrem(this.key, this.id))
      .catch(() => {});
  }
}
