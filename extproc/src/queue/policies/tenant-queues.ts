import { LinkedQueue, type QueueNode } from "../linked-queue.ts";
import type { QueuedRequest } from "../policy.ts";

/** One tenant's waiting requests, in arrival order, with their total cost. */
export class TenantQueue {
  readonly tenantId: string;
  readonly queue = new LinkedQueue<QueuedRequest>();
  queuedTokens = 0;

  constructor(tenantId: string) {
    this.tenantId = tenantId;
  }

  /**
   * Whether the queue is standing: its oldest request has waited `lifoAfterMs` or more
   * (never with lifoAfterMs undefined).
   */
  standing(now: number, lifoAfterMs: number | undefined): boolean {
    const oldest = this.queue.peek()?.enqueuedAt;
    return lifoAfterMs !== undefined && oldest !== undefined && now - oldest >= lifoAfterMs;
  }

  /** The request this tenant serves next: its oldest, or its newest while its queue stands. */
  next(now: number, lifoAfterMs: number | undefined): QueuedRequest | undefined {
    return this.standing(now, lifoAfterMs) ? this.queue.peekLast() : this.queue.peek();
  }
}

/**
 * The per-tenant FIFOs every tenant-aware policy keeps. Within a tenant requests stay in
 * arrival order; policies decide only between tenants.
 */
export class TenantQueues {
  readonly #tenants = new Map<string, TenantQueue>();
  readonly #nodes = new Map<QueuedRequest, QueueNode<QueuedRequest>>();
  /** Predicted cost of everything queued. */
  queuedTokens = 0;

  get size(): number {
    return this.#nodes.size;
  }

  get(tenantId: string): TenantQueue | undefined {
    return this.#tenants.get(tenantId);
  }

  tenants(): IterableIterator<TenantQueue> {
    return this.#tenants.values();
  }

  /** Adds the request; returns its tenant's queue and whether the tenant just became backlogged. */
  add(request: QueuedRequest): { tenant: TenantQueue; becameBacklogged: boolean } {
    let tenant = this.#tenants.get(request.tenantId);
    if (!tenant) {
      tenant = new TenantQueue(request.tenantId);
      this.#tenants.set(request.tenantId, tenant);
    }
    const becameBacklogged = tenant.queue.size === 0;
    this.#nodes.set(request, tenant.queue.push(request));
    tenant.queuedTokens += request.cost;
    this.queuedTokens += request.cost;
    return { tenant, becameBacklogged };
  }

  /** Removes the request; returns its tenant's queue (dropped from the map once empty) or undefined. */
  remove(request: QueuedRequest): TenantQueue | undefined {
    const node = this.#nodes.get(request);
    const tenant = this.#tenants.get(request.tenantId);
    if (!node || !tenant) return undefined;
    this.#nodes.delete(request);
    tenant.queue.remove(node);
    tenant.queuedTokens -= request.cost;
    this.queuedTokens -= request.cost;
    if (tenant.queue.size === 0) this.#tenants.delete(request.tenantId);
    return tenant;
  }
}
