import { type Clock, systemClock, type TimerHandle } from "../clock.ts";
import type { Usage } from "./usage.ts";

/**
 * Meets the two ext_proc streams of one HTTP request inside one gateway: fairgate's main
 * stream (which dispatched the request) and the observability-mode stream that watches
 * the response body. The main processor registers its stream id when it dispatches and
 * sends that id upstream in `x-fairgate-request-id`; the usage stream sees the header,
 * attaches a live view of what it has parsed, and reports the usage when the body ends.
 *
 * Budget reconciliation happens exactly once per request, on one side only: a report the
 * registry delivers goes to the local main stream, which reconciles its own BudgetTicket
 * (also with a partial, or not at all when the usage is missing). A report for an id the
 * usage stream never found here (`observe` returned false: the main stream runs on another
 * replica, whose registration settles at once as missing and keeps its charge) is orphaned,
 * and the usage stream reconciles it directly with the shared budget store (see
 * usage-observer.ts). A late report for an id that was observed here but already settled is
 * dropped: its main stream already decided.
 *
 * Every entry leaves the registry exactly once: when usage is delivered, when the main
 * stream settles (after a short grace, with whatever the usage stream has seen so far),
 * or after `ttlMs` at the latest, so nothing leaks whatever the streams do.
 */

export interface UsageTicket {
  readonly id: string;
  /**
   * Called once when the usage stream sees the response's first body bytes: for a
   * streamed response, the first token, so the request's prefill is over.
   */
  onFirstOutput(callback: () => void): void;
  /** Settles with the usage the response revealed, or undefined when it never will. */
  readonly usage: Promise<Usage | undefined>;
  /**
   * The main stream is over: wait at most `graceMs` for the usage stream's final report,
   * then settle with what it has seen so far (a partial, `complete: false`). When no usage
   * stream ever attached (no usage filter in front), settle with undefined at once, so a
   * deployment without the filter frees engine slots as early as before.
   */
  settle(graceMs: number): Promise<Usage | undefined>;
}

export interface UsageRegistryStats {
  registered: number;
  /** Final reports delivered (body ended, or the usage stream closed before the main one). */
  reported: number;
  /** Settled from the usage stream's live view after the grace (client cancel, late report). */
  partial: number;
  /** Settled with nothing: no usage stream attached in time, or the TTL passed. */
  missing: number;
  /** Reports for ids nobody waits for (passthrough requests, another replica's request). */
  orphaned: number;
  /** Orphaned reports of another replica's request that this replica reconciled with the
   * budget store itself (from the request's x-fairgate-tenant and x-fairgate-charged-tokens). */
  orphanReconciled: number;
  /** Orphaned reports sent on to the replica that admitted the request (usage-relay.ts). */
  orphanRelayed: number;
  /** Reports another replica relayed for a request admitted here, applied to the fair
   * queue's charge and the output predictor (late-usage.ts). */
  relayApplied: number;
}

interface Entry {
  readonly promise: Promise<Usage | undefined>;
  firstOutput?: () => void;
  firstOutputSeen?: boolean;
  resolve(usage: Usage | undefined): void;
  snapshot?: () => Usage | undefined;
  ttl: TimerHandle;
  grace?: TimerHandle;
}

/** Longest a request may go without its usage settling (a generation running this long
 * is far past any sane route timeout). */
export const DEFAULT_USAGE_TTL_MS = 30 * 60_000;

export class UsageRegistry {
  readonly #clock: Clock;
  readonly #ttlMs: number;
  readonly #entries = new Map<string, Entry>();
  readonly stats: UsageRegistryStats = {
    registered: 0,
    reported: 0,
    partial: 0,
    missing: 0,
    orphaned: 0,
    orphanReconciled: 0,
    orphanRelayed: 0,
    relayApplied: 0,
  };

  constructor(options: { clock?: Clock; ttlMs?: number } = {}) {
    this.#clock = options.clock ?? systemClock;
    this.#ttlMs = options.ttlMs ?? DEFAULT_USAGE_TTL_MS;
  }

  /** Entries still waiting (for tests and metrics). */
  get size(): number {
    return this.#entries.size;
  }

  register(id: string): UsageTicket {
    this.#deliver(id, undefined, "missing");
    let resolve!: (usage: Usage | undefined) => void;
    const promise = new Promise<Usage | undefined>((r) => {
      resolve = r;
    });
    const entry: Entry = {
      promise,
      resolve,
      ttl: this.#clock.setTimeout(() => this.#deliver(id, undefined, "missing"), this.#ttlMs),
    };
    this.#entries.set(id, entry);
    this.stats.registered++;
    return {
      id,
      onFirstOutput: (callback) => {
        if (entry.firstOutputSeen) callback();
        else entry.firstOutput = callback;
      },
      usage: promise,
      settle: (graceMs) => {
        const current = this.#entries.get(id);
        if (current !== entry) return promise;
        if (!entry.snapshot) {
          // The usage stream's request headers travel long before the response ends.
          this.#deliver(id, undefined, "missing");
          return promise;
        }
        if (!entry.grace) {
          entry.grace = this.#clock.setTimeout(
            () => {
              let partial: Usage | undefined;
              try {
                partial = entry.snapshot?.();
              } catch {
                partial = undefined;
              }
              this.#deliver(id, partial, partial ? "partial" : "missing");
            },
            Math.max(0, graceMs),
          );
        }
        return promise;
      },
    };
  }

  /** The usage stream found `id`'s header: it can tell what it has seen so far. False when
   * nobody waits for that id. */
  observe(id: string, snapshot: () => Usage | undefined): boolean {
    const entry = this.#entries.get(id);
    if (!entry) return false;
    entry.snapshot = snapshot;
    return true;
  }

  /** The usage stream saw `id`'s first response body bytes. */
  firstOutput(id: string): void {
    const entry = this.#entries.get(id);
    if (!entry || entry.firstOutputSeen) return;
    entry.firstOutputSeen = true;
    const callback = entry.firstOutput;
    entry.firstOutput = undefined;
    callback?.();
  }

  /** The usage stream's final word on `id`. False when nobody waits for it. */
  report(id: string, usage: Usage | undefined): boolean {
    if (!this.#entries.has(id)) {
      this.stats.orphaned++;
      return false;
    }
    this.#deliver(id, usage, usage ? "reported" : "missing");
    return true;
  }

  /** An orphaned report was reconciled with the budget store by the usage stream itself. */
  orphanReconciled(): void {
    this.stats.orphanReconciled++;
  }

  /** An orphaned report was relayed to the replica that admitted its request. */
  orphanRelayed(): void {
    this.stats.orphanRelayed++;
  }

  /** A report relayed from another replica was applied here. */
  relayApplied(): void {
    this.stats.relayApplied++;
  }

  /** Settles everything with undefined (gateway shutdown). */
  close(): void {
    for (const id of [...this.#entries.keys()]) this.#deliver(id, undefined, "missing");
  }

  #deliver(id: string, usage: Usage | undefined, outcome: "reported" | "partial" | "missing"): void {
    const entry = this.#entries.get(id);
    if (!entry) return;
    this.#entries.delete(id);
    this.#clock.clearTimeout(entry.ttl);
    if (entry.grace) this.#clock.clearTimeout(entry.grace);
    this.stats[outcome]++;
    entry.resolve(usage);
  }
}
