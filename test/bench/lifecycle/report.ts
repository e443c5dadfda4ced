import type { ProcessTimes } from "./proc-stats.ts";
import { type ClientReport, type Load, loadLabel } from "./protocol.ts";
import { callsBetween, type RedisCounters } from "./redis-stats.ts";
import type { ServerKind } from "./servers.ts";
import { percentile, round } from "./stats.ts";

/** One server under one load, over the measured window. */
export interface CellResult {
  load: Load;
  server: ServerKind;
  windowMs: number;
  completed: number;
  throughput: number;
  p50Ms: number;
  p90Ms: number;
  p99Ms: number;
  /** Server CPU (all threads) over the window ÷ requests completed in it. */
  serverCpuUsPerRequest: number;
  /** Server CPU over the window ÷ the window: 1 = one core busy. */
  serverCpuCores: number;
  /** serverCpuCores per process: the primary, then each worker (`serve --workers`). */
  serverCpuCoresByProcess: number[];
  /** Time the server's threads were runnable but got no CPU, ÷ the window (shared machine). */
  serverCpuWaitShare: number;
  /** ProcessingResponses the server sent per request on the main stream. */
  mainRepliesPerRequest: number;
  overridesPerRequest: number;
  usageRepliesPerRequest: number;
  /** RST_STREAMs the client sent per request (remote close timeouts, failures). */
  resetsPerRequest: number;
  /** RST_STREAMs sent over the whole run, warm-up and the requests after the window too. */
  resetsInRun: number;
  redisCpuUsPerRequest?: number;
  /** Every command Redis ran, those inside Lua scripts included (INFO commandstats). */
  redisCommandsPerRequest?: number;
  redisCommandsByName?: Record<string, number>;
  /** Top-level commands (round trips) per request from a MONITOR sample after the window. */
  redisRoundTripsPerRequest?: number;
  redisRoundTripsByName?: Record<string, number>;
  /** The busiest client process's CPU ÷ the window. */
  clientCpuCores: number;
  /** Every client process's CPU ÷ the window: what the load generator took of the machine. */
  clientCpuCoresTotal: number;
  clientCpuWaitShare: number;
  clientLagP99Ms: number;
  refused: number;
  failed: number;
  problems: string[];
  /** Why a client's connection to the server broke, if one did. */
  connectionErrors: string[];
  /** What the server logged during the window (e.g. "warn: budget store outage"). */
  serverLog: Record<string, number>;
  /** Redis was dropped for local budgets during the window (fairgate_store_outage). */
  storeOutage: boolean;
}

export interface WindowSample {
  windowMs: number;
  server: ProcessTimes;
  /** The same per process of the server (primary first). */
  serverProcesses: ProcessTimes[];
  clients: ProcessTimes[];
  /** Messages the server logged during the window, by message. */
  serverLog: Record<string, number>;
  /** fairgate's budget store was in an outage (fail-open, local budgets) at some point. */
  storeOutage: boolean;
  redisBefore?: RedisCounters;
  redisAfter?: RedisCounters;
  /** Top-level Redis calls during a MONITOR sample, and the requests completed meanwhile. */
  redisRoundTrips?: { calls: Record<string, number>; requests: number };
}

export function cellResult(load: Load, server: ServerKind, sample: WindowSample, reports: ClientReport[]) {
  const latencies = reports.flatMap((r) => r.latencies).sort((a, b) => a - b);
  const completed = sum(reports.map((r) => r.completedInWindow));
  const started = Math.max(1, sum(reports.map((r) => r.startedInWindow)));
  const perRequest = (value: number) => (completed > 0 ? value / completed : 0);
  const windowNs = sample.windowMs * 1e6;
  const result: CellResult = {
    load,
    server,
    windowMs: round(sample.windowMs, 1),
    completed,
    throughput: round((completed * 1000) / sample.windowMs, 1),
    p50Ms: round(percentile(latencies, 50)),
    p90Ms: round(percentile(latencies, 90)),
    p99Ms: round(percentile(latencies, 99)),
    serverCpuUsPerRequest: round(perRequest(sample.server.cpuNs / 1000), 1),
    serverCpuCores: round(sample.server.cpuNs / windowNs, 3),
    serverCpuCoresByProcess: sample.serverProcesses.map((p) => round(p.cpuNs / windowNs, 3)),
    serverCpuWaitShare: round(sample.server.waitNs / windowNs, 3),
    mainRepliesPerRequest: round(sum(reports.map((r) => r.counters.mainReplies)) / started, 3),
    overridesPerRequest: round(sum(reports.map((r) => r.counters.overrides)) / started, 3),
    usageRepliesPerRequest: round(sum(reports.map((r) => r.counters.usageReplies)) / started, 3),
    resetsPerRequest: round(sum(reports.map((r) => r.counters.resets)) / started, 3),
    resetsInRun: sum(reports.map((r) => r.resetsInRun)),
    clientCpuCores: round(Math.max(...sample.clients.map((c) => c.cpuNs / windowNs)), 3),
    clientCpuCoresTotal: round(sum(sample.clients.map((c) => c.cpuNs)) / windowNs, 3),
    clientCpuWaitShare: round(Math.max(...sample.clients.map((c) => c.waitNs / windowNs)), 3),
    clientLagP99Ms: round(Math.max(...reports.map((r) => r.lagP99Ms))),
    refused: sum(reports.map((r) => r.refused)),
    failed: sum(reports.map((r) => r.failed)),
    problems: reports.flatMap((r) => r.problems).slice(0, 5),
    connectionErrors: reports.flatMap((r) => (r.connectionError ? [r.connectionError] : [])),
    serverLog: sample.serverLog,
    storeOutage: sample.storeOutage,
  };
  if (sample.redisBefore && sample.redisAfter) {
    const calls = callsBetween(sample.redisBefore, sample.redisAfter);
    result.redisCpuUsPerRequest = round(perRequest(sample.redisAfter.cpuUs - sample.redisBefore.cpuUs), 1);
    result.redisCommandsPerRequest = round(perRequest(sum(Object.values(calls))), 3);
    result.redisCommandsByName = Object.fromEntries(
      Object.entries(calls).map(([command, count]) => [command, round(perRequest(count), 3)]),
    );
  }
  const sampled = sample.redisRoundTrips;
  if (sampled && sampled.requests > 0) {
    const perRequestOfSample = (count: number) => count / sampled.requests;
    result.redisRoundTripsPerRequest = round(perRequestOfSample(sum(Object.values(sampled.calls))), 3);
    result.redisRoundTripsByName = Object.fromEntries(
      Object.entries(sampled.calls).map(([name, count]) => [name, round(perRequestOfSample(count), 3)]),
    );
  }
  return result;
}

/** A fairgate cell against the bare server's cell of the same load, same run. */
export interface Comparison {
  load: Load;
  server: ServerKind;
  addedCpuUsPerRequest: number;
  throughputRatio: number;
  addedP50Ms: number;
  addedP99Ms: number;
  extraMessagesPerRequest: number;
}

export function compareWithBare(cells: readonly CellResult[]): Comparison[] {
  const comparisons: Comparison[] = [];
  for (const cell of cells) {
    if (cell.server === "bare") continue;
    const bare = cells.find((c) => c.server === "bare" && loadLabel(c.load) === loadLabel(cell.load));
    if (!bare) continue;
    comparisons.push({
      load: cell.load,
      server: cell.server,
      addedCpuUsPerRequest: round(cell.serverCpuUsPerRequest - bare.serverCpuUsPerRequest, 1),
      throughputRatio: round(bare.throughput > 0 ? cell.throughput / bare.throughput : 0, 3),
      addedP50Ms: round(cell.p50Ms - bare.p50Ms),
      addedP99Ms: round(cell.p99Ms - bare.p99Ms),
      extraMessagesPerRequest: round(cell.mainRepliesPerRequest - bare.mainRepliesPerRequest, 3),
    });
  }
  return comparisons;
}

function sum(values: readonly number[]): number {
  return values.reduce((a, b) => a + b, 0);
}

/**
 * `serve --workers N` against one fairgate process and the bare server on the same load.
 * On a machine whose cores the load generator shares, throughput alone cannot show
 * whether N workers scale: what they may use is what the clients leave. Throughput per
 * server core (requests per CPU-second the server used) and CPU per request show whether
 * each worker costs what one process does, which is what linear scaling needs.
 */
export interface WorkersScaling {
  load: Load;
  throughputVsOne: number;
  throughputVsBare: number;
  /** Requests per second per core the server kept busy: bare, one process, the workers. */
  perServerCore: { bare: number; one: number; workers: number };
  cpuUsPerRequest: { bare: number; one: number; workers: number };
  serverCores: { bare: number; one: number; workers: number };
  /** Cores each process of the workers' server used: the primary, then each worker. */
  coresByProcess: number[];
  /** All client processes' CPU, in cores, during the workers' window. */
  clientCores: number;
}

export function workersScaling(cells: readonly CellResult[]): WorkersScaling[] {
  const rows: WorkersScaling[] = [];
  for (const cell of cells) {
    if (cell.server !== "workers") continue;
    const same = (server: ServerKind) =>
      cells.find((c) => c.server === server && loadLabel(c.load) === loadLabel(cell.load));
    const one = same("redis");
    const bare = same("bare");
    if (!one || !bare) continue;
    const perCore = (c: CellResult) => round(c.serverCpuCores > 0 ? c.throughput / c.serverCpuCores : 0, 0);
    rows.push({
      load: cell.load,
      throughputVsOne: round(one.throughput > 0 ? cell.throughput / one.throughput : 0, 3),
      throughputVsBare: round(bare.throughput > 0 ? cell.throughput / bare.throughput : 0, 3),
      perServerCore: { bare: perCore(bare), one: perCore(one), workers: perCore(cell) },
      cpuUsPerRequest: {
        bare: bare.serverCpuUsPerRequest,
        one: one.serverCpuUsPerRequest,
        workers: cell.serverCpuUsPerRequest,
      },
      serverCores: { bare: bare.serverCpuCores, one: one.serverCpuCores, workers: cell.serverCpuCores },
      coresByProcess: cell.serverCpuCoresByProcess,
      clientCores: cell.clientCpuCoresTotal,
    });
  }
  return rows;
}
