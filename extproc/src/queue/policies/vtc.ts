import { IndexedHeap } from "../indexed-heap.ts";
import {
  type CounterUpdates,
  type FairnessPolicy,
  type QueuedRequest,
  type SharedCounters,
  serviceTokens,
  type WorkProbe,
} from "../policy.ts";
import { type TenantQueue, TenantQueues } from "./tenant-queues.ts";

interface Account {
  readonly tenantId: string;
  /** Weighted virtual service: tokens served / weight. */
  counter: number;
  weight: number;
  /** Dispatched, unfinished requests (an account with work in flight is never forgotten). */
  inFlight: number;
  queue: TenantQueue | undefined;
}

/**
 * Virtual Token Counter (Sheng et al., "Fairness in Serving Large Language Models",
 * OSDI'24), weighted. Each tenant's counter is the service it received divided by its
 * weight; the backlogged tenant with the smallest counter goes next. A tenant that becomes
 * backlogged is lifted to the current virtual time (the smallest backlogged counter, or
 * the last served one when nobody waits), so idling earns no credit. Dispatch charges
 * prompt + predicted output; completion corrects the output part.
 */
export class VtcPolicy implements FairnessPolicy {
  readonly name = "vtc";
  readonly tenantPaced = true;
  readonly #queues = new TenantQueues();
  readonly #accounts = new Map<string, Account>();
  readonly #backlogged = new IndexedHeap<Account>(
    (a, b) => a.counter < b.counter || (a.counter === b.counter && headSeq(a) < headSeq(b)),
  );
  /** Virtual time: the counter of the last tenant served; never decreases. */
  #virtualTime = 0;
  /**
   * The service each backlogged tenant gets per unit of weight, summed over dispatches:
   * what virtual time would be with exact output predictions. Completion corrections move
   * counters (and virtual time) in jumps; this moves smoothly, so its rate can be measured.
   */
  #fluidTime = 0;
  /** Sum of the weights of the backlogged tenants. */
  #backloggedWeight = 0;
  /** Charges and lifts not yet sent to the other replicas (only once sharing is asked for). */
  #updates: CounterUpdates | undefined;

  get size(): number {
    return this.#queues.size;
  }

  add(request: QueuedRequest): void {
    const { tenant, becameBacklogged } = this.#queues.add(request);
    const account = this.#account(request);
    // A reload may change a weight while the tenant waits.
    if (this.#backlogged.has(account)) this.#backloggedWeight += request.weight - account.weight;
    account.weight = request.weight;
    account.queue = tenant;
    if (becameBacklogged) {
      const floor = this.#backlogged.peek()?.counter ?? this.#virtualTime;
      if (floor > account.counter) {
        account.counter = floor;
        this.#updates?.lifts.set(
          account.tenantId,
          Math.max(this.#updates.lifts.get(account.tenantId) ?? 0, floor),
        );
      }
      this.#backlogged.push(account);
      this.#backloggedWeight += account.weight;
    }
  }

  remove(request: QueuedRequest): boolean {
    const tenant = this.#queues.remove(request);
    if (!tenant) return false;
    this.#afterRemoval(request.tenantId, tenant);
    return true;
  }

  peek(): QueuedRequest | undefined {
    return this.#backlogged.peek()?.queue?.queue.peek();
  }

  *candidates(): Generator<QueuedRequest> {
    for (const account of this.#backlogged.ordered()) {
      const head = account.queue?.queue.peek();
      if (head) yield head;
    }
  }

  dispatch(request: QueuedRequest): void {
    const tenant = this.#queues.remove(request);
    if (!tenant) return;
    const account = this.#account(request);
    this.#fluidTime += serviceTokens(request) / Math.max(this.#backloggedWeight, account.weight);
    this.#virtualTime = Math.max(this.#virtualTime, account.counter);
    account.counter += serviceTokens(request) / account.weight;
    this.#addDelta(account.tenantId, serviceTokens(request) / account.weight);
    account.inFlight++;
    this.#afterRemoval(request.tenantId, tenant);
  }

  complete(request: QueuedRequest, outputTokens: number | undefined): void {
    const account = this.#accounts.get(request.tenantId);
    if (!account) return;
    account.inFlight = Math.max(0, account.inFlight - 1);
    if (outputTokens !== undefined) {
      const correction = (outputTokens - request.predictedOutputTokens) / account.weight;
      account.counter += correction;
      this.#addDelta(account.tenantId, correction);
      this.#backlogged.update(account);
    }
    this.#forgetIfIdle(account);
  }

  workAhead(probe: WorkProbe): number {
    // The new request goes out when its tenant's counter is the smallest backlogged one,
    // i.e. once its start tag S = c_probe + (what the tenant already has queued) / w_probe
    // is reached. Until then every backlogged tenant t below S is served: about
    // (S - c_t) x w_t tokens, plus the one request whose dispatch carries it past S,
    // capped by what t has queued. The heap yields tenants in counter order, so the walk
    // stops at the first one past S. Past WALK_LIMIT tenants the rest is bounded in
    // O(1): their counters are at least the last one walked, so together they get at most
    // (S - that counter) x their total weight (one request each when tied at S), and never
    // more than they have queued.
    if (!Number.isFinite(probe.tokens)) return this.#queues.queuedTokens;
    const { mine, start } = this.#startTag(probe);
    const myQueued = mine?.queue?.queuedTokens ?? 0;
    let ahead = myQueued;
    let countedTokens = myQueued;
    let countedWeight = mine?.queue ? mine.weight : 0;
    let walked = 0;
    for (const account of this.#backlogged.ordered()) {
      // A tenant at exactly S goes first too, with one request (ties go to the earlier
      // head request, and the probe's is the newest; tenants lifted to the same floor
      // tie), unless the probe may use room that tenant may not.
      if (account.counter > start) break;
      const head = account.queue?.queue.peek();
      const overshoot = head ? serviceTokens(head) : 0;
      if (++walked > WALK_LIMIT) {
        const restTokens = this.#queues.queuedTokens - countedTokens;
        const restWeight = this.#backloggedWeight - countedWeight;
        // Tied at S, the rest past the walk (their counters are at least S) go once each.
        const restTied = account.counter === start ? (this.#backlogged.size - walked + 1) * overshoot : 0;
        return ahead + Math.min(restTokens, Math.max(0, (start - account.counter) * restWeight) + restTied);
      }
      if (account.tenantId === probe.tenantId || !account.queue) continue;
      countedTokens += account.queue.queuedTokens;
      countedWeight += account.weight;
      if (account.counter === start && probe.passes?.(account.tenantId)) continue;
      ahead += Math.min(account.queue.queuedTokens, (start - account.counter) * account.weight + overshoot);
    }
    return ahead;
  }

  progress(_priority: number): number {
    return this.#fluidTime;
  }

  distance(probe: WorkProbe): number {
    const { start, floor } = this.#startTag(probe);
    return Math.max(0, start - floor);
  }

  progressPerToken(probe: WorkProbe): number {
    // Fluid time moves by tokens / backlogged weight, the probe's tenant included.
    const waiting = this.#accounts.get(probe.tenantId)?.queue !== undefined;
    return 1 / Math.max(this.#backloggedWeight + (waiting ? 0 : probe.weight), 1e-9);
  }

  /**
   * The counter at which a new request of the probe's tenant becomes the one to serve:
   * the tenant's counter (lifted to the floor, the smallest backlogged counter, if it is
   * not backlogged) plus what it already has queued, per unit of weight.
   */
  #startTag(probe: WorkProbe): { mine: Account | undefined; floor: number; start: number } {
    const mine = this.#accounts.get(probe.tenantId);
    const floor = this.#backlogged.peek()?.counter ?? this.#virtualTime;
    const myCounter = mine?.queue ? mine.counter : Math.max(mine?.counter ?? 0, floor);
    return { mine, floor, start: myCounter + (mine?.queue?.queuedTokens ?? 0) / probe.weight };
  }

  sharedCounters(): SharedCounters {
    this.#updates ??= { deltas: new Map(), lifts: new Map() };
    return {
      takeUpdates: () => {
        const taken = this.#updates ?? { deltas: new Map(), lifts: new Map() };
        this.#updates = { deltas: new Map(), lifts: new Map() };
        return taken;
      },
      restoreUpdates: (updates) => {
        for (const [tenant, delta] of updates.deltas) this.#addDelta(tenant, delta);
        for (const [tenant, floor] of updates.lifts) {
          this.#updates?.lifts.set(tenant, Math.max(this.#updates.lifts.get(tenant) ?? 0, floor));
        }
      },
      applyCounters: (counters) => {
        for (const [tenant, global] of counters) {
          const account = this.#accounts.get(tenant);
          if (!account) continue;
          // Charges made here since the exchange are not in the global value yet.
          const pending = this.#updates?.deltas.get(tenant) ?? 0;
          const floor = this.#updates?.lifts.get(tenant) ?? Number.NEGATIVE_INFINITY;
          account.counter = Math.max(global, floor) + pending;
          this.#backlogged.update(account);
        }
      },
      sharedTenants: () => [...this.#accounts.keys()],
      candidateCounter: () => {
        const top = this.#backlogged.peek();
        const head = top?.queue?.queue.peek();
        return top && head ? { priority: head.priority, counter: top.counter } : undefined;
      },
      counterOf: (tenantId) => this.#accounts.get(tenantId)?.counter,
    };
  }

  #addDelta(tenantId: string, delta: number): void {
    const updates = this.#updates;
    if (!updates || delta === 0) return;
    updates.deltas.set(tenantId, (updates.deltas.get(tenantId) ?? 0) + delta);
  }

  tenantCounters(): ReadonlyMap<string, number> {
    const counters = new Map<string, number>();
    for (const account of this.#accounts.values()) counters.set(account.tenantId, account.counter);
    return counters;
  }

  #account(request: QueuedRequest): Account {
    let account = this.#accounts.get(request.tenantId);
    if (!account) {
      account = {
        tenantId: request.tenantId,
        counter: 0,
        weight: request.weight,
        inFlight: 0,
        queue: undefined,
      };
      this.#accounts.set(request.tenantId, account);
    }
    return account;
  }

  #afterRemoval(tenantId: string, tenant: TenantQueue): void {
    const account = this.#accounts.get(tenantId);
    if (!account) return;
    if (tenant.queue.size === 0) {
      account.queue = undefined;
      if (this.#backlogged.remove(account)) this.#backloggedWeight -= account.weight;
      this.#forgetIfIdle(account);
    } else this.#backlogged.update(account);
  }

  // An idle tenant at or below virtual time would be lifted to it anyway on return, so its
  // account carries no information; one above it (it was served ahead) must be kept.
  #forgetIfIdle(account: Account): void {
    if (account.queue || account.inFlight > 0) return;
    if (account.counter <= this.#virtualTime) this.#accounts.delete(account.tenantId);
  }
}

/** Backlogged tenants one estimate looks at before counting the rest whole. */
const WALK_LIMIT = 32;

function headSeq(account: Account): number {
  return account.queue?.queue.peek()?.seq ?? Number.POSITIVE_INFINITY;
}
