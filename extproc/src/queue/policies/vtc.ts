import { IndexedHeap } from "../indexed-heap.ts";
import type { CounterUpdates, QueuedRequest, QueuePolicy, SharedCounters, WorkProbe } from "../policy.ts";
import { type TenantQueue, TenantQueues } from "./tenant-queues.ts";

interface Account {
  readonly tenantId: string;
  /** Weighted virtual service: cost served / weight. */
  counter: number;
  weight: number;
  /** Dispatched, unfinished requests (an account with work in flight is never forgotten). */
  inFlight: number;
  queue: TenantQueue | undefined;
  /** Never served yet: a tenant new here earns no credit. */
  fresh: boolean;
  /** When it last had nothing queued or in flight (ms), while idle. */
  idleSince: number;
  /** Active within the last creditMs (queued, in flight or recently so): counted in #activeWeight. */
  active: boolean;
}

export interface VtcOptions {
  /** The clock the burst credit is measured on (required with creditMs). */
  now?: () => number;
  /**
   * Burst credit: a tenant that becomes backlogged after using less than its share is
   * lifted only to this many ms of a unit weight's recent service below the current
   * virtual time, so it may get ahead of the others by that much (0: VTC's lift to the
   * virtual time, where idling earns no credit at all). Only a tenant active here within
   * the last creditMs has any: a newcomer, or one back after a longer silence, starts
   * level with the others.
   */
  creditMs?: number;
  /**
   * Adaptive LIFO: while a tenant's oldest queued request has waited this long, the
   * tenant's newest request goes next instead (the old ones wait for their timeout), so a
   * tenant with a standing queue still gets fresh requests answered in time. Between
   * tenants nothing changes. Undefined: always oldest first.
   */
  lifoAfterMs?: number;
}

/** Time constant of the measured cost rate that credit is counted in, ms. */
const PACE_WINDOW_MS = 10_000;

/**
 * Virtual Token Counter (Sheng et al., "Fairness in Serving Large Language Models",
 * OSDI'24), weighted and counted in cost (cost.ts). Each tenant's counter is the cost it
 * was served divided by its weight; the backlogged tenant with the smallest counter goes
 * next. A tenant that becomes backlogged is lifted towards the current virtual time (the
 * smallest backlogged counter, or the last served one when nobody waits): to it exactly
 * in the paper, so idling earns no credit; here to at most `creditMs` of recent service
 * below it, so a tenant that stayed under its share can absorb a burst (bounded: the
 * others fall behind by at most that much). Dispatch charges the predicted cost;
 * completion corrects it to the real one.
 */
export class VtcPolicy implements QueuePolicy {
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
  readonly #now: (() => number) | undefined;
  readonly #creditMs: number;
  readonly #lifoAfterMs: number | undefined;
  /** Sum of the weights of the tenants active within the last creditMs (with credit only). */
  #activeWeight = 0;
  /** Cost served per ms, smoothed over PACE_WINDOW_MS (as of #paceAt). */
  #pace = 0;
  #paceAt = 0;
  /** Idle accounts kept for the credit they hold, oldest first, forgotten after creditMs. */
  readonly #idle = new Set<Account>();

  constructor(options: VtcOptions = {}) {
    this.#now = options.now;
    this.#creditMs = options.now ? Math.max(0, options.creditMs ?? 0) : 0;
    this.#lifoAfterMs = options.now ? options.lifoAfterMs : undefined;
  }

  get size(): number {
    return this.#queues.size;
  }

  add(request: QueuedRequest): void {
    const { tenant, becameBacklogged } = this.#queues.add(request);
    const account = this.#account(request);
    // A reload may change a weight while the tenant waits.
    if (this.#backlogged.has(account)) this.#backloggedWeight += request.weight - account.weight;
    if (account.active) this.#activeWeight += request.weight - account.weight;
    account.weight = request.weight;
    if (this.#creditMs > 0 && !account.active) {
      account.active = true;
      this.#activeWeight += account.weight;
    }
    account.queue = tenant;
    if (becameBacklogged) {
      this.#idle.delete(account);
      const lifted = this.#lift(account);
      if (lifted > account.counter) {
        account.counter = lifted;
        this.#updates?.lifts.set(
          account.tenantId,
          Math.max(this.#updates.lifts.get(account.tenantId) ?? 0, lifted),
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
    return this.#next(this.#backlogged.peek());
  }

  *candidates(): Generator<QueuedRequest> {
    for (const account of this.#backlogged.ordered()) {
      const head = this.#next(account);
      if (head) yield head;
    }
  }

  dispatch(request: QueuedRequest, charge = request.cost): void {
    const tenant = this.#queues.remove(request);
    if (!tenant) return;
    const account = this.#account(request);
    const fluid = charge / Math.max(this.#backloggedWeight, account.weight);
    this.#fluidTime += fluid;
    this.#measurePace(charge);
    this.#virtualTime = Math.max(this.#virtualTime, account.counter);
    account.counter += charge / account.weight;
    this.#addDelta(account.tenantId, charge / account.weight);
    account.inFlight++;
    account.fresh = false;
    this.#afterRemoval(request.tenantId, tenant);
    this.#sweepIdle();
  }

  complete(request: QueuedRequest, cost: number | undefined, charged = request.cost): void {
    const account = this.#accounts.get(request.tenantId);
    if (!account) return;
    account.inFlight = Math.max(0, account.inFlight - 1);
    if (cost !== undefined) {
      const correction = (cost - charged) / account.weight;
      account.counter += correction;
      this.#addDelta(account.tenantId, correction);
      this.#backlogged.update(account);
    }
    this.#forgetIfIdle(account);
  }

  recharge(request: QueuedRequest, cost: number, charged: number): void {
    const account = this.#accounts.get(request.tenantId);
    const correction = (cost - charged) / (account?.weight ?? request.weight);
    // Shared with the other replicas even when the account is forgotten here: it was at
    // or below virtual time, where a returning tenant is lifted to anyway.
    this.#addDelta(request.tenantId, correction);
    if (!account) return;
    account.counter += correction;
    this.#backlogged.update(account);
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
    const { mine, start, queuedAhead: myQueued } = this.#startTag(probe);
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
      const overshoot = head ? head.cost : 0;
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
   * the tenant's counter (lifted as it would be, if it is not backlogged) plus what it
   * already has queued, per unit of weight.
   */
  #startTag(probe: WorkProbe): {
    mine: Account | undefined;
    floor: number;
    start: number;
    /** What the tenant has queued that goes before the probe (none while it serves newest first). */
    queuedAhead: number;
  } {
    const mine = this.#accounts.get(probe.tenantId);
    const floor = this.#floor();
    const myCounter = mine?.queue ? mine.counter : mine ? this.#lift(mine) : Math.max(0, floor);
    const queuedAhead = this.servesNewestFirst(probe.tenantId) ? 0 : (mine?.queue?.queuedTokens ?? 0);
    return { mine, floor, start: myCounter + queuedAhead / probe.weight, queuedAhead };
  }

  /** Whether the tenant's queue stands, so its newest request goes next (adaptive LIFO). */
  servesNewestFirst(tenantId: string): boolean {
    const queue = this.#accounts.get(tenantId)?.queue;
    return queue !== undefined && this.#now !== undefined && queue.standing(this.#now(), this.#lifoAfterMs);
  }

  #next(account: Account | undefined): QueuedRequest | undefined {
    const queue = account?.queue;
    if (!queue) return undefined;
    return this.#now ? queue.next(this.#now(), this.#lifoAfterMs) : queue.queue.peek();
  }

  /** The smallest backlogged counter, or virtual time when nobody waits. */
  #floor(): number {
    return this.#backlogged.peek()?.counter ?? this.#virtualTime;
  }

  /** Where a tenant's counter is lifted to when it becomes backlogged. */
  #lift(account: Account): number {
    const floor = this.#floor();
    const credit = account.fresh ? 0 : this.#credit();
    if (credit === 0) return Math.max(account.counter, floor);
    // Below virtual time, which only moves forward: measured from the smallest backlogged
    // counter, credit would compound as credited tenants pull that counter down.
    return Math.max(account.counter, Math.max(floor, this.#virtualTime) - credit);
  }

  /**
   * The burst credit in counter units: creditMs of a unit weight's fair share of the
   * recent service, shared among every tenant active within creditMs now. (Divided among
   * the backlogged tenants, or among the tenants active at each dispatch, the first
   * seconds or a moment when few wait would make it worth minutes of the whole engine.)
   */
  #credit(): number {
    if (this.#creditMs === 0 || !this.#now) return 0;
    const now = this.#now();
    const served = this.#pace * Math.exp(-Math.max(0, now - this.#paceAt) / PACE_WINDOW_MS);
    return (this.#creditMs * served) / Math.max(this.#activeWeight, 1);
  }

  #measurePace(cost: number): void {
    if (!this.#now) return;
    const now = this.#now();
    this.#pace =
      this.#pace * Math.exp(-Math.max(0, now - this.#paceAt) / PACE_WINDOW_MS) + cost / PACE_WINDOW_MS;
    this.#paceAt = now;
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
        const head = this.#next(top);
        return top && head
          ? { priority: head.priority, counter: top.counter, tenantId: top.tenantId }
          : undefined;
      },
      counterOf: (tenantId) => this.#accounts.get(tenantId)?.counter,
    };
  }

  #addDelta(tenantId: string, delta: number): void {
    const updates = this.#updates;
    if (!updates || delta === 0) return;
    updates.deltas.set(tenantId, (updates.deltas.get(tenantId) ?? 0) + delta);
  }

  standing(tenantId: string): number {
    const mine = this.#accounts.get(tenantId);
    if (mine?.queue) return mine.counter;
    return mine ? this.#lift(mine) : this.#floor();
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
        fresh: true,
        idleSince: 0,
        active: false,
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

  // An idle tenant at or below virtual time would be lifted to it on return, so without
  // credit its account carries no information; one above it (it was served ahead) must
  // be kept. With credit, an idle account keeps its credit for creditMs.
  #forgetIfIdle(account: Account): void {
    if (account.queue || account.inFlight > 0) return;
    if (this.#creditMs === 0) {
      if (account.counter <= this.#virtualTime) this.#accounts.delete(account.tenantId);
      return;
    }
    account.idleSince = this.#now?.() ?? 0;
    this.#idle.delete(account);
    this.#idle.add(account);
  }

  /**
   * Idle past creditMs, an account loses its credit, and is forgotten unless it was served
   * ahead of virtual time. Oldest first: O(1) amortised per dispatch.
   */
  #sweepIdle(): void {
    const now = this.#now?.() ?? 0;
    for (const account of this.#idle) {
      if (now - account.idleSince < this.#creditMs) return;
      this.#idle.delete(account);
      if (account.queue || account.inFlight > 0) continue;
      account.fresh = true;
      if (account.active) {
        account.active = false;
        this.#activeWeight -= account.weight;
      }
      if (account.counter <= this.#virtualTime) this.#accounts.delete(account.tenantId);
    }
  }
}

/** Backlogged tenants one estimate looks at before counting the rest whole. */
const WALK_LIMIT = 32;

function headSeq(account: Account): number {
  return account.queue?.queue.peek()?.seq ?? Number.POSITIVE_INFINITY;
}
