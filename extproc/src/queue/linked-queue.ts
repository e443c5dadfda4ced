/** A FIFO with O(1) removal of any element through the node `push` returned. */
export interface QueueNode<T> {
  readonly value: T;
  prev: QueueNode<T> | undefined;
  next: QueueNode<T> | undefined;
  linked: boolean;
}

export class LinkedQueue<T> {
  #head: QueueNode<T> | undefined;
  #tail: QueueNode<T> | undefined;
  #size = 0;

  get size(): number {
    return this.#size;
  }

  push(value: T): QueueNode<T> {
    const node: QueueNode<T> = { value, prev: this.#tail, next: undefined, linked: true };
    if (this.#tail) this.#tail.next = node;
    else this.#head = node;
    this.#tail = node;
    this.#size++;
    return node;
  }

  peek(): T | undefined {
    return this.#head?.value;
  }

  /** The newest value. */
  peekLast(): T | undefined {
    return this.#tail?.value;
  }

  shift(): T | undefined {
    const head = this.#head;
    if (!head) return undefined;
    this.remove(head);
    return head.value;
  }

  /** Unlinks `node`; false when it was already removed. */
  remove(node: QueueNode<T>): boolean {
    if (!node.linked) return false;
    if (node.prev) node.prev.next = node.next;
    else this.#head = node.next;
    if (node.next) node.next.prev = node.prev;
    else this.#tail = node.prev;
    node.prev = undefined;
    node.next = undefined;
    node.linked = false;
    this.#size--;
    return true;
  }

  *[Symbol.iterator](): Iterator<T> {
    for (let node = this.#head; node; node = node.next) yield node.value;
  }
}
