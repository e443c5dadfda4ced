import { LinkedQueue, type QueueNode } from "../linked-queue.ts";
import type { QueuedRequest, QueuePolicy, WorkProbe } from "../policy.ts";
import { TokenPacedPolicy } from "./token-paced.ts";

/** First come, first served across all tenants: vLLM's own order, the baseline. */
export class FcfsPolicy extends TokenPacedPolicy implements QueuePolicy {
  readonly name = "fcfs";
  readonly #queue = new LinkedQueue<QueuedRequest>();
  readonly #nodes = new Map<QueuedRequest, QueueNode<QueuedRequest>>();
  #queuedTokens = 0;

  get size(): number {
    return this.#queue.size;
  }

  add(request: QueuedRequest): void {
    this.#nodes.set(request, this.#queue.push(request));
    this.#queuedTokens += request.cost;
  }

  remove(request: QueuedRequest): boolean {
    const node = this.#nodes.get(request);
    if (!node) return false;
    this.#nodes.delete(request);
    this.#queue.remove(node);
    this.#queuedTokens -= request.cost;
    return true;
  }

  peek(): QueuedRequest | undefined {
    return this.#queue.peek();
  }

  candidates(): Iterable<QueuedRequest> {
    return this.#queue;
  }

  dispatch(request: QueuedRequest, charge = request.cost): void {
    if (this.remove(request)) this.countDispatched(charge);
  }

  workAhead(_probe: WorkProbe): number {
    return this.#queuedTokens;
  }
}
