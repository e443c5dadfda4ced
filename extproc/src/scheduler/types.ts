import type { TenantPolicy } from "../config/policy.ts";

/** A request waiting for, or holding, a slot on a backend. */
export interface SchedulingRequest {
  readonly id: string;
  readonly tenant: TenantPolicy;
  readonly backend: string;
  readonly promptTokens: number;
  /** Output tokens the request may generate (max_tokens or the policy's default). */
  readonly expectedOutputTokens: number;
  /** Longest the request may wait in the queue before it is refused with queue_timeout. */
  readonly maxWaitMs: number;
}

export interface WaitEstimate {
  /** Expected time in the queue, from the work ahead and the measured service rate. */
  readonly expectedMs: number;
  /** A wait the request exceeds only rarely (the bench measures how rarely). */
  readonly worstCaseMs: number;
  /**
   * Expected time to first token: the expected wait, the time left until a loading engine
   * serves, and the engine's prefill time for this prompt at its current load.
   */
  readonly expectedTtftMs: number;
}

/** What submit returns: whether the request had to queue (the caller then asks Envoy to
 * wait longer), and the dispatch to await. */
export interface Submission {
  readonly queued: boolean;
  readonly dispatch: Promise<Dispatch>;
}

/** What became known about a dispatched request by the time it ended. */
export interface DispatchOutcome {
  /** Output tokens actually generated, when the response revealed them. */
  readonly completionTokens?: number;
}

/** A dispatched request. `release` must be called when its stream ends; later calls do nothing. */
export interface Dispatch {
  readonly waitedMs: number;
  readonly estimate: WaitEstimate;
  /**
   * The response's first output arrived: the engine finished the request's prefill (its
   * prompt no longer counts against the backend's prefill budget). Without the call the
   * queue assumes it done after an estimate of the prefill time.
   */
  firstToken?(): void;
  release(outcome?: DispatchOutcome): void;
  /**
   * The output of a request released without it, learned later (its usage reached
   * another replica, which relayed it here): corrects its tenant's charge and teaches the
   * output predictor. Only after a release without completionTokens, and only once.
   */
  correct?(outcome: Required<DispatchOutcome>): void;
}

export interface TenantQueueState {
  readonly tenant: string;
  readonly tier: string;
  readonly queued: number;
  readonly inFlight: number;
  readonly queuedTokens: number;
  readonly inFlightTokens: number;
  readonly estimatedWaitMs: number;
  readonly worstCaseWaitMs: number;
}

export interface BackendQueueState {
  readonly backend: string;
  readonly queued: number;
  readonly inFlight: number;
  readonly inFlightTokens: number;
  /** Prompt tokens sent to the engine whose prefill has not finished (as far as fairgate knows). */
  readonly prefillTokens?: number;
  /** Tokens per second the backend has been completing, or null before any measurement. */
  readonly serviceRateTokensPerSec: number | null;
}

export interface SchedulerSnapshot {
  readonly policy: string;
  readonly backends: readonly BackendQueueState[];
  readonly tenants: readonly TenantQueueState[];
}

/** Why the queue let a request go without dispatching it; the error catalog's code. */
export type QueueRefusalCode = "queue_full" | "queue_timeout" | "shutting_down";

/**
 * The queue's refusal, a domain error: the wait a request sent now would see rides along,
 * and the edge (refusal.ts) turns it into the HTTP answer and its headers.
 */
export class QueueRefusal extends Error {
  readonly code: QueueRefusalCode;
  readonly estimate: WaitEstimate | undefined;

  constructor(code: QueueRefusalCode, message: string, estimate?: WaitEstimate) {
    super(message);
    this.name = "QueueRefusal";
    this.code = code;
    this.estimate = estimate;
  }
}

/**
 * Decides when a request may go to its backend. Implementations: FIFO (vLLM's own order,
 * the baseline) and the weighted fair queue. Refusals are QueueRefusals (queue_full,
 * queue_timeout, shutting_down); an aborted signal rejects with the signal's reason and
 * leaves nothing behind.
 */
export interface Scheduler {
  readonly name: string;
  submit(request: SchedulingRequest, signal: AbortSignal): Submission;
  estimate(request: Omit<SchedulingRequest, "id" | "maxWaitMs">): WaitEstimate;
  snapshot(): SchedulerSnapshot;
  /** Refuses everything queued with shutting_down; in-flight requests are left to finish. */
  refuseQueued(): void;
}
