import { Redis } from "ioredis";

/** One concurrency lease as Redis holds it ({prefix}b:{tenant}:leases, lease id → expiry ms). */
export interface StoredLease {
  readonly tenant: string;
  readonly id: string;
  readonly expiresAt: number;
}

/** Every concurrency lease in Redis, live or expired-but-not-yet-purged, and Redis' clock. */
export async function storedLeases(
  redisUrl: string,
  keyPrefix = "fairgate:",
): Promise<{ now: number; leases: StoredLease[]; live: StoredLease[] }> {
  const client = new Redis(redisUrl, { maxRetriesPerRequest: 1, lazyConnect: true });
  client.on("error", () => {});
  try {
    await client.connect();
    const [seconds, micros] = await client.time();
    const now = Number(seconds) * 1000 + Math.floor(Number(micros) / 1000);
    const leases: StoredLease[] = [];
    let cursor = "0";
    do {
      const [next, keys] = await client.scan(cursor, "MATCH", `${keyPrefix}b:*:leases`, "COUNT", "1000");
      cursor = next;
      for (const key of keys) {
        const tenant = /b:\{(.*)\}:leases$/.exec(key)?.[1] ?? key;
        const flat = await client.zrange(key, "0", "-1", "WITHSCORES");
        for (let i = 0; i < flat.length; i += 2)
          leases.push({ tenant, id: flat[i] as string, expiresAt: Number(flat[i + 1]) });
      }
    } while (cursor !== "0");
    return { now, leases, live: leases.filter((l) => l.expiresAt > now) };
  } finally {
    client.disconnect();
  }
}
