import { parseArgs } from "node:util";
import { createBudgetRedisClient } from "../budget/redis-client.ts";
import { formatPolicyErrors, loadPolicyFile } from "../config/load.ts";
import type { EndpointEngineState } from "../engine/engine-state-store.ts";
import { EnginePoller } from "../engine/poller.ts";
import { RedisEngineStateStore } from "../engine/redis-engine-state.ts";
import { createLogger } from "../log.ts";
import { type CommandIo, parseFlags } from "./io.ts";

export const POLL_USAGE = `Usage: fairgate poll --config FILE [--once] [--json]

Scrapes every backend's vLLM /metrics URLs (policy backends[].metrics) every
scrapeIntervalMs, and GETs the sibling /health, into the engine state store. Prints one
line per scrape per endpoint until SIGTERM/SIGINT. With the Redis store (policy store.redis)
it also publishes every endpoint's state there, for serve replicas running with
server.enginePoller: external (one poller for many replicas).

  --config FILE   policy file (YAML)
  --once          scrape every endpoint once and exit: 0 when all are serving, 1 otherwise
  --json          with --once: one JSON document (endpoints and per-backend signals);
                  without: one JSON object per line
  --log-level L   debug, info, warn or error (default warn)

Exit 2 on a bad config or a policy whose backends list no metrics URLs. With --once and
the Redis store, exit 1 also when the states could not be published.
`;

export async function runPoll(args: string[], io: CommandIo, signal?: AbortSignal): Promise<number> {
  const values = parseFlags("poll", args, io, POLL_USAGE, parse);
  if (typeof values === "number") return values;
  const configPath = values.config;
  if (!configPath) {
    io.stderr(`fairgate poll: --config FILE is required\n\n${POLL_USAGE}`);
    return 2;
  }
  const level = values["log-level"] ?? "warn";
  if (level !== "debug" && level !== "info" && level !== "warn" && level !== "error") {
    io.stderr("fairgate poll: --log-level must be debug, info, warn or error\n");
    return 2;
  }
  const loaded = await loadPolicyFile(configPath);
  if (!loaded.ok) {
    io.stderr(`${formatPolicyErrors(configPath, loaded.errors)}\n`);
    return 2;
  }
  const policy = loaded.policy;
  const json = values.json ?? false;
  const startedAtWall = Date.now();
  const startedAt = performance.now();
  const wall = (clockMs: number) => new Date(startedAtWall + (clockMs - startedAt)).toISOString();
  const logger = createLogger({ level });
  const storeConfig = policy.source.store;
  const client =
    "redis" in storeConfig ? createBudgetRedisClient(storeConfig.redis, storeConfig.timeoutMs) : undefined;
  const store =
    client && "redis" in storeConfig
      ? new RedisEngineStateStore({ client, keyPrefix: storeConfig.keyPrefix, publish: true, logger })
      : undefined;
  const poller = new EnginePoller({
    backends: policy.backends,
    logger,
    ...(store ? { store } : {}),
    onUpdate: values.once
      ? undefined
      : (state) => io.stdout(`${json ? JSON.stringify(describe(state, wall)) : formatLine(state, wall)}\n`),
  });
  if (!poller.active) {
    io.stderr(`fairgate poll: ${configPath}: no backend lists metrics URLs (backends[].metrics)\n`);
    return 2;
  }
  const publishedTo =
    "redis" in storeConfig
      ? `${redactUrl(storeConfig.redis)} (keys ${storeConfig.keyPrefix}engine:*)`
      : undefined;
  if (client && publishedTo) {
    io.stderr(`fairgate poll: publishing engine state to Redis ${publishedTo}\n`);
    try {
      await client.connect();
    } catch (error) {
      // ioredis keeps reconnecting; publishes fail (and are retried next scrape) meanwhile.
      io.stderr(`fairgate poll: Redis unreachable for now: ${(error as Error).message}\n`);
    }
  }
  try {
    return await pollWith(poller, values, json, wall, io, signal, {
      policyBackends: policy.backends.map((b) => b.name),
      ...(store && publishedTo ? { store, publishedTo } : {}),
    });
  } finally {
    await store?.stop();
    client?.disconnect();
  }
}

async function pollWith(
  poller: EnginePoller,
  values: ReturnType<typeof parse>,
  json: boolean,
  wall: (clockMs: number) => string,
  io: CommandIo,
  signal: AbortSignal | undefined,
  context: { policyBackends: string[]; store?: RedisEngineStateStore; publishedTo?: string },
): Promise<number> {
  if (values.once) {
    const states = await poller.scrapeAll();
    await context.store?.flush();
    const publishError = context.store?.lastError;
    if (json) {
      const backends: Record<string, unknown> = {};
      for (const name of context.policyBackends) {
        const signals = poller.signals(name);
        if (signals) backends[name] = signals;
      }
      const published = context.publishedTo
        ? {
            published: publishError
              ? { to: context.publishedTo, error: publishError }
              : { to: context.publishedTo },
          }
        : {};
      io.stdout(
        `${JSON.stringify({ endpoints: states.map((s) => describe(s, wall)), backends, ...published }, jsonReplacer, 2)}\n`,
      );
    } else for (const state of states) io.stdout(`${formatLine(state, wall)}\n`);
    if (publishError) io.stderr(`fairgate poll: could not publish to Redis: ${publishError}\n`);
    return !publishError &&
      states.every((s) => s.status === "serving" && s.lastScrapeOkAt === s.lastAttemptAt)
      ? 0
      : 1;
  }

  poller.start();
  // The poller's timers are unref'd; hold the process open until told to stop.
  const keepAlive = setInterval(() => {}, 1 << 30);
  await new Promise<void>((resolve) => {
    const stop = () => resolve();
    if (signal) signal.addEventListener("abort", stop, { once: true });
    else {
      process.once("SIGTERM", stop);
      process.once("SIGINT", stop);
    }
  });
  clearInterval(keepAlive);
  await poller.stop();
  return 0;
}

/** A Redis URL without its password, for printing. */
function redactUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = "***";
    return parsed.toString();
  } catch {
    return "(unparsable URL)";
  }
}

function parse(args: string[]) {
  return parseArgs({
    args,
    strict: true,
    allowPositionals: false,
    options: {
      config: { type: "string", short: "c" },
      once: { type: "boolean" },
      json: { type: "boolean" },
      "log-level": { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  }).values;
}

/** A JSON-friendly view of one endpoint (clock times as ISO timestamps). */
export function describe(state: EndpointEngineState, wall: (clockMs: number) => string) {
  const s = state.snapshot;
  return {
    backend: state.backend,
    url: state.url,
    status: state.status,
    health: state.health ?? null,
    ...(state.lastAttemptAt !== undefined ? { at: wall(state.lastAttemptAt) } : {}),
    ...(state.lastScrapeOkAt !== undefined ? { lastScrapeOkAt: wall(state.lastScrapeOkAt) } : {}),
    ...(state.lastError ? { error: state.lastError } : {}),
    ...(s
      ? {
          engine: {
            running: s.running,
            waiting: Number.isFinite(s.waiting) ? s.waiting : null,
            kvCacheUsage: s.kvCacheUsage,
            kvCapacityTokens: s.kvCapacityTokens ?? null,
            promptTokensTotal: s.promptTokensTotal,
            generationTokensTotal: s.generationTokensTotal,
            preemptionsTotal: s.preemptionsTotal,
            models: s.models,
            engines: s.engines,
            ...(s.unknown.length > 0 ? { unknown: s.unknown } : {}),
            ...(s.missing.length > 0 ? { missing: s.missing } : {}),
            ...(s.parseErrors > 0 ? { parseErrors: s.parseErrors } : {}),
          },
        }
      : {}),
    tokensPerSecond: state.tokensPerSecond,
    ...(state.loadingSince !== undefined ? { loadingSince: wall(state.loadingSince) } : {}),
    loadDurationsMs: state.loadDurationsMs.map((ms) => Math.round(ms)),
  };
}

function formatLine(state: EndpointEngineState, wall: (clockMs: number) => string): string {
  const at = wall(state.lastAttemptAt ?? performance.now());
  const parts = [at, state.backend, state.url, state.status];
  const s = state.snapshot;
  if (s && state.lastScrapeOkAt === state.lastAttemptAt) {
    parts.push(
      `running=${s.running}`,
      `waiting=${Number.isFinite(s.waiting) ? s.waiting : "unknown"}`,
      `kv=${s.kvCacheUsage.toFixed(3)}`,
    );
    if (s.kvCapacityTokens !== undefined) parts.push(`kvTokens=${s.kvCapacityTokens}`);
    if (state.tokensPerSecond !== null) parts.push(`tok/s=${state.tokensPerSecond.toFixed(1)}`);
    parts.push(`preemptions=${s.preemptionsTotal}`, `models=${s.models.join(",") || "-"}`);
    if (s.engines > 1) parts.push(`engines=${s.engines}`);
    if (s.unknown.length > 0) parts.push(`unknown=${s.unknown.join(",")}`);
  }
  const lastLoad = state.loadDurationsMs.at(-1);
  if (state.status === "serving" && lastLoad !== undefined) parts.push(`lastLoadMs=${Math.round(lastLoad)}`);
  if (state.lastError) parts.push(`error="${state.lastError}"`);
  return parts.join(" ");
}

function jsonReplacer(_key: string, value: unknown): unknown {
  return typeof value === "number" && !Number.isFinite(value) ? null : value;
}
