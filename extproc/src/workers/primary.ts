/**
 * `serve --workers N`: the primary process. It forks N workers (node:cluster), each a
 * whole replica (its own replica id, Redis connections, fair queue and poller) sharing the
 * gRPC port and the built-in proxy's port through cluster's listening sockets, and serves
 * the HTTP API for the host from its workers' answers (host-api.ts). It restarts a worker
 * that exits with backoff (restart-policy.ts), forwards SIGHUP, and on SIGTERM/SIGINT lets
 * every worker drain as a single `serve` does, then exits 0.
 */
import cluster, { type Worker } from "node:cluster";
import { type Clock, systemClock } from "../clock.ts";
import type { PolicyHolder } from "../config/reload.ts";
import { startMetricsServer } from "../http/metrics-server.ts";
import { type HttpApi, startHttpApi } from "../http/server.ts";
import type { Logger } from "../log.ts";
import { hostApiSource } from "./host-api.ts";
import { isWorkerMessage, type ServingMessage } from "./messages.ts";
import { RestartPolicy } from "./restart-policy.ts";
import { WorkerChannel } from "./worker-channel.ts";

/** The environment variable naming a worker's slot (1..N). */
export const WORKER_SLOT_ENV = "FAIRGATE_WORKER_SLOT";
/** Beyond the policy's shutdownGraceMs, how long a draining worker may take before SIGKILL. */
const DRAIN_SLACK_MS = 15_000;

export interface PrimaryOptions {
  readonly workers: number;
  readonly httpListen: string;
  readonly metricsListen: string | undefined;
  /** The primary's own view of the policy (admin tokens, tenants, version), watched. */
  readonly holder: PolicyHolder;
  readonly logger: Logger;
  readonly clock?: Clock;
}

interface Slot {
  channel: WorkerChannel | undefined;
  /** When its current worker announced it serves (clock ms). */
  servingSince: number | undefined;
  serving: ServingMessage | undefined;
  readonly restarts: RestartPolicy;
  restartTimer: NodeJS.Timeout | undefined;
}

/** Runs until SIGTERM/SIGINT (0) or until a worker keeps failing to start (1). */
export async function runPrimary(options: PrimaryOptions): Promise<number> {
  const { logger, holder } = options;
  const clock = options.clock ?? systemClock;
  // Structured clone: Maps (virtual counters) and Infinity (uncapped claims) cross intact.
  cluster.setupPrimary({ serialization: "advanced" });
  const slots = new Map<number, Slot>();
  for (let slot = 1; slot <= options.workers; slot++)
    slots.set(slot, {
      channel: undefined,
      servingSince: undefined,
      serving: undefined,
      restarts: new RestartPolicy(),
      restartTimer: undefined,
    });
  let stopping: Promise<number> | undefined;
  let announced = false;

  const source = hostApiSource({
    workers: options.workers,
    serving: () =>
      [...slots.values()].flatMap((s) => (s.channel && s.servingSince !== undefined ? [s.channel] : [])),
    isShuttingDown: () => stopping !== undefined,
  });
  const servers: HttpApi[] = [];
  try {
    servers.push(
      await startHttpApi({
        listen: options.httpListen,
        policy: () => holder.current,
        source,
        logger,
        serveMetrics: options.metricsListen === undefined,
      }),
    );
    if (options.metricsListen !== undefined)
      servers.push(await startMetricsServer({ listen: options.metricsListen, source, logger }));
  } catch (error) {
    for (const server of servers) await server.close();
    throw error;
  }

  let resolveExit: (code: number) => void = () => {};
  const exited = new Promise<number>((resolve) => {
    resolveExit = resolve;
  });

  let drainFailed = false;
  let allStopped: () => void = () => {};

  const fork = (slot: number) => {
    const state = slots.get(slot) as Slot;
    state.restartTimer = undefined;
    const worker = cluster.fork({ [WORKER_SLOT_ENV]: String(slot) });
    state.channel = new WorkerChannel(slot, worker);
    state.servingSince = undefined;
    state.serving = undefined;
    worker.on("message", (message: unknown) => {
      if (!isWorkerMessage(message) || message.fairgate !== "serving") return;
      state.servingSince = clock.now();
      state.serving = message;
      if (announced) logger.info("worker serving", { worker: slot, pid: worker.process.pid });
      else if ([...slots.values()].every((s) => s.serving)) {
        announced = true;
        logger.info("fairgate serving", {
          workers: options.workers,
          grpcPort: message.grpcPort,
          httpPort: servers[0]?.port,
          ...(servers[1] ? { metricsPort: servers[1].port } : {}),
          ...(message.proxyUrl ? { proxyUrl: message.proxyUrl } : {}),
          policy: holder.current.version,
          tenants: holder.current.tenants.size,
          pids: [...slots.values()].map((s) => s.channel?.worker.process.pid),
        });
      }
    });
    worker.once("exit", (code, signal) => onExit(slot, worker, code, signal));
  };

  const onExit = (slot: number, worker: Worker, code: number | null, signal: string | null) => {
    const state = slots.get(slot) as Slot;
    const servedMs = state.servingSince === undefined ? undefined : clock.now() - state.servingSince;
    state.channel = undefined;
    state.servingSince = undefined;
    state.serving = undefined;
    if (stopping) {
      if (code !== 0) {
        drainFailed = true;
        logger.warn("worker did not stop cleanly", { worker: slot, pid: worker.process.pid, code, signal });
      }
      if ([...slots.values()].every((s) => !s.channel)) allStopped();
      return;
    }
    const decision = state.restarts.exited(servedMs);
    const fields = {
      worker: slot,
      pid: worker.process.pid,
      code,
      signal,
      servedMs: servedMs === undefined ? null : Math.round(servedMs),
    };
    if (!decision.restart) {
      logger.error("worker keeps exiting before it serves; stopping fairgate", fields);
      void stop(1);
      return;
    }
    logger.error("worker exited; restarting", { ...fields, restartInMs: decision.delayMs });
    state.restartTimer = setTimeout(() => fork(slot), decision.delayMs);
  };

  const stop = (code: number): Promise<number> => {
    stopping ??= (async () => {
      holder.close();
      process.off("SIGHUP", onHup);
      const live = [...slots.values()].flatMap((s) => {
        clearTimeout(s.restartTimer);
        return s.channel ? [s.channel.worker] : [];
      });
      const drained = new Promise<void>((resolve) => {
        allStopped = resolve;
      });
      if (live.length === 0) allStopped();
      for (const worker of live) worker.process.kill("SIGTERM");
      const deadline = setTimeout(() => {
        for (const worker of live) if (!worker.isDead()) worker.process.kill("SIGKILL");
      }, holder.current.source.server.shutdownGraceMs + DRAIN_SLACK_MS);
      await drained;
      clearTimeout(deadline);
      for (const server of servers) await server.close();
      logger.info("stopped", { workers: options.workers });
      return drainFailed && code === 0 ? 1 : code;
    })();
    void stopping.then(resolveExit);
    return stopping;
  };

  const onHup = () => {
    void holder.reload();
    for (const state of slots.values()) state.channel?.worker.process.kill("SIGHUP");
  };
  process.on("SIGHUP", onHup);
  const onSignal = (signal: string) => {
    logger.info("signal received", { signal, workers: options.workers });
    void stop(0);
  };
  process.once("SIGTERM", () => onSignal("SIGTERM"));
  process.once("SIGINT", () => onSignal("SIGINT"));
  holder.watch();
  for (const slot of slots.keys()) fork(slot);
  return await exited;
}
