import { type AdmissionGate, EngineAwareGate } from "../admission/gate.ts";
import type { Clock, TimerHandle } from "../clock.ts";
import type { Policy } from "../config/policy.ts";
import { FairgateError } from "../errors.ts";
import { ServiceRate } from "../scheduler/service-rate.ts";
import type {
  Dispatch,
  DispatchOutcome,
  Scheduler,
  SchedulerSnapshot,
  SchedulingRequest,
  Submission,
  TenantQueueState,
  WaitEstimate,
} from "../scheduler/types.ts";
import { OutputPredictor } from "./output-predictor.ts";
import type { FairnessPolicy, FairnessPolicyFactory, QueuedRequest } from "./policy.ts";

interface Waiter {
  readonly item: QueuedRequest;
  readonly request: SchedulingRequest;
  readonly enqueuedAt: number;
  readonly estimate: WaitEstimate;
  readonly resolve: (dispatch: Dispatch) => void;
  readonly reject: (reason: unknown) => void;
  timer: TimerHandle | undefined;
  detach: () => void;
}

interface BackendState {
  readonly name: string;
  readonly policy: FairnessPolicy;
  readonly waiters: Map<QueuedRequest, Waiter>;
  inFlight: number;
  inFlightTokens: number;
  readonly rate: ServiceRate;
}

interface TenantCounters {
  tier: string;
  queued: number;
  inFlight: number;
  queuedTokens: number;
  inFlightTokens: number;
}

/** Used for estimates until a backend has completed anything. */
const PRIOR_TOKENS_PER_SEC = 2_000;

export interface FairQueueOptions {
  policy: () => Policy;
  clock: Clock;
  /** Builds the ordering policy of one backend's queue. */
  fairness: FairnessPolicyFactory;
  gate?: AdmissionGate;
  /** The scheduler's name in /v1/queue and benchmark reports; defaults to the policy's. */
  name?: string;
}

/**
 * Holds requests per backend until the admission gate has room, and lets the fairness
 * policy choose which goes next. Owns everything around the order: queue caps, queue
 * timeouts, cancellation (an aborted request leaves at once and is charged nothing),
 * in-flight accounting and the service rate behind estimates.
 */
export class FairQueueScheduler implements Scheduler {
  readonly name: string;
  readonly #policy: () => Policy;
  readonly #clock: Clock;
  readonly #fairness: FairnessPolicyFactory;
  readonly #gate: AdmissionGate;
  readonly #backends = new Map<string, BackendState>();
  readonly #tenants = new Map<string, TenantCounters>();
  readonly #predictor = new OutputPredictor();
  #seq = 0;

  constructor(options: FairQueueOptions) {
    this.#policy = options.policy;
    this.#clock = options.clock;
    this.#fairness = options.fairness;
    this.#gate = options.gate ?? new EngineAwareGate();
    this.name = options.name ?? options.fairness().name;
  }

  submit(request: SchedulingRequest, signal: AbortSignal): Submission {
    if (signal.aborted) return { queued: false, dispatch: Promise.reject(signal.reason) };
    const backend = this.#backend(request.backend);
    const tenant = this.#tenant(request);
    const item = this.#item(request);
    const estimate = this.estimate(request);

    if (backend.policy.size === 0 && this.#admits(backend, request)) {
      backend.policy.add(item);
      backend.policy.dispatch(item);
      return {
        queued: false,
        dispatch: Promise.resolve(this.#start(backend, item, request, this.#clock.now(), estimate)),
      };
    }
    const maxQueued = request.tenant.limits.maxQueued;
    if (maxQueued !== undefined && tenant.queued >= maxQueued) {
      const refusal = new FairgateError("queue_full", {
        message: `Tenant ${request.tenant.id} already has ${tenant.queued} requests queued (maxQueued ${maxQueued}).`,
        headers: { "retry-after": String(Math.max(1, Math.ceil(estimate.expectedMs / 1000))) },
      });
      return { queued: false, dispatch: Promise.reject(refusal) };
    }

    const dispatch = new Promise<Dispatch>((resolve, reject) => {
      const waiter: Waiter = {
        item,
        request,
        enqueuedAt: this.#clock.now(),
        estimate,
        resolve,
        reject,
        timer: undefined,
        detach: () => {},
      };
      const onAbort = () => {
        if (this.#remove(backend, waiter)) reject(signal.reason);
      };
      signal.addEventListener("abort", onAbort, { once: true });
      waiter.detach = () => signal.removeEventListener("abort", onAbort);
      waiter.timer = this.#clock.setTimeout(() => {
        if (this.#remove(backend, waiter)) {
          reject(
            new FairgateError("queue_timeout", {
              message: `The request waited ${request.maxWaitMs} ms in the queue without reaching the engine.`,
              headers: {
                "retry-after": String(Math.max(1, Math.ceil(this.estimate(request).expectedMs / 1000))),
              },
            }),
          );
        }
      }, request.maxWaitMs);
      backend.waiters.set(item, waiter);
      backend.policy.add(item);
      tenant.queued += 1;
      tenant.queuedTokens += tokensOf(request);
    });
    return { queued: true, dispatch };
  }

  estimate(request: Omit<SchedulingRequest, "id" | "maxWaitMs">): WaitEstimate {
    const backend = this.#backend(request.backend);
    const tokens = tokensOf(request);
    if (backend.policy.size === 0 && this.#admits(backend, request)) return { expectedMs: 0, worstCaseMs: 0 };
    const now = this.#clock.now();
    const ahead = backend.policy.workAhead({
      tenantId: request.tenant.id,
      priority: request.tenant.priority,
      weight: request.tenant.weight,
      tokens,
    });
    const expectedRate = backend.rate.expected(now) ?? PRIOR_TOKENS_PER_SEC;
    const slowRate = backend.rate.pessimistic(now) ?? PRIOR_TOKENS_PER_SEC;
    return {
      expectedMs: Math.round((ahead / expectedRate) * 1000),
      worstCaseMs: Math.round(((ahead + tokens) / slowRate) * 1000),
    };
  }

  /** Re-checks the gate of every backend: call when engine state changed. */
  poke(backendName?: string): void {
    for (const backend of this.#backends.values()) {
      if (backendName === undefined || backend.name === backendName) this.#pump(backend);
    }
  }

  snapshot(): SchedulerSnapshot {
    const now = this.#clock.now();
    const tenants: TenantQueueState[] = [];
    for (const [id, counters] of this.#tenants) {
      if (counters.queued === 0 && counters.inFlight === 0) continue;
      let estimatedWaitMs = 0;
      let worstCaseWaitMs = 0;
      for (const backend of this.#backends.values()) {
        for (const waiter of backend.waiters.values()) {
          if (waiter.request.tenant.id !== id) continue;
          const waited = now - waiter.enqueuedAt;
          estimatedWaitMs = Math.max(estimatedWaitMs, Math.max(0, waiter.estimate.expectedMs - waited));
          worstCaseWaitMs = Math.max(worstCaseWaitMs, Math.max(0, waiter.estimate.worstCaseMs - waited));
        }
      }
      tenants.push({ tenant: id, ...counters, estimatedWaitMs, worstCaseWaitMs });
    }
    tenants.sort((a, b) => a.tenant.localeCompare(b.tenant));
    return {
      policy: this.name,
      backends: [...this.#backends.values()].map((b) => ({
        backend: b.name,
        queued: b.policy.size,
        inFlight: b.inFlight,
        inFlightTokens: b.inFlightTokens,
        serviceRateTokensPerSec: b.rate.expected(now),
      })),
      tenants,
    };
  }

  /** Virtual counters per backend and tenant (VTC), for metrics. */
  counters(): ReadonlyMap<string, ReadonlyMap<string, number>> {
    const out = new Map<string, ReadonlyMap<string, number>>();
    for (const backend of this.#backends.values()) out.set(backend.name, backend.policy.tenantCounters());
    return out;
  }

  refuseQueued(): void {
    for (const backend of this.#backends.values()) {
      for (const waiter of [...backend.waiters.values()]) {
        if (this.#remove(backend, waiter)) waiter.reject(new FairgateError("shutting_down"));
      }
    }
  }

  #admits(backend: BackendState, request: Omit<SchedulingRequest, "id" | "maxWaitMs">): boolean {
    const config = this.#policy().backends.find((b) => b.name === backend.name);
    return this.#gate.admits(config, backend, tokensOf(request));
  }

  #item(request: SchedulingRequest): QueuedRequest {
    return {
      id: request.id,
      tenantId: request.tenant.id,
      priority: request.tenant.priority,
      weight: request.tenant.weight,
      promptTokens: request.promptTokens,
      predictedOutputTokens: this.#predictor.predict(request.tenant.id, request.expectedOutputTokens),
      seq: this.#seq++,
    };
  }

  #start(
    backend: BackendState,
    item: QueuedRequest,
    request: SchedulingRequest,
    enqueuedAt: number,
    estimate: WaitEstimate,
  ): Dispatch {
    const tokens = tokensOf(request);
    const tenant = this.#tenant(request);
    backend.inFlight += 1;
    backend.inFlightTokens += tokens;
    tenant.inFlight += 1;
    tenant.inFlightTokens += tokens;
    let released = false;
    return {
      waitedMs: Math.max(0, this.#clock.now() - enqueuedAt),
      estimate,
      release: (outcome?: DispatchOutcome) => {
        if (released) return;
        released = true;
        backend.inFlight -= 1;
        backend.inFlightTokens -= tokens;
        tenant.inFlight -= 1;
        tenant.inFlightTokens -= tokens;
        const output = outcome?.completionTokens;
        if (output !== undefined) this.#predictor.observe(request.tenant.id, output);
        backend.policy.complete(item, output);
        backend.rate.record(this.#clock.now(), request.promptTokens + (output ?? item.predictedOutputTokens));
        this.#forgetIdle(request.tenant.id);
        this.#pump(backend);
      },
    };
  }

  #pump(backend: BackendState): void {
    for (;;) {
      const next = backend.policy.peek();
      if (!next) return;
      const waiter = backend.waiters.get(next);
      if (!waiter) {
        // Not ours (cannot happen unless a policy misbehaves): drop it rather than spin.
        backend.policy.remove(next);
        continue;
      }
      if (!this.#admits(backend, waiter.request)) return;
      this.#detach(backend, waiter);
      backend.policy.dispatch(next);
      waiter.resolve(this.#start(backend, next, waiter.request, waiter.enqueuedAt, waiter.estimate));
    }
  }

  #remove(backend: BackendState, waiter: Waiter): boolean {
    if (!backend.waiters.has(waiter.item)) return false;
    this.#detach(backend, waiter);
    backend.policy.remove(waiter.item);
    this.#forgetIdle(waiter.request.tenant.id);
    return true;
  }

  #detach(backend: BackendState, waiter: Waiter): void {
    backend.waiters.delete(waiter.item);
    if (waiter.timer) this.#clock.clearTimeout(waiter.timer);
    waiter.detach();
    const tenant = this.#tenant(waiter.request);
    tenant.queued -= 1;
    tenant.queuedTokens -= tokensOf(waiter.request);
  }

  #backend(name: string): BackendState {
    let state = this.#backends.get(name);
    if (!state) {
      state = {
        name,
        policy: this.#fairness(),
        waiters: new Map(),
        inFlight: 0,
        inFlightTokens: 0,
        rate: new ServiceRate(),
      };
      this.#backends.set(name, state);
    }
    return state;
  }

  #tenant(request: Pick<SchedulingRequest, "tenant">): TenantCounters {
    let counters = this.#tenants.get(request.tenant.id);
    if (!counters) {
      counters = { tier: request.tenant.tier, queued: 0, inFlight: 0, queuedTokens: 0, inFlightTokens: 0 };
      this.#tenants.set(request.tenant.id, counters);
    }
    return counters;
  }

  // Unlisted tenants come and go; idle ones must not accumulate.
  #forgetIdle(id: string): void {
    const counters = this.#tenants.get(id);
    if (counters && counters.queued === 0 && counters.inFlight === 0) this.#tenants.delete(id);
  }
}

function tokensOf(request: Pick<SchedulingRequest, "promptTokens" | "expectedOutputTokens">): number {
  return request.promptTokens + request.expectedOutputTokens;
}
