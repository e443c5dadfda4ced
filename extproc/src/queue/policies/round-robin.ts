import type { QueuedRequest, QueuePolicy, WorkProbe } from "../policy.ts";
import { type TenantQueue, TenantQueues } from "./tenant-queues.ts";
import { TokenPacedPolicy } from "./token-paced.ts";

/**
 * One request per backlogged tenant in turn, regardless of size or weight: the Gateway API
 * Inference Extension's round-robin fairness, a baseline.
 */
export class RoundRobinPolicy extends TokenPacedPolicy implements QueuePolicy {
  readonly name = "round-robin";
  readonly #queues = new TenantQueues();
  /** Backlogged tenants in turn order; the head is served next. */
  #turn: TenantQueue[] = [];

  get size(): number {
    return this.#queues.size;
  }

  add(request: QueuedRequest): void {
    const { tenant, becameBacklogged } = this.#queues.add(request);
    if (becameBacklogged) this.#turn.push(tenant);
  }

  remove(request: QueuedRequest): boolean {
    const tenant = this.#queues.remove(request);
    if (!tenant) return false;
    if (tenant.queue.size === 0) this.#turn = this.#turn.filter((t) => t !== tenant);
    return true;
  }

  peek(): QueuedRequest | undefined {
    return this.#turn[0]?.queue.peek();
  }

  *candidates(): Generator<QueuedRequest> {
    for (const tenant of this.#turn) {
      const head = tenant.queue.peek();
      if (head) yield head;
    }
  }

  dispatch(request: QueuedRequest, charge = request.cost): void {
    const tenant = this.#queues.remove(request);
    if (!tenant) return;
    this.countDispatched(charge);
    this.#turn = this.#turn.filter((t) => t !== tenant);
    if (tenant.queue.size > 0) this.#turn.push(tenant);
  }

  workAhead(probe: WorkProbe): number {
    // Each other backlogged tenant gets about one request's worth per turn until ours is served.
    let ahead = 0;
    for (const tenant of this.#queues.tenants()) {
      if (tenant.tenantId === probe.tenantId) {
        ahead += tenant.queuedTokens;
        continue;
      }
      const mine = (this.#queues.get(probe.tenantId)?.queue.size ?? 0) + 1;
      const perRequest = tenant.queuedTokens / Math.max(1, tenant.queue.size);
      ahead += Math.min(tenant.queuedTokens, mine * perRequest);
    }
    return ahead;
  }
}
