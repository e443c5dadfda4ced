import { Redis } from "ioredis";
import type { ParsedPolicy } from "../config/schema.ts";

export interface StoreCheck {
  readonly ok: boolean;
  readonly detail: string;
}

/** Reachability of the shared store, for /readyz and outage handling. */
export interface StoreHealth {
  readonly kind: "memory" | "redis";
  check(): Promise<StoreCheck>;
  close(): Promise<void>;
}

export const memoryStoreHealth: StoreHealth = {
  kind: "memory",
  check: async () => ({ ok: true, detail: "embedded memory store" }),
  close: async () => {},
};

/** PINGs Redis with a hard deadline; a sick Redis must not stall a readiness probe. */
export function redisStoreHealth(url: string, timeoutMs: number): StoreHealth {
  const client = new Redis(url, {
    lazyConnect: true,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    connectTimeout: Math.max(timeoutMs, 1_000),
    retryStrategy: (attempt) => Math.min(attempt * 200, 2_000),
  });
  client.on("error", () => {
    // Connection errors surface through check(); ioredis keeps reconnecting by itself.
  });
  let connecting: Promise<void> | undefined;
  const ensureConnected = () => {
    if (client.status === "wait" || client.status === "end")
      connecting ??= client.connect().finally(() => (connecting = undefined));
    return connecting;
  };
  return {
    kind: "redis",
    async check() {
      let timer: NodeJS.Timeout | undefined;
      try {
        const attempt = (async () => {
          await ensureConnected();
          return client.ping();
        })();
        attempt.catch(() => {});
        const deadline = new Promise<never>((_, reject) => {
          timer = setTimeout(
            () => reject(new Error(`no answer within ${timeoutMs} ms`)),
            Math.max(timeoutMs, 250),
          );
        });
        const pong = await Promise.race([attempt, deadline]);
        return { ok: pong === "PONG", detail: `redis ${client.status}` };
      } catch (error) {
        return { ok: false, detail: `redis unreachable: ${(error as Error).message}` };
      } finally {
        clearTimeout(timer);
      }
    },
    async close() {
      client.disconnect();
    },
  };
}

export function storeHealthFor(store: ParsedPolicy["store"]): StoreHealth {
  return "redis" in store ? redisStoreHealth(store.redis, store.timeoutMs) : memoryStoreHealth;
}
