import { IndexedHeap } from "../indexed-heap.ts";
import { type FairnessPolicy, type QueuedRequest, serviceTokens, type WorkProbe } from "../policy.ts";
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
  readonly #queues = new TenantQueues();
  readonly #accounts = new Map<string, Account>();
  readonly #backlogged = new IndexedHeap<Account>(
    (a, b) => a.counter < b.counter || (a.counter === b.counter && headSeq(a) < headSeq(b)),
  );
  /** Virtual time: the counter of the last tenant served; never decreases. */
  #virtualTime = 0;

  get size(): number {
    return this.#queues.size;
  }

  add(request: QueuedRequest): void {
    const { tenant, becameBacklogged } = this.#queues.add(request);
    const account = this.#account(request);
    account.weight = request.weight;
    account.queue = tenant;
    if (becameBacklogged) {
      const floor = this.#backlogged.peek()?.counter ?? this.#virtualTime;
      account.counter = Math.max(account.counter, floor);
      this.#backlogged.push(account);
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

  dispatch(request: QueuedRequest): void {
    const tenant = this.#queues.remove(request);
    if (!tenant) return;
    const account = this.#account(request);
    this.#virtualTime = Math.max(this.#virtualTime, account.counter);
    account.counter += serviceTokens(request) / account.weight;
    account.inFlight++;
    this.#afterRemoval(request.tenantId, tenant);
  }

  complete(request: QueuedRequest, outputTokens: number | undefined): void {
    const account = this.#accounts.get(request.tenantId);
    if (!account) return;
    account.inFlight = Math.max(0, account.inFlight - 1);
    if (outputTokens !== undefined) {
      account.counter += (outputTokens - request.predictedOutputTokens) / account.weight;
      this.#backlogged.update(account);
    }
    this.#forgetIfIdle(account);
  }

  workAhead(probe: WorkProbe): number {
    // Under VTC every backlogged tenant t is served until its counter passes the counter
    // this request would reach: (c_probe + tokens/w_probe - c_t) x w_t tokens, capped by
    // what t has queued.
    const mine = this.#accounts.get(probe.tenantId);
    const floor = this.#backlogged.peek()?.counter ?? this.#virtualTime;
    const myCounter = mine?.queue ? mine.counter : Math.max(mine?.counter ?? 0, floor);
    const myQueued = mine?.queue?.queuedTokens ?? 0;
    const finish = myCounter + (myQueued + probe.tokens) / probe.weight;
    let ahead = myQueued;
    for (const account of this.#backlogged.values()) {
      if (account.tenantId === probe.tenantId || !account.queue) continue;
      const share = Math.max(0, (finish - account.counter) * account.weight);
      ahead += Math.min(account.queue.queuedTokens, share);
    }
    return ahead;
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
      this.#backlogged.remove(account);
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

function headSeq(account: Account): number {
  return account.queue?.queue.peek()?.seq ?? Number.POSITIVE_INFINITY;
}
