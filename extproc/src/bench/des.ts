/**
 * The discrete-event simulation: simulated clients, the real fairgate scheduler (or a
 * baseline on the same interfaces) and the vLLM engine model, all on one virtual clock.
 * Nothing here re-implements scheduling: requests go through Scheduler.submit exactly as
 * the ext_proc processor sends them, and the engine runner is the one behind
 * `fairgate sim-engine`.
 */
import type { EngineSignals } from "../admission/gate.ts";
import { compilePolicy, type Policy } from "../config/policy.ts";
import { type ParsedPolicy, type PolicyInput, policySchema } from "../config/schema.ts";
import { CounterRate } from "../engine/engine-state.ts";
import type { FairgateError } from "../errors.ts";
import { HEADERS } from "../headers.ts";
import { outputTokensCost, requestCost } from "../queue/cost.ts";
import { deadlineRefusal } from "../scheduler/deadline.ts";
import { httpRefusal } from "../scheduler/refusal.ts";
import type { SchedulingRequest } from "../scheduler/types.ts";
import { contextLengthError } from "../sim/context-length.ts";
import { EngineModel } from "../sim/engine-model.ts";
import { type EngineObserver, EngineRunner } from "../sim/engine-runner.ts";
import type { EnginePreset } from "../sim/presets.ts";
import { deriveSeed, seededRandom } from "../sim/random.ts";
import { VirtualClock } from "../sim/virtual-clock.ts";
import type { Contender } from "./contenders.ts";
import { maxOf, nextArrival, sampleLength, type TenantWorkload, type TraceRecord } from "./workload.ts";

export interface Scenario {
  readonly name: string;
  readonly description: string;
  /** Arrivals stop here; the run then drains for up to drainMs. */
  readonly durationMs: number;
  /** Service before this is not measured (queues filling up). */
  readonly warmupMs?: number;
  readonly drainMs?: number;
  readonly tiers?: Readonly<Record<string, { priority: number; weight: number }>>;
  readonly tenants: readonly TenantWorkload[];
  /** Replayed requests, in addition to (or instead of) the synthetic tenants. */
  readonly trace?: readonly TraceRecord[];
  /** TTFT objective for goodput, ms. */
  readonly ttftSloMs: number;
  /** Tenants whose TTFT is also measured alone (without the others) for comparison. */
  readonly soloTenants?: readonly string[];
  /** Clients send x-fairgate-max-wait-ms with this value (ms): refused at once when the
   * gateway predicts a longer worst case. */
  readonly clientMaxWaitMs?: number;
}

export interface RequestRecord {
  readonly id: number;
  readonly tenant: string;
  readonly arrivalMs: number;
  readonly promptTokens: number;
  readonly maxTokens: number;
  readonly outputTokens: number;
  refused?: string;
  queued?: boolean;
  estimatedWaitMs?: number;
  worstCaseWaitMs?: number;
  dispatchedMs?: number;
  firstTokenMs?: number;
  finishedMs?: number;
  generated: number;
}

export interface TenantService {
  /** Prompt + output tokens served inside the measurement window. */
  serviceTokens: number;
  outputTokens: number;
  /** The same service in the policy's cost (queue/cost.ts). */
  serviceCost: number;
  /** Prompt + output tokens requested inside the window (open loop), for entitlements. */
  offeredTokens: number;
  /** What they would cost. */
  offeredCost: number;
  /** Closed-loop tenants are always backlogged: their demand is unbounded. */
  backlogged: boolean;
  weight: number;
}

export interface RunResult {
  readonly scenario: string;
  readonly contender: string;
  readonly records: readonly RequestRecord[];
  readonly service: ReadonlyMap<string, TenantService>;
  readonly windowMs: number;
  readonly endMs: number;
  readonly engineSteps: number;
  readonly preemptions: number;
  readonly wallMs: number;
  readonly events: number;
}

export interface RunOptions {
  readonly preset: EnginePreset;
  readonly seed?: number;
  /** How often the simulated poller samples the engine, ms. */
  readonly scrapeIntervalMs?: number;
  /** Gateway policy overrides (scheduling section, limits); tenants come from the scenario. */
  readonly policyOverrides?: Partial<PolicyInput>;
  readonly capacity: { tokensPerMinute: number; requestsPerMinute: number };
  readonly onProgress?: (fraction: number) => void;
  /** An operator's policy file to run the scenario under (what-if). */
  readonly basePolicy?: ParsedPolicy;
  /** Only these tenants send (solo measurements). */
  readonly onlyTenants?: readonly string[];
  /** Watches the engine (every step and request), e.g. to measure what requests cost it. */
  readonly engineObserver?: EngineObserver;
}

const DEFAULT_MAX_TOKENS = 1024;

/**
 * A request's `refused` code when the engine's API server refused it with 400 because its
 * prompt plus max_tokens exceeds max_model_len (OpenAI's code for that refusal).
 */
export const CONTEXT_LENGTH_EXCEEDED = "context_length_exceeded";

/**
 * The gateway policy a scenario runs under: its tenants with their tiers and weights. With
 * `base` (an operator's policy file, for what-if runs), tiers, tenants' tiers, weights and
 * limits and the scheduling section come from the file; tenants it does not list get its
 * defaults.
 */
export function scenarioPolicy(
  scenario: Scenario,
  overrides: Partial<PolicyInput> = {},
  base?: ParsedPolicy,
): Policy {
  if (base) return basedPolicy(scenario, base, overrides);
  const tiers: Record<string, { priority: number; weight: number }> = { ...(scenario.tiers ?? {}) };
  const tenantIds = new Set([
    ...scenario.tenants.map((t) => t.tenant),
    ...(scenario.trace ?? []).map((r) => r.tenant),
  ]);
  const byId = new Map(scenario.tenants.map((t) => [t.tenant, t]));
  const input: PolicyInput = {
    tiers: { standard: { priority: 0, weight: 1 }, ...tiers },
    tenants: [...tenantIds].map((id) => {
      const workload = byId.get(id);
      return {
        id,
        tier: workload?.tier ?? "standard",
        ...(workload?.weight !== undefined ? { weight: workload.weight } : {}),
        limits: { maxQueueWaitMs: 3_600_000 },
      };
    }),
    defaults: { tier: "standard", limits: {} },
    ...overrides,
  };
  return compilePolicy(policySchema.parse(input));
}

function basedPolicy(scenario: Scenario, base: ParsedPolicy, overrides: Partial<PolicyInput>): Policy {
  const ids = new Set([
    ...scenario.tenants.map((t) => t.tenant),
    ...(scenario.trace ?? []).map((r) => r.tenant),
  ]);
  const listed = new Map(base.tenants.map((t) => [t.id, t]));
  const tenants = [...ids].map((id) => {
    const known = listed.get(id);
    if (known) return { ...known, apiKeys: [] };
    return {
      id,
      tier: base.defaults.tier ?? Object.keys(base.tiers)[0] ?? "standard",
      limits: { ...base.defaults.limits },
    };
  });
  const tiers = Object.keys(base.tiers).length > 0 ? base.tiers : { standard: { priority: 0, weight: 1 } };
  const input: PolicyInput = {
    tiers,
    tenants: tenants.map((t) => ({ ...t, tier: t.tier && t.tier in tiers ? t.tier : Object.keys(tiers)[0] })),
    defaults: {
      ...base.defaults,
      tier: base.defaults.tier && base.defaults.tier in tiers ? base.defaults.tier : Object.keys(tiers)[0],
    },
    scheduling: base.scheduling,
    backends: [{ ...(base.backends[0] ?? { name: "default" }), models: undefined, metrics: undefined }],
    requests: base.requests,
    ...overrides,
  };
  return compilePolicy(policySchema.parse(input));
}

export async function runScenario(
  scenario: Scenario,
  contender: Contender,
  options: RunOptions,
): Promise<RunResult> {
  const started = performance.now();
  const seed = options.seed ?? 1;
  const clock = new VirtualClock(0);
  const policy = scenarioPolicy(scenario, options.policyOverrides, options.basePolicy);
  // Service is also measured in the policy's cost, whatever the contender charges.
  const cost = policy.source.scheduling.cost;
  const backend = policy.backends[0]?.name ?? "default";
  const model = new EngineModel(options.preset, { recordBatch: options.engineObserver !== undefined });
  const runner = new EngineRunner(model, clock);
  if (options.engineObserver) runner.addObserver(options.engineObserver);
  const kvCapacityTokens = options.preset.numGpuBlocks * options.preset.blockSize;
  let signals: EngineSignals = { running: 0, waiting: 0, kvCacheUsage: 0, kvCapacityTokens, fresh: true };
  const instance = contender.build({
    clock,
    policy: () => policy,
    engineSignals: () => signals,
    capacityTokensPerMinute: options.capacity.tokensPerMinute,
    capacityRequestsPerMinute: options.capacity.requestsPerMinute,
  });
  const scheduler = instance.scheduler;

  const durationMs = scenario.durationMs;
  const warmupMs = scenario.warmupMs ?? 0;
  const hardEndMs = durationMs + (scenario.drainMs ?? durationMs);
  const inWindow = (t: number) => t >= warmupMs && t <= durationMs;
  const records: RequestRecord[] = [];
  const service = new Map<string, TenantService>();
  const only = options.onlyTenants ? new Set(options.onlyTenants) : undefined;
  const active = (tenant: string) => only === undefined || only.has(tenant);
  for (const tenant of policy.tenants.values()) {
    if (!active(tenant.id)) continue;
    const workload = scenario.tenants.find((t) => t.tenant === tenant.id);
    service.set(tenant.id, {
      serviceTokens: 0,
      outputTokens: 0,
      serviceCost: 0,
      offeredTokens: 0,
      offeredCost: 0,
      backlogged: workload?.arrival.kind === "closed",
      weight: tenant.weight,
    });
  }
  let outstanding = 0;
  let nextId = 0;
  // The engine's prefill time per prompt token, as vLLM's request_prefill_time_seconds
  // histogram reports it to the poller (our engine queue is short, so dispatch to first
  // token is prefill).
  const prefill = new PrefillPace();

  /** `done` gets the ms a well-behaved client waits before its next request (retry-after on a refusal). */
  const send = (
    tenant: string,
    promptTokens: number,
    outputTokens: number,
    maxTokens: number,
    done?: (backoffMs: number) => void,
  ) => {
    const now = clock.now();
    const record: RequestRecord = {
      id: nextId++,
      tenant,
      arrivalMs: now,
      promptTokens,
      maxTokens,
      outputTokens: Math.min(outputTokens, maxTokens),
      generated: 0,
    };
    records.push(record);
    // vLLM's API server refuses this request whoever dispatches it, so no policy could
    // serve it: it is not demand any tenant is owed service for.
    const tooLong = contextLengthError(options.preset.maxModelLen, promptTokens, maxTokens);
    const account = service.get(tenant);
    if (account && inWindow(now) && !tooLong) {
      account.offeredTokens += promptTokens + record.outputTokens;
      account.offeredCost += requestCost(cost, promptTokens, record.outputTokens);
    }
    const tenantPolicy = policy.tenantFor(tenant);
    const refusal = instance.admit?.(tenant, tenantPolicy.weight, promptTokens + maxTokens, now);
    if (refusal) {
      record.refused = refusal.code;
      done?.(retryAfterMs(refusal));
      return;
    }
    const request: SchedulingRequest = {
      id: String(record.id),
      tenant: tenantPolicy,
      backend,
      promptTokens,
      expectedOutputTokens: maxTokens,
      maxWaitMs: tenantPolicy.limits.maxQueueWaitMs ?? 3_600_000,
    };
    const late = deadlineRefusal(scheduler.estimate(request), scenario.clientMaxWaitMs, HEADERS.maxWaitMs);
    if (late) {
      record.refused = late.code;
      done?.(retryAfterMs(late));
      return;
    }
    outstanding++;
    const submission = scheduler.submit(request, new AbortController().signal);
    record.queued = submission.queued;
    submission.dispatch.then(
      (dispatch) => {
        record.dispatchedMs = clock.now();
        if (submission.queued) {
          record.estimatedWaitMs = dispatch.estimate.expectedMs;
          record.worstCaseWaitMs = dispatch.estimate.worstCaseMs;
        }
        if (tooLong) {
          record.refused = CONTEXT_LENGTH_EXCEEDED;
          outstanding--;
          dispatch.release({ completionTokens: 0 });
          done?.(0);
          return;
        }
        runner.submit(
          { id: String(record.id), promptTokens, maxTokens, outputTokens: record.outputTokens },
          {
            onFirstToken: (t) => {
              record.firstTokenMs = t;
              dispatch.firstToken?.();
              prefill.observe(t - (record.dispatchedMs ?? t), promptTokens);
              if (account && inWindow(t)) {
                account.serviceTokens += promptTokens;
                account.serviceCost += cost.promptToken * promptTokens;
              }
            },
            onTokens: (count, t) => {
              if (account && inWindow(t)) {
                account.serviceTokens += count;
                account.outputTokens += count;
                account.serviceCost += outputTokensCost(cost, promptTokens, record.generated, count);
              }
              record.generated += count;
            },
            onFinish: (usage, t) => {
              record.finishedMs = t;
              outstanding--;
              dispatch.release({ completionTokens: usage.completionTokens });
              done?.(0);
            },
          },
        );
      },
      (error: unknown) => {
        outstanding--;
        const refusal = httpRefusal(error);
        record.refused = refusal?.code ?? "error";
        done?.(refusal ? retryAfterMs(refusal) : 1_000);
      },
    );
  };

  // Synthetic tenants.
  scenario.tenants.forEach((workload, index) => {
    if (!active(workload.tenant)) return;
    const random = seededRandom(deriveSeed(seed, index + 1));
    const startMs = workload.startMs ?? 0;
    const stopMs = Math.min(workload.stopMs ?? durationMs, durationMs);
    const maxTokens = workload.maxTokens ?? maxOf(workload.outputTokens) ?? DEFAULT_MAX_TOKENS;
    const one = (done?: (backoffMs: number) => void) =>
      send(
        workload.tenant,
        sampleLength(workload.promptTokens, random),
        sampleLength(workload.outputTokens, random),
        maxTokens,
        done,
      );
    const process = workload.arrival;
    if (process.kind === "closed") {
      const loop = () => {
        if (clock.now() >= stopMs) return;
        one((backoffMs) => clock.setTimeout(loop, Math.max(process.thinkMs ?? 0, backoffMs, 1)));
      };
      clock.setTimeout(() => {
        for (let i = 0; i < process.concurrency; i++) loop();
      }, startMs);
      return;
    }
    const schedule = (from: number) => {
      const at =
        process.kind === "burst" && from === startMs
          ? startMs
          : nextArrival(process, from, startMs, stopMs, random);
      if (at === undefined) return;
      clock.setTimeout(() => {
        const count = process.kind === "burst" ? process.size : 1;
        for (let i = 0; i < count; i++) one();
        schedule(at);
      }, at - clock.now());
    };
    clock.setTimeout(() => schedule(startMs), startMs);
  });

  // Replayed trace.
  for (const row of scenario.trace ?? []) {
    if (!active(row.tenant) || row.atMs > durationMs) continue;
    clock.setTimeout(
      () =>
        send(
          row.tenant,
          row.promptTokens,
          row.outputTokens,
          replayMaxTokens(row, options.preset.maxModelLen),
        ),
      row.atMs,
    );
  }

  // The poller: samples the engine every scrape interval and lets the gate re-check.
  const scrapeMs = options.scrapeIntervalMs ?? 100;
  // The engine's throughput from its token counters, over the poller's 10 s window.
  const throughput = new CounterRate();
  const sample = () => {
    const stats = model.stats();
    throughput.observe(stats.promptTokensTotal + stats.generationTokensTotal, clock.now());
    const tokensPerSecond = throughput.perSecond();
    signals = {
      running: stats.running,
      waiting: stats.waiting,
      kvCacheUsage: stats.kvCacheUsage,
      kvCapacityTokens,
      fresh: true,
      ...(tokensPerSecond !== null ? { tokensPerSecond } : {}),
      ...prefill.signal(),
    };
    scheduler.poke?.();
    if (clock.now() < durationMs || outstanding > 0) clock.setTimeout(sample, scrapeMs);
  };
  clock.setTimeout(sample, 0);

  let lastProgress = -1;
  const events = await clock.run({
    untilMs: hardEndMs,
    progressEvery: 2_000,
    onProgress: (now) => {
      const fraction = Math.min(1, now / durationMs);
      if (fraction - lastProgress >= 0.01) {
        lastProgress = fraction;
        options.onProgress?.(fraction);
      }
    },
  });
  options.onProgress?.(1);
  return {
    scenario: scenario.name,
    contender: contender.name,
    records,
    service,
    windowMs: durationMs - warmupMs,
    endMs: clock.now(),
    engineSteps: runner.stepsRun,
    preemptions: model.stats().preemptionsTotal,
    wallMs: performance.now() - started,
    events,
  };
}

/**
 * The max_tokens a replayed client sends: the trace's, else max(its output, 1024) when the
 * context has room for it, else no more than the context allows (what vLLM grants a request
 * without max_tokens). Only a row whose recorded lengths alone exceed the context is refused.
 */
function replayMaxTokens(row: TraceRecord, maxModelLen: number): number {
  if (row.maxTokens !== undefined) return row.maxTokens;
  const room = maxModelLen - row.promptTokens;
  return Math.max(row.outputTokens, Math.min(Math.max(row.outputTokens, DEFAULT_MAX_TOKENS), room));
}

/** Prefill milliseconds per prompt token over the last few hundred first tokens. */
class PrefillPace {
  #ms = 0;
  #tokens = 0;

  observe(ms: number, promptTokens: number): void {
    if (!(ms >= 0) || !(promptTokens > 0)) return;
    const keep = 0.995;
    this.#ms = this.#ms * keep + ms;
    this.#tokens = this.#tokens * keep + promptTokens;
  }

  signal(): { prefillMsPerPromptToken?: number } {
    return this.#tokens > 0 ? { prefillMsPerPromptToken: this.#ms / this.#tokens } : {};
  }
}

function retryAfterMs(error: FairgateError): number {
  const seconds = Number(error.headers?.["retry-after"]);
  return Number.isFinite(seconds) && seconds > 0 ? seconds * 1000 : 1_000;
}
