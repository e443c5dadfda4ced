import type { ProcessTimes } from "./proc-stats.ts";
import { type ClientReport, type Load, loadLabel } from "./protocol.ts";
import { callsBetween, type RedisCounters } from "./redis-stats.ts";
import { SERVER_LABELS, type ServerKind } from "./servers.ts";
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
  /** Time the server's threads were runnable but got no CPU, ÷ the window (shared machine). */
  serverCpuWaitShare: number;
  /** ProcessingResponses the server sent per request on the main stream. */
  mainRepliesPerRequest: number;
  overridesPerRequest: number;
  usageRepliesPerRequest: number;
  redisCpuUsPerRequest?: number;
  /** Every command Redis ran, those inside Lua scripts included (INFO commandstats). */
  redisCommandsPerRequest?: number;
  redisCommandsByName?: Record<string, number>;
  /** Top-level commands (round trips) per request from a MONITOR sample after the window. */
  redisRoundTripsPerRequest?: number;
  redisRoundTripsByName?: Record<string, number>;
  /** The busiest client process's CPU ÷ the window. */
  clientCpuCores: number;
  clientCpuWaitShare: number;
  clientLagP99Ms: number;
  refused: number;
  failed: number;
  problems: string[];
}

export interface WindowSample {
  windowMs: number;
  server: ProcessTimes;
  clients: ProcessTimes[];
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
    serverCpuWaitShare: round(sample.server.waitNs / windowNs, 3),
    mainRepliesPerRequest: round(sum(reports.map((r) => r.counters.mainReplies)) / started, 3),
    overridesPerRequest: round(sum(reports.map((r) => r.counters.overrides)) / started, 3),
    usageRepliesPerRequest: round(sum(reports.map((r) => r.counters.usageReplies)) / started, 3),
    clientCpuCores: round(Math.max(...sample.clients.map((c) => c.cpuNs / windowNs)), 3),
    clientCpuWaitShare: round(Math.max(...sample.clients.map((c) => c.waitNs / windowNs)), 3),
    clientLagP99Ms: round(Math.max(...reports.map((r) => r.lagP99Ms))),
    refused: sum(reports.map((r) => r.refused)),
    failed: sum(reports.map((r) => r.failed)),
    problems: reports.flatMap((r) => r.problems).slice(0, 5),
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

export function measurementsTable(cells: readonly CellResult[]): string {
  const rows = cells.map((c) => [
    loadLabel(c.load),
    SERVER_LABELS[c.server],
    c.throughput.toFixed(0),
    c.p50Ms.toFixed(2),
    c.p90Ms.toFixed(2),
    c.p99Ms.toFixed(2),
    c.serverCpuUsPerRequest.toFixed(0),
    c.serverCpuCores.toFixed(2),
    `${(c.serverCpuWaitShare * 100).toFixed(0)} %`,
    `${c.mainRepliesPerRequest.toFixed(2)} (${c.overridesPerRequest.toFixed(2)})`,
    c.redisCpuUsPerRequest === undefined ? "-" : c.redisCpuUsPerRequest.toFixed(0),
    c.redisRoundTripsPerRequest === undefined ? "-" : c.redisRoundTripsPerRequest.toFixed(2),
    c.clientCpuCores.toFixed(2),
    c.refused + c.failed > 0 ? `${c.refused}/${c.failed}` : "0",
  ]);
  return markdownTable(
    [
      "load",
      "server",
      "req/s",
      "p50 ms",
      "p90 ms",
      "p99 ms",
      "server CPU µs/req",
      "server cores",
      "server CPU wait",
      "replies/req (overrides)",
      "Redis CPU µs/req",
      "Redis round trips/req",
      "client cores",
      "refused/failed",
    ],
    rows,
  );
}

export function comparisonTable(comparisons: readonly Comparison[]): string {
  const rows = comparisons.map((c) => [
    loadLabel(c.load),
    SERVER_LABELS[c.server],
    signed(c.addedCpuUsPerRequest, 0),
    `${c.throughputRatio.toFixed(2)}×`,
    signed(c.addedP50Ms, 2),
    signed(c.addedP99Ms, 2),
    signed(c.extraMessagesPerRequest, 2),
  ]);
  return markdownTable(
    [
      "load",
      "server",
      "added CPU µs/req",
      "throughput ÷ bare",
      "added p50 ms",
      "added p99 ms",
      "extra replies/req",
    ],
    rows,
  );
}

/** Issue 16's targets, met or not, per fairgate store. */
export function targetsTable(cells: readonly CellResult[], comparisons: readonly Comparison[]): string {
  const stores = [...new Set(comparisons.map((c) => c.server))];
  const of = (server: ServerKind) => comparisons.filter((c) => c.server === server);
  const worst = (values: number[], pick: (...values: number[]) => number) =>
    values.length === 0 ? undefined : pick(...values);
  const verdict = (value: number | undefined, ok: (v: number) => boolean, digits: number, unit = "") =>
    value === undefined ? "-" : `${value.toFixed(digits)}${unit} ${ok(value) ? "✓" : "✗"}`;
  const at1000 = (server: ServerKind) =>
    of(server).find((c) => c.load.kind === "open" && c.load.rate === 1000);
  const targets: Array<[string, (server: ServerKind) => string]> = [
    [
      "added CPU ≤ 100 µs/req (worst load)",
      (s) =>
        verdict(
          worst(
            of(s).map((c) => c.addedCpuUsPerRequest),
            Math.max,
          ),
          (v) => v <= 100,
          0,
          " µs",
        ),
    ],
    [
      "closed-loop throughput ≥ 0.85× bare (worst C)",
      (s) =>
        verdict(
          worst(
            of(s)
              .filter((c) => c.load.kind === "closed")
              .map((c) => c.throughputRatio),
            Math.min,
          ),
          (v) => v >= 0.85,
          2,
          "×",
        ),
    ],
    ["added p50 ≤ 1 ms at 1000 req/s", (s) => verdict(at1000(s)?.addedP50Ms, (v) => v <= 1, 2, " ms")],
    ["added p99 ≤ 5 ms at 1000 req/s", (s) => verdict(at1000(s)?.addedP99Ms, (v) => v <= 5, 2, " ms")],
    [
      "no extra ext_proc message (worst load)",
      (s) =>
        verdict(
          worst(
            of(s).map((c) => c.extraMessagesPerRequest),
            Math.max,
          ),
          (v) => v <= 0.001,
          2,
          "/req",
        ),
    ],
    [
      "≤ 1 Redis round trip per request to dispatch (admit.lua, worst load)",
      (s) =>
        verdict(
          worst(
            cells
              .filter((c) => c.server === s && c.redisRoundTripsByName !== undefined)
              .map((c) => c.redisRoundTripsByName?.["admit.lua"] ?? 0),
            Math.max,
          ),
          (v) => v <= 1.01,
          2,
        ),
    ],
  ];
  return markdownTable(
    ["issue 16 target", ...stores.map((s) => SERVER_LABELS[s])],
    targets.map(([name, measure]) => [name, ...stores.map(measure)]),
  );
}

/** Which Redis calls a request makes, from the MONITOR samples. */
export function redisRoundTripsTable(cells: readonly CellResult[]): string {
  const sampled = cells.filter((c) => c.redisRoundTripsByName !== undefined);
  const names = [...new Set(sampled.flatMap((c) => Object.keys(c.redisRoundTripsByName ?? {})))].sort();
  return markdownTable(
    ["load", "server", ...names, "total"],
    sampled.map((c) => [
      loadLabel(c.load),
      SERVER_LABELS[c.server],
      ...names.map((n) => (c.redisRoundTripsByName?.[n] ?? 0).toFixed(2)),
      (c.redisRoundTripsPerRequest ?? 0).toFixed(2),
    ]),
  );
}

function markdownTable(header: string[], rows: string[][]): string {
  const lines = [`| ${header.join(" | ")} |`, `| ${header.map(() => "---").join(" | ")} |`];
  for (const row of rows) lines.push(`| ${row.join(" | ")} |`);
  return `${lines.join("\n")}\n`;
}

function signed(value: number, digits: number): string {
  return `${value >= 0 ? "+" : ""}${value.toFixed(digits)}`;
}

function sum(values: readonly number[]): number {
  return values.reduce((a, b) => a + b, 0);
}
