/**
 * Who goes next, as a small interface. The fair queue (fair-queue.ts) owns waiting,
 * timeouts, cancellation and the admission gate; a FairnessPolicy only orders what waits
 * and keeps the accounts that ordering needs. Every policy passes one conformance suite
 * (test/conformance/fairness-policy.test.ts).
 */
export interface QueuedRequest {
  readonly id: string;
  readonly tenantId: string;
  /** Tier priority level: lower is served first. */
  readonly priority: number;
  /** Tenant weight (tenant override, else tier weight). */
  readonly weight: number;
  readonly promptTokens: number;
  /** Output tokens the request is predicted to generate (charged at dispatch). */
  readonly predictedOutputTokens: number;
  /** Arrival order, the tie-breaker everywhere. */
  readonly seq: number;
}

export interface FairnessPolicy {
  readonly name: string;
  /**
   * True when distance() counts in the tenant's own weighted service (tokens / weight), so
   * a backlogged tenant's wait follows from how fast its own service has been going; false
   * when it counts the level's tokens (FCFS, round-robin).
   */
  readonly tenantPaced: boolean;
  /** Requests waiting. */
  readonly size: number;
  add(request: QueuedRequest): void;
  /** Takes a waiting request out without serving it (cancel, timeout); charges nothing. */
  remove(request: QueuedRequest): boolean;
  /** The request the policy would serve next. */
  peek(): QueuedRequest | undefined;
  /**
   * Requests in the order the policy would serve them, starting with peek()'s answer, at
   * most one per tenant for tenant-aware policies (a tenant's requests keep their order).
   * The queue walks this when the first choice cannot go now (too large for the KV room
   * left, or its tenant is over its KV share), so it must be lazy: O(log n) per step.
   */
  candidates(): Iterable<QueuedRequest>;
  /** Serves `request` (normally peek()'s answer): takes it out and charges its tenant. */
  dispatch(request: QueuedRequest): void;
  /** A dispatched request finished; outputTokens is what it really generated, when known. */
  complete(request: QueuedRequest, outputTokens: number | undefined): void;
  /**
   * Tokens of work already waiting that this policy would serve before a new request of
   * `tokens` tokens from the tenant: the basis of wait estimates.
   */
  workAhead(probe: WorkProbe): number;
  /**
   * A clock of the probe's priority level that only moves forward, as that level is
   * served: VTC's virtual time; for the other policies, the tokens dispatched. Wait
   * estimates measure how fast it moves.
   */
  progress(priority: number): number;
  /**
   * How far progress(probe.priority) must move before a new request of the probe's tenant
   * is served (VTC: from virtual time to the tenant's start tag; others: the tokens ahead).
   */
  distance(probe: WorkProbe): number;
  /**
   * How far progress(probe.priority) moves per token served at that level once the probe's
   * tenant waits too (VTC: 1 / the backlogged weight; others: 1): with the backend's token
   * rate, the clock's pace before it has been measured.
   */
  progressPerToken(probe: WorkProbe): number;
  /** Per-tenant accounting the policy keeps (virtual counters), for metrics and /v1/queue. */
  tenantCounters(): ReadonlyMap<string, number>;
  /** Counters this policy can share with other gateway replicas (VTC does; FCFS has none). */
  sharedCounters?(): SharedCounters | undefined;
}

/** A policy's virtual counters, exchanged with the other replicas (shared-state.ts). */
export interface SharedCounters {
  /** Charges and lifts since the last call. */
  takeUpdates(): CounterUpdates;
  restoreUpdates(updates: CounterUpdates): void;
  /** Cluster-wide counters for some tenants; local charges not yet sent stay on top. */
  applyCounters(counters: ReadonlyMap<string, number>): void;
  /** Tenants whose cluster-wide counters the policy wants. */
  sharedTenants(): string[];
  /** The counter (and priority level) of the request the policy would serve next. */
  candidateCounter(): { priority: number; counter: number } | undefined;
  /** The counter a request of this tenant is ordered by. */
  counterOf(tenantId: string): number | undefined;
}

export interface CounterUpdates {
  readonly deltas: Map<string, number>;
  readonly lifts: Map<string, number>;
}

export interface WorkProbe {
  readonly tenantId: string;
  readonly priority: number;
  readonly weight: number;
  /** Prompt + predicted output of the probe request. */
  readonly tokens: number;
  /**
   * The tenants tied with the probe in the policy's order that it goes before: it may use
   * room they may not (the headroom kept for tenants below their share). Otherwise ties go
   * to the earlier request, theirs.
   */
  readonly passes?: (tenantId: string) => boolean;
}

export const serviceTokens = (request: QueuedRequest): number =>
  request.promptTokens + request.predictedOutputTokens;

export type FairnessPolicyFactory = () => FairnessPolicy;
