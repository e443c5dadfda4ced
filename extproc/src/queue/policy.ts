/**
 * The queue's policies as two small interfaces, the way the Gateway API Inference
 * Extension's flow control splits them: an ordering policy (who goes next) and a progress
 * view (what the wait estimates read). Every policy passes one conformance suite
 * (test/conformance/fairness-policy.test.ts).
 */
export interface QueuedRequest {
  readonly id: string;
  readonly tenantId: string;
  /** Tier priority level: lower is served first. */
  readonly priority: number;
  /** Tenant weight (tenant override, else tier weight). */
  readonly weight: number;
  /** What serving it is predicted to cost the engine (cost.ts), charged at dispatch. */
  readonly cost: number;
  /** Arrival order, the tie-breaker everywhere. */
  readonly seq: number;
  /** When it joined the queue (ms, the queue's clock). */
  readonly enqueuedAt?: number;
}

/**
 * Who goes next among the requests waiting for one backend. The fair queue owns waiting,
 * timeouts, cancellation, the counts of what waits and runs, and the admission gate; an
 * ordering policy orders what waits and keeps the accounts that ordering needs.
 */
export interface OrderingPolicy {
  readonly name: string;
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
   * left, or its tenant is over its share), so it must be lazy: O(log n) per step.
   */
  candidates(): Iterable<QueuedRequest>;
  /**
   * Serves `request` (normally peek()'s answer): takes it out and charges its tenant
   * `charge` (default: its cost when it was queued; the fair queue re-prices it with what
   * is predicted at dispatch).
   */
  dispatch(request: QueuedRequest, charge?: number): void;
  /**
   * A dispatched request finished; `cost` is what it really cost, once its output is known,
   * and `charged` what dispatch charged (default: its cost when queued).
   */
  complete(request: QueuedRequest, cost: number | undefined, charged?: number): void;
  /**
   * A request completed without its cost learned it later: charges its tenant the
   * difference between `cost` and `charged`, as complete() would have.
   */
  recharge?(request: QueuedRequest, cost: number, charged: number): void;
  /** Per-tenant accounting the policy keeps (virtual counters), for metrics and /v1/queue. */
  tenantCounters(): ReadonlyMap<string, number>;
  /**
   * How much the tenant is owed within its priority level, as the order counts it: lower
   * is owed more (VTC: the counter its next request would be ordered by, lifted as it
   * would be). Undefined for policies that do not weigh tenants against each other.
   */
  standing?(tenantId: string, priority: number): number;
  /** Counters this policy can share with other gateway replicas (VTC does; FCFS has none). */
  sharedCounters?(): SharedCounters | undefined;
}

/**
 * What the wait estimates read of a policy's order: how much work it serves before a new
 * request, and a clock of each priority level's progress whose pace the estimator
 * measures. Work and clocks count in cost (cost.ts).
 */
export interface ProgressView {
  /**
   * True when distance() counts in the tenant's own weighted service (cost / weight), so
   * a backlogged tenant's wait follows from how fast its own service has been going; false
   * when it counts the level's work (FCFS, round-robin).
   */
  readonly tenantPaced: boolean;
  /**
   * Work already waiting that this policy would serve before a new request of `tokens`
   * cost from the tenant: the basis of wait estimates.
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
   * True while the tenant's newest queued request goes before its older ones (adaptive
   * LIFO): a new request then has none of its own tenant's queued requests ahead of it.
   */
  servesNewestFirst?(tenantId: string, priority: number): boolean;
  /**
   * How far progress(probe.priority) moves per token served at that level once the probe's
   * tenant waits too (VTC: 1 / the backlogged weight; others: 1): with the backend's token
   * rate, the clock's pace before it has been measured.
   */
  progressPerToken(probe: WorkProbe): number;
}

/** Every policy is both: one object keeps the order and shows its progress. */
export interface QueuePolicy extends OrderingPolicy, ProgressView {}

/** A policy's virtual counters, exchanged with the other replicas (shared-state.ts). */
export interface SharedCounters {
  /** Charges and lifts since the last call. */
  takeUpdates(): CounterUpdates;
  restoreUpdates(updates: CounterUpdates): void;
  /** Cluster-wide counters for some tenants; local charges not yet sent stay on top. */
  applyCounters(counters: ReadonlyMap<string, number>): void;
  /** Tenants whose cluster-wide counters the policy wants. */
  sharedTenants(): string[];
  /** The counter, priority level and tenant of the request the policy would serve next. */
  candidateCounter(): { priority: number; counter: number; tenantId: string } | undefined;
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
  /** The probe request's predicted cost. */
  readonly tokens: number;
}

export type QueuePolicyFactory = () => QueuePolicy;
