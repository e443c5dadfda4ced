import { LinkedQueue, type QueueNode } from "../linked-queue.ts";
import { type FairnessPolicy, type QueuedRequest, serviceTokens, type WorkProbe } from "../policy.ts";
import { TokenPacedPolicy } from "./token-paced.ts";

/** First come, first served across all tenants: vLLM's own order, the baseline. */
export class FcfsPolicy extends TokenPacedPolicy implements FairnessPolicy {
  readonly name = "fcfs";
  readonly #queue = new LinkedQueue<QueuedRequest>();
  readonly #nodes = new Map<QueuedRequest, QueueNode<QueuedRequest>>();
  #queuedTokens = 0;

  get size(): number {
    return this.#queue.size;
  }

  add(request: QueuedRequest): void {
    this.#nodes.set(request, this.#queue.push(request));
    this.#queuedTokens += serviceTokens(request);
  }

  remove(request: QueuedRequest): boolean {
    const node = this.#nodes.get(request);
    if (!node) return false;
    this.#nodes.delete(request);
    this.#queue.remove(node);
    this.#queuedTokens -= serviceTokens(request);
    return true;
  }

  peek(): QueuedRequest | undefined {
    return this.#queue.peek();
  }

  candidates(): Iterable<QueuedRequest> {
    return this.#queue;
  }

  dispatch(request: QueuedRequest): void {
    if (this.remove(request)) this.countDispatched(request);
  }

  workAhead(_probe: WorkProbe): number {
    return this.#queuedTokens;
  }
}
