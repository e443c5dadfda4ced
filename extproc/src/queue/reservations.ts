/**
 * The room tenants below their share keep on one backend (share-rules.ts), kept up to
 * date from the ledger's changes: each change recomputes that tenant's part. Everything
 * is rebuilt when the shares move (a tenant arrives or leaves, the capacity changes) and
 * at least every REFRESH_MS, as peaks age out of the window. Only tenants whose share can
 * hold a request keep anything, so few parts are summed per check.
 */
import { type HeldBack, NOTHING_HELD, type RequestNeed } from "../admission/gate.ts";
import { addHeld, type SharedBudgets, unusedReservation, withinShare } from "../admission/share-rules.ts";
import type { BackendLedger } from "./ledger.ts";

const REFRESH_MS = 250;

interface Part {
  readonly held: HeldBack;
  readonly priority: number;
}

/** Whether `other` (its id and priority level) is owed at least as much as the requester. */
export type OwedAtLeast = (otherId: string, otherPriority: number) => boolean;

export class ReservationBook {
  readonly #ledger: BackendLedger;
  readonly #parts = new Map<string, Part>();
  #key = "";
  #builtAt = Number.NEGATIVE_INFINITY;

  constructor(ledger: BackendLedger) {
    this.#ledger = ledger;
  }

  /** What is held back from a request of `tenantId`: the room kept by others owed at least as much. */
  heldFrom(tenantId: string, owedAtLeast: OwedAtLeast, capacity: SharedBudgets, now: number): HeldBack {
    this.#sync(capacity, now);
    let held = NOTHING_HELD;
    for (const [id, part] of this.#parts) {
      if (id !== tenantId && owedAtLeast(id, part.priority)) held = addHeld(held, part.held);
    }
    return held;
  }

  /** Whether one more request keeps its tenant within its share of every budget (it then needs only room). */
  within(tenantId: string, weight: number, need: RequestNeed, capacity: SharedBudgets): boolean {
    const entry = this.#ledger.tenant(tenantId);
    const activeWeight = this.#ledger.activeWeight + (entry ? 0 : weight);
    return withinShare(
      entry ?? { weight, inFlight: 0, inFlightKv: 0, inFlightPrefill: 0 },
      need,
      capacity,
      activeWeight,
    );
  }

  #sync(capacity: SharedBudgets, now: number): void {
    this.#ledger.sweep(now);
    const changed = this.#ledger.takeChanged();
    const key = `${capacity.slots}|${capacity.kvBudget}|${capacity.prefillBudget}|${this.#ledger.activeWeight}`;
    if (key !== this.#key || now - this.#builtAt >= REFRESH_MS) {
      this.#key = key;
      this.#builtAt = now;
      this.#parts.clear();
      for (const entry of this.#ledger.tenants()) this.#set(entry.tenantId, capacity, now);
      return;
    }
    for (const id of changed) this.#set(id, capacity, now);
  }

  #set(tenantId: string, capacity: SharedBudgets, now: number): void {
    this.#parts.delete(tenantId);
    const entry = this.#ledger.tenant(tenantId);
    if (!entry) return;
    const held = unusedReservation(this.#ledger.holding(entry, now), capacity, this.#ledger.activeWeight);
    if (held.slots === 0 && held.kvTokens === 0 && held.prefillTokens === 0) return;
    this.#parts.set(tenantId, { held, priority: entry.priority });
  }
}
