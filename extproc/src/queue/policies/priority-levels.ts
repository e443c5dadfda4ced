import type {
  CounterUpdates,
  QueuedRequest,
  QueuePolicy,
  QueuePolicyFactory,
  SharedCounters,
  WorkProbe,
} from "../policy.ts";

interface Level {
  readonly priority: number;
  readonly policy: QueuePolicy;
  /** Dispatches from higher levels since this level, backlogged, was last served. */
  skipped: number;
}

export interface PriorityLevelsOptions {
  /** Orders requests inside one priority level. */
  inner: QueuePolicyFactory;
  /**
   * Anti-starvation bound: a backlogged level is served after this many consecutive
   * dispatches from higher levels. Infinity gives strict priority.
   */
  starvationBound: number;
  name?: string;
}

/**
 * Strict order between tier priority levels (0 first), with an anti-starvation bound, and
 * an inner policy (VTC for fairgate, FCFS for the strict-priority baseline) inside a level.
 */
export class PriorityLevelsPolicy implements QueuePolicy {
  readonly name: string;
  readonly tenantPaced: boolean;
  readonly #inner: QueuePolicyFactory;
  readonly #bound: number;
  /** Levels sorted by priority, highest (lowest number) first. */
  #levels: Level[] = [];
  /** Where each dispatched request was queued, for complete(). */
  readonly #dispatchedFrom = new Map<QueuedRequest, Level>();
  /** Set once counters are shared with other replicas: every level's policy shares too. */
  #sharing = false;
  /** Updates an exchange failed to record, sent again with the next. */
  #restored: CounterUpdates = { deltas: new Map(), lifts: new Map() };

  constructor(options: PriorityLevelsOptions) {
    if (!(options.starvationBound >= 1)) throw new RangeError("starvationBound must be >= 1");
    this.#inner = options.inner;
    this.#bound = options.starvationBound;
    const sample = options.inner();
    this.name = options.name ?? `priority(${sample.name})`;
    this.tenantPaced = sample.tenantPaced;
  }

  get size(): number {
    let size = 0;
    for (const level of this.#levels) size += level.policy.size;
    return size;
  }

  add(request: QueuedRequest): void {
    this.#level(request.priority).policy.add(request);
  }

  remove(request: QueuedRequest): boolean {
    return this.#levels.find((l) => l.priority === request.priority)?.policy.remove(request) ?? false;
  }

  peek(): QueuedRequest | undefined {
    return this.#chosen()?.policy.peek();
  }

  *candidates(): Generator<QueuedRequest> {
    const first = this.#chosen();
    if (!first) return;
    yield* first.policy.candidates();
    for (const level of this.#levels)
      if (level !== first && level.policy.size > 0) yield* level.policy.candidates();
  }

  dispatch(request: QueuedRequest, charge?: number): void {
    const level = this.#levels.find((l) => l.priority === request.priority);
    if (!level) return;
    level.policy.dispatch(request, charge);
    this.#dispatchedFrom.set(request, level);
    for (const other of this.#levels) {
      if (other === level) other.skipped = 0;
      else if (other.priority > level.priority && other.policy.size > 0) other.skipped++;
    }
  }

  complete(request: QueuedRequest, cost: number | undefined, charged?: number): void {
    const level = this.#dispatchedFrom.get(request);
    if (!level) return;
    this.#dispatchedFrom.delete(request);
    level.policy.complete(request, cost, charged);
  }

  recharge(request: QueuedRequest, cost: number, charged: number): void {
    this.#levels.find((l) => l.priority === request.priority)?.policy.recharge?.(request, cost, charged);
  }

  workAhead(probe: WorkProbe): number {
    let ahead = 0;
    for (const level of this.#levels) {
      if (level.priority < probe.priority)
        ahead += level.policy.workAhead({ ...probe, tenantId: "", tokens: Number.POSITIVE_INFINITY });
      else if (level.priority === probe.priority) ahead += level.policy.workAhead(probe);
    }
    return ahead;
  }

  progress(priority: number): number {
    return this.#levels.find((l) => l.priority === priority)?.policy.progress(priority) ?? 0;
  }

  distance(probe: WorkProbe): number {
    return this.#levels.find((l) => l.priority === probe.priority)?.policy.distance(probe) ?? 0;
  }

  progressPerToken(probe: WorkProbe): number {
    // A level nobody has used yet divides its service as a fresh one of its policy would.
    const policy = this.#levels.find((l) => l.priority === probe.priority)?.policy ?? this.#inner();
    return policy.progressPerToken(probe);
  }

  servesNewestFirst(tenantId: string, priority: number): boolean {
    const level = this.#levels.find((l) => l.priority === priority)?.policy;
    return level?.servesNewestFirst?.(tenantId, priority) ?? false;
  }

  standing(tenantId: string, priority: number): number {
    const level = this.#levels.find((l) => l.priority === priority)?.policy ?? this.#inner();
    return level.standing?.(tenantId, priority) ?? 0;
  }

  tenantCounters(): ReadonlyMap<string, number> {
    const counters = new Map<string, number>();
    for (const level of this.#levels)
      for (const [tenant, value] of level.policy.tenantCounters()) counters.set(tenant, value);
    return counters;
  }

  sharedCounters(): SharedCounters | undefined {
    this.#sharing = true;
    const shared = () =>
      this.#levels
        .map((l) => l.policy.sharedCounters?.())
        .filter((c): c is SharedCounters => c !== undefined);
    shared();
    return {
      takeUpdates: () => {
        const merged = this.#restored;
        this.#restored = { deltas: new Map(), lifts: new Map() };
        for (const level of shared()) {
          const updates = level.takeUpdates();
          for (const [t, d] of updates.deltas) merged.deltas.set(t, (merged.deltas.get(t) ?? 0) + d);
          for (const [t, f] of updates.lifts) merged.lifts.set(t, Math.max(merged.lifts.get(t) ?? 0, f));
        }
        return merged;
      },
      restoreUpdates: (updates) => {
        for (const [t, d] of updates.deltas)
          this.#restored.deltas.set(t, (this.#restored.deltas.get(t) ?? 0) + d);
        for (const [t, f] of updates.lifts)
          this.#restored.lifts.set(t, Math.max(this.#restored.lifts.get(t) ?? 0, f));
      },
      applyCounters: (counters) => {
        for (const level of shared()) level.applyCounters(counters);
      },
      sharedTenants: () => [...new Set(shared().flatMap((level) => level.sharedTenants()))],
      candidateCounter: () => this.#chosen()?.policy.sharedCounters?.()?.candidateCounter(),
      counterOf: (tenantId) => {
        for (const level of shared()) {
          const counter = level.counterOf(tenantId);
          if (counter !== undefined) return counter;
        }
        return undefined;
      },
    };
  }

  #chosen(): Level | undefined {
    let first: Level | undefined;
    for (const level of this.#levels) {
      if (level.policy.size === 0) continue;
      if (level.skipped >= this.#bound) return level;
      first ??= level;
    }
    return first;
  }

  #level(priority: number): Level {
    let level = this.#levels.find((l) => l.priority === priority);
    if (!level) {
      level = { priority, policy: this.#inner(), skipped: 0 };
      if (this.#sharing) level.policy.sharedCounters?.();
      this.#levels = [...this.#levels, level].sort((a, b) => a.priority - b.priority);
    }
    return level;
  }
}
