/**
 * The one owner of what waits and runs on one backend: per tenant and in total, requests
 * queued and in flight, the KV they reserve, the prompt tokens still waiting for their
 * prefill, and each tenant's recent peaks. The fair queue changes it only through enqueue /
 * dequeue / start / prefilled / finish, so no count is kept twice; what is derived from it
 * (reservations.ts) learns which tenants changed from takeChanged().
 */
import type { BackendLoad } from "../admission/gate.ts";
import type { TenantHolding } from "../admission/share-rules.ts";
import { IndexedHeap } from "./indexed-heap.ts";

/** The largest value seen over the last `windowMs` (two half-window buckets, O(1)). */
export class RecentPeak {
  readonly #halfMs: number;
  #bucketStart = Number.NEGATIVE_INFINITY;
  #current = 0;
  #previous = 0;

  constructor(windowMs: number) {
    this.#halfMs = Math.max(1, windowMs / 2);
  }

  observe(now: number, value: number): void {
    this.#roll(now);
    if (value > this.#current) this.#current = value;
  }

  value(now: number): number {
    this.#roll(now);
    return Math.max(this.#current, this.#previous);
  }

  #roll(now: number): void {
    const elapsed = now - this.#bucketStart;
    if (elapsed < this.#halfMs) return;
    this.#previous = elapsed < 2 * this.#halfMs ? this.#current : 0;
    this.#current = 0;
    this.#bucketStart = now;
  }
}

/** A dispatched request's prefill, counted until its first token or its deadline. */
export interface Prefill {
  readonly tenantId: string;
  readonly tokens: number;
  /** When it is taken as done if no first token was seen (ms). */
  readonly deadlineMs: number;
}

/** The tenant a request belongs to, as the ledger needs it. */
export interface LedgerTenant {
  readonly id: string;
  readonly weight: number;
  readonly priority: number;
  readonly tier: string;
}

/** What the ledger needs of a request: the KV it reserves and its prompt. */
export interface LedgerRequest {
  readonly kvTokens: number;
  readonly prefillTokens: number;
}

export interface TenantOnBackend {
  readonly tenantId: string;
  weight: number;
  priority: number;
  tier: string;
  queued: number;
  queuedKv: number;
  inFlight: number;
  inFlightKv: number;
  inFlightPrefill: number;
  readonly peakInFlight: RecentPeak;
  readonly peakKv: RecentPeak;
  readonly peakPrefill: RecentPeak;
  readonly largestKv: RecentPeak;
  readonly largestPrompt: RecentPeak;
  /** Last time it had anything queued or in flight (ms). */
  lastActiveMs: number;
}

export class BackendLedger {
  readonly #windowMs: number;
  readonly #tenants = new Map<string, TenantOnBackend>();
  /** Tenants with nothing queued or in flight, kept for the window. */
  readonly #idle = new Set<TenantOnBackend>();
  /** Tenants changed since the last takeChanged(). */
  readonly #changed = new Set<string>();
  #inFlight = 0;
  #inFlightKv = 0;
  #prefill = 0;
  readonly #prefilling = new IndexedHeap<Prefill>((a, b) => a.deadlineMs < b.deadlineMs);
  #queued = 0;
  #queuedKv = 0;
  #queuedPrefill = 0;
  /** Sum of the weights of the tenants the ledger holds (active, or idle within the window). */
  #activeWeight = 0;
  /** The other replicas' requests in flight on this backend (shared state). */
  #others = { inFlight: 0, inFlightTokens: 0 };

  /** `windowMs`: how long an idle tenant and its peaks are remembered (0: not at all). */
  constructor(windowMs: number) {
    this.#windowMs = windowMs;
  }

  get queued(): number {
    return this.#queued;
  }

  get activeWeight(): number {
    return this.#activeWeight;
  }

  /** What waits here: requests, the KV they will reserve and their prompts to prefill. */
  get waiting(): { requests: number; kvTokens: number; prefillTokens: number } {
    return { requests: this.#queued, kvTokens: this.#queuedKv, prefillTokens: this.#queuedPrefill };
  }

  /** This replica's requests in flight. */
  get local(): BackendLoad {
    return { inFlight: this.#inFlight, inFlightTokens: this.#inFlightKv, prefillTokens: this.#prefill };
  }

  /**
   * Every replica's requests in flight, and this replica's prefill as of `now` (prefills
   * past their deadline count as done).
   */
  load(now: number): BackendLoad {
    this.#expirePrefills(now);
    return {
      inFlight: this.#inFlight + this.#others.inFlight,
      inFlightTokens: this.#inFlightKv + this.#others.inFlightTokens,
      prefillTokens: this.#prefill,
    };
  }

  setOthers(others: { inFlight: number; inFlightTokens: number }): void {
    this.#others = others;
  }

  tenant(id: string): TenantOnBackend | undefined {
    return this.#tenants.get(id);
  }

  tenants(): IterableIterator<TenantOnBackend> {
    return this.#tenants.values();
  }

  /** What a tenant holds and recently held, as the sharing rules read it. */
  holding(entry: TenantOnBackend, now: number): TenantHolding {
    return {
      weight: entry.weight,
      inFlight: entry.inFlight,
      inFlightKv: entry.inFlightKv,
      inFlightPrefill: entry.inFlightPrefill,
      queued: entry.queued,
      peakInFlight: entry.peakInFlight.value(now),
      peakKv: entry.peakKv.value(now),
      peakPrefill: entry.peakPrefill.value(now),
      largestKv: entry.largestKv.value(now),
      largestPrompt: entry.largestPrompt.value(now),
    };
  }

  /** The ids of the tenants changed (or forgotten) since the last call. */
  takeChanged(): string[] {
    const changed = [...this.#changed];
    this.#changed.clear();
    return changed;
  }

  enqueue(tenant: LedgerTenant, request: LedgerRequest, now: number): void {
    const entry = this.#entry(tenant, now);
    entry.queued++;
    entry.queuedKv += request.kvTokens;
    this.#queued++;
    this.#queuedKv += request.kvTokens;
    this.#queuedPrefill += request.prefillTokens;
    this.#settle(entry, now);
  }

  /** Leaves the queue: dispatched (start follows) or gone (cancel, timeout). */
  dequeue(tenantId: string, request: LedgerRequest, now: number): void {
    const entry = this.#tenants.get(tenantId);
    if (!entry) return;
    entry.queued--;
    entry.queuedKv -= request.kvTokens;
    this.#queued--;
    this.#queuedKv -= request.kvTokens;
    this.#queuedPrefill -= request.prefillTokens;
    this.#settle(entry, now);
  }

  /** A request went to the engine; returns its prefill, to end with prefilled() or finish(). */
  start(tenant: LedgerTenant, request: LedgerRequest, prefillDeadlineMs: number, now: number): Prefill {
    const entry = this.#entry(tenant, now);
    const { kvTokens, prefillTokens } = request;
    entry.inFlight++;
    entry.inFlightKv += kvTokens;
    entry.inFlightPrefill += prefillTokens;
    this.#inFlight++;
    this.#inFlightKv += kvTokens;
    this.#prefill += prefillTokens;
    const prefill: Prefill = { tenantId: tenant.id, tokens: prefillTokens, deadlineMs: prefillDeadlineMs };
    this.#prefilling.push(prefill);
    entry.peakInFlight.observe(now, entry.inFlight);
    entry.peakKv.observe(now, entry.inFlightKv);
    entry.peakPrefill.observe(now, entry.inFlightPrefill);
    entry.largestKv.observe(now, kvTokens);
    entry.largestPrompt.observe(now, prefillTokens);
    this.#settle(entry, now);
    return prefill;
  }

  /** The request's first token came: its prefill is done (nothing when already counted done). */
  prefilled(prefill: Prefill): void {
    if (this.#prefilling.remove(prefill)) this.#endPrefill(prefill);
  }

  finish(tenantId: string, request: LedgerRequest, prefill: Prefill, now: number): void {
    this.prefilled(prefill);
    const entry = this.#tenants.get(tenantId);
    if (!entry) return;
    entry.inFlight--;
    entry.inFlightKv -= request.kvTokens;
    this.#inFlight--;
    this.#inFlightKv -= request.kvTokens;
    this.#settle(entry, now);
  }

  /** Forgets tenants idle for the whole window. */
  sweep(now: number): void {
    for (const entry of this.#idle) if (now - entry.lastActiveMs >= this.#windowMs) this.#forget(entry);
  }

  #entry(tenant: LedgerTenant, now: number): TenantOnBackend {
    let entry = this.#tenants.get(tenant.id);
    if (!entry) {
      entry = {
        tenantId: tenant.id,
        weight: tenant.weight,
        priority: tenant.priority,
        tier: tenant.tier,
        queued: 0,
        queuedKv: 0,
        inFlight: 0,
        inFlightKv: 0,
        inFlightPrefill: 0,
        peakInFlight: new RecentPeak(this.#windowMs),
        peakKv: new RecentPeak(this.#windowMs),
        peakPrefill: new RecentPeak(this.#windowMs),
        largestKv: new RecentPeak(this.#windowMs),
        largestPrompt: new RecentPeak(this.#windowMs),
        lastActiveMs: now,
      };
      this.#tenants.set(tenant.id, entry);
      this.#activeWeight += entry.weight;
    } else if (entry.weight !== tenant.weight) {
      // A reload changed the weight.
      this.#activeWeight += tenant.weight - entry.weight;
      entry.weight = tenant.weight;
    }
    entry.priority = tenant.priority;
    entry.tier = tenant.tier;
    return entry;
  }

  #expirePrefills(now: number): void {
    for (let next = this.#prefilling.peek(); next && next.deadlineMs <= now; next = this.#prefilling.peek()) {
      this.#prefilling.pop();
      this.#endPrefill(next);
    }
  }

  #endPrefill(prefill: Prefill): void {
    this.#prefill -= prefill.tokens;
    const entry = this.#tenants.get(prefill.tenantId);
    if (!entry) return;
    entry.inFlightPrefill -= prefill.tokens;
    this.#changed.add(entry.tenantId);
  }

  #settle(entry: TenantOnBackend, now: number): void {
    entry.lastActiveMs = now;
    this.#changed.add(entry.tenantId);
    if (entry.queued > 0 || entry.inFlight > 0) {
      this.#idle.delete(entry);
      return;
    }
    if (this.#windowMs > 0) this.#idle.add(entry);
    else this.#forget(entry);
  }

  #forget(entry: TenantOnBackend): void {
    this.#idle.delete(entry);
    this.#tenants.delete(entry.tenantId);
    this.#activeWeight -= entry.weight;
    this.#changed.add(entry.tenantId);
  }
}
