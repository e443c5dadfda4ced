import type { Clock } from "../clock.ts";
import type { ParsedPolicy } from "../config/schema.ts";
import type { Logger } from "../log.ts";
import { MemoryBudgetStore } from "./memory-store.ts";
import { RedisBudgetStore } from "./redis-store.ts";
import { ReplicaRegistry } from "./replica-registry.ts";
import { ResilientBudgetStore, type StoreState } from "./resilient-store.ts";
import type { BudgetStore } from "./store.ts";

export interface CreatedBudgetStore {
  readonly store: BudgetStore;
  /** Lease TTL the request path uses. */
  readonly leaseTtlMs: number;
  close(): Promise<void>;
}

/**
 * The budget store a policy's `store` section asks for: the embedded memory store, or
 * Redis shared by every replica behind the policy's outage mode, with the replica count
 * that scales the fail-open fallback.
 */
export function createBudgetStore(
  config: ParsedPolicy["store"],
  options: { clock: Clock; logger: Logger; onStateChange?: (state: StoreState, detail: string) => void },
): CreatedBudgetStore {
  if (!("redis" in config)) {
    const store = new MemoryBudgetStore({ clock: options.clock });
    return { store, leaseTtlMs: 30_000, close: () => store.close() };
  }
  const redis = new RedisBudgetStore({
    url: config.redis,
    keyPrefix: config.keyPrefix,
    timeoutMs: config.timeoutMs,
  });
  const registry = new ReplicaRegistry({ store: redis });
  registry.start().catch(() => {
    // Redis unreachable at start: the resilient store reports the outage.
  });
  const store = new ResilientBudgetStore({
    redis,
    onOutage: config.onOutage,
    replicas: () => registry.count(),
    logger: options.logger,
    ...(options.onStateChange ? { onStateChange: options.onStateChange } : {}),
  });
  return {
    store,
    leaseTtlMs: config.leaseTtlMs,
    close: async () => {
      await registry.close().catch(() => {});
      await store.close();
    },
  };
}
