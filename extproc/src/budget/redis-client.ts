import { Redis } from "ioredis";

/**
 * A client for the request path: never queues a command while disconnected (it fails at
 * once instead), never retries or resends one (a budget charge must not be applied twice),
 * and reconnects in the background.
 */
export function createBudgetRedisClient(url: string, timeoutMs: number): Redis {
  const client = new Redis(url, {
    lazyConnect: true,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    autoResendUnfulfilledCommands: false,
    // A backstop only: RedisBudgetStore#call enforces the real deadline, tolerant of loop lag.
    commandTimeout: Math.max(timeoutMs * 4, 1_000),
    connectTimeout: Math.max(timeoutMs, 1_000),
    retryStrategy: (attempt) => Math.min(attempt * 100, 1_000),
  });
  client.on("error", () => {
    // Failures surface as StoreUnavailableError from each call; ioredis keeps reconnecting.
  });
  return client;
}

/**
 * A connection for pub/sub, which takes it over: unlike the request path's client it
 * holds its SUBSCRIBE until connected, and ioredis subscribes again after a reconnect.
 */
export function createSubscriberRedisClient(url: string, timeoutMs: number): Redis {
  const client = new Redis(url, {
    lazyConnect: true,
    maxRetriesPerRequest: null,
    connectTimeout: Math.max(timeoutMs, 1_000),
    retryStrategy: (attempt) => Math.min(attempt * 100, 1_000),
  });
  client.on("error", () => {
    // A lost subscription only delays relayed usage; ioredis keeps reconnecting.
  });
  return client;
}
