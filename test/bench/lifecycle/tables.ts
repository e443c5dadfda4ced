import { loadLabel } from "./protocol.ts";
import type { CellResult, Comparison, WorkersScaling } from "./report.ts";
import { SERVER_LABELS, type ServerKind } from "./servers.ts";

/** The lifecycle benchmark's output: a line per cell as it finishes, then markdown tables. */

export function progressLine(cell: CellResult): string {
  const lost =
    cell.connectionErrors.length > 0 ? ` (connection lost: ${cell.connectionErrors.join(", ")})` : "";
  const errors =
    cell.refused + cell.failed > 0
      ? `  REFUSED ${cell.refused} FAILED ${cell.failed}: ${cell.problems[0]}${lost}; ${cell.resetsInRun} streams reset in the run`
      : "";
  const logged = Object.entries(cell.serverLog)
    .map(([message, count]) => `  logged ${count}× "${message}"`)
    .join("");
  const split =
    cell.serverCpuCoresByProcess.length > 1
      ? `  cores by process ${cell.serverCpuCoresByProcess.map((c) => c.toFixed(2)).join("/")}`
      : "";
  return `${loadLabel(cell.load).padEnd(14)} ${SERVER_LABELS[cell.server].padEnd(18)} ${cell.throughput.toFixed(0).padStart(6)} req/s  p50 ${cell.p50Ms.toFixed(2)} p99 ${cell.p99Ms.toFixed(2)} ms  CPU ${cell.serverCpuUsPerRequest.toFixed(0)} µs/req  replies ${cell.mainRepliesPerRequest.toFixed(2)}/req${split}${errors}${logged}\n`;
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
    c.resetsPerRequest.toFixed(2),
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
      "resets sent/req",
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
      "1 Redis round trip per request to dispatch (admit.lua per request, sampled ±10 %; worst steady load)",
      (s) =>
        verdict(
          worst(
            cells
              .filter((c) => c.server === s && c.redisRoundTripsByName !== undefined && steady(c))
              .map((c) => c.redisRoundTripsByName?.["admit.lua"] ?? 0),
            Math.max,
          ),
          (v) => v <= 1.1,
          2,
        ),
    ],
  ];
  return markdownTable(
    ["issue 16 target", ...stores.map((s) => SERVER_LABELS[s])],
    targets.map(([name, measure]) => [name, ...stores.map(measure)]),
  );
}

/**
 * A cell whose requests per second mean something per request: nothing failed, the store
 * stayed on Redis, and an open loop kept up with its rate (a backlog admits more requests
 * than it completes).
 */
function steady(cell: CellResult): boolean {
  const keptUp = cell.load.kind === "closed" || cell.throughput >= 0.95 * cell.load.rate;
  return keptUp && cell.failed === 0 && cell.connectionErrors.length === 0 && !cell.storeOutage;
}

/** Which Redis calls a request makes, from the MONITOR samples. */
export function redisRoundTripsTable(cells: readonly CellResult[]): string {
  const sampled = cells.filter((c) => c.redisRoundTripsByName !== undefined);
  const names = [...new Set(sampled.flatMap((c) => Object.keys(c.redisRoundTripsByName ?? {})))].sort();
  return markdownTable(
    ["load", "server", ...names, "total", "store outage in window"],
    sampled.map((c) => [
      loadLabel(c.load),
      SERVER_LABELS[c.server],
      ...names.map((n) => (c.redisRoundTripsByName?.[n] ?? 0).toFixed(2)),
      (c.redisRoundTripsPerRequest ?? 0).toFixed(2),
      c.storeOutage ? "yes (local budgets)" : "no",
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

/** What the servers logged during the windows (fairgate warns of store outages, etc.). */
export function serverLogTable(cells: readonly CellResult[]): string {
  const rows = cells.flatMap((c) =>
    Object.entries(c.serverLog).map(([message, count]) => [
      loadLabel(c.load),
      SERVER_LABELS[c.server],
      message,
      String(count),
    ]),
  );
  return rows.length === 0 ? "" : markdownTable(["load", "server", "message", "times"], rows);
}

/**
 * Open-loop cells where the load generator fell behind its schedule or used most of a core
 * (at 1000 req/s the bare server's p50 should be a few ms at most): those rows may measure
 * the client or the machine rather than the server.
 */
export function saturationNotes(cells: readonly CellResult[]): string {
  const suspect = cells.filter(
    (c) =>
      c.load.kind === "open" &&
      (c.clientCpuCores > 0.85 || c.clientLagP99Ms > 10 || (c.server === "bare" && c.p50Ms > 3)),
  );
  if (suspect.length === 0) return "";
  return markdownTable(
    ["load", "server", "client cores", "client CPU wait", "start lag p99 ms", "p50 ms"],
    suspect.map((c) => [
      loadLabel(c.load),
      SERVER_LABELS[c.server],
      c.clientCpuCores.toFixed(2),
      `${(c.clientCpuWaitShare * 100).toFixed(0)} %`,
      c.clientLagP99Ms.toFixed(1),
      c.p50Ms.toFixed(2),
    ]),
  );
}

function _sum(values: readonly number[]): number {
  return values.reduce((a, b) => a + b, 0);
}

/** `serve --workers N` against one process and the bare server (report.ts: workersScaling). */
export function workersScalingTable(rows: readonly WorkersScaling[], workers: number): string {
  const triple = (t: { bare: number; one: number; workers: number }, digits: number) =>
    `${t.bare.toFixed(digits)} / ${t.one.toFixed(digits)} / ${t.workers.toFixed(digits)}`;
  return markdownTable(
    [
      "load",
      `throughput ${workers} workers ÷ 1 process`,
      `${workers} workers ÷ bare`,
      "req/s per server core (bare / 1 / workers)",
      "server CPU µs/req (bare / 1 / workers)",
      "server cores (bare / 1 / workers)",
      "workers' cores by process (primary/…)",
      "client cores (workers' window)",
    ],
    rows.map((r) => [
      loadLabel(r.load),
      `${r.throughputVsOne.toFixed(2)}×`,
      `${r.throughputVsBare.toFixed(2)}×`,
      triple(r.perServerCore, 0),
      triple(r.cpuUsPerRequest, 0),
      triple(r.serverCores, 2),
      r.coresByProcess.map((c) => c.toFixed(2)).join(" / "),
      r.clientCores.toFixed(2),
    ]),
  );
}
