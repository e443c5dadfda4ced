import cluster from "node:cluster";
import { parseArgs } from "node:util";
import {
  ENVOY_DEFAULT_MESSAGE_TIMEOUT_MS,
  queueWaitsThatCannotFit,
  SHIPPED_MAX_MESSAGE_TIMEOUT_MS,
} from "../config/envoy-timeouts.ts";
import { formatPolicyErrors, loadPolicyFile } from "../config/load.ts";
import { compilePolicy, type Policy } from "../config/policy.ts";
import { PolicyHolder } from "../config/reload.ts";
import type { ParsedPolicy } from "../config/schema.ts";
import { startGateway } from "../gateway.ts";
import { createLogger, type LogLevel, loggerWith } from "../log.ts";
import { usageFilterConfig } from "../proxy/config.ts";
import { startExtProcProxy } from "../proxy/proxy-server.ts";
import { runPrimary, WORKER_SLOT_ENV } from "../workers/primary.ts";
import { announceServing, answerPrimary } from "../workers/worker-answers.ts";
import { parseWorkerCount } from "../workers/worker-count.ts";
import { type CommandIo, parseFlags } from "./io.ts";

export const SERVE_USAGE = `Usage: fairgate serve --config FILE [options]

  --config FILE            policy file (YAML); reloaded on change and on SIGHUP
  --grpc-listen ADDR       ext_proc gRPC listen address (default from policy, :9002)
  --http-listen ADDR       HTTP API listen address (default from policy, :9090)
  --metrics-listen ADDR    serve /metrics on its own listener at ADDR, not on the HTTP API's
                           (default from policy server.metricsListen; unset: on the HTTP API)
  --store memory|redis     override the policy's store
  --redis URL              use this Redis (implies --store redis)
  --proxy-listen ADDR      also run the built-in Envoy-faithful proxy on ADDR
  --upstream URL           the engine the built-in proxy forwards to (with --proxy-listen)
  --max-message-timeout-ms N  Envoy's ext_proc max_message_timeout (default: the policy's
                           server.envoy.maxMessageTimeoutMs, ${SHIPPED_MAX_MESSAGE_TIMEOUT_MS} unless set)
  --message-timeout-ms N   Envoy's ext_proc message_timeout (default: server.envoy.messageTimeoutMs,
                           ${ENVOY_DEFAULT_MESSAGE_TIMEOUT_MS}, Envoy's); the built-in proxy uses both
  --workers N|auto         run N worker processes sharing the gRPC (and proxy) port, one
                           replica each, with the HTTP API served for all of them; auto: one
                           per core; N > 1 needs the Redis store (default from policy
                           server.workers, 1: one process)
  --log-level LEVEL        debug, info, warn or error (default info)
`;

/** Runs until SIGTERM/SIGINT; resolves with the exit code. */
export async function runServe(args: string[], io: CommandIo): Promise<number> {
  const values = parseFlags("serve", args, io, SERVE_USAGE, parse);
  if (typeof values === "number") return values;
  const configPath = values.config;
  if (!configPath) {
    io.stderr(`fairgate serve: --config FILE is required\n\n${SERVE_USAGE}`);
    return 2;
  }
  if (values["proxy-listen"] && !values.upstream) {
    io.stderr("fairgate serve: --proxy-listen needs --upstream URL\n");
    return 2;
  }
  if (values.store !== undefined && values.store !== "memory" && values.store !== "redis") {
    io.stderr("fairgate serve: --store must be memory or redis\n");
    return 2;
  }
  const level = (values["log-level"] ?? "info") as LogLevel;
  if (!["debug", "info", "warn", "error"].includes(level)) {
    io.stderr(`fairgate serve: --log-level must be debug, info, warn or error\n`);
    return 2;
  }
  // A worker of `serve --workers` (cluster.fork runs this same command line again).
  const workerSlot = cluster.isWorker ? Number(process.env[WORKER_SLOT_ENV]) : undefined;
  const logger =
    workerSlot === undefined
      ? createLogger({ level })
      : loggerWith(createLogger({ level }), { worker: workerSlot });

  const overrideStore = (policy: Policy): Policy => applyStoreFlags(policy, values);
  const loaded = await loadPolicyFile(configPath);
  if (!loaded.ok) {
    io.stderr(`${formatPolicyErrors(configPath, loaded.errors)}\n`);
    return 2;
  }
  let gateway: Awaited<ReturnType<typeof startGateway>> | undefined;
  const holder = new PolicyHolder(configPath, overrideStore(loaded.policy), {
    logger,
    transform: overrideStore,
    onChange: (policy) => {
      gateway?.metrics.policyReloads.inc({ result: "applied" });
      void gateway?.policyChanged(policy);
    },
    onReject: () => gateway?.metrics.policyReloads.inc({ result: "rejected" }),
  });
  const server = holder.current.source.server;
  const configuredEnvoy = server.envoy;
  const flagMax = values["max-message-timeout-ms"];
  const flagMessage = values["message-timeout-ms"];
  const maxMessageTimeoutMs = Number(flagMax ?? configuredEnvoy.maxMessageTimeoutMs);
  if (!Number.isInteger(maxMessageTimeoutMs) || maxMessageTimeoutMs < 1_000) {
    io.stderr("fairgate serve: --max-message-timeout-ms must be an integer of at least 1000\n");
    return 2;
  }
  const messageTimeoutMs = Number(flagMessage ?? configuredEnvoy.messageTimeoutMs);
  if (!Number.isInteger(messageTimeoutMs) || messageTimeoutMs < 1 || messageTimeoutMs > maxMessageTimeoutMs) {
    io.stderr(
      "fairgate serve: --message-timeout-ms must be an integer from 1 to the max_message_timeout (--max-message-timeout-ms)\n",
    );
    return 2;
  }
  if (flagMax !== undefined) {
    // The policy file was checked against its own server.envoy; the flag replaces it.
    const misfits = queueWaitsThatCannotFit(holder.current.source, { maxMessageTimeoutMs, messageTimeoutMs });
    if (misfits.length > 0) {
      io.stderr(`${misfits.map((m) => `fairgate serve: ${m}`).join("\n")}\n`);
      return 2;
    }
  }
  const workerCount = parseWorkerCount(values.workers ?? String(server.workers));
  if (!workerCount.ok) {
    io.stderr(`fairgate serve: ${workerCount.message}\n`);
    return 2;
  }
  const workers = workerCount.workers;
  if (workers > 1 && "memory" in holder.current.source.store) {
    const named = values.workers === undefined ? "server.workers" : "--workers";
    io.stderr(
      `fairgate serve: ${named} ${workers} needs the Redis store: with store: memory each worker would keep budgets, queues and backend caps of its own. Set store.redis in ${configPath} or pass --redis URL (or run one worker)\n`,
    );
    return 2;
  }
  const metricsListen = values["metrics-listen"] ?? server.metricsListen;
  const httpListen = values["http-listen"] ?? server.httpListen;
  if (workers > 1 && cluster.isPrimary) {
    try {
      return await runPrimary({ workers, httpListen, metricsListen, holder, logger });
    } catch (error) {
      io.stderr(`fairgate serve: cannot start: ${(error as Error).message}\n`);
      return 1;
    }
  }
  try {
    gateway = await startGateway({
      policy: () => holder.current,
      grpcListen: values["grpc-listen"] ?? server.grpcListen,
      // A worker's HTTP API is the primary's.
      httpListen: workerSlot === undefined ? httpListen : undefined,
      ...(metricsListen === undefined || workerSlot !== undefined ? {} : { metricsListen }),
      logger,
      maxMessageTimeoutMs,
      messageTimeoutMs,
    });
  } catch (error) {
    io.stderr(`fairgate serve: cannot start: ${(error as Error).message}\n`);
    return 1;
  }
  holder.watch();
  const log = workerSlot === undefined ? logger.info : logger.debug;
  log("fairgate serving", {
    grpcPort: gateway.grpcPort,
    httpPort: gateway.httpPort,
    ...(gateway.metricsPort === undefined ? {} : { metricsPort: gateway.metricsPort }),
    policy: holder.current.version,
    tenants: holder.current.tenants.size,
  });

  let proxy: Awaited<ReturnType<typeof startExtProcProxy>> | undefined;
  if (values["proxy-listen"] && values.upstream) {
    try {
      proxy = await startExtProcProxy({
        listen: values["proxy-listen"],
        upstream: values.upstream,
        extProc: {
          grpcTarget: `127.0.0.1:${gateway.grpcPort}`,
          messageTimeoutMs,
          maxMessageTimeoutMs,
          failureModeAllow: false,
          // Envoy's buffer limit must admit every body the policy allows.
          maxRequestBodyBytes: holder.current.source.requests.maxBodyBytes,
          // Half-close and let fairgate end each stream: resetting every stream (Envoy's
          // default) trips Node's HTTP/2 rapid-reset protection at a few hundred requests/s.
          gracefulClose: true,
        },
        // The usage filter (observability mode), as in envoy/envoy.yaml.
        observers: [{ ...usageFilterConfig(`127.0.0.1:${gateway.grpcPort}`), gracefulClose: true }],
        logger,
      });
      log("built-in proxy listening", { url: proxy.url, upstream: values.upstream });
    } catch (error) {
      io.stderr(`fairgate serve: cannot start the proxy: ${(error as Error).message}\n`);
      await gateway.shutdown(0);
      return 1;
    }
  }

  const stopAnswering = workerSlot === undefined ? undefined : answerPrimary(gateway.api, gateway.metrics);
  if (workerSlot !== undefined) announceServing({ grpcPort: gateway.grpcPort, proxyUrl: proxy?.url });

  return await new Promise<number>((resolve) => {
    const onHup = () => void holder.reload();
    let stopping = false;
    const stop = (signal: string) => {
      // A worker hears both the terminal's SIGINT and the primary's SIGTERM.
      if (stopping) return;
      stopping = true;
      logger.info("signal received", { signal });
      process.off("SIGHUP", onHup);
      void (async () => {
        holder.close();
        // The proxy carries each queued request's dispatch or 503 to its client, so it
        // closes only once the gateway has drained: closed first, it resets them all.
        await gateway?.shutdown();
        await proxy?.close();
        stopAnswering?.();
        resolve(0);
      })();
    };
    process.on("SIGHUP", onHup);
    process.once("SIGTERM", () => stop("SIGTERM"));
    process.once("SIGINT", () => stop("SIGINT"));
    // A worker whose primary is gone (killed) drains and exits rather than serve unsupervised.
    if (workerSlot !== undefined) process.once("disconnect", () => stop("primary disconnected"));
  });
}

function parse(args: string[]) {
  return parseArgs({
    args,
    strict: true,
    allowPositionals: false,
    options: {
      config: { type: "string", short: "c" },
      "grpc-listen": { type: "string" },
      "http-listen": { type: "string" },
      "metrics-listen": { type: "string" },
      store: { type: "string" },
      redis: { type: "string" },
      "proxy-listen": { type: "string" },
      upstream: { type: "string" },
      "max-message-timeout-ms": { type: "string" },
      "message-timeout-ms": { type: "string" },
      "log-level": { type: "string" },
      workers: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  }).values;
}

/** --store / --redis override the file's store section, on every reload too. */
function applyStoreFlags(
  policy: Policy,
  flags: { store?: string | undefined; redis?: string | undefined },
): Policy {
  if (flags.store === undefined && flags.redis === undefined) return policy;
  const current = policy.source.store;
  let store: ParsedPolicy["store"];
  if (flags.store === "memory") store = { memory: {} };
  else {
    const url = flags.redis ?? ("redis" in current ? current.redis : "redis://127.0.0.1:6379");
    store =
      "redis" in current
        ? { ...current, redis: url }
        : { redis: url, onOutage: "fail-open", timeoutMs: 25, keyPrefix: "fairgate:", leaseTtlMs: 30_000 };
  }
  return compilePolicy({ ...structuredClone(policy.source), store } as ParsedPolicy);
}
