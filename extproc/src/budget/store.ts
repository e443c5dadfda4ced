/**
 * Per-tenant budgets: RPM and TPM token buckets, concurrency leases, daily and monthly
 * token budgets. One interface, two implementations that pass one conformance suite
 * (test/conformance/budget-store.test.ts): Redis (shared by every gateway replica, Lua
 * scripts, server-side time) and memory (the embedded default). A refusal is a result, not
 * an error; an error means the store itself failed (see resilient-store.ts).
 */
import type { Limits } from "../config/schema.ts";

/** The limits a budget check enforces (a subset of the policy's tenant limits). */
export type BudgetLimits = Pick<
  Limits,
  "rpm" | "tpm" | "rpmBurst" | "tpmBurst" | "maxConcurrency" | "tokensPerDay" | "tokensPerMonth"
>;

export type BudgetRefusalCode =
  | "rate_limit_requests"
  | "rate_limit_tokens"
  | "concurrency_limit"
  | "token_budget_exhausted"
  /** The request alone needs more than the bucket (or budget) can ever hold. */
  | "request_too_large_for_limit";

export interface AdmitRequest {
  readonly tenant: string;
  readonly limits: BudgetLimits;
  /** Tokens charged now: prompt + expected output. */
  readonly tokens: number;
  /** Unique per request; names the concurrency lease. */
  readonly leaseId: string;
  /** The lease expires unless renewed within this time (a crashed replica leaks nothing longer). */
  readonly leaseTtlMs: number;
}

/** What the OpenAI-style x-ratelimit-* headers report, after the check. */
export interface BucketState {
  readonly limit: number;
  readonly remaining: number;
  /** Milliseconds until the bucket is full again. */
  readonly resetMs: number;
}

export interface BudgetSnapshot {
  readonly requests?: BucketState;
  readonly tokens?: BucketState;
}

export type AdmitResult =
  | { readonly ok: true; readonly snapshot: BudgetSnapshot; readonly leased: boolean }
  | {
      readonly ok: false;
      readonly code: BudgetRefusalCode;
      /** When to retry: refill time for buckets, window end for budgets; undefined for concurrency. */
      readonly retryAfterMs: number | undefined;
      /** Which limit refused, e.g. "rpm", "tpm", "maxConcurrency", "tokensPerDay". */
      readonly limit: keyof BudgetLimits;
      readonly snapshot: BudgetSnapshot;
    };

export interface BudgetStore {
  readonly kind: "memory" | "redis" | "resilient";
  /** Checks every limit and, only if all pass, charges them all: one atomic step. */
  admit(request: AdmitRequest): Promise<AdmitResult>;
  /**
   * Corrects the token charge once actual usage is known: delta = actual - charged (may be
   * negative). Applies to the TPM bucket (clamped to its capacity) and the day/month budgets.
   */
  reconcile(tenant: string, limits: BudgetLimits, deltaTokens: number): Promise<void>;
  /** Extends a lease; false if it had already expired (the slot may have been reused). */
  renewLease(tenant: string, leaseId: string, ttlMs: number): Promise<boolean>;
  releaseLease(tenant: string, leaseId: string): Promise<void>;
  /**
   * A finished request in one step (one round trip for a shared store): corrects its token
   * charge by `deltaTokens` exactly as reconcile, and releases `leaseId` exactly as
   * releaseLease when one is given.
   */
  settle(
    tenant: string,
    limits: BudgetLimits,
    leaseId: string | undefined,
    deltaTokens: number,
  ): Promise<void>;
  /** The bucket state without charging anything (headers on passthrough, metrics). */
  peek(tenant: string, limits: BudgetLimits): Promise<BudgetSnapshot>;
  close(): Promise<void>;
}

/** True when the limits include a token limit, the only ones a reconcile corrects. */
export function hasTokenLimits(limits: BudgetLimits): boolean {
  return limits.tpm !== undefined || limits.tokensPerDay !== undefined || limits.tokensPerMonth !== undefined;
}

/** True when no limit of the set needs the store. */
export function hasBudgetLimits(limits: BudgetLimits): boolean {
  return (
    limits.rpm !== undefined ||
    limits.tpm !== undefined ||
    limits.maxConcurrency !== undefined ||
    limits.tokensPerDay !== undefined ||
    limits.tokensPerMonth !== undefined
  );
}

/**
 * The budget store itself failed (timeout, connection refused, Redis error): not a refusal.
 * Under `onOutage: fail-closed` the caller answers 503 store_unavailable.
 */
export class StoreUnavailableError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "StoreUnavailableError";
  }
}

export function isStoreUnavailable(error: unknown): error is StoreUnavailableError {
  return error instanceof StoreUnavailableError;
}

/** Bucket size: the configured burst, else one minute's allowance. */
export function bucketCapacity(rate: number, burst: number | undefined): number {
  return burst ?? rate;
}
