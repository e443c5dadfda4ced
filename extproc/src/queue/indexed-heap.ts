/**
 * A binary min-heap that knows where each element sits, so an element whose key changed
 * can be moved (update) or taken out (remove) in O(log n).
 */
export class IndexedHeap<T> {
  readonly #items: T[] = [];
  readonly #index = new Map<T, number>();
  readonly #before: (a: T, b: T) => boolean;

  /** `before(a, b)`: a must come out ahead of b. */
  constructor(before: (a: T, b: T) => boolean) {
    this.#before = before;
  }

  get size(): number {
    return this.#items.length;
  }

  has(item: T): boolean {
    return this.#index.has(item);
  }

  peek(): T | undefined {
    return this.#items[0];
  }

  push(item: T): void {
    if (this.#index.has(item)) {
      this.update(item);
      return;
    }
    this.#items.push(item);
    this.#index.set(item, this.#items.length - 1);
    this.#up(this.#items.length - 1);
  }

  pop(): T | undefined {
    const top = this.#items[0];
    if (top !== undefined) this.remove(top);
    return top;
  }

  remove(item: T): boolean {
    const index = this.#index.get(item);
    if (index === undefined) return false;
    const last = this.#items.pop() as T;
    this.#index.delete(item);
    if (index < this.#items.length) {
      this.#items[index] = last;
      this.#index.set(last, index);
      this.#down(index);
      this.#up(this.#index.get(last) as number);
    }
    return true;
  }

  /** Restores order after `item`'s key changed. */
  update(item: T): void {
    const index = this.#index.get(item);
    if (index === undefined) return;
    this.#up(index);
    this.#down(this.#index.get(item) as number);
  }

  values(): readonly T[] {
    return this.#items;
  }

  /** Elements in order without removing them: O(k log k) for the first k. */
  *ordered(): Generator<T> {
    const items = this.#items;
    if (items.length === 0) return;
    // A frontier of heap indices, itself kept as a small binary heap.
    const frontier: number[] = [0];
    const before = (i: number, j: number) => this.#before(items[i] as T, items[j] as T);
    while (frontier.length > 0) {
      const top = frontier[0] as number;
      const last = frontier.pop() as number;
      if (frontier.length > 0) {
        frontier[0] = last;
        siftDown(frontier, 0, before);
      }
      yield items[top] as T;
      for (const child of [2 * top + 1, 2 * top + 2]) {
        if (child >= items.length) continue;
        frontier.push(child);
        siftUp(frontier, frontier.length - 1, before);
      }
    }
  }

  #swap(i: number, j: number): void {
    const a = this.#items[i] as T;
    const b = this.#items[j] as T;
    this.#items[i] = b;
    this.#items[j] = a;
    this.#index.set(b, i);
    this.#index.set(a, j);
  }

  #up(index: number): void {
    while (index > 0) {
      const parent = (index - 1) >> 1;
      if (!this.#before(this.#items[index] as T, this.#items[parent] as T)) return;
      this.#swap(index, parent);
      index = parent;
    }
  }

  #down(index: number): void {
    const n = this.#items.length;
    for (;;) {
      const left = 2 * index + 1;
      if (left >= n) return;
      const right = left + 1;
      let best = left;
      if (right < n && this.#before(this.#items[right] as T, this.#items[left] as T)) best = right;
      if (!this.#before(this.#items[best] as T, this.#items[index] as T)) return;
      this.#swap(index, best);
      index = best;
    }
  }
}

function siftUp(heap: number[], index: number, before: (a: number, b: number) => boolean): void {
  while (index > 0) {
    const parent = (index - 1) >> 1;
    if (!before(heap[index] as number, heap[parent] as number)) return;
    [heap[index], heap[parent]] = [heap[parent] as number, heap[index] as number];
    index = parent;
  }
}

function siftDown(heap: number[], index: number, before: (a: number, b: number) => boolean): void {
  for (;;) {
    const left = 2 * index + 1;
    if (left >= heap.length) return;
    const right = left + 1;
    let best = left;
    if (right < heap.length && before(heap[right] as number, heap[left] as number)) best = right;
    if (!before(heap[best] as number, heap[index] as number)) return;
    [heap[index], heap[best]] = [heap[best] as number, heap[index] as number];
    index = best;
  }
}
