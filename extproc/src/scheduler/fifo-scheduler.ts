import type { Clock, TimerHandle } from "../clock.ts";
import type { Policy } from "../config/policy.ts";
import type { BackendConfig } from "../config/schema.ts";
import { FairgateError } from "../errors.ts";
import { ServiceRate } from "./service-rate.ts";
import type {
  Dispatch,
  Scheduler,
  SchedulerSnapshot,
  SchedulingRequest,
  Submission,
  TenantQueueState,
  WaitEstimate,
} from "./types.ts";

interface Waiter {
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
  readonly queue: Waiter[];
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

/**
 * First come, first served admission per backend, gated by the backend's in-flight caps.
 * This is what vLLM does on its own, moved in front of the engine; it is the baseline the
 * weighted fair queue is measured against, and the scheduler fairgate runs until one is
 * configured.
 */
export class FifoScheduler implements Scheduler {
  readonly name = "fifo";
  readonly #policy: () => Policy;
  readonly #clock: Clock;
  readonly #backends = new Map<string, BackendState>();
  readonly #tenants = new Map<string, TenantCounters>();

  constructor(options: { policy: () => Policy; clock: Clock }) {
    this.#policy = options.policy;
    this.#clock = options.clock;
  }

  submit(request: SchedulingRequest, signal: AbortSignal): Submission {
    if (signal.aborted) return { queued: false, dispatch: Promise.reject(signal.reason) };
    const backend = this.#backend(request.backend);
    const tenant = this.#tenant(request);
    const maxQueued = request.tenant.limits.maxQueued;
    const tokens = request.promptTokens + request.expectedOutputTokens;
    const estimate = this.estimate(request);

    if (backend.queue.length === 0 && this.#hasHeadroom(backend, tokens)) {
      return {
        queued: false,
        dispatch: Promise.resolve(this.#start(backend, request, this.#clock.now(), estimate)),
      };
    }
    if (maxQueued !== undefined && tenant.queued >= maxQueued) {
      const refusal = new FairgateError("queue_full", {
        message: `Tenant ${request.tenant.id} already has ${tenant.queued} requests queued (maxQueued ${maxQueued}).`,
        headers: { "retry-after": String(Math.max(1, Math.ceil(estimate.expectedMs / 1000))) },
      });
      return { queued: false, dispatch: Promise.reject(refusal) };
    }

    const dispatch = new Promise<Dispatch>((resolve, reject) => {
      const waiter: Waiter = {
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
              headers: { "retry-after": String(Math.max(1, Math.ceil(request.maxWaitMs / 1000))) },
            }),
          );
        }
      }, request.maxWaitMs);
      backend.queue.push(waiter);
      tenant.queued += 1;
      tenant.queuedTokens += tokens;
    });
    return { queued: true, dispatch };
  }

  estimate(request: Omit<SchedulingRequest, "id" | "maxWaitMs">): WaitEstimate {
    const backend = this.#backend(request.backend);
    const tokens = request.promptTokens + request.expectedOutputTokens;
    if (backend.queue.length === 0 && this.#hasHeadroom(backend, tokens))
      return { expectedMs: 0, worstCaseMs: 0 };
    const now = this.#clock.now();
    // FIFO: everything queued is ahead, and the in-flight work must drain enough to make room.
    let ahead = backend.inFlightTokens;
    for (const waiter of backend.queue)
      ahead += waiter.request.promptTokens + waiter.request.expectedOutputTokens;
    const expectedRate = backend.rate.expected(now) ?? PRIOR_TOKENS_PER_SEC;
    const slowRate = backend.rate.pessimistic(now) ?? PRIOR_TOKENS_PER_SEC;
    return {
      expectedMs: Math.round((ahead / expectedRate) * 1000),
      worstCaseMs: Math.round(((ahead + tokens) / slowRate) * 1000),
    };
  }

  snapshot(): SchedulerSnapshot {
    const now = this.#clock.now();
    const tenants: TenantQueueState[] = [];
    for (const [id, counters] of this.#tenants) {
      if (counters.queued === 0 && counters.inFlight === 0) continue;
      let estimatedWaitMs = 0;
      let worstCaseWaitMs = 0;
      for (const backend of this.#backends.values()) {
        for (const waiter of backend.queue) {
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
        queued: b.queue.length,
        inFlight: b.inFlight,
        inFlightTokens: b.inFlightTokens,
        serviceRateTokensPerSec: b.rate.expected(now),
      })),
      tenants,
    };
  }

  refuseQueued(): void {
    for (const backend of this.#backends.values()) {
      for (const waiter of [...backend.queue]) {
        if (this.#remove(backend, waiter)) waiter.reject(new FairgateError("shutting_down"));
      }
    }
  }

  #backendConfig(name: string): Readonly<BackendConfig> | undefined {
    return this.#policy().backends.find((b) => b.name === name);
  }

  #hasHeadroom(backend: BackendState, tokens: number): boolean {
    const config = this.#backendConfig(backend.name);
    const maxRequests = config?.maxInFlightRequests ?? Number.POSITIVE_INFINITY;
    if (backend.inFlight >= maxRequests) return false;
    const maxTokens = config?.maxInFlightTokens;
    // An idle backend always takes one request, however large, so nothing waits forever.
    return maxTokens === undefined || backend.inFlight === 0 || backend.inFlightTokens + tokens <= maxTokens;
  }

  #start(
    backend: BackendState,
    request: SchedulingRequest,
    enqueuedAt: number,
    estimate: WaitEstimate,
  ): Dispatch {
    const tokens = request.promptTokens + request.expectedOutputTokens;
    const tenant = this.#tenant(request);
    backend.inFlight += 1;
    backend.inFlightTokens += tokens;
    tenant.inFlight += 1;
    tenant.inFlightTokens += tokens;
    let released = false;
    return {
      waitedMs: Math.max(0, this.#clock.now() - enqueuedAt),
      estimate,
      release: () => {
        if (released) return;
        released = true;
        backend.inFlight -= 1;
        backend.inFlightTokens -= tokens;
        tenant.inFlight -= 1;
        tenant.inFlightTokens -= tokens;
        backend.rate.record(this.#clock.now(), tokens);
        this.#forgetIdle(request.tenant.id);
        this.#pump(backend);
      },
    };
  }

  #pump(backend: BackendState): void {
    while (backend.queue.length > 0) {
      const head = backend.queue[0] as Waiter;
      const tokens = head.request.promptTokens + head.request.expectedOutputTokens;
      if (!this.#hasHeadroom(backend, tokens)) return;
      this.#remove(backend, head);
      head.resolve(this.#start(backend, head.request, head.enqueuedAt, head.estimate));
    }
  }

  #remove(backend: BackendState, waiter: Waiter): boolean {
    const index = backend.queue.indexOf(waiter);
    if (index < 0) return false;
    backend.queue.splice(index, 1);
    if (waiter.timer) this.#clock.clearTimeout(waiter.timer);
    waiter.detach();
    const tenant = this.#tenant(waiter.request);
    tenant.queued -= 1;
    tenant.queuedTokens -= waiter.request.promptTokens + waiter.request.expectedOutputTokens;
    this.#forgetIdle(waiter.request.tenant.id);
    return true;
  }

  #backend(name: string): BackendState {
    let state = this.#backends.get(name);
    if (!state) {
      state = { name, queue: [], inFlight: 0, inFlightTokens: 0, rate: new ServiceRate() };
      this.#backends.set(name, state);
    }
    return state;
  }

  #tenant(request: SchedulingRequest): TenantCounters {
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
