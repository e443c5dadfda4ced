import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, readdirSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { PolicyInput } from "../../../extproc/src/config/schema.ts";
import { hashApiKey } from "../../../extproc/src/identity/identify.ts";
import { freePort } from "../../helpers/redis.ts";
import { BENCH_MODEL } from "./envoy-messages.ts";
import { type ProcessTimes, processTimes, processTree, sumTimes } from "./proc-stats.ts";

/**
 * The servers the lifecycle benchmark compares, each in its own process (or process tree)
 * so that its CPU can be read from the kernel: the bare CONTINUE server, `fairgate serve`
 * with the Redis store or the memory store, and `fairgate serve --workers N` with Redis.
 */

export type ServerKind = "bare" | "redis" | "memory" | "workers";
/** What a run measures unless --servers says otherwise. */
export const SERVER_KINDS: readonly ServerKind[] = ["bare", "redis", "memory"];
export const ALL_SERVER_KINDS: readonly ServerKind[] = [...SERVER_KINDS, "workers"];
export const SERVER_LABELS: Record<ServerKind, string> = {
  bare: "bare CONTINUE",
  redis: "fairgate + Redis",
  memory: "fairgate + memory",
  workers: "fairgate + Redis, workers",
};

export interface ServerProcess {
  readonly kind: ServerKind;
  readonly port: number;
  readonly pid: number;
  /** fairgate's HTTP API (/metrics); none for the bare server. */
  readonly httpPort: number | undefined;
  /** CPU and run-queue time the process (and its workers) used so far, all threads. */
  times(): ProcessTimes;
  /** The same per process: the primary, then each worker (one entry for a single process). */
  timesByProcess(): ProcessTimes[];
  /** SIGTERM and wait for the exit (a --cpu-prof profile is written then). */
  stop(): Promise<void>;
  /** SIGKILL now (the benchmark itself is exiting abnormally). */
  kill(): void;
  /** How many times the server logged each message so far (fairgate's JSON `msg`). */
  logCounts(): Record<string, number>;
}

const ROOT = join(import.meta.dirname, "..", "..", "..");
const FAIRGATE_BIN = join(ROOT, "bin", "fairgate.js");
const BARE_SERVER = join(import.meta.dirname, "bare-server.ts");

export const TENANT_COUNT = 100;

export function benchApiKeys(): string[] {
  return Array.from({ length: TENANT_COUNT }, (_, i) => `bench-key-${String(i).padStart(3, "0")}`);
}

/**
 * 100 tenants in three tiers, each with an API key and budget limits that are checked on
 * every request but sit far above the load (so nothing is ever refused or queued), one
 * backend with caps far above the load and no engine metrics URLs.
 */
export function benchPolicy(): PolicyInput {
  const tiers = ["premium", "standard", "free"] as const;
  return {
    identity: [{ apiKey: { header: "authorization", scheme: "Bearer" } }],
    backends: [
      {
        name: "llama-8b",
        models: [BENCH_MODEL],
        maxInFlightRequests: 1_000_000,
        maxInFlightTokens: 1_000_000_000,
        maxPrefillTokensInFlight: 1_000_000_000,
      },
    ],
    tiers: {
      premium: { priority: 0, weight: 4 },
      standard: { priority: 1, weight: 2 },
      free: { priority: 2, weight: 1 },
    },
    tenants: benchApiKeys().map((key, i) => ({
      id: `tenant-${String(i).padStart(3, "0")}`,
      tier: tiers[i % tiers.length],
      apiKeys: [hashApiKey(key)],
      limits: {
        rpm: 10_000_000,
        tpm: 10_000_000_000,
        maxConcurrency: 100_000,
        maxContextTokens: 32_768,
        maxQueued: 100_000,
        maxQueueWaitMs: 30_000,
      },
    })),
    server: { shutdownGraceMs: 1_000 },
  };
}

export function writeBenchPolicy(dir: string): string {
  const path = join(dir, "lifecycle-policy.json");
  writeFileSync(path, JSON.stringify(benchPolicy(), null, 2));
  return path;
}

/** Where bin/fairgate.js will load fairgate from, and whether a build is older than the sources. */
export function fairgateBuild(): { compiled: boolean; stale: boolean } {
  const compiled = join(ROOT, "dist", "cli.js");
  if (!existsSync(compiled)) return { compiled: false, stale: false };
  const builtAt = statSync(compiled).mtimeMs;
  const sources = readdirSync(join(ROOT, "extproc", "src"), { recursive: true, encoding: "utf8" });
  const stale = sources.some(
    (file) => file.endsWith(".ts") && statSync(join(ROOT, "extproc", "src", file)).mtimeMs > builtAt,
  );
  return { compiled: true, stale };
}

export async function startBareServer(): Promise<ServerProcess> {
  const child = spawn(process.execPath, ["--import", "tsx", BARE_SERVER], {
    stdio: ["ignore", "inherit", "inherit", "ipc"],
  });
  const port = await new Promise<number>((resolve, reject) => {
    child.once("exit", (code) => reject(new Error(`bare server exited (${code})`)));
    child.on("message", (message: { type: string; port: number }) => {
      if (message.type === "listening") resolve(message.port);
    });
  });
  return serverProcess("bare", child, port);
}

export async function startFairgate(options: {
  store: { kind: "memory" } | { kind: "redis"; url: string };
  policyPath: string;
  cpuProfDir?: string;
  cpuProfIntervalUs?: number;
  /** `serve --workers N` (kind "workers"). */
  workers?: number;
}): Promise<ServerProcess> {
  const grpcPort = await freePort();
  const httpPort = await freePort();
  const nodeFlags = options.cpuProfDir ? ["--cpu-prof", "--cpu-prof-dir", options.cpuProfDir] : [];
  // V8 samples every 1000 µs by default; a longer interval costs the server less.
  if (options.cpuProfDir && options.cpuProfIntervalUs)
    nodeFlags.push("--cpu-prof-interval", String(options.cpuProfIntervalUs));
  const storeFlags = options.store.kind === "redis" ? ["--redis", options.store.url] : ["--store", "memory"];
  if (options.workers !== undefined && options.store.kind !== "redis")
    throw new Error("fairgate --workers needs the Redis store");
  const kind: ServerKind = options.workers === undefined ? options.store.kind : "workers";
  const workerFlags = options.workers === undefined ? [] : ["--workers", String(options.workers)];
  const child = spawn(
    process.execPath,
    [
      ...nodeFlags,
      FAIRGATE_BIN,
      "serve",
      "--config",
      options.policyPath,
      "--grpc-listen",
      `127.0.0.1:${grpcPort}`,
      "--http-listen",
      `127.0.0.1:${httpPort}`,
      "--log-level",
      "warn",
      ...storeFlags,
      ...workerFlags,
    ],
    { stdio: ["ignore", "ignore", "pipe"] },
  );
  const log = new ServerLog(child);
  const exited = new Promise<never>((_, reject) =>
    child.once("exit", (code) =>
      reject(new Error(`fairgate (${kind}) exited with ${code} before it was ready:\n${log.tail()}`)),
    ),
  );
  exited.catch(() => {});
  await Promise.race([waitForReady(httpPort), exited]);
  return serverProcess(kind, child, grpcPort, { log, httpPort });
}

/** Whether fairgate's budget store was in an outage (fail-open: local budgets, no Redis). */
export async function storeOutageState(server: ServerProcess): Promise<{ outage: boolean; outages: number }> {
  if (server.httpPort === undefined) return { outage: false, outages: 0 };
  const text = await (await fetch(`http://127.0.0.1:${server.httpPort}/metrics`)).text();
  const value = (name: string) => Number(new RegExp(`^${name} (\\S+)$`, "m").exec(text)?.[1] ?? 0);
  return { outage: value("fairgate_store_outage") > 0, outages: value("fairgate_store_outages_total") };
}

async function waitForReady(httpPort: number): Promise<void> {
  const deadline = Date.now() + 60_000;
  for (;;) {
    try {
      const response = await fetch(`http://127.0.0.1:${httpPort}/readyz`);
      if (response.ok) return;
    } catch {
      // Not listening yet.
    }
    if (Date.now() > deadline) throw new Error(`fairgate not ready on :${httpPort} within 60 s`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** fairgate's stderr (JSON lines): counted by message, the last lines kept for errors. */
class ServerLog {
  readonly counts: Record<string, number> = {};
  readonly #last: string[] = [];
  #partial = "";

  constructor(child: ChildProcess) {
    child.stderr?.setEncoding("utf8");
    child.stderr?.on("data", (text: string) => {
      const lines = (this.#partial + text).split("\n");
      this.#partial = lines.pop() ?? "";
      for (const line of lines) this.#add(line);
    });
  }

  tail(): string {
    return this.#last.join("\n");
  }

  #add(line: string): void {
    this.#last.push(line);
    if (this.#last.length > 20) this.#last.shift();
    let message = line.slice(0, 120);
    try {
      const record = JSON.parse(line) as { msg?: unknown; level?: unknown };
      if (typeof record.msg === "string") message = `${record.level ?? "log"}: ${record.msg}`;
    } catch {
      // Not a log record (a crash, a Node warning): counted as it is.
    }
    this.counts[message] = (this.counts[message] ?? 0) + 1;
  }
}

function serverProcess(
  kind: ServerKind,
  child: ChildProcess,
  port: number,
  fairgate?: { log: ServerLog; httpPort: number },
): ServerProcess {
  const pid = child.pid;
  if (pid === undefined) throw new Error(`${kind} server has no pid`);
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  return {
    kind,
    port,
    pid,
    httpPort: fairgate?.httpPort,
    times: () => sumTimes(processTree(pid).map(processTimes)),
    timesByProcess: () => processTree(pid).map(processTimes),
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 20_000);
      await exited;
      clearTimeout(timer);
    },
    kill() {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    },
    logCounts: () => ({ ...fairgate?.log.counts }),
  };
}
