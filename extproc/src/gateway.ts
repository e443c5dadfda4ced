import { randomUUID } from "node:crypto";
import { LateUsage } from "./accounting/late-usage.ts";
import type { Usage } from "./accounting/usage.ts";
import { UsageRegistry } from "./accounting/usage-registry.ts";
import { RedisUsageRelay } from "./accounting/usage-relay.ts";
import { BudgetGate } from "./budget/budget-gate.ts";
import { createBudgetStore } from "./budget/create.ts";
import { createBudgetRedisClient, createSubscriberRedisClient } from "./budget/redis-client.ts";
import type { BudgetStore } from "./budget/store.ts";
import { type Clock, systemClock } from "./clock.ts";
import type { EnvoyTimeouts } from "./config/envoy-timeouts.ts";
import type { Policy } from "./config/policy.ts";
import { EnginePoller } from "./engine/poller.ts";
import { RedisEngineStateStore } from "./engine/redis-engine-state.ts";
import { OverrideWatch } from "./grpc/override-watch.ts";
import { type ExtProcServer, startExtProcServer } from "./grpc/server.ts";
import { adminApiProtected } from "./http/admin-auth.ts";
import { type ApiSource, localApiSource } from "./http/api-source.ts";
import { grpcBindAddress } from "./http/listen.ts";
import { startMetricsServer } from "./http/metrics-server.ts";
import { type HttpApi, type Readiness, startHttpApi } from "./http/server.ts";
import type { Logger } from "./log.ts";
import { GatewayMetrics, virtualCountersOf } from "./metrics/gateway-metrics.ts";
import { createTokenCounter, type TokenCounter } from "./openai/tokens.ts";
import type { UsageInfo } from "./pipeline/context.ts";
import { fairQueueFromPolicy } from "./queue/create.ts";
import { FairQueueScheduler } from "./queue/fair-queue.ts";
import { OutputPredictor } from "./queue/output-predictor.ts";
import { SharedQueueState } from "./queue/shared-state.ts";
import type { Scheduler } from "./scheduler/types.ts";
import { type StoreHealth, storeHealthFor } from "./store/store-health.ts";

/** How long start waits for Redis before serving on the local view (its connect timeout). */
const CONNECT_TIMEOUT_MS = 1_000;

export interface GatewayOptions {
  /** Returns the policy in force; read on every request so a reload applies at once. */
  policy(): Policy;
  grpcListen: string;
  /** undefined: no HTTP API here (a `serve --workers` worker: the primary serves it). */
  httpListen: string | undefined;
  /** Serve /metrics on its own listener here, and not on httpListen. */
  metricsListen?: string;
  logger: Logger;
  clock?: Clock;
  store?: StoreHealth;
  /** The budget store (default: what the policy's `store` section names). */
  budgetStore?: BudgetStore;
  scheduler?: Scheduler;
  /** Envoy's ext_proc max_message_timeout when given on the command line; otherwise the
   * policy's server.envoy.maxMessageTimeoutMs. Bounds how long a request may be held. */
  maxMessageTimeoutMs?: number;
  /** Envoy's ext_proc message_timeout, likewise (policy: server.envoy.messageTimeoutMs). */
  messageTimeoutMs?: number;
  collectProcessMetrics?: boolean;
  /** usage: called once per dispatched request with the usage its response revealed. */
  onUsage?: (info: UsageInfo) => void;
}

export interface Gateway {
  readonly grpcPort: number;
  /** 0 when started without an HTTP API (httpListen undefined). */
  readonly httpPort: number;
  /** The port of the separate /metrics listener, when metricsListen was given. */
  readonly metricsPort: number | undefined;
  readonly metrics: GatewayMetrics;
  readonly scheduler: Scheduler;
  readonly budgets: BudgetGate;
  /** Engine state from the backends' vLLM /metrics (idle when no backend lists any). */
  readonly engine: EnginePoller;
  /** usage: where the observability-mode usage streams report each response's usage. */
  readonly usage: UsageRegistry;
  /** What the HTTP API reads (readiness, queue, estimates, metrics), for a primary to ask. */
  readonly api: ApiSource;
  /** Called after a policy reload so tokenizer changes take effect. */
  policyChanged(policy: Policy): Promise<void>;
  readiness(): Promise<Readiness>;
  /** Graceful stop: not ready at once, in-flight and queued requests get up to graceMs to
   * finish, what is still queued then is refused with 503 shutting_down. */
  shutdown(graceMs?: number): Promise<void>;
}

export async function startGateway(options: GatewayOptions): Promise<Gateway> {
  const clock = options.clock ?? systemClock;
  const initial = options.policy();
  // With the Redis store, virtual counters, in-flight load and waiting candidates are
  // exchanged with the other replicas, so weights and backend caps hold cluster-wide.
  const storeConfig = initial.source.store;
  const sharedClient =
    !options.scheduler && "redis" in storeConfig
      ? createBudgetRedisClient(storeConfig.redis, storeConfig.timeoutMs)
      : undefined;
  sharedClient?.connect().catch(() => {
    // Unreachable at start: each exchange retries and replicas use their local view meanwhile.
  });
  // Names this replica in the queue's exchange and in every main stream's id (request-id.ts).
  const replicaId = randomUUID();
  const shared =
    sharedClient && "redis" in storeConfig
      ? new SharedQueueState({
          client: sharedClient,
          keyPrefix: storeConfig.keyPrefix,
          logger: options.logger,
          replicaId,
          clock,
        })
      : undefined;
  // Backends listing vLLM /metrics URLs are gated on engine state too; the others by caps.
  // With the Redis store engine state is shared: server.enginePoller in-process scrapes
  // here and publishes; external only reads what `fairgate poll` publishes.
  const enginePoller = initial.source.server.enginePoller;
  if (enginePoller === "external" && !("redis" in storeConfig))
    throw new Error(
      "server.enginePoller: external needs the Redis store (store.redis), where `fairgate poll` publishes engine state",
    );
  let engineChanged = (_backend: string) => {};
  const engineClient =
    "redis" in storeConfig
      ? (sharedClient ?? createBudgetRedisClient(storeConfig.redis, storeConfig.timeoutMs))
      : undefined;
  if (engineClient && engineClient !== sharedClient)
    engineClient.connect().catch(() => {
      // Unreachable at start: the engine state store keeps retrying, serving its local view.
    });
  const engineStore =
    engineClient && "redis" in storeConfig
      ? new RedisEngineStateStore({
          client: engineClient,
          keyPrefix: storeConfig.keyPrefix,
          publish: enginePoller === "in-process",
          clock,
          logger: options.logger,
          onRemoteUpdate: (state) => engineChanged(state.backend),
        })
      : undefined;
  const engine = new EnginePoller({
    backends: initial.backends,
    clock,
    logger: options.logger,
    ...(engineStore ? { store: engineStore } : {}),
    onUpdate: (state) => engineChanged(state.backend),
  });
  const engineSignals = (backend: string) => engine.signals(backend);
  // One picture of each tenant's output lengths, learned from completions: the fair queue
  // charges by it and budgets charge by it when a request names no max_tokens.
  const outputPredictor = new OutputPredictor();
  const scheduler =
    options.scheduler ??
    fairQueueFromPolicy({
      ...(shared ? { shared } : {}),
      predictor: outputPredictor,
      policy: options.policy,
      clock,
      engineSignals,
    });
  // Joins the exchange before serving, so the first requests already count against this
  // replica's claims on the backends' caps (bounded like a Redis connect: it is retried).
  if (shared) await shared.join(CONNECT_TIMEOUT_MS);
  const metrics = new GatewayMetrics({
    snapshot: () => scheduler.snapshot(),
    virtualCounters: virtualCountersOf(scheduler),
    engineSignals,
    policy: options.policy,
    collectProcessMetrics: options.collectProcessMetrics ?? true,
  });
  metrics.setPolicyVersion(initial.version);
  const store = options.store ?? storeHealthFor(initial.source.store);
  // Budgets: the store is chosen at start; a reload changing `store` needs a restart.
  const createdBudgets = options.budgetStore
    ? {
        store: options.budgetStore,
        leaseTtlMs: 30_000,
        close: () => options.budgetStore?.close() ?? Promise.resolve(),
      }
    : createBudgetStore(initial.source.store, {
        clock,
        logger: options.logger,
        onStateChange: (state) => {
          metrics.storeOutage.set(state === "outage" ? 1 : 0);
          if (state === "outage") metrics.storeOutages.inc();
        },
      });
  const budgets = new BudgetGate({
    store: createdBudgets.store,
    clock,
    logger: options.logger,
    leaseTtlMs: createdBudgets.leaseTtlMs,
    onAdmit: (tenant, outcome, seconds, tokens, snapshot) => {
      metrics.countBudgetCheck(tenant, outcome, seconds, tokens);
      if (snapshot)
        metrics.setBudgetRemaining(tenant, snapshot.requests?.remaining, snapshot.tokens?.remaining);
    },
    onReconcile: (tenant, delta) => metrics.countReconcile(tenant, delta),
  });
  const counters = new Map<string, TokenCounter>();
  const loadCounter = async (policy: Policy) => {
    const kind = policy.source.requests.tokenizer;
    if (!counters.has(kind)) counters.set(kind, await createTokenCounter(kind));
  };
  await loadCounter(initial);
  let shuttingDown = false;

  const envoyTimeouts = (): EnvoyTimeouts => {
    const configured = options.policy().source.server.envoy;
    return {
      maxMessageTimeoutMs: options.maxMessageTimeoutMs ?? configured.maxMessageTimeoutMs,
      messageTimeoutMs: options.messageTimeoutMs ?? configured.messageTimeoutMs,
    };
  };
  const overrides = new OverrideWatch({
    timeouts: envoyTimeouts,
    clock,
    logger: options.logger,
    onIgnored: () => metrics.envoyOverrideIgnored.inc(),
  });
  const usage = new UsageRegistry({ clock });
  metrics.watchUsage(() => usage.stats);
  // With shared queue state, a usage report reaching another replica is relayed back here,
  // where the fair queue's charge and the output predictor are.
  const lateUsage = shared ? new LateUsage({ clock, onApplied: () => usage.relayApplied() }) : undefined;
  const relay =
    sharedClient && lateUsage && "redis" in storeConfig
      ? new RedisUsageRelay({
          publisher: sharedClient,
          subscriber: createSubscriberRedisClient(storeConfig.redis, storeConfig.timeoutMs),
          keyPrefix: storeConfig.keyPrefix,
          replicaId,
          logger: options.logger,
          onReport: (report) => lateUsage.relayed(report.requestId, report.usage),
        })
      : undefined;
  relay?.start().catch((error) => {
    options.logger.warn("usage relay: cannot subscribe; reports from other replicas are lost", {
      error: String(error),
    });
  });
  const grpc: ExtProcServer = await startExtProcServer({
    listen: grpcBindAddress(options.grpcListen),
    maxMessageBytes: Math.max(initial.source.requests.maxBodyBytes, 4 * 1024 * 1024),
    context: {
      policy: options.policy,
      scheduler,
      tokenCounter: () => {
        const kind = options.policy().source.requests.tokenizer;
        // A reload switching tokenizers loads the new one asynchronously; until it is
        // ready the previous counter keeps serving.
        return counters.get(kind) ?? (counters.values().next().value as TokenCounter);
      },
      metrics,
      clock,
      logger: options.logger,
      isShuttingDown: () => shuttingDown,
      envoyTimeouts,
      overrides,
      budgets,
      predictOutput: (tenantId, maxTokens) => outputPredictor.predict(tenantId, maxTokens),
      // usage: see extproc/src/accounting/.
      usage,
      ...(options.onUsage ? { onUsage: options.onUsage } : {}),
      ...(relay && lateUsage
        ? {
            replicaId,
            lateUsage,
            relayUsage: (requestId: string, report: Usage) => relay.forward(requestId, report),
          }
        : {}),
    },
  });

  const readiness = async (): Promise<Readiness> => {
    const policy = options.policy();
    const storeCheck = await store.check();
    const failOpen = "redis" in policy.source.store && policy.source.store.onOutage === "fail-open";
    const checks: Readiness["checks"] = {
      shutdown: { ok: !shuttingDown, ...(shuttingDown ? { detail: "shutting down" } : {}) },
      policy: { ok: true, detail: `version ${policy.version}` },
      store: {
        ok: storeCheck.ok || failOpen,
        detail: storeCheck.ok
          ? storeCheck.detail
          : `${storeCheck.detail}${failOpen ? " (serving: fail-open)" : ""}`,
      },
    };
    const ignored = overrides.ignored;
    // Reported, not failed: every replica shares Envoy's config, so taking this one out of
    // rotation would not help, and its unqueued requests still succeed.
    const warnings: Readiness["warnings"] = ignored
      ? [
          {
            code: "envoy_override_ignored",
            message: ignored.message,
            count: ignored.count,
            last_seen_ms_ago: Math.max(0, Math.round(clock.now() - ignored.lastAt)),
          },
        ]
      : [];
    return { ready: Object.values(checks).every((c) => c.ok), checks, warnings };
  };

  const api = localApiSource({ policy: options.policy, scheduler, metrics, readiness });
  let http: HttpApi | undefined;
  try {
    if (options.httpListen !== undefined)
      http = await startHttpApi({
        listen: options.httpListen,
        policy: options.policy,
        source: api,
        logger: options.logger,
        clock,
        serveMetrics: options.metricsListen === undefined,
      });
  } catch (error) {
    await grpc.close();
    throw error;
  }
  let metricsHttp: HttpApi | undefined;
  if (options.metricsListen !== undefined) {
    try {
      metricsHttp = await startMetricsServer({
        listen: options.metricsListen,
        source: api,
        logger: options.logger,
      });
    } catch (error) {
      await http?.close();
      await grpc.close();
      throw error;
    }
  }
  let adminProtected = adminApiProtected(initial);

  if (scheduler instanceof FairQueueScheduler) engineChanged = (backend) => scheduler.poke(backend);
  if (enginePoller === "in-process") engine.start();
  engineStore?.start();

  let stopping: Promise<void> | undefined;
  return {
    grpcPort: grpc.port,
    httpPort: http?.port ?? 0,
    metricsPort: metricsHttp?.port,
    metrics,
    scheduler,
    budgets,
    engine,
    usage,
    api,
    readiness,
    async policyChanged(policy) {
      metrics.setPolicyVersion(policy.version);
      // The startup warning again when a reload drops the last admin token.
      if (adminProtected && !adminApiProtected(policy))
        options.logger.warn("the HTTP API is unauthenticated again: the reloaded policy has no admin.tokens");
      adminProtected = adminApiProtected(policy);
      engine.configure(policy.backends);
      await loadCounter(policy);
    },
    shutdown(graceMs = options.policy().source.server.shutdownGraceMs) {
      stopping ??= (async () => {
        shuttingDown = true;
        grpc.setServingStatus("NOT_SERVING");
        options.logger.info("shutting down", { activeStreams: grpc.activeStreams(), graceMs });
        const drained = await grpc.drain(graceMs);
        if (!drained) {
          scheduler.refuseQueued();
          // Give refused streams a moment to deliver their 503 before the server closes.
          await grpc.drain(500);
        }
        await grpc.close();
        await engine.stop();
        await engineStore?.stop();
        await http?.close();
        await metricsHttp?.close();
        await store.close();
        await createdBudgets.close();
        await shared?.stop();
        await relay?.close();
        sharedClient?.disconnect();
        if (engineClient !== sharedClient) engineClient?.disconnect();
        usage.close();
        options.logger.info("stopped", { drained });
      })();
      return stopping;
    },
  };
}
