import {
  type AdmissionGate,
  type AdmissionVerdict,
  admission,
  type BackendCapacity,
  EngineAwareGate,
  type EngineSignals,
  type HeldBack,
  NOTHING_HELD,
  type RequestNeed,
} from "../admission/gate.ts";
import type { Clock, TimerHandle } from "../clock.ts";
import type { Policy } from "../config/policy.ts";
import { BackendEstimator, type QueueEvent, type QueueWaitEstimate } from "../estimate/backend-estimator.ts";
import { ServiceRate } from "../scheduler/service-rate.ts";
import {
  type Dispatch,
  type DispatchOutcome,
  QueueRefusal,
  type Scheduler,
  type SchedulerSnapshot,
  type SchedulingRequest,
  type Submission,
  type TenantQueueState,
  type WaitEstimate,
} from "../scheduler/types.ts";
import { addAmounts, anyCapped, type ClaimAmounts, capsOf, claimVerdict } from "./claims.ts";
import { type CostWeights, requestCost, TOKEN_COUNTING } from "./cost.ts";
import { BackendLedger, type LedgerTenant } from "./ledger.ts";
import { OutputPredictor } from "./output-predictor.ts";
import type { QueuedRequest, QueuePolicy, QueuePolicyFactory, SharedCounters } from "./policy.ts";
import { type OwedAtLeast, ReservationBook } from "./reservations.ts";
import type { SharedCandidate, SharedQueueState } from "./shared-state.ts";

/** A request as the queue holds it, waiting or in flight. */
interface Held {
  readonly item: QueuedRequest;
  readonly request: SchedulingRequest;
  /** The KV it reserves (prompt + the output reserved for it, OutputPredictor.reserve) and its prompt to prefill. */
  readonly need: RequestNeed;
  readonly predictedOutputTokens: number;
}

interface Waiter extends Held {
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

interface BackendState {
  readonly name: string;
  readonly policy: QueuePolicy;
  readonly ledger: BackendLedger;
  readonly reservations: ReservationBook;
  readonly waiters: Map<QueuedRequest, Waiter>;
  readonly rate: ServiceRate;
  readonly estimator: BackendEstimator;
  /** Cost per token of recent dispatches, to turn token rates into cost rates. */
  costPerToken: number;
  /** The policy's counters when shared with other replicas. */
  sharing: SharedCounters | undefined;
  /** A request too large for the KV room left that has used up its bypass allowance. */
  heldBy: Waiter | undefined;
  /** The other replicas' best waiting request (shared state). */
  othersBest: SharedCandidate | undefined;
  /** This replica's claim on the backend's caps (shared state); undefined: the local view decides. */
  claim: ClaimAmounts | undefined;
}

/** Used for estimates until a backend has completed anything, when its engine's counters say nothing. */
const PRIOR_TOKENS_PER_SEC = 2_000;
/** How far down the policy's order one dispatch attempt looks for a request that fits. */
const MAX_CANDIDATES = 16;
/** Prefill time per prompt token assumed when the engine's is unknown, ms. */
const FALLBACK_PREFILL_MS_PER_TOKEN = 0.25;
/** A prefill never seen to end counts as done after this slack on its estimated time. */
const PREFILL_DEADLINE_FACTOR = 3;
const PREFILL_DEADLINE_SLACK_MS = 250;

export interface FairQueueOptions {
  policy: () => Policy;
  clock: Clock;
  /** Builds the ordering policy of one backend's queue. */
  fairness: QueuePolicyFactory;
  gate?: AdmissionGate;
  /** The scheduler's name in /v1/queue and benchmark reports; defaults to the policy's. */
  name?: string;
  /** Later requests allowed to overtake one too large for the KV room left (default 16). */
  maxBypass?: number;
  /** How long a tenant's recent peak stays reserved for it while it is below its share, ms (default 0: no reservations). */
  reservationWindowMs?: number;
  /** What a request costs, the unit charged and estimated in (default: tokens counted alike). */
  cost?: CostWeights;
  /** Counters, load and candidates shared with the other gateway replicas (Redis store). */
  shared?: SharedQueueState;
  /** Learns each tenant's output lengths from completions; pass one to share it (budgets). */
  predictor?: OutputPredictor;
  /** The engine's state per backend, for loading time and prefill time in estimates. */
  engineSignals?: (backend: string) => EngineSignals | undefined;
}

/**
 * Holds requests per backend until the admission gate has room, and lets the ordering
 * policy choose which goes next. Owns everything around the order: queue caps, queue
 * timeouts, cancellation (an aborted request leaves at once and is charged nothing), and
 * the service rate behind estimates; the counts of what waits and runs live in one
 * BackendLedger per backend, and the sharing rules are pure functions (share-rules.ts).
 */
export class FairQueueScheduler implements Scheduler {
  readonly name: string;
  readonly #policy: () => Policy;
  readonly #clock: Clock;
  readonly #fairness: QueuePolicyFactory;
  readonly #gate: AdmissionGate;
  readonly #backends = new Map<string, BackendState>();
  readonly #predictor: OutputPredictor;
  readonly #maxBypass: number;
  readonly #reservationWindowMs: number;
  readonly #cost: CostWeights;
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
    this.#reservationWindowMs = options.reservationWindowMs ?? 0;
    this.#cost = options.cost ?? TOKEN_COUNTING;
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
    const held = this.#hold(request);
    const { estimate, modelWorstCaseMs } = this.#estimate(request, held);
    const now = this.#clock.now();

    if (backend.policy.size === 0 && this.#verdict(backend, held) === "admit") {
      const charge = held.item.cost;
      backend.policy.add(held.item);
      backend.policy.dispatch(held.item, charge);
      this.#observeDispatch(backend, held.item, false);
      return {
        queued: false,
        dispatch: Promise.resolve(this.#start(backend, held, charge, undefined, estimate)),
      };
    }
    const maxQueued = request.tenant.limits.maxQueued;
    const queued = this.#queuedOf(request.tenant.id);
    if (maxQueued !== undefined && queued >= maxQueued) {
      const refusal = new QueueRefusal(
        "queue_full",
        `Tenant ${request.tenant.id} already has ${queued} requests queued (maxQueued ${maxQueued}).`,
        estimate,
      );
      return { queued: false, dispatch: Promise.reject(refusal) };
    }

    const dispatch = new Promise<Dispatch>((resolve, reject) => {
      const waiter: Waiter = {
        ...held,
        enqueuedAt: now,
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
            new QueueRefusal(
              "queue_timeout",
              `The request waited ${request.maxWaitMs} ms in the queue without reaching the engine.`,
              // What a request sent now would wait: the honest retry-after.
              this.estimate(request),
            ),
          );
          this.#pump(backend);
        }
      }, request.maxWaitMs);
      backend.waiters.set(held.item, waiter);
      backend.policy.add(held.item);
      backend.ledger.enqueue(ledgerTenant(request), held.need, now);
      backend.estimator.queued(now, this.#queueEvent(backend, held.item));
    });
    // It may fit past a head that is waiting for KV room.
    this.#pump(backend);
    return { queued: true, dispatch };
  }

  estimate(request: Omit<SchedulingRequest, "id" | "maxWaitMs">): WaitEstimate {
    return this.#estimate(request, this.#hold({ ...request, id: "", maxWaitMs: 0 }, false)).estimate;
  }

  #estimate(
    request: Omit<SchedulingRequest, "id" | "maxWaitMs">,
    held: Held,
  ): { estimate: WaitEstimate; modelWorstCaseMs: number | undefined } {
    const engine = this.#engineSignals?.(request.backend);
    const prefillMs = (engine?.prefillMsPerPromptToken ?? 0) * request.promptTokens;
    const wait = this.#queueWait(request, held);
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

  #queueWait(request: Omit<SchedulingRequest, "id" | "maxWaitMs">, held: Held): QueueWaitEstimate {
    const backend = this.#backend(request.backend);
    const verdict = this.#verdict(backend, held);
    const heldForTokens = this.#heldFor(backend);
    const mine = backend.ledger.tenant(request.tenant.id);
    // The queue dispatches until nothing waiting may go, so a request the gate admits,
    // with nothing of its tenant queued before it, goes at once, unless a request too
    // large for the room left holds the queue.
    if (verdict === "admit" && heldForTokens === 0 && (backend.policy.size === 0 || !mine?.queued))
      return { expectedMs: 0, worstCaseMs: 0 };
    const probe = {
      tenantId: request.tenant.id,
      priority: request.tenant.priority,
      weight: request.tenant.weight,
      tokens: held.item.cost,
    };
    const capacity = this.#capacity(backend);
    return backend.estimator.estimate(
      this.#clock.now(),
      {
        tenantId: probe.tenantId,
        level: probe.priority,
        distance: backend.policy.distance(probe),
        tenantPaced: backend.policy.tenantPaced,
        aheadTokens: backend.policy.workAhead(probe),
        tenantQueued: backend.policy.servesNewestFirst?.(probe.tenantId, probe.priority)
          ? 0
          : (mine?.queued ?? 0),
        weight: probe.weight,
        progressPerToken: backend.policy.progressPerToken(probe),
        overtakers:
          verdict === "too-large" ? Math.min(this.#maxBypass, backend.policy.size - (mine?.queued ?? 0)) : 0,
        heldForTokens,
      },
      held.need.kvTokens,
      {
        inFlight: backend.ledger.load(this.#clock.now()).inFlight,
        priorTokensPerMs: this.#priorTokensPerMs(backend),
        completionsToOpen: this.#completionsToOpen(
          backend,
          capacity,
          this.#reservationWindowMs > 0
            ? backend.reservations.heldFrom(
                probe.tenantId,
                this.#owedAtLeast(backend, probe),
                capacity,
                this.#clock.now(),
              )
            : NOTHING_HELD,
        ),
      },
    );
  }

  /**
   * The cost rate to assume before the queue has measured its own. What the engine's
   * counters say it has been processing is a floor under what it can (a lightly used or
   * just-woken engine processes little and can do far more), so it raises the prior and
   * never lowers it.
   */
  #priorTokensPerMs(backend: BackendState): number {
    const engineRate = this.#engineSignals?.(backend.name)?.tokensPerSecond;
    const measured = engineRate !== undefined && Number.isFinite(engineRate) ? engineRate : 0;
    return (Math.max(measured, PRIOR_TOKENS_PER_SEC) * backend.costPerToken) / 1000;
  }

  /** KV room that must free before the request holding the queue fits (0 if none holds it). */
  #heldFor(backend: BackendState): number {
    const holder = backend.heldBy;
    if (!holder || !backend.waiters.has(holder.item)) return 0;
    const budget = this.#capacity(backend).kvBudget;
    if (budget === undefined) return 0;
    const room = budget - backend.ledger.load(this.#clock.now()).inFlightTokens;
    return Math.max(0, holder.need.kvTokens - Math.max(0, room));
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
    const counts = new Map<string, Omit<TenantQueueState, "estimatedWaitMs" | "worstCaseWaitMs">>();
    for (const backend of this.#backends.values()) {
      for (const waiter of backend.waiters.values()) {
        const waited = now - waiter.enqueuedAt;
        const id = waiter.request.tenant.id;
        const entry = waits.get(id) ?? { expected: 0, worst: 0 };
        entry.expected = Math.max(entry.expected, waiter.estimate.expectedMs - waited);
        entry.worst = Math.max(entry.worst, waiter.estimate.worstCaseMs - waited);
        waits.set(id, entry);
      }
      for (const t of backend.ledger.tenants()) {
        if (t.queued === 0 && t.inFlight === 0) continue;
        const sum = counts.get(t.tenantId) ?? {
          tenant: t.tenantId,
          tier: t.tier,
          queued: 0,
          inFlight: 0,
          queuedTokens: 0,
          inFlightTokens: 0,
        };
        counts.set(t.tenantId, {
          ...sum,
          queued: sum.queued + t.queued,
          inFlight: sum.inFlight + t.inFlight,
          queuedTokens: sum.queuedTokens + t.queuedKv,
          inFlightTokens: sum.inFlightTokens + t.inFlightKv,
        });
      }
    }
    const tenants: TenantQueueState[] = [...counts.values()].map((counters) => {
      const wait = waits.get(counters.tenant);
      return {
        ...counters,
        estimatedWaitMs: Math.max(0, wait?.expected ?? 0),
        worstCaseWaitMs: Math.max(0, wait?.worst ?? 0),
      };
    });
    tenants.sort((a, b) => a.tenant.localeCompare(b.tenant));
    return {
      policy: this.name,
      backends: [...this.#backends.values()].map((b) => ({
        backend: b.name,
        queued: b.policy.size,
        inFlight: b.ledger.local.inFlight,
        inFlightTokens: b.ledger.local.inFlightTokens,
        prefillTokens: b.ledger.local.prefillTokens,
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
        if (this.#remove(backend, waiter))
          waiter.reject(new QueueRefusal("shutting_down", "fairgate is shutting down."));
      }
    }
  }

  /** The request as the queue holds it: its cost, its KV reservation and its place in line. */
  #hold(request: SchedulingRequest, numbered = true): Held {
    const tenantId = request.tenant.id;
    const maxOutput = request.expectedOutputTokens;
    const predictedOutputTokens = this.#predictor.predict(tenantId, maxOutput);
    return {
      item: {
        id: request.id,
        tenantId,
        priority: request.tenant.priority,
        weight: request.tenant.weight,
        cost: requestCost(this.#cost, request.promptTokens, predictedOutputTokens),
        seq: numbered ? this.#seq++ : this.#seq,
        enqueuedAt: this.#clock.now(),
      },
      request,
      need: {
        kvTokens: request.promptTokens + this.#predictor.reserve(tenantId, maxOutput),
        prefillTokens: request.promptTokens,
      },
      predictedOutputTokens,
    };
  }

  /**
   * The gate's verdict for the request. A light request keeps its tenant within its share
   * of every budget, so it needs only the room to be there; otherwise the room that quiet
   * tenants below their share (and owed at least as much) keep is held back from it
   * (share-rules.ts).
   */
  #verdict(backend: BackendState, held: Held): AdmissionVerdict {
    const { tenantId, weight } = held.item;
    const capacity = this.#capacity(backend);
    const now = this.#clock.now();
    const load = backend.ledger.load(now);
    let verdict: AdmissionVerdict;
    if (this.#reservationWindowMs === 0) verdict = admission(capacity, load, held.need);
    else {
      const light = backend.reservations.within(tenantId, weight, held.need, capacity);
      const heldBack = light
        ? NOTHING_HELD
        : backend.reservations.heldFrom(tenantId, this.#owedAtLeast(backend, held.item), capacity, now);
      verdict = admission(capacity, load, held.need, heldBack, light);
    }
    if (verdict !== "admit" || !backend.claim) return verdict;
    const claimed = claimVerdict(backend.claim, capsOf(capacity), backend.ledger.local, held.need);
    // The cluster has room this replica's claim lacks: ask for it now.
    if (claimed !== "admit") this.#shared?.claimNow(backend.name);
    return claimed;
  }

  /** Whether another tenant is owed at least as much as the request's tenant (a higher level, or no larger a standing in its own). */
  #owedAtLeast(backend: BackendState, request: Pick<QueuedRequest, "tenantId" | "priority">): OwedAtLeast {
    const policy = backend.policy;
    if (!policy.standing) return () => true;
    const mine = policy.standing(request.tenantId, request.priority);
    return (otherId, otherPriority) =>
      otherPriority < request.priority ||
      (otherPriority === request.priority && (policy.standing?.(otherId, otherPriority) ?? 0) < mine);
  }

  #capacity(backend: BackendState): BackendCapacity {
    return this.#gate.capacity(this.#policy().backends.find((b) => b.name === backend.name));
  }

  /**
   * With every request slot the request may use taken, the requests in flight that must
   * finish before it may go (undefined when the cap is not what holds it).
   */
  #completionsToOpen(backend: BackendState, capacity: BackendCapacity, held: HeldBack): number | undefined {
    const slots = capacity.slots - held.slots;
    const excess = backend.ledger.load(this.#clock.now()).inFlight - slots + 1;
    return Number.isFinite(slots) && excess >= 1 ? excess : undefined;
  }

  #queuedOf(tenantId: string): number {
    let queued = 0;
    for (const backend of this.#backends.values()) queued += backend.ledger.tenant(tenantId)?.queued ?? 0;
    return queued;
  }

  #start(
    backend: BackendState,
    held: Held,
    /** What its tenant was charged at dispatch. */
    charged: number,
    /** When it joined the queue; undefined when it went at once (it waited 0 ms). */
    enqueuedAt: number | undefined,
    estimate: WaitEstimate,
  ): Dispatch {
    const { item, request } = held;
    const kvTokens = held.need.kvTokens;
    const dispatchedAt = this.#clock.now();
    const msPerToken =
      this.#engineSignals?.(backend.name)?.prefillMsPerPromptToken ?? FALLBACK_PREFILL_MS_PER_TOKEN;
    const prefill = backend.ledger.start(
      ledgerTenant(request),
      held.need,
      dispatchedAt + PREFILL_DEADLINE_SLACK_MS + PREFILL_DEADLINE_FACTOR * msPerToken * request.promptTokens,
      dispatchedAt,
    );
    const tokens = request.promptTokens + held.predictedOutputTokens;
    backend.costPerToken += 0.05 * (item.cost / Math.max(1, tokens) - backend.costPerToken);
    let released = false;
    /** Its output became known: at release, or later through correct(). */
    let outputKnown = false;
    return {
      waitedMs: enqueuedAt === undefined ? 0 : Math.max(0, dispatchedAt - enqueuedAt),
      estimate,
      firstToken: () => {
        if (released) return;
        backend.ledger.prefilled(prefill);
        // The prefill room it held is free now.
        this.#pump(backend);
      },
      release: (outcome?: DispatchOutcome) => {
        if (released) return;
        released = true;
        const now = this.#clock.now();
        backend.ledger.finish(request.tenant.id, held.need, prefill, now);
        const output = outcome?.completionTokens;
        outputKnown = output !== undefined;
        if (output !== undefined) this.#predictor.observe(request.tenant.id, output);
        backend.policy.complete(
          item,
          output === undefined ? undefined : requestCost(this.#cost, request.promptTokens, output),
          charged,
        );
        backend.rate.record(now, request.promptTokens + (output ?? held.predictedOutputTokens));
        backend.estimator.completed(now, kvTokens, now - dispatchedAt);
        this.#pump(backend);
      },
      correct: ({ completionTokens }) => {
        if (!released || outputKnown || !Number.isFinite(completionTokens) || completionTokens < 0) return;
        outputKnown = true;
        this.#predictor.observe(request.tenant.id, completionTokens);
        backend.policy.recharge?.(
          item,
          requestCost(this.#cost, request.promptTokens, completionTokens),
          charged,
        );
      },
    };
  }

  #pump(backend: BackendState): void {
    backend.heldBy = undefined;
    for (;;) {
      // Walk the policy's order: the first request that may go, goes. A request too large
      // for the KV room left may be overtaken by smaller ones, up to maxBypass times. One
      // that must wait for room (the backend is full for it, or its prompt does not fit
      // the prefill room left) keeps its place: nothing after it in its priority level
      // goes, so room is never handed to a tenant owed less than one waiting for it.
      const overtaken: Waiter[] = [];
      let chosen: Waiter | undefined;
      let blockedPriority = Number.POSITIVE_INFINITY;
      let examined = 0;
      for (const candidate of backend.policy.candidates()) {
        if (++examined > MAX_CANDIDATES) break;
        const waiter = backend.waiters.get(candidate);
        if (!waiter) continue;
        // Never pass a level (or a higher one) that is waiting for room.
        if (candidate.priority >= blockedPriority) continue;
        const verdict = this.#verdict(backend, waiter);
        if (verdict === "admit") {
          chosen = waiter;
          break;
        }
        if (verdict === "full" || verdict === "prefill-full") {
          blockedPriority = candidate.priority;
          continue;
        }
        if (waiter.bypassed >= this.#maxBypass) {
          backend.heldBy = waiter;
          return;
        }
        overtaken.push(waiter);
      }
      if (!chosen || this.#owedElsewhere(backend, chosen)) return;
      for (const waiter of overtaken) waiter.bypassed++;
      this.#calibrate(backend, chosen);
      this.#detach(backend, chosen);
      // What it is predicted to cost now: completions while it waited taught the predictor.
      const charge = requestCost(
        this.#cost,
        chosen.request.promptTokens,
        this.#predictor.predict(chosen.item.tenantId, chosen.request.expectedOutputTokens),
      );
      backend.policy.dispatch(chosen.item, charge);
      this.#observeDispatch(backend, chosen.item, true);
      chosen.resolve(this.#start(backend, chosen, charge, chosen.enqueuedAt, chosen.estimate));
    }
  }

  /**
   * With replicas sharing the backend, a freed slot is left to another replica when the
   * request waiting there is owed more (higher priority level, or a virtual counter lower
   * by more than this request's own charge); that replica takes it at its next exchange.
   * Not when that tenant waits here too: then the order here already weighs it, and the
   * other replica's view of its counter is older than this one's.
   */
  #owedElsewhere(backend: BackendState, chosen: Waiter): boolean {
    const best = backend.othersBest;
    if (!best) return false;
    const mine = chosen.item;
    if (best.tenantId !== "" && (backend.ledger.tenant(best.tenantId)?.queued ?? 0) > 0) return false;
    if (best.priority !== mine.priority) return best.priority < mine.priority;
    const counter = backend.sharing?.counterOf(mine.tenantId);
    if (counter === undefined) return false;
    return best.counter + mine.cost / mine.weight < counter;
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
      tokens: item.cost,
      divisor: 1 / backend.policy.progressPerToken({ ...item, tokens: item.cost }),
      weight: item.weight,
    };
  }

  #remove(backend: BackendState, waiter: Waiter): boolean {
    if (!backend.waiters.has(waiter.item)) return false;
    this.#detach(backend, waiter);
    backend.policy.remove(waiter.item);
    backend.estimator.left(this.#clock.now(), this.#queueEvent(backend, waiter.item));
    return true;
  }

  #detach(backend: BackendState, waiter: Waiter): void {
    backend.waiters.delete(waiter.item);
    if (waiter.timer) this.#clock.clearTimeout(waiter.timer);
    waiter.detach();
    backend.ledger.dequeue(waiter.request.tenant.id, waiter.need, this.#clock.now());
  }

  #share(backend: BackendState): void {
    const sharing = backend.policy.sharedCounters?.();
    backend.sharing = sharing;
    this.#shared?.register(backend.name, {
      takeUpdates: () => sharing?.takeUpdates() ?? { deltas: new Map(), lifts: new Map() },
      restoreUpdates: (updates) => sharing?.restoreUpdates(updates),
      localLoad: () => {
        const { inFlight, inFlightTokens } = backend.ledger.local;
        return { inFlight, inFlightTokens };
      },
      candidate: () => {
        if (backend.policy.size === 0) return undefined;
        const head = backend.policy.peek();
        return (
          sharing?.candidateCounter() ?? {
            priority: head?.priority ?? 0,
            counter: 0,
            tenantId: head?.tenantId ?? "",
          }
        );
      },
      tenants: () => sharing?.sharedTenants() ?? [],
      apply: (view) => {
        sharing?.applyCounters(view.counters);
        backend.ledger.setOthers({
          inFlight: view.othersInFlight,
          inFlightTokens: view.othersInFlightTokens,
        });
        backend.othersBest = view.othersBest;
        this.#pump(backend);
      },
      claimRequest: () => {
        const caps = capsOf(this.#capacity(backend));
        if (!anyCapped(caps)) return undefined;
        // Counts prefills past their deadline as done first.
        backend.ledger.load(this.#clock.now());
        const { inFlight, inFlightTokens, prefillTokens } = backend.ledger.local;
        const holding = { requests: inFlight, kvTokens: inFlightTokens, prefillTokens };
        // A replica leaving a freed slot to another one's waiting tenant must not keep
        // claiming it, or that replica never gets it.
        const head = backend.policy.peek();
        const waiter = head ? backend.waiters.get(head) : undefined;
        const defers = waiter !== undefined && this.#owedElsewhere(backend, waiter);
        return { caps, wanted: defers ? holding : addAmounts(holding, backend.ledger.waiting) };
      },
      applyClaim: (claim) => {
        backend.claim = claim;
        this.#pump(backend);
      },
    });
  }

  #backend(name: string): BackendState {
    let state = this.#backends.get(name);
    if (!state) {
      const ledger = new BackendLedger(this.#reservationWindowMs);
      state = {
        name,
        policy: this.#fairness(),
        ledger,
        reservations: new ReservationBook(ledger),
        waiters: new Map(),
        rate: new ServiceRate(),
        estimator: new BackendEstimator(),
        costPerToken: 1,
        sharing: undefined,
        heldBy: undefined,
        othersBest: undefined,
        claim: undefined,
      };
      if (this.#shared) this.#share(state);
      this.#backends.set(name, state);
    }
    return state;
  }
}

function ledgerTenant(request: SchedulingRequest): LedgerTenant {
  const tenant = request.tenant;
  return { id: tenant.id, weight: tenant.weight, priority: tenant.priority, tier: tenant.tier };
}
