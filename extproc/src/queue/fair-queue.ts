import {
  type AdmissionGate,
  type AdmissionVerdict,
  EngineAwareGate,
  type EngineSignals,
} from "../admission/gate.ts";
import type { Clock, TimerHandle } from "../clock.ts";
import type { Policy } from "../config/policy.ts";
import { FairgateError } from "../errors.ts";
import { BackendEstimator, type QueueEvent, type QueueWaitEstimate } from "../estimate/backend-estimator.ts";
import { refusalHeaders } from "../scheduler/estimate-headers.ts";
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
import {
  type FairnessPolicy,
  type FairnessPolicyFactory,
  type QueuedRequest,
  type SharedCounters,
  serviceTokens,
} from "./policy.ts";
import type { SharedQueueState } from "./shared-state.ts";

interface Waiter {
  readonly item: QueuedRequest;
  readonly request: SchedulingRequest;
  readonly enqueuedAt: number;
  readonly estimate: WaitEstimate;
  /**
   * The model's worst case before calibration (QueueWaitEstimate.modelWorstCaseMs); absent
   * when the estimate did not come from the model (it went at once, or the engine was
   * loading): such waits teach the calibration nothing.
   */
  readonly modelWorstCaseMs: number | undefined;
  readonly resolve: (dispatch: Dispatch) => void;
  readonly reject: (reason: unknown) => void;
  timer: TimerHandle | undefined;
  detach: () => void;
  /** Dispatches that overtook this request while it was too large for the KV room left. */
  bypassed: number;
}

/** One tenant's footprint on one backend, for KV shares. */
interface TenantOnBackend {
  weight: number;
  queued: number;
  inFlight: number;
  inFlightTokens: number;
}

interface BackendState {
  readonly name: string;
  readonly policy: FairnessPolicy;
  readonly waiters: Map<QueuedRequest, Waiter>;
  inFlight: number;
  inFlightTokens: number;
  readonly rate: ServiceRate;
  readonly estimator: BackendEstimator;
  readonly tenants: Map<string, TenantOnBackend>;
  /** Sum of the weights of tenants with requests queued or in flight here. */
  activeWeight: number;
  /** The policy's counters when shared with other replicas. */
  sharing: SharedCounters | undefined;
  /** A request too large for the KV room left that has used up its bypass allowance. */
  heldBy: Waiter | undefined;
  /** The other replicas' load on this backend and their best waiting request (shared state). */
  others: {
    inFlight: number;
    inFlightTokens: number;
    best: { priority: number; counter: number } | undefined;
  };
}

interface TenantCounters {
  tier: string;
  queued: number;
  inFlight: number;
  queuedTokens: number;
  inFlightTokens: number;
}

/** Used for estimates until a backend has completed anything, when its engine's counters say nothing. */
const PRIOR_TOKENS_PER_SEC = 2_000;
/** How far down the policy's order one dispatch attempt looks for a request that fits. */
const MAX_CANDIDATES = 16;

export interface FairQueueOptions {
  policy: () => Policy;
  clock: Clock;
  /** Builds the ordering policy of one backend's queue. */
  fairness: FairnessPolicyFactory;
  gate?: AdmissionGate;
  /** The scheduler's name in /v1/queue and benchmark reports; defaults to the policy's. */
  name?: string;
  /** Later requests allowed to overtake one too large for the KV room left (default 16). */
  maxBypass?: number;
  /** Hold each tenant to its weighted share of the KV budget while others wait (default true). */
  tenantKvShares?: boolean;
  /** Capacity fraction kept free for tenants below their share of in-flight requests (default 0). */
  headroom?: number;
  /** Counters, load and candidates shared with the other gateway replicas (Redis store). */
  shared?: SharedQueueState;
  /** Learns each tenant's output lengths from completions; pass one to share it (budgets). */
  predictor?: OutputPredictor;
  /** The engine's state per backend, for loading time and prefill time in estimates. */
  engineSignals?: (backend: string) => EngineSignals | undefined;
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
  readonly #predictor: OutputPredictor;
  readonly #maxBypass: number;
  readonly #tenantKvShares: boolean;
  readonly #headroom: number;
  readonly #shared: SharedQueueState | undefined;
  readonly #engineSignals: FairQueueOptions["engineSignals"];
  #seq = 0;

  constructor(options: FairQueueOptions) {
    this.#policy = options.policy;
    this.#clock = options.clock;
    this.#fairness = options.fairness;
    this.#gate = options.gate ?? new EngineAwareGate();
    this.name = options.name ?? options.fairness().name;
    this.#maxBypass = options.maxBypass ?? 16;
    this.#tenantKvShares = options.tenantKvShares ?? true;
    this.#headroom = options.headroom ?? 0;
    this.#shared = options.shared;
    this.#predictor = options.predictor ?? new OutputPredictor();
    this.#engineSignals = options.engineSignals;
    // Shared state is exchanged from the start, so a backend's first request already
    // counts the other replicas' load.
    if (this.#shared) for (const backend of this.#policy().backends) this.#backend(backend.name);
  }

  submit(request: SchedulingRequest, signal: AbortSignal): Submission {
    if (signal.aborted) return { queued: false, dispatch: Promise.reject(signal.reason) };
    const backend = this.#backend(request.backend);
    const tenant = this.#tenant(request);
    const item = this.#item(request);
    const { estimate, modelWorstCaseMs } = this.#estimate(request);

    if (backend.policy.size === 0 && this.#verdict(backend, request) === "admit") {
      backend.policy.add(item);
      backend.policy.dispatch(item);
      this.#observeDispatch(backend, item, false);
      return {
        queued: false,
        dispatch: Promise.resolve(this.#start(backend, item, request, undefined, estimate)),
      };
    }
    const maxQueued = request.tenant.limits.maxQueued;
    if (maxQueued !== undefined && tenant.queued >= maxQueued) {
      const refusal = new FairgateError("queue_full", {
        message: `Tenant ${request.tenant.id} already has ${tenant.queued} requests queued (maxQueued ${maxQueued}).`,
        headers: refusalHeaders(estimate),
      });
      return { queued: false, dispatch: Promise.reject(refusal) };
    }

    const dispatch = new Promise<Dispatch>((resolve, reject) => {
      const waiter: Waiter = {
        item,
        request,
        enqueuedAt: this.#clock.now(),
        estimate,
        modelWorstCaseMs,
        resolve,
        reject,
        timer: undefined,
        detach: () => {},
        bypassed: 0,
      };
      // A request leaving may have been the one holding the queue for KV room.
      const onAbort = () => {
        if (!this.#remove(backend, waiter)) return;
        reject(signal.reason);
        this.#pump(backend);
      };
      signal.addEventListener("abort", onAbort, { once: true });
      waiter.detach = () => signal.removeEventListener("abort", onAbort);
      waiter.timer = this.#clock.setTimeout(() => {
        // A timeout is a wait at least this long: dropping it would hide the worst misses.
        this.#calibrate(backend, waiter);
        if (this.#remove(backend, waiter)) {
          reject(
            new FairgateError("queue_timeout", {
              message: `The request waited ${request.maxWaitMs} ms in the queue without reaching the engine.`,
              // What a request sent now would wait: the honest retry-after.
              headers: refusalHeaders(this.estimate(request)),
            }),
          );
          this.#pump(backend);
        }
      }, request.maxWaitMs);
      backend.waiters.set(item, waiter);
      backend.policy.add(item);
      backend.estimator.queued(this.#clock.now(), this.#queueEvent(backend, item));
      this.#onBackend(backend, request).queued += 1;
      tenant.queued += 1;
      tenant.queuedTokens += tokensOf(request);
    });
    // It may fit past a head that is waiting for KV room.
    this.#pump(backend);
    return { queued: true, dispatch };
  }

  estimate(request: Omit<SchedulingRequest, "id" | "maxWaitMs">): WaitEstimate {
    return this.#estimate(request).estimate;
  }

  #estimate(request: Omit<SchedulingRequest, "id" | "maxWaitMs">): {
    estimate: WaitEstimate;
    modelWorstCaseMs: number | undefined;
  } {
    const engine = this.#engineSignals?.(request.backend);
    const prefillMs = (engine?.prefillMsPerPromptToken ?? 0) * request.promptTokens;
    const wait = this.#queueWait(request);
    // A loading engine admits nothing until it serves: the time left comes first.
    const loading = engine && !engine.fresh ? engine.loadingRemainingMs : undefined;
    const expectedMs = wait.expectedMs + Math.round(loading?.expected ?? 0);
    const loadingWorst = Math.round(loading?.worst ?? 0);
    return {
      estimate: {
        expectedMs,
        worstCaseMs: Math.max(expectedMs, wait.worstCaseMs + loadingWorst),
        expectedTtftMs: expectedMs + Math.round(prefillMs),
      },
      modelWorstCaseMs: loading ? undefined : wait.modelWorstCaseMs,
    };
  }

  #queueWait(request: Omit<SchedulingRequest, "id" | "maxWaitMs">): QueueWaitEstimate {
    const backend = this.#backend(request.backend);
    const tokens = tokensOf(request);
    const capacityShare = this.#shareOf(backend, request);
    const verdict = this.#verdict(backend, request, capacityShare);
    const admits = verdict === "admit";
    const heldForTokens = this.#heldFor(backend);
    // The queue dispatches until nothing waiting may go, so a request the gate admits,
    // with nothing of its tenant queued before it, goes at once, unless a request too
    // large for the room left holds the queue.
    if (
      admits &&
      heldForTokens === 0 &&
      (backend.policy.size === 0 || !backend.tenants.get(request.tenant.id)?.queued)
    )
      return { expectedMs: 0, worstCaseMs: 0 };
    const probe = {
      tenantId: request.tenant.id,
      priority: request.tenant.priority,
      weight: request.tenant.weight,
      tokens,
      passes: this.#passesTied(backend, request),
    };
    return backend.estimator.estimate(
      this.#clock.now(),
      {
        tenantId: probe.tenantId,
        level: probe.priority,
        distance: backend.policy.distance(probe),
        tenantPaced: backend.policy.tenantPaced,
        aheadTokens: backend.policy.workAhead(probe),
        tenantQueued: backend.tenants.get(probe.tenantId)?.queued ?? 0,
        weight: probe.weight,
        progressPerToken: backend.policy.progressPerToken(probe),
        overtakers:
          verdict === "too-large"
            ? Math.min(
                this.#maxBypass,
                backend.policy.size - (backend.tenants.get(probe.tenantId)?.queued ?? 0),
              )
            : 0,
        heldForTokens,
      },
      tokens,
      {
        inFlight: backend.inFlight + backend.others.inFlight,
        priorTokensPerMs: this.#priorTokensPerMs(backend),
        completionsToOpen: this.#completionsToOpen(backend, capacityShare.reserve),
      },
    );
  }

  /**
   * The token rate to assume before the queue has measured its own. What the engine's
   * counters say it has been processing is a floor under what it can (a lightly used or
   * just-woken engine processes little and can do far more), so it raises the prior and
   * never lowers it.
   */
  #priorTokensPerMs(backend: BackendState): number {
    const engineRate = this.#engineSignals?.(backend.name)?.tokensPerSecond;
    const measured = engineRate !== undefined && Number.isFinite(engineRate) ? engineRate : 0;
    return Math.max(measured, PRIOR_TOKENS_PER_SEC) / 1000;
  }

  /** KV room that must free before the request holding the queue fits (0 if none holds it). */
  #heldFor(backend: BackendState): number {
    const holder = backend.heldBy;
    if (!holder || !backend.waiters.has(holder.item)) return 0;
    const config = this.#config(backend);
    const budget = this.#gate.kvBudgetTokens(config);
    if (budget === undefined) return 0;
    const room = budget - backend.inFlightTokens - backend.others.inFlightTokens;
    return Math.max(0, tokensOf(holder.request) - Math.max(0, room));
  }

  /** Re-checks the gate of every backend: call when engine state changed. */
  poke(backendName?: string): void {
    for (const backend of this.#backends.values()) {
      if (backendName === undefined || backend.name === backendName) this.#pump(backend);
    }
  }

  snapshot(): SchedulerSnapshot {
    const now = this.#clock.now();
    // One pass over the waiting requests: the longest remaining expected and worst-case
    // wait per tenant.
    const waits = new Map<string, { expected: number; worst: number }>();
    for (const backend of this.#backends.values()) {
      for (const waiter of backend.waiters.values()) {
        const waited = now - waiter.enqueuedAt;
        const id = waiter.request.tenant.id;
        const entry = waits.get(id) ?? { expected: 0, worst: 0 };
        entry.expected = Math.max(entry.expected, waiter.estimate.expectedMs - waited);
        entry.worst = Math.max(entry.worst, waiter.estimate.worstCaseMs - waited);
        waits.set(id, entry);
      }
    }
    const tenants: TenantQueueState[] = [];
    for (const [id, counters] of this.#tenants) {
      if (counters.queued === 0 && counters.inFlight === 0) continue;
      const wait = waits.get(id);
      tenants.push({
        tenant: id,
        ...counters,
        estimatedWaitMs: Math.max(0, wait?.expected ?? 0),
        worstCaseWaitMs: Math.max(0, wait?.worst ?? 0),
      });
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

  /** The gate's verdict, plus the tenant's KV share when others are waiting for the room. */
  #verdict(
    backend: BackendState,
    request: Omit<SchedulingRequest, "id" | "maxWaitMs">,
    capacityShare = this.#shareOf(backend, request),
  ): AdmissionVerdict | "over-share" {
    const config = this.#config(backend);
    const tokens = tokensOf(request);
    const mine = backend.tenants.get(request.tenant.id);
    const verdict = this.#gate.check(config, this.#load(backend), tokens, capacityShare);
    if (verdict !== "admit" || !this.#tenantKvShares) return verdict;
    const contended = backend.policy.size > (mine?.queued ?? 0);
    if (!contended || !mine || mine.inFlight === 0) return "admit";
    const budget = this.#gate.kvBudgetTokens(config);
    if (budget === undefined) return "admit";
    // With others waiting, one tenant may hold no more than its weighted share of the KV
    // budget, so a tenant's long contexts cannot crowd everyone else out of the cache.
    const share = (budget * mine.weight) / Math.max(backend.activeWeight, mine.weight);
    return mine.inFlightTokens + tokens > share ? "over-share" : "admit";
  }

  #config(backend: BackendState) {
    return this.#policy().backends.find((b) => b.name === backend.name);
  }

  /** Every replica's requests count against the backend's caps. */
  #load(backend: BackendState): { inFlight: number; inFlightTokens: number } {
    return {
      inFlight: backend.inFlight + backend.others.inFlight,
      inFlightTokens: backend.inFlightTokens + backend.others.inFlightTokens,
    };
  }

  /** The capacity the request must leave free, and whether its tenant is below its share. */
  #shareOf(
    backend: BackendState,
    request: Omit<SchedulingRequest, "id" | "maxWaitMs">,
  ): { reserve: number; below: boolean } {
    const mine = backend.tenants.get(request.tenant.id);
    // While other tenants are active, one holding at least its weighted share of the
    // in-flight requests may not use the last `headroom` of the capacity: that room stays
    // free for tenants below their share, whose requests then start without waiting for a
    // slot to free at the end of an engine step.
    const othersActive = mine !== undefined && backend.activeWeight > mine.weight;
    const fairShare = mine
      ? (backend.inFlight * mine.weight) / Math.max(backend.activeWeight, mine.weight)
      : 0;
    const atShare = this.#atShare(backend, request.tenant.id, backend.activeWeight);
    // The kept room is for light tenants of the highest priority level waiting: a lower
    // level must not use it to pass a backlogged higher one.
    const topPriority = backend.policy.peek()?.priority;
    const belowShare =
      this.#headroom > 0 &&
      othersActive &&
      mine.inFlight < fairShare &&
      (topPriority === undefined || request.tenant.priority <= topPriority);
    return { reserve: atShare ? this.#headroom : 0, below: belowShare };
  }

  /**
   * Which tenants tied with the request in the policy's order it goes before: those held
   * to the capacity less the headroom (at their share), when its own tenant, with what it
   * already has queued gone out, would still be below its share and may use the headroom.
   */
  #passesTied(
    backend: BackendState,
    request: Omit<SchedulingRequest, "id" | "maxWaitMs">,
  ): ((tenantId: string) => boolean) | undefined {
    if (this.#headroom <= 0) return undefined;
    const mine = backend.tenants.get(request.tenant.id);
    const weight = request.tenant.weight;
    const activeWeight = backend.activeWeight + (mine ? 0 : weight);
    if (activeWeight <= weight) return undefined;
    const ahead = (mine?.inFlight ?? 0) + (mine?.queued ?? 0);
    if (ahead >= (backend.inFlight * weight) / activeWeight) return undefined;
    return (tenantId) => this.#atShare(backend, tenantId, activeWeight);
  }

  /**
   * The tenant holds at least its weighted share of the in-flight requests while others
   * are active (`activeWeight`: the weight of the active tenants, the request's included).
   */
  #atShare(backend: BackendState, tenantId: string, activeWeight: number): boolean {
    const tenant = backend.tenants.get(tenantId);
    if (!tenant || activeWeight <= tenant.weight || tenant.inFlight === 0) return false;
    return tenant.inFlight >= (backend.inFlight * tenant.weight) / activeWeight;
  }

  /**
   * With every request slot a request leaving `reserve` free may use taken, the requests
   * in flight that must finish before it may go (undefined when the cap is not what holds
   * it).
   */
  #completionsToOpen(backend: BackendState, reserve: number): number | undefined {
    const slots = this.#gate.requestSlots?.(this.#config(backend), reserve) ?? Number.POSITIVE_INFINITY;
    const excess = this.#load(backend).inFlight - slots + 1;
    return Number.isFinite(slots) && excess >= 1 ? excess : undefined;
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
    /** When it joined the queue; undefined when it went at once (it waited 0 ms). */
    enqueuedAt: number | undefined,
    estimate: WaitEstimate,
  ): Dispatch {
    const tokens = tokensOf(request);
    const tenant = this.#tenant(request);
    const onBackend = this.#onBackend(backend, request);
    backend.inFlight += 1;
    backend.inFlightTokens += tokens;
    tenant.inFlight += 1;
    tenant.inFlightTokens += tokens;
    onBackend.inFlight += 1;
    onBackend.inFlightTokens += tokens;
    let released = false;
    const dispatchedAt = this.#clock.now();
    return {
      waitedMs: enqueuedAt === undefined ? 0 : Math.max(0, dispatchedAt - enqueuedAt),
      estimate,
      release: (outcome?: DispatchOutcome) => {
        if (released) return;
        released = true;
        backend.inFlight -= 1;
        backend.inFlightTokens -= tokens;
        tenant.inFlight -= 1;
        tenant.inFlightTokens -= tokens;
        onBackend.inFlight -= 1;
        onBackend.inFlightTokens -= tokens;
        this.#leaveBackendIfIdle(backend, request.tenant.id);
        const output = outcome?.completionTokens;
        if (output !== undefined) this.#predictor.observe(request.tenant.id, output);
        backend.policy.complete(item, output);
        backend.rate.record(this.#clock.now(), request.promptTokens + (output ?? item.predictedOutputTokens));
        backend.estimator.completed(this.#clock.now(), tokens, this.#clock.now() - dispatchedAt);
        this.#forgetIdle(request.tenant.id);
        this.#pump(backend);
      },
    };
  }

  #pump(backend: BackendState): void {
    backend.heldBy = undefined;
    for (;;) {
      // Walk the policy's order: the first request that may go, goes. A request too large
      // for the KV room left may be overtaken by smaller ones, up to maxBypass times; a
      // tenant over its KV share is passed over while others wait.
      const overtaken: Waiter[] = [];
      let chosen: Waiter | undefined;
      let overShare: Waiter | undefined;
      let blockedPriority = Number.POSITIVE_INFINITY;
      let examined = 0;
      for (const candidate of backend.policy.candidates()) {
        if (++examined > MAX_CANDIDATES) break;
        const waiter = backend.waiters.get(candidate);
        if (!waiter) continue;
        // Never pass a higher priority level that is waiting for room.
        if (candidate.priority > blockedPriority) continue;
        const verdict = this.#verdict(backend, waiter.request);
        // "full" may be this tenant's alone (its share of the capacity is used up, see
        // #verdict): a tenant further down, of the same or a higher level, may still go.
        if (verdict === "full") {
          blockedPriority = Math.min(blockedPriority, candidate.priority);
          continue;
        }
        if (verdict === "admit") {
          chosen = waiter;
          break;
        }
        if (verdict === "too-large") {
          if (waiter.bypassed >= this.#maxBypass) {
            backend.heldBy = waiter;
            return;
          }
          overtaken.push(waiter);
        } else overShare ??= waiter;
      }
      // Work-conserving: a tenant over its KV share still goes when nobody else is waiting
      // for the room (only tenants over their share are queued).
      if (!chosen && overtaken.length === 0) chosen = overShare;
      if (!chosen || this.#owedElsewhere(backend, chosen)) return;
      for (const waiter of overtaken) waiter.bypassed++;
      this.#calibrate(backend, chosen);
      this.#detach(backend, chosen);
      backend.policy.dispatch(chosen.item);
      this.#observeDispatch(backend, chosen.item, true);
      chosen.resolve(this.#start(backend, chosen.item, chosen.request, chosen.enqueuedAt, chosen.estimate));
    }
  }

  /**
   * With replicas sharing the backend, a freed slot is left to another replica when the
   * request waiting there is owed more (higher priority level, or a virtual counter lower
   * by more than this request's own charge); that replica takes it at its next exchange.
   */
  #owedElsewhere(backend: BackendState, chosen: Waiter): boolean {
    const best = backend.others.best;
    if (!best) return false;
    const mine = chosen.item;
    if (best.priority !== mine.priority) return best.priority < mine.priority;
    const counter = backend.sharing?.counterOf(mine.tenantId);
    if (counter === undefined) return false;
    return best.counter + serviceTokens(mine) / mine.weight < counter;
  }

  /** Tells the estimator how long a waiter waited against the model's worst case for it. */
  #calibrate(backend: BackendState, waiter: Waiter): void {
    if (waiter.modelWorstCaseMs === undefined || !backend.waiters.has(waiter.item)) return;
    const now = this.#clock.now();
    backend.estimator.waited(now, waiter.item.tenantId, now - waiter.enqueuedAt, waiter.modelWorstCaseMs);
  }

  #observeDispatch(backend: BackendState, item: QueuedRequest, queued: boolean): void {
    backend.estimator.dispatched(this.#clock.now(), this.#queueEvent(backend, item), queued);
  }

  #queueEvent(backend: BackendState, item: QueuedRequest): QueueEvent {
    return {
      tenantId: item.tenantId,
      level: item.priority,
      levelClock: backend.policy.progress(item.priority),
      tokens: serviceTokens(item),
      divisor: 1 / backend.policy.progressPerToken({ ...item, tokens: serviceTokens(item) }),
      weight: item.weight,
    };
  }

  #remove(backend: BackendState, waiter: Waiter): boolean {
    if (!backend.waiters.has(waiter.item)) return false;
    this.#detach(backend, waiter);
    backend.policy.remove(waiter.item);
    backend.estimator.left(this.#clock.now(), this.#queueEvent(backend, waiter.item));
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
    const onBackend = this.#onBackend(backend, waiter.request);
    onBackend.queued -= 1;
    this.#leaveBackendIfIdle(backend, waiter.request.tenant.id);
  }

  /** The tenant's footprint on the backend, created (and counted as active) on first use. */
  #onBackend(backend: BackendState, request: Pick<SchedulingRequest, "tenant">): TenantOnBackend {
    let entry = backend.tenants.get(request.tenant.id);
    if (!entry) {
      entry = { weight: request.tenant.weight, queued: 0, inFlight: 0, inFlightTokens: 0 };
      backend.tenants.set(request.tenant.id, entry);
      backend.activeWeight += entry.weight;
    }
    return entry;
  }

  #leaveBackendIfIdle(backend: BackendState, tenantId: string): void {
    const entry = backend.tenants.get(tenantId);
    if (entry && entry.queued === 0 && entry.inFlight === 0) {
      backend.tenants.delete(tenantId);
      backend.activeWeight -= entry.weight;
    }
  }

  #share(backend: BackendState): void {
    const sharing = backend.policy.sharedCounters?.();
    backend.sharing = sharing;
    this.#shared?.register(backend.name, {
      takeUpdates: () => sharing?.takeUpdates() ?? { deltas: new Map(), lifts: new Map() },
      restoreUpdates: (updates) => sharing?.restoreUpdates(updates),
      localLoad: () => ({ inFlight: backend.inFlight, inFlightTokens: backend.inFlightTokens }),
      candidate: () => {
        if (backend.policy.size === 0) return undefined;
        return sharing?.candidateCounter() ?? { priority: backend.policy.peek()?.priority ?? 0, counter: 0 };
      },
      tenants: () => sharing?.sharedTenants() ?? [],
      apply: (view) => {
        sharing?.applyCounters(view.counters);
        backend.others = {
          inFlight: view.othersInFlight,
          inFlightTokens: view.othersInFlightTokens,
          best: view.othersBest,
        };
        this.#pump(backend);
      },
    });
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
        estimator: new BackendEstimator(),
        tenants: new Map(),
        activeWeight: 0,
        sharing: undefined,
        heldBy: undefined,
        others: { inFlight: 0, inFlightTokens: 0, best: undefined },
      };
      if (this.#shared) this.#share(state);
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
