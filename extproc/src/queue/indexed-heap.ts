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
