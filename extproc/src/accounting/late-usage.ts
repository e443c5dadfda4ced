import type { Clock } from "../clock.ts";
import type { Usage } from "./usage.ts";

/**
 * Meets, by request id, a request this replica dispatched and settled without its usage
 * with the usage another replica relayed for it afterwards (usage-relay.ts), in either
 * order: the relayed report may arrive before the main stream has settled. Each request's
 * usage is applied at most once. Whichever side waits is forgotten after `ttlMs`, the
 * oldest first past `maxEntries`, so nothing piles up when no report ever comes (no usage
 * filter, or it reached this replica and had nothing to say).
 */
export interface LateUsageOptions {
  clock: Clock;
  /** How long either side waits for the other (default 10 s: both happen as the response ends). */
  ttlMs?: number;
  /** Entries kept at most (default 100,000). */
  maxEntries?: number;
  /** Called each time a relayed usage is applied. */
  onApplied?: () => void;
}

type Entry =
  | { readonly kind: "settled"; readonly at: number; readonly apply: (usage: Usage) => void }
  | { readonly kind: "relayed"; readonly at: number; readonly usage: Usage };

export class LateUsage {
  readonly #clock: Clock;
  readonly #ttlMs: number;
  readonly #maxEntries: number;
  readonly #onApplied: () => void;
  /** In insertion order, so the oldest is first. */
  readonly #entries = new Map<string, Entry>();

  constructor(options: LateUsageOptions) {
    this.#clock = options.clock;
    this.#ttlMs = options.ttlMs ?? 10_000;
    this.#maxEntries = options.maxEntries ?? 100_000;
    this.#onApplied = options.onApplied ?? (() => {});
  }

  get size(): number {
    return this.#entries.size;
  }

  /** Request `id` settled here without its usage: `apply` gets it if another replica relays it. */
  settled(id: string, apply: (usage: Usage) => void): void {
    const waiting = this.#entries.get(id);
    if (waiting?.kind === "relayed") {
      this.#entries.delete(id);
      this.#apply(apply, waiting.usage);
      return;
    }
    this.#keep(id, { kind: "settled", at: this.#clock.now(), apply });
  }

  /** Another replica relayed request `id`'s usage. */
  relayed(id: string, usage: Usage): void {
    const waiting = this.#entries.get(id);
    if (waiting?.kind === "settled") {
      this.#entries.delete(id);
      this.#apply(waiting.apply, usage);
      return;
    }
    // A second report for the same id changes nothing: the first is the one kept.
    if (!waiting) this.#keep(id, { kind: "relayed", at: this.#clock.now(), usage });
  }

  #apply(apply: (usage: Usage) => void, usage: Usage): void {
    apply(usage);
    this.#onApplied();
  }

  #keep(id: string, entry: Entry): void {
    const now = this.#clock.now();
    for (const [oldId, old] of this.#entries) {
      if (now - old.at < this.#ttlMs && this.#entries.size < this.#maxEntries) break;
      this.#entries.delete(oldId);
    }
    this.#entries.set(id, entry);
  }
}
