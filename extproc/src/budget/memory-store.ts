/**
 * Budgets in process memory: the embedded default, and the local fallback of a fail-open
 * ResilientBudgetStore. Same semantics as the Redis scripts (lua/admit.lua), checked by the
 * same conformance suite. Buckets and leases run on the injected monotonic clock; the UTC
 * day/month windows on the injected wall clock.
 *
 * Memory stays bounded: a sweep (at most once per `sweepIntervalMs` of clock time, on any
 * call) forgets buckets that have refilled, expired leases and past windows, and then
 * tenants with nothing left — a full bucket is the same as no bucket.
 */
import { type Clock, systemClock } from "../clock.ts";
import {
  type AdmitRequest,
  type AdmitResult,
  type BucketState,
  type BudgetLimits,
  type BudgetSnapshot,
  type BudgetStore,
  bucketCapacity,
  hasTokenLimits,
} from "./store.ts";

export interface MemoryBudgetStoreOptions {
  /** Monotonic ms for buckets and leases (default: the system clock). */
  readonly clock?: Clock;
  /** Epoch ms for UTC day/month windows (default Date.now). */
  readonly wallClock?: () => number;
  /** How often idle state is swept, in clock ms (default 60 000). */
  readonly sweepIntervalMs?: number;
}

interface Bucket {
  level: number;
  at: number;
  /** Rate and capacity last used, so a sweep can tell whether the bucket is full by now. */
  rate: number;
  cap: number;
}

interface Window {
  id: number;
  used: number;
  end: number;
}

interface TenantState {
  rpm?: Bucket;
  tpm?: Bucket;
  leases: Map<string, number>;
  day?: Window;
  month?: Window;
}

const MINUTE = 60_000;

export class MemoryBudgetStore implements BudgetStore {
  readonly kind = "memory" as const;
  readonly #clock: Clock;
  readonly #wall: () => number;
  readonly #sweepIntervalMs: number;
  readonly #tenants = new Map<string, TenantState>();
  #lastSweep: number;

  constructor(options: MemoryBudgetStoreOptions = {}) {
    this.#clock = options.clock ?? systemClock;
    this.#wall = options.wallClock ?? (() => Date.now());
    this.#sweepIntervalMs = options.sweepIntervalMs ?? MINUTE;
    this.#lastSweep = this.#clock.now();
  }

  /** Tenants with state held (for tests of bounded memory). */
  get trackedTenants(): number {
    return this.#tenants.size;
  }

  async admit(request: AdmitRequest): Promise<AdmitResult> {
    return this.admitSync(request);
  }

  admitSync(request: AdmitRequest): AdmitResult {
    const now = this.#tick();
    const wall = this.#wall();
    const { limits } = request;
    const tokens = Math.max(0, Math.ceil(request.tokens));
    const existing = this.#tenants.get(request.tenant);
    const rpm = limits.rpm === undefined ? undefined : rateOf(limits.rpm, limits.rpmBurst);
    const tpm = limits.tpm === undefined ? undefined : rateOf(limits.tpm, limits.tpmBurst);
    let rpmLevel = rpm && level(existing?.rpm, rpm, now);
    let tpmLevel = tpm && level(existing?.tpm, tpm, now);
    const snapshot = () => snapshotOf(limits, rpm, rpmLevel, tpm, tpmLevel);
    const refuse = (
      code: Extract<AdmitResult, { ok: false }>["code"],
      limit: keyof BudgetLimits,
      retryAfterMs: number | undefined,
    ): AdmitResult => ({ ok: false, code, limit, retryAfterMs, snapshot: snapshot() });

    if (tpm && tokens > tpm.cap) return refuse("request_too_large_for_limit", "tpm", undefined);
    if (limits.tokensPerDay !== undefined && tokens > limits.tokensPerDay)
      return refuse("request_too_large_for_limit", "tokensPerDay", undefined);
    if (limits.tokensPerMonth !== undefined && tokens > limits.tokensPerMonth)
      return refuse("request_too_large_for_limit", "tokensPerMonth", undefined);

    const day = limits.tokensPerDay === undefined ? undefined : dayWindow(wall);
    const dayUsed = day ? windowUsed(existing?.day, day.id) : 0;
    if (day && dayUsed + tokens > (limits.tokensPerDay ?? 0))
      return refuse("token_budget_exhausted", "tokensPerDay", day.end - wall);
    const month = limits.tokensPerMonth === undefined ? undefined : monthWindow(wall);
    const monthUsed = month ? windowUsed(existing?.month, month.id) : 0;
    if (month && monthUsed + tokens > (limits.tokensPerMonth ?? 0))
      return refuse("token_budget_exhausted", "tokensPerMonth", month.end - wall);

    if (rpm && rpmLevel !== undefined && rpmLevel < 1)
      return refuse("rate_limit_requests", "rpm", waitFor(rpmLevel, 1, rpm.rate));
    if (tpm && tpmLevel !== undefined && tpmLevel < tokens)
      return refuse("rate_limit_tokens", "tpm", waitFor(tpmLevel, tokens, tpm.rate));

    if (limits.maxConcurrency !== undefined && existing) {
      let live = 0;
      for (const expiry of existing.leases.values()) if (expiry > now) live++;
      if (live >= limits.maxConcurrency) return refuse("concurrency_limit", "maxConcurrency", undefined);
    }

    const state = existing ?? this.#create(request.tenant);
    if (rpm && rpmLevel !== undefined) {
      rpmLevel -= 1;
      state.rpm = { level: rpmLevel, at: now, ...rpm };
    }
    if (tpm && tpmLevel !== undefined) {
      tpmLevel -= tokens;
      state.tpm = { level: tpmLevel, at: now, ...tpm };
    }
    const leased = limits.maxConcurrency !== undefined;
    if (leased) {
      purgeLeases(state, now);
      state.leases.set(request.leaseId, now + Math.max(1, request.leaseTtlMs));
    }
    if (day) state.day = { ...day, used: dayUsed + tokens };
    if (month) state.month = { ...month, used: monthUsed + tokens };
    return { ok: true, snapshot: snapshot(), leased };
  }

  async reconcile(tenant: string, limits: BudgetLimits, deltaTokens: number): Promise<void> {
    this.#reconcile(tenant, limits, deltaTokens);
  }

  #reconcile(tenant: string, limits: BudgetLimits, deltaTokens: number): void {
    const now = this.#tick();
    const wall = this.#wall();
    const delta = Math.round(deltaTokens);
    if (delta === 0) return;
    if (!hasTokenLimits(limits)) return;
    const state = this.#tenants.get(tenant) ?? this.#create(tenant);
    if (limits.tpm !== undefined) {
      const tpm = rateOf(limits.tpm, limits.tpmBurst);
      const next = Math.max(-tpm.cap, Math.min(tpm.cap, level(state.tpm, tpm, now) - delta));
      state.tpm = { level: next, at: now, ...tpm };
    }
    if (limits.tokensPerDay !== undefined) {
      const day = dayWindow(wall);
      state.day = { ...day, used: Math.max(0, windowUsed(state.day, day.id) + delta) };
    }
    if (limits.tokensPerMonth !== undefined) {
      const month = monthWindow(wall);
      state.month = { ...month, used: Math.max(0, windowUsed(state.month, month.id) + delta) };
    }
  }

  async renewLease(tenant: string, leaseId: string, ttlMs: number): Promise<boolean> {
    const now = this.#tick();
    const state = this.#tenants.get(tenant);
    const expiry = state?.leases.get(leaseId);
    if (!state || expiry === undefined) return false;
    if (expiry <= now) {
      state.leases.delete(leaseId);
      return false;
    }
    state.leases.set(leaseId, now + Math.max(1, ttlMs));
    return true;
  }

  async releaseLease(tenant: string, leaseId: string): Promise<void> {
    this.#release(tenant, leaseId);
  }

  #release(tenant: string, leaseId: string): void {
    this.#tick();
    this.#tenants.get(tenant)?.leases.delete(leaseId);
  }

  async settle(
    tenant: string,
    limits: BudgetLimits,
    leaseId: string | undefined,
    deltaTokens: number,
  ): Promise<void> {
    this.#reconcile(tenant, limits, deltaTokens);
    if (leaseId !== undefined) this.#release(tenant, leaseId);
  }

  /**
   * Sets a tenant's RPM/TPM bucket levels (leases and day/month windows are kept): a
   * fail-open fallback continues from what the shared store last said, not from full.
   */
  seedBuckets(tenant: string, limits: BudgetLimits, levels: { requests?: number; tokens?: number }): void {
    const now = this.#clock.now();
    const state: TenantState = this.#tenants.get(tenant) ?? { leases: new Map() };
    if (limits.rpm !== undefined && levels.requests !== undefined) {
      const rpm = rateOf(limits.rpm, limits.rpmBurst);
      state.rpm = { level: Math.min(rpm.cap, Math.max(0, levels.requests)), at: now, ...rpm };
    }
    if (limits.tpm !== undefined && levels.tokens !== undefined) {
      const tpm = rateOf(limits.tpm, limits.tpmBurst);
      state.tpm = { level: Math.min(tpm.cap, Math.max(0, levels.tokens)), at: now, ...tpm };
    }
    this.#tenants.set(tenant, state);
  }

  /** Whether this store holds the lease (live or not yet purged). */
  hasLease(tenant: string, leaseId: string): boolean {
    return this.#tenants.get(tenant)?.leases.has(leaseId) ?? false;
  }

  async peek(tenant: string, limits: BudgetLimits): Promise<BudgetSnapshot> {
    const now = this.#tick();
    const state = this.#tenants.get(tenant);
    const rpm = limits.rpm === undefined ? undefined : rateOf(limits.rpm, limits.rpmBurst);
    const tpm = limits.tpm === undefined ? undefined : rateOf(limits.tpm, limits.tpmBurst);
    return snapshotOf(
      limits,
      rpm,
      rpm && level(state?.rpm, rpm, now),
      tpm,
      tpm && level(state?.tpm, tpm, now),
    );
  }

  async close(): Promise<void> {
    this.#tenants.clear();
  }

  /** Forgets everything that no longer matters (also run periodically by any call). */
  sweep(): void {
    const now = this.#clock.now();
    const wall = this.#wall();
    this.#lastSweep = now;
    for (const [tenant, state] of this.#tenants) {
      if (state.rpm && level(state.rpm, state.rpm, now) >= state.rpm.cap) state.rpm = undefined;
      if (state.tpm && level(state.tpm, state.tpm, now) >= state.tpm.cap) state.tpm = undefined;
      purgeLeases(state, now);
      if (state.day && state.day.end <= wall) state.day = undefined;
      if (state.month && state.month.end <= wall) state.month = undefined;
      if (!state.rpm && !state.tpm && !state.day && !state.month && state.leases.size === 0)
        this.#tenants.delete(tenant);
    }
  }

  #tick(): number {
    const now = this.#clock.now();
    if (now - this.#lastSweep >= this.#sweepIntervalMs) this.sweep();
    return now;
  }

  #create(tenant: string): TenantState {
    const state: TenantState = { leases: new Map() };
    this.#tenants.set(tenant, state);
    return state;
  }
}

function rateOf(rate: number, burst: number | undefined): { rate: number; cap: number } {
  return { rate, cap: bucketCapacity(rate, burst) };
}

/** The bucket's level now; no bucket is a full one. */
function level(bucket: Bucket | undefined, config: { rate: number; cap: number }, now: number): number {
  if (!bucket) return config.cap;
  const refilled = bucket.level + (Math.max(0, now - bucket.at) * config.rate) / MINUTE;
  return Math.min(config.cap, refilled);
}

function waitFor(current: number, want: number, rate: number): number {
  return current >= want ? 0 : Math.ceil(((want - current) * MINUTE) / rate);
}

function bucketState(limit: number, config: { rate: number; cap: number }, current: number): BucketState {
  return {
    limit,
    remaining: Math.max(0, Math.floor(current)),
    resetMs: waitFor(current, config.cap, config.rate),
  };
}

function snapshotOf(
  limits: BudgetLimits,
  rpm: { rate: number; cap: number } | undefined,
  rpmLevel: number | undefined,
  tpm: { rate: number; cap: number } | undefined,
  tpmLevel: number | undefined,
): BudgetSnapshot {
  const snapshot: { requests?: BucketState; tokens?: BucketState } = {};
  if (rpm && rpmLevel !== undefined && limits.rpm !== undefined)
    snapshot.requests = bucketState(limits.rpm, rpm, rpmLevel);
  if (tpm && tpmLevel !== undefined && limits.tpm !== undefined)
    snapshot.tokens = bucketState(limits.tpm, tpm, tpmLevel);
  return snapshot;
}

function purgeLeases(state: TenantState, now: number): void {
  for (const [id, expiry] of state.leases) if (expiry <= now) state.leases.delete(id);
}

function windowUsed(window: Window | undefined, id: number): number {
  return window && window.id === id ? window.used : 0;
}

const DAY = 86_400_000;

/** The UTC day containing `wall` (id: days since the epoch). */
export function dayWindow(wall: number): { id: number; end: number } {
  const id = Math.floor(wall / DAY);
  return { id, end: (id + 1) * DAY };
}

/** The UTC month containing `wall` (id: yyyymm). */
export function monthWindow(wall: number): { id: number; end: number } {
  const date = new Date(wall);
  const year = date.getUTCFullYear();
  const month = date.getUTCMonth();
  return { id: year * 100 + month + 1, end: Date.UTC(year, month + 1, 1) };
}
