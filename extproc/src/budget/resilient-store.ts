/**
 * The Redis budget store with the policy's outage mode. While Redis answers, every call goes
 * to it. The first StoreUnavailableError (timeout, refused connection, Redis error) starts an
 * outage: it is logged once and counted, and a background probe PINGs Redis (same deadline,
 * every `probeIntervalMs`) until it answers; then calls go back to Redis, with no restart.
 *
 *  - `fail-closed`: during an outage admit (and every other call) rejects with
 *    StoreUnavailableError at once — the caller answers 503 store_unavailable.
 *  - `fail-open`: admits go to a local MemoryBudgetStore whose limits are divided by the
 *    replica count last seen (rounded up, at least 1), so replicas falling back together
 *    stay near the cluster-wide limit. Leases taken locally are renewed and released
 *    locally, even after Redis is back; leases held in Redis when it went away are not
 *    renewed (they expire there by their TTL) but their release is still sent.
 *
 * Calls never wait on a sick Redis longer than its `timeoutMs`, and during an outage they
 * do not wait on it at all. close() closes the wrapped RedisBudgetStore too (close a
 * ReplicaRegistry sharing its client first).
 */
import type { Clock } from "../clock.ts";
import type { Logger } from "../log.ts";
import { silentLogger } from "../log.ts";
import { MemoryBudgetStore } from "./memory-store.ts";
import type { RedisBudgetStore } from "./redis-store.ts";
import {
  type AdmitRequest,
  type AdmitResult,
  type BudgetLimits,
  type BudgetSnapshot,
  type BudgetStore,
  bucketCapacity,
  isStoreUnavailable,
  StoreUnavailableError,
} from "./store.ts";

export type OutageMode = "fail-open" | "fail-closed";

/** Consecutive late replies that make an outage (a lost connection does at once). */
const OUTAGE_AFTER_FAILURES = 3;
export type StoreState = "ok" | "outage";

export interface ResilientBudgetStoreOptions {
  readonly redis: RedisBudgetStore;
  readonly onOutage: OutageMode;
  /** The replica count that scales the local fallback (e.g. ReplicaRegistry#count); default 1. */
  readonly replicas?: () => number;
  /** Background probe period during an outage, ms (default 500). */
  readonly probeIntervalMs?: number;
  readonly logger?: Logger;
  readonly onStateChange?: (state: StoreState, detail: string) => void;
  /** Clock of the local fallback store (default: the system clock). */
  readonly clock?: Clock;
  readonly wallClock?: () => number;
}

/** For metrics: monotonic counters since construction. */
export interface ResilientStoreCounters {
  /** Transitions ok → outage. */
  readonly outages: number;
  /** Admits answered by the local fallback (fail-open). */
  readonly fallbackAdmits: number;
  /** Calls rejected with StoreUnavailableError (fail-closed, or a failed Redis call). */
  readonly unavailable: number;
  /** Probes sent during outages. */
  readonly probes: number;
}

export class ResilientBudgetStore implements BudgetStore {
  readonly kind = "resilient" as const;
  readonly onOutage: OutageMode;
  readonly #redis: RedisBudgetStore;
  readonly #local: MemoryBudgetStore;
  readonly #replicas: () => number;
  readonly #probeIntervalMs: number;
  readonly #logger: Logger;
  readonly #onStateChange: ((state: StoreState, detail: string) => void) | undefined;
  #state: StoreState = "ok";
  #lastError: string | undefined;
  #outageSince: number | undefined;
  #probeTimer: NodeJS.Timeout | undefined;
  #probing = false;
  #closed = false;
  #counters = { outages: 0, fallbackAdmits: 0, unavailable: 0, probes: 0 };
  readonly #lastSeen = new Map<
    string,
    { requests: number | undefined; tokens: number | undefined; version: number }
  >();
  /** Which lastSeen version each tenant's local buckets were seeded from. */
  readonly #seededVersion = new Map<string, number>();
  #version = 0;
  /** Calls that failed in a row; one slow reply on a loaded host is not an outage. */
  #consecutiveFailures = 0;

  constructor(options: ResilientBudgetStoreOptions) {
    this.#redis = options.redis;
    this.onOutage = options.onOutage;
    this.#replicas = options.replicas ?? (() => 1);
    this.#probeIntervalMs = options.probeIntervalMs ?? 500;
    this.#logger = options.logger ?? silentLogger;
    this.#onStateChange = options.onStateChange;
    this.#local = new MemoryBudgetStore({
      ...(options.clock ? { clock: options.clock } : {}),
      ...(options.wallClock ? { wallClock: options.wallClock } : {}),
    });
  }

  state(): StoreState {
    return this.#state;
  }

  /** For /readyz: not ready only while Redis is unreachable under fail-closed. */
  ready(): { ok: boolean; detail: string } {
    if (this.#state === "ok") return { ok: true, detail: "redis ok" };
    const detail = `redis unreachable (${this.onOutage}): ${this.#lastError ?? "unknown"}`;
    return { ok: this.onOutage === "fail-open", detail };
  }

  get counters(): ResilientStoreCounters {
    return { ...this.#counters };
  }

  get lastError(): string | undefined {
    return this.#lastError;
  }

  /** The fallback's limits: each limit divided by the replica count, rounded up, at least 1. */
  localLimits(limits: BudgetLimits): BudgetLimits {
    const replicas = Math.max(1, Math.floor(this.#replicas()) || 1);
    const scale = (value: number | undefined) =>
      value === undefined ? undefined : Math.max(1, Math.ceil(value / replicas));
    return {
      rpm: scale(limits.rpm),
      tpm: scale(limits.tpm),
      rpmBurst: scale(limits.rpmBurst),
      tpmBurst: scale(limits.tpmBurst),
      maxConcurrency: scale(limits.maxConcurrency),
      tokensPerDay: scale(limits.tokensPerDay),
      tokensPerMonth: scale(limits.tokensPerMonth),
    };
  }

  async admit(request: AdmitRequest): Promise<AdmitResult> {
    let sent = false;
    try {
      return await this.#route(
        async () => {
          sent = true;
          const result = await this.#redis.admit(request);
          this.#remember(request.tenant, result.snapshot);
          return result;
        },
        async () => {
          if (sent) this.#withdrawLateLease(request);
          return this.#fallbackAdmit(request);
        },
      );
    } catch (error) {
      if (sent && isStoreUnavailable(error)) this.#withdrawLateLease(request);
      throw error;
    }
  }

  /**
   * An admit that got no answer in time may still run in Redis later and take a lease there
   * that nobody releases (this request is served locally, or refused), holding one of the
   * tenant's slots for a whole lease TTL. A release sent after it on the same connection
   * runs after it. (Its charge is the documented cost of a timeout; nothing is resent.)
   */
  #withdrawLateLease(request: AdmitRequest): void {
    if (request.limits.maxConcurrency === undefined) return;
    this.#redis.releaseLease(request.tenant, request.leaseId).catch(() => {});
  }

  async #fallbackAdmit(request: AdmitRequest): Promise<AdmitResult> {
    this.#counters.fallbackAdmits++;
    const limits = this.#fallbackLimits(request.limits, request.tokens);
    // Continue from what Redis last said for this tenant (this replica's share of it),
    // not from full buckets: a fallback must not hand out a fresh minute's allowance.
    // Re-seeded whenever Redis has reported newer levels since the last fallback.
    const last = this.#lastSeen.get(request.tenant);
    if (last && last.version !== this.#seededVersion.get(request.tenant)) {
      this.#seededVersion.set(request.tenant, last.version);
      const replicas = Math.max(1, Math.floor(this.#replicas()) || 1);
      this.#local.seedBuckets(request.tenant, limits, {
        ...(last.requests !== undefined ? { requests: last.requests / replicas } : {}),
        ...(last.tokens !== undefined ? { tokens: last.tokens / replicas } : {}),
      });
    }
    const result = await this.#local.admit({ ...request, limits });
    return { ...result, snapshot: reportLimits(result.snapshot, request.limits) };
  }

  /**
   * This replica's share of the limits, except that a request the tenant's real limits
   * allow is never "too large" for the share: the share's bucket grows to hold it (and
   * refills at the share's rate), so it is rate limited, not refused for good.
   */
  #fallbackLimits(real: BudgetLimits, tokens: number): BudgetLimits {
    const local = this.localLimits(real);
    const fit = (share: number | undefined, full: number | undefined) =>
      share === undefined || full === undefined ? share : Math.max(share, Math.min(full, Math.ceil(tokens)));
    const tpmCap = real.tpm === undefined ? undefined : bucketCapacity(real.tpm, real.tpmBurst);
    const localTpmCap = local.tpm === undefined ? undefined : bucketCapacity(local.tpm, local.tpmBurst);
    return {
      ...local,
      ...(local.tpm !== undefined ? { tpmBurst: fit(localTpmCap, tpmCap) } : {}),
      ...(local.tokensPerDay !== undefined
        ? { tokensPerDay: fit(local.tokensPerDay, real.tokensPerDay) }
        : {}),
      ...(local.tokensPerMonth !== undefined
        ? { tokensPerMonth: fit(local.tokensPerMonth, real.tokensPerMonth) }
        : {}),
    };
  }

  /** The last bucket levels Redis reported per tenant (bounded), to seed a fallback. */
  #remember(tenant: string, snapshot: BudgetSnapshot): void {
    if (!snapshot.requests && !snapshot.tokens) return;
    if (!this.#lastSeen.has(tenant) && this.#lastSeen.size >= 10_000) {
      const oldest = this.#lastSeen.keys().next().value;
      if (oldest !== undefined) this.#lastSeen.delete(oldest);
    }
    this.#lastSeen.set(tenant, {
      requests: snapshot.requests?.remaining,
      tokens: snapshot.tokens?.remaining,
      version: ++this.#version,
    });
    if (this.#seededVersion.size > 10_000) this.#seededVersion.clear();
  }

  async reconcile(tenant: string, limits: BudgetLimits, deltaTokens: number): Promise<void> {
    await this.#route(
      () => this.#redis.reconcile(tenant, limits, deltaTokens),
      () => this.#local.reconcile(tenant, this.localLimits(limits), deltaTokens),
    );
  }

  async renewLease(tenant: string, leaseId: string, ttlMs: number): Promise<boolean> {
    if (this.#local.hasLease(tenant, leaseId)) return this.#local.renewLease(tenant, leaseId, ttlMs);
    // A Redis lease during a fail-open outage: nothing to renew it in; it lives out its TTL.
    return this.#route(
      () => this.#redis.renewLease(tenant, leaseId, ttlMs),
      async () => true,
    );
  }

  async releaseLease(tenant: string, leaseId: string): Promise<void> {
    if (this.#local.hasLease(tenant, leaseId)) return this.#local.releaseLease(tenant, leaseId);
    if (this.#state === "outage") {
      // Sent even now: nothing waits on a release, and a Redis that was only slow (paused,
      // starved of CPU) frees the slot when it catches up, not a whole lease TTL later.
      // Its outcome says nothing the probe does not.
      await this.#redis.releaseLease(tenant, leaseId).catch(() => {});
      return;
    }
    await this.#route(
      () => this.#redis.releaseLease(tenant, leaseId),
      async () => {},
    );
  }

  /** One Redis call while Redis is healthy. A lease taken locally is released locally
   * (only the tokens go to Redis); during an outage, as releaseLease and reconcile do. */
  async settle(
    tenant: string,
    limits: BudgetLimits,
    leaseId: string | undefined,
    deltaTokens: number,
  ): Promise<void> {
    if (leaseId !== undefined && (this.#local.hasLease(tenant, leaseId) || this.#state === "outage")) {
      await this.releaseLease(tenant, leaseId);
      await this.reconcile(tenant, limits, deltaTokens);
      return;
    }
    await this.#route(
      () => this.#redis.settle(tenant, limits, leaseId, deltaTokens),
      () => this.#local.reconcile(tenant, this.localLimits(limits), deltaTokens),
    );
  }

  async peek(tenant: string, limits: BudgetLimits): Promise<BudgetSnapshot> {
    return this.#route(
      () => this.#redis.peek(tenant, limits),
      () => this.#local.peek(tenant, this.localLimits(limits)),
    );
  }

  async close(): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#probeTimer);
    this.#probeTimer = undefined;
    await this.#local.close();
    await this.#redis.close();
  }

  /** Redis when healthy; on failure (or during an outage) the mode decides. */
  async #route<T>(remote: () => Promise<T>, local: () => Promise<T>): Promise<T> {
    if (this.#state === "ok") {
      try {
        const replies = this.#redis.replies;
        const result = await remote();
        // Only an answer from Redis ends a streak of late ones: a call that needed none
        // says nothing of its health (while Redis was paused, every request's reconcile
        // for a tenant without token limits "succeeded", and no outage was ever declared).
        if (this.#redis.replies !== replies) this.#consecutiveFailures = 0;
        return result;
      } catch (error) {
        if (!isStoreUnavailable(error)) throw error;
        this.#lastError = error.message;
        // A lost connection is an outage at once; a late reply only after a few in a row.
        // Either way this call is answered by the outage mode.
        if (++this.#consecutiveFailures >= OUTAGE_AFTER_FAILURES || !this.#redis.connected)
          this.#enterOutage(error);
      }
    }
    if (this.onOutage === "fail-open") return local();
    this.#counters.unavailable++;
    throw new StoreUnavailableError(`budget store unavailable: ${this.#lastError ?? "redis outage"}`);
  }

  #enterOutage(error: StoreUnavailableError): void {
    this.#lastError = error.message;
    if (this.#state === "outage" || this.#closed) return;
    this.#state = "outage";
    this.#outageSince = Date.now();
    this.#counters.outages++;
    this.#logger.warn("budget store outage", {
      onOutage: this.onOutage,
      error: error.message,
      replicas: this.#replicas(),
    });
    this.#onStateChange?.("outage", error.message);
    this.#scheduleProbe();
  }

  #scheduleProbe(): void {
    if (this.#closed || this.#probeTimer) return;
    this.#probeTimer = setTimeout(() => {
      this.#probeTimer = undefined;
      void this.#probe();
    }, this.#probeIntervalMs);
    this.#probeTimer.unref();
  }

  async #probe(): Promise<void> {
    if (this.#closed || this.#probing || this.#state === "ok") return;
    this.#probing = true;
    this.#counters.probes++;
    try {
      await this.#redis.ping();
      if (this.#closed) return;
      this.#consecutiveFailures = 0;
      const downMs = this.#outageSince === undefined ? 0 : Date.now() - this.#outageSince;
      this.#state = "ok";
      this.#outageSince = undefined;
      this.#logger.info("budget store recovered", { onOutage: this.onOutage, downMs });
      this.#onStateChange?.("ok", `redis answered after ${downMs} ms`);
    } catch (error) {
      this.#lastError = (error as Error).message;
      this.#scheduleProbe();
    } finally {
      this.#probing = false;
    }
  }
}

/** The fallback's snapshot with the tenant's real limits (remaining stays this replica's). */
function reportLimits(snapshot: BudgetSnapshot, limits: BudgetLimits): BudgetSnapshot {
  return {
    ...(snapshot.requests
      ? { requests: { ...snapshot.requests, limit: limits.rpm ?? snapshot.requests.limit } }
      : {}),
    ...(snapshot.tokens
      ? { tokens: { ...snapshot.tokens, limit: limits.tpm ?? snapshot.tokens.limit } }
      : {}),
  };
}
