import type { Redis } from "ioredis";
import type { LifecycleOptions } from "./lifecycle-client.ts";
import type { LoadClients } from "./load-clients.ts";
import { processTimes, timesBetween } from "./proc-stats.ts";
import type { Load } from "./protocol.ts";
import { redisCounters, startRoundTripSample } from "./redis-stats.ts";
import { type CellResult, cellResult, type WindowSample } from "./report.ts";
import { type ServerKind, type ServerProcess, storeOutageState } from "./servers.ts";

/** One server's view of the shared Redis, when it uses it. */
export interface RedisAccess {
  url: string;
  client: Redis;
}

export interface CellPlan {
  warmupMs: number;
  measureMs: number;
  /** MONITOR sample after the window (load still on), to name each round trip. */
  roundTripSampleMs: number;
  keys: readonly string[];
  seed: number;
  options: LifecycleOptions;
}

/**
 * One server under one load: warm up, read the kernel's counters, open the clients'
 * window, wait, read them again, close the window; with Redis also INFO before and after
 * and a MONITOR sample (outside the window: MONITOR costs Redis CPU).
 */
export async function measureCell(
  clients: LoadClients,
  server: ServerProcess,
  load: Load,
  plan: CellPlan,
  redis: RedisAccess | undefined,
): Promise<CellResult> {
  await clients.run(server.port, load, plan.keys, plan.seed, plan.options);
  await sleep(plan.warmupMs);
  const storeBefore = redis ? await storeOutageState(server) : undefined;
  const redisBefore = redis ? await redisCounters(redis.client) : undefined;
  const serverBefore = server.times();
  const processesBefore = server.timesByProcess();
  const logBefore = server.logCounts();
  const clientsBefore = clients.pids.map(processTimes);
  const from = performance.now();
  clients.mark();
  await sleep(plan.measureMs);
  clients.endWindow();
  const to = performance.now();
  const serverTimes = timesBetween(serverBefore, server.times());
  const processesAfter = server.timesByProcess();
  const serverProcesses = processesAfter.map((after, i) =>
    timesBetween(processesBefore[i] ?? { cpuNs: 0, waitNs: 0 }, after),
  );
  const serverLog = countsBetween(logBefore, server.logCounts());
  const clientTimes = clients.pids.map((pid, i) =>
    timesBetween(clientsBefore[i] ?? processTimes(pid), processTimes(pid)),
  );
  const redisAfter = redis ? await redisCounters(redis.client) : undefined;
  const storeAfter = redis ? await storeOutageState(server) : undefined;
  const storeOutage =
    storeBefore !== undefined &&
    storeAfter !== undefined &&
    (storeBefore.outage || storeAfter.outage || storeAfter.outages > storeBefore.outages);
  let redisRoundTrips: WindowSample["redisRoundTrips"];
  if (redis && plan.roundTripSampleMs > 0) {
    const sampling = await startRoundTripSample(redis.url);
    const completedBefore = await clients.completed();
    await sleep(plan.roundTripSampleMs);
    const requests = (await clients.completed()) - completedBefore;
    redisRoundTrips = { calls: sampling.stop(), requests };
  }
  const reports = await clients.stop();
  const sample: WindowSample = {
    windowMs: to - from,
    server: serverTimes,
    serverProcesses,
    clients: clientTimes,
    serverLog,
    storeOutage,
    ...(redisBefore && redisAfter ? { redisBefore, redisAfter } : {}),
    ...(redisRoundTrips ? { redisRoundTrips } : {}),
  };
  return cellResult(load, server.kind, sample, reports);
}

/** Unmeasured load first, so that no cell pays for JIT compilation and first connections. */
export async function prime(
  clients: LoadClients,
  server: ServerProcess,
  plan: CellPlan,
  ms: number,
): Promise<void> {
  await clients.run(server.port, { kind: "closed", concurrency: 8 }, plan.keys, plan.seed, plan.options);
  await sleep(ms);
  await clients.stop();
}

/** What each server burns with no request at all (timers, background exchanges), in cores. */
export async function idleCores(
  servers: readonly ServerProcess[],
  ms: number,
): Promise<Map<ServerKind, number>> {
  const before = servers.map((s) => s.times());
  await sleep(ms);
  return new Map(
    servers.map((s, i) => [s.kind, timesBetween(before[i] ?? s.times(), s.times()).cpuNs / (ms * 1e6)]),
  );
}

function countsBetween(
  before: Record<string, number>,
  after: Record<string, number>,
): Record<string, number> {
  const delta: Record<string, number> = {};
  for (const [key, count] of Object.entries(after)) {
    const added = count - (before[key] ?? 0);
    if (added > 0) delta[key] = added;
  }
  return delta;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
