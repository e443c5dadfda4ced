/**
 * The request lifecycle through Envoy's two ext_proc filters (issue 16): what fairgate
 * costs per request against a bare CONTINUE server, each server in its own process, under
 * open-loop rates and closed loops, CPU read from the kernel's counters.
 *
 * Every request is Envoy's exact message sequence (envoy/envoy.yaml, docs/envoy-fidelity.md)
 * over one shared gRPC channel per server and client process: the main stream (request
 * headers, BUFFERED body, response headers, response trailers, each awaiting its reply,
 * then a graceful half-close) and the usage filter's observability-mode stream (request
 * headers with the main filter's x-fairgate-request-id, response headers, the STREAMED SSE
 * chunks; closed deferred_close_timeout later). Tenants rotate over 100 API keys.
 *
 *   node --import tsx test/bench/lifecycle.ts [--quick] [--json FILE] [--cpu-prof DIR [--cpu-prof-interval US]]
 *     [--servers bare,redis,memory[,workers]] [--workers N]
 *     [--loads open:250,open:500,open:1000,closed:1,closed:16,closed:64]
 *     [--clients N] [--warmup-ms N] [--measure-ms N] [--arrivals poisson|uniform]
 *     [--deferred-close-ms N]
 *
 * "workers" is `fairgate serve --workers N` (default 2) on Redis. Its workers share the
 * gRPC port and the cluster hands each new connection to the next worker, so each client
 * process (one connection per server) lands on one worker: with workers in the run there
 * are at least N client processes, for every server alike.
 */
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { cpus, loadavg, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { Redis } from "ioredis";
import { startRedis, type TestRedis } from "../helpers/redis.ts";
import type { LifecycleOptions } from "./lifecycle/lifecycle-client.ts";
import { LoadClients } from "./lifecycle/load-clients.ts";
import {
  type CellPlan,
  idleCores,
  measureCell,
  prime,
  type RedisAccess,
  sleep,
} from "./lifecycle/measure.ts";
import type { Load } from "./lifecycle/protocol.ts";
import { type CellResult, compareWithBare, workersScaling } from "./lifecycle/report.ts";
import {
  ALL_SERVER_KINDS,
  benchApiKeys,
  fairgateBuild,
  SERVER_KINDS,
  SERVER_LABELS,
  type ServerKind,
  type ServerProcess,
  startBareServer,
  startFairgate,
  writeBenchPolicy,
} from "./lifecycle/servers.ts";
import {
  comparisonTable,
  measurementsTable,
  progressLine,
  redisRoundTripsTable,
  saturationNotes,
  serverLogTable,
  targetsTable,
  workersScalingTable,
} from "./lifecycle/tables.ts";

const { values } = parseArgs({
  options: {
    quick: { type: "boolean", default: false },
    json: { type: "string" },
    "cpu-prof": { type: "string" },
    "cpu-prof-interval": { type: "string" },
    servers: { type: "string", default: SERVER_KINDS.join(",") },
    loads: { type: "string", default: "open:250,open:500,open:1000,closed:1,closed:16,closed:64" },
    clients: { type: "string", default: "1" },
    "warmup-ms": { type: "string" },
    "measure-ms": { type: "string" },
    arrivals: { type: "string", default: "poisson" },
    "deferred-close-ms": { type: "string", default: "5000" },
    workers: { type: "string", default: "2" },
  },
});

// The full run's warm-up outlasts deferred_close_timeout, so the usage streams the previous
// cell left open have closed before a window starts.
const warmupMs = Number(values["warmup-ms"] ?? (values.quick ? 1_000 : 5_000));
const measureMs = Number(values["measure-ms"] ?? (values.quick ? 2_000 : 9_000));
const primeMs = values.quick ? 1_500 : 3_000;
const idleMs = values.quick ? 1_000 : 2_000;
const roundTripSampleMs = values.quick ? 500 : 1_000;
const arrivals = values.arrivals === "uniform" ? "uniform" : "poisson";
const servers = values.servers.split(",").map((s) => s.trim()) as ServerKind[];
for (const server of servers) {
  if (!ALL_SERVER_KINDS.includes(server)) throw new Error(`--servers: unknown server "${server}"`);
}
const workerCount = Number(values.workers);
if (!(Number.isInteger(workerCount) && workerCount >= 2))
  throw new Error("--workers: an integer of at least 2");
const clientCount = servers.includes("workers")
  ? Math.max(Number(values.clients), workerCount)
  : Number(values.clients);
const loads = values.loads.split(",").map((spec): Load => {
  const [kind, value] = spec.trim().split(":");
  const n = Number(value);
  if (!(n > 0)) throw new Error(`--loads: "${spec}" needs a positive number`);
  if (kind === "open") return { kind: "open", rate: n, arrivals };
  if (kind === "closed") return { kind: "closed", concurrency: n };
  throw new Error(`--loads: "${spec}" is neither open:RATE nor closed:CONCURRENCY`);
});
const lifecycle: Omit<LifecycleOptions, "expectRequestId"> = {
  deferredCloseMs: Number(values["deferred-close-ms"]),
  remoteCloseTimeoutMs: 1_000,
  requestTimeoutMs: 10_000,
};
const cpuProfDir = values["cpu-prof"] ? resolve(values["cpu-prof"]) : undefined;

const out = (text: string) => process.stdout.write(text);

async function main(): Promise<void> {
  const startedAt = new Date();
  const build = fairgateBuild();
  const loadBefore = loadavg();
  out(
    `Request lifecycle benchmark — ${startedAt.toISOString()}, node ${process.version}, ${cpus().length} CPUs, load average ${loadBefore.map((l) => l.toFixed(2)).join(" ")}\n`,
  );
  out(
    `fairgate from ${build.compiled ? "dist/ (compiled)" : "the TypeScript sources (tsx)"}${build.stale ? " — WARNING: dist/ is older than extproc/src, run npm run build" : ""}; ${clientCount} client process(es); warm-up ${warmupMs} ms, window ${measureMs} ms per cell\n\n`,
  );

  const workDir = mkdtempSync(join(tmpdir(), "fairgate-lifecycle-"));
  if (cpuProfDir) mkdirSync(cpuProfDir, { recursive: true });
  const policyPath = writeBenchPolicy(workDir);
  let redis: TestRedis | undefined;
  let redisAccess: RedisAccess | undefined;
  const running = new Map<ServerKind, ServerProcess>();
  let clients: LoadClients | undefined;
  // Whatever ends this process, the servers it started end with it.
  const killAll = () => {
    for (const server of running.values()) server.kill();
    void redis?.stop();
  };
  process.on("exit", killAll);
  process.once("SIGINT", () => process.exit(130));
  process.once("SIGTERM", () => process.exit(143));
  try {
    if (servers.includes("redis") || servers.includes("workers")) {
      redis = await startRedis();
      redisAccess = { url: redis.url, client: new Redis(redis.url) };
    }
    for (const kind of servers) {
      const server =
        kind === "bare"
          ? await startBareServer()
          : await startFairgate({
              store:
                kind === "memory" ? { kind: "memory" } : { kind: "redis", url: (redis as TestRedis).url },
              ...(kind === "workers" ? { workers: workerCount } : {}),
              policyPath,
              ...(cpuProfDir ? { cpuProfDir } : {}),
              ...(values["cpu-prof-interval"]
                ? { cpuProfIntervalUs: Number(values["cpu-prof-interval"]) }
                : {}),
            });
      running.set(kind, server);
    }
    clients = await LoadClients.start(clientCount);
    const keys = benchApiKeys();
    const planFor = (kind: ServerKind, seed: number): CellPlan => ({
      warmupMs,
      measureMs,
      roundTripSampleMs,
      keys,
      seed,
      options: { ...lifecycle, expectRequestId: kind !== "bare" },
    });

    const idle = await idleCores([...running.values()], idleMs);
    out(
      `Idle CPU: ${[...idle].map(([kind, cores]) => `${SERVER_LABELS[kind]} ${(cores * 1000).toFixed(1)} ms/s`).join(", ")}\n`,
    );
    for (const [kind, server] of running) await prime(clients, server, planFor(kind, 0), primeMs);

    const cells: CellResult[] = [];
    for (const [loadIndex, load] of loads.entries()) {
      // Servers take turns on each load, so drift on the shared machine hits them alike.
      for (const kind of servers) {
        const server = running.get(kind) as ServerProcess;
        const redisUse = kind === "redis" || kind === "workers" ? redisAccess : undefined;
        const cell = await measureCell(clients, server, load, planFor(kind, loadIndex + 1), redisUse);
        cells.push(cell);
        out(progressLine(cell));
        if (cell.failed > 0 || cell.connectionErrors.length > 0) {
          // A collapsed cell leaves thousands of streams timing out and resetting in the load
          // generator; let them finish before the next server is measured.
          const settleMs =
            lifecycle.requestTimeoutMs + lifecycle.deferredCloseMs + lifecycle.remoteCloseTimeoutMs;
          out(`  (settling ${settleMs / 1000} s after the failures)\n`);
          await sleep(settleMs);
        }
      }
    }

    const comparisons = compareWithBare(cells);
    const loadAfter = loadavg();
    out(`\nMeasured (load average after: ${loadAfter.map((l) => l.toFixed(2)).join(" ")})\n\n`);
    out(measurementsTable(cells));
    if (comparisons.length > 0) {
      out("\nAgainst the bare server in the same run\n\n");
      out(comparisonTable(comparisons));
      out("\n");
      out(targetsTable(cells, comparisons));
    }
    const scaling = workersScaling(cells);
    if (scaling.length > 0) {
      out(
        `\n\`serve --workers ${workerCount}\` against one fairgate process (Redis) and the bare server; ${clientCount} client processes share the machine's ${cpus().length} cores with the servers\n\n`,
      );
      out(workersScalingTable(scaling, workerCount));
    }
    if (cells.some((c) => c.redisRoundTripsByName)) {
      out("\nRedis round trips per request (MONITOR sample after each window, scripts named by file)\n\n");
      out(redisRoundTripsTable(cells));
    }
    const logged = serverLogTable(cells);
    if (logged) out(`\nLogged by the servers during the windows\n\n${logged}`);
    const saturated = saturationNotes(cells);
    if (saturated) {
      out(
        `\nWARNING: in these open-loop rows the load generator fell behind its schedule or ran short of CPU; they may measure the client or the machine (see "server CPU wait") more than the server. A busy client: try --clients 2.\n\n${saturated}`,
      );
    }
    if (values.json) {
      writeFileSync(
        values.json,
        JSON.stringify(
          {
            date: startedAt.toISOString(),
            node: process.version,
            cpus: cpus().length,
            loadAverageBefore: loadBefore,
            loadAverageAfter: loadAfter,
            fairgate: build,
            clients: clientCount,
            workers: servers.includes("workers") ? workerCount : undefined,
            warmupMs,
            measureMs,
            idleCores: Object.fromEntries(idle),
            lifecycle,
            cells,
            comparisons,
            workersScaling: scaling,
          },
          null,
          2,
        ),
      );
    }
  } finally {
    await clients?.close();
    for (const server of running.values()) await server.stop();
    redisAccess?.client.disconnect();
    await redis?.stop();
    rmSync(workDir, { recursive: true, force: true });
    process.off("exit", killAll);
  }
  if (cpuProfDir) {
    const profiles = readdirSync(cpuProfDir).filter((f) => f.endsWith(".cpuprofile"));
    out(`\nCPU profiles in ${cpuProfDir}: ${profiles.join(", ")}\n`);
    out(`Summarise: node --import tsx test/bench/cpuprofile-top.ts ${cpuProfDir} --top 25\n`);
  }
}

await main();
