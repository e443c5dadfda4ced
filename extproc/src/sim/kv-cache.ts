/**
 * Paged KV cache accounting, as vLLM V1's KVCacheManager does it for one full-attention
 * group: a fixed pool of `numBlocks` blocks of `blockSize` tokens; a request holds
 * ceil(tokens / blockSize) blocks; allocation fails (returns false) when the pool cannot
 * cover the growth, which is the scheduler's cue to preempt. No prefix caching: every
 * request owns its blocks, freed when it finishes, aborts or is preempted.
 */
export class KvCache {
  readonly numBlocks: number;
  readonly blockSize: number;
  #free: number;
  readonly #held = new Map<string, number>();

  constructor(numBlocks: number, blockSize: number) {
    if (!Number.isInteger(numBlocks) || numBlocks <= 0)
      throw new RangeError("numBlocks must be a positive integer");
    if (!Number.isInteger(blockSize) || blockSize <= 0)
      throw new RangeError("blockSize must be a positive integer");
    this.numBlocks = numBlocks;
    this.blockSize = blockSize;
    this.#free = numBlocks;
  }

  /** Blocks needed to hold `tokens` tokens of KV. */
  blocksFor(tokens: number): number {
    return Math.ceil(tokens / this.blockSize);
  }

  /** Blocks a request holds now. */
  held(id: string): number {
    return this.#held.get(id) ?? 0;
  }

  get freeBlocks(): number {
    return this.#free;
  }

  get usedBlocks(): number {
    return this.numBlocks - this.#free;
  }

  /** vLLM's kv_cache_usage: 1 - free/total, a 0..1 fraction. */
  get usage(): number {
    return 1 - this.#free / this.numBlocks;
  }

  /** Blocks that growing `id` to `totalTokens` would newly take. */
  growthFor(id: string, totalTokens: number): number {
    return Math.max(0, this.blocksFor(totalTokens) - this.held(id));
  }

  /**
   * Grows `id`'s allocation to cover `totalTokens` tokens. Returns the blocks newly taken,
   * or undefined (and changes nothing) when the pool has too few free blocks.
   */
  allocate(id: string, totalTokens: number): number | undefined {
    const growth = this.growthFor(id, totalTokens);
    if (growth > this.#free) return undefined;
    if (growth > 0) {
      this.#free -= growth;
      this.#held.set(id, this.held(id) + growth);
    } else if (!this.#held.has(id)) this.#held.set(id, 0);
    return growth;
  }

  /** Returns `blocks` of `id`'s most recent growth to the pool (undoing an allocation). */
  shrink(id: string, blocks: number): void {
    const held = this.held(id);
    const give = Math.min(held, blocks);
    this.#free += give;
    if (held - give === 0) this.#held.delete(id);
    else this.#held.set(id, held - give);
  }

  /** Frees everything `id` holds; returns the number of blocks freed. */
  free(id: string): number {
    const held = this.held(id);
    this.#free += held;
    this.#held.delete(id);
    return held;
  }
}
