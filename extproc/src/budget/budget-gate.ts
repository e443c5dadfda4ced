/**
 * The request path's use of the budget store: one atomic admit per request before it is
 * queued, a concurrency lease kept alive while the request lives, one settle when it is
 * over (the charge corrected to what the response revealed and the lease released, in one
 * store call), and the OpenAI rate-limit headers for every response.
 */
import type { Clock, TimerHandle } from "../clock.ts";
import type { TenantPolicy } from "../config/policy.ts";
import { FairgateError } from "../errors.ts";
import type { Logger } from "../log.ts";
import { type BudgetLimits, type BudgetSnapshot, type BudgetStore, hasBudgetLimits } from "./store.ts";

export interface BudgetGateOptions {
  store: BudgetStore;
  clock: Clock;
  logger: Logger;
  /** A lease not renewed within this time expires (default 30 s). */
  leaseTtlMs?: number;
  /** Observes each admit's outcome, duration, charge and resulting snapshot (metrics). */
  onAdmit?: (
    tenant: TenantPolicy,
    outcome: string,
    seconds: number,
    tokens: number,
    snapshot?: BudgetSnapshot,
  ) => void;
  /** Observes reconciliations (tokens corrected, may be negative). */
  onReconcile?: (tenant: TenantPolicy, deltaTokens: number) => void;
}

/** What an admitted request holds. `settle` must be called once when the request is over. */
export interface BudgetTicket {
  readonly snapshot: BudgetSnapshot;
  /** Tokens charged at admission; undefined when the tenant has no budget limits (nothing
   * was charged, nothing to reconcile). */
  readonly chargedTokens?: number;
  /**
   * The request is over: corrects the charge to `actualTokens` (prompt + completion really
   * used; undefined: the admission charge stands) and releases the lease, in one store
   * call that nobody waits for. Later calls do nothing.
   */
  settle(actualTokens: number | undefined): void;
}

const NO_TICKET: BudgetTicket = { snapshot: {}, settle: () => {} };

export class BudgetGate {
  readonly #store: BudgetStore;
  readonly #clock: Clock;
  readonly #logger: Logger;
  readonly #leaseTtlMs: number;
  readonly #onAdmit: BudgetGateOptions["onAdmit"];
  readonly #onReconcile: BudgetGateOptions["onReconcile"];
  /** Smoothed time a lease is held, per tenant: how soon a concurrency slot frees. */
  readonly #holdMs = new Map<string, number>();

  constructor(options: BudgetGateOptions) {
    this.#store = options.store;
    this.#clock = options.clock;
    this.#logger = options.logger;
    this.#leaseTtlMs = options.leaseTtlMs ?? 30_000;
    this.#onAdmit = options.onAdmit;
    this.#onReconcile = options.onReconcile;
  }

  get store(): BudgetStore {
    return this.#store;
  }

  /** Charges `tokens` against every limit of the tenant, or refuses with a FairgateError. */
  async admit(tenant: TenantPolicy, tokens: number, requestId: string): Promise<BudgetTicket> {
    const limits = budgetLimitsOf(tenant);
    if (!hasBudgetLimits(limits)) return NO_TICKET;
    const started = this.#clock.now();
    let result: Awaited<ReturnType<BudgetStore["admit"]>>;
    try {
      result = await this.#store.admit({
        tenant: tenant.id,
        limits,
        tokens,
        leaseId: requestId,
        leaseTtlMs: this.#leaseTtlMs,
      });
    } catch (error) {
      this.#onAdmit?.(tenant, "store_unavailable", (this.#clock.now() - started) / 1000, tokens);
      this.#logger.warn("budget store unavailable", { tenant: tenant.id, error: String(error) });
      // The store is probed about every half second; a retry a second later may find it.
      throw new FairgateError("store_unavailable", { headers: { "retry-after": "1" } });
    }
    this.#onAdmit?.(
      tenant,
      result.ok ? "admitted" : result.code,
      (this.#clock.now() - started) / 1000,
      tokens,
      result.snapshot,
    );
    if (!result.ok) {
      const headers = rateLimitHeaders(result.snapshot);
      if (result.code !== "request_too_large_for_limit") {
        const retryMs = result.retryAfterMs ?? this.#concurrencyRetryMs(tenant, limits);
        headers["retry-after"] = String(Math.min(60, Math.max(1, Math.ceil(retryMs / 1000))));
      }
      throw new FairgateError(result.code, {
        message: refusalMessage(result.code, result.limit, limits, tokens),
        headers,
      });
    }
    return this.#ticket(tenant, limits, tokens, requestId, result.leased, result.snapshot);
  }

  /** The tenant's bucket state without charging (headers for passthrough requests). */
  async peek(tenant: TenantPolicy): Promise<BudgetSnapshot> {
    const limits = budgetLimitsOf(tenant);
    if (!hasBudgetLimits(limits)) return {};
    try {
      return await this.#store.peek(tenant.id, limits);
    } catch {
      return {};
    }
  }

  /**
   * Corrects a charge made elsewhere (another replica admitted the request; this one read
   * its usage): delta = actualTokens - chargedTokens, straight to the store. False when
   * the tenant has no budget limits (nothing was charged) or the numbers are unusable.
   */
  reconcileCharge(tenant: TenantPolicy, chargedTokens: number, actualTokens: number): boolean {
    const limits = budgetLimitsOf(tenant);
    if (!hasBudgetLimits(limits) || !Number.isFinite(chargedTokens) || !Number.isFinite(actualTokens))
      return false;
    const delta = Math.round(actualTokens - chargedTokens);
    if (delta === 0) return true;
    this.#onReconcile?.(tenant, delta);
    this.#store.reconcile(tenant.id, limits, delta).catch((error: unknown) => {
      this.#logger.warn("budget reconcile failed", { tenant: tenant.id, error: String(error) });
    });
    return true;
  }

  #ticket(
    tenant: TenantPolicy,
    limits: BudgetLimits,
    charged: number,
    leaseId: string,
    leased: boolean,
    snapshot: BudgetSnapshot,
  ): BudgetTicket {
    const acquired = this.#clock.now();
    let renewal: TimerHandle | undefined;
    let settled = false;
    const renew = () => {
      renewal = this.#clock.setTimeout(() => {
        if (settled) return;
        this.#store.renewLease(tenant.id, leaseId, this.#leaseTtlMs).then(
          (alive) => {
            if (!alive) this.#logger.warn("concurrency lease expired before renewal", { tenant: tenant.id });
          },
          () => {},
        );
        renew();
      }, this.#leaseTtlMs / 3);
    };
    if (leased) renew();
    return {
      snapshot,
      chargedTokens: charged,
      settle: (actualTokens) => {
        if (settled) return;
        settled = true;
        if (renewal) this.#clock.clearTimeout(renewal);
        const delta =
          actualTokens === undefined || !Number.isFinite(actualTokens)
            ? 0
            : Math.round(actualTokens - charged);
        if (delta !== 0) this.#onReconcile?.(tenant, delta);
        if (leased) this.#observeHold(tenant.id, this.#clock.now() - acquired);
        if (delta === 0 && !leased) return;
        this.#store.settle(tenant.id, limits, leased ? leaseId : undefined, delta).catch((error: unknown) => {
          // A lease not released expires by itself within its TTL; a lost correction is worth a word.
          if (delta !== 0)
            this.#logger.warn("budget reconcile failed", { tenant: tenant.id, error: String(error) });
        });
      },
    };
  }

  /** Smooths how long this tenant's leases are held (for concurrency retry-after). */
  #observeHold(tenantId: string, held: number): void {
    const previous = this.#holdMs.get(tenantId);
    this.#holdMs.set(tenantId, previous === undefined ? held : previous + 0.2 * (held - previous));
    if (this.#holdMs.size > 100_000) this.#holdMs.delete(this.#holdMs.keys().next().value as string);
  }

  /** With maxConcurrency slots each held for about `hold` ms, one frees every hold / slots. */
  #concurrencyRetryMs(tenant: TenantPolicy, limits: BudgetLimits): number {
    const hold = this.#holdMs.get(tenant.id) ?? 1_000;
    return hold / Math.max(1, limits.maxConcurrency ?? 1);
  }
}

export function budgetLimitsOf(tenant: TenantPolicy): BudgetLimits {
  const { rpm, tpm, rpmBurst, tpmBurst, maxConcurrency, tokensPerDay, tokensPerMonth } = tenant.limits;
  return { rpm, tpm, rpmBurst, tpmBurst, maxConcurrency, tokensPerDay, tokensPerMonth };
}

/** OpenAI's x-ratelimit-* headers for whichever buckets the tenant has. */
export function rateLimitHeaders(snapshot: BudgetSnapshot): Record<string, string> {
  const headers: Record<string, string> = {};
  for (const [kind, state] of [
    ["requests", snapshot.requests],
    ["tokens", snapshot.tokens],
  ] as const) {
    if (!state) continue;
    headers[`x-ratelimit-limit-${kind}`] = String(state.limit);
    headers[`x-ratelimit-remaining-${kind}`] = String(Math.max(0, Math.floor(state.remaining)));
    headers[`x-ratelimit-reset-${kind}`] = formatReset(state.resetMs);
  }
  return headers;
}

/** OpenAI's reset format: "1s", "6m0s", "1h2m3s", "250ms". */
export function formatReset(ms: number): string {
  if (!Number.isFinite(ms) || ms <= 0) return "0s";
  if (ms < 1_000) return `${Math.ceil(ms)}ms`;
  const total = Math.ceil(ms / 1000);
  const hours = Math.floor(total / 3600);
  const minutes = Math.floor((total % 3600) / 60);
  const seconds = total % 60;
  if (hours > 0) return `${hours}h${minutes}m${seconds}s`;
  if (minutes > 0) return `${minutes}m${seconds}s`;
  return `${seconds}s`;
}

function refusalMessage(
  code: string,
  limit: keyof BudgetLimits,
  limits: BudgetLimits,
  tokens: number,
): string {
  const value = limits[limit];
  switch (code) {
    case "rate_limit_requests":
      return `Rate limit reached: ${value} requests per minute.`;
    case "rate_limit_tokens":
      return `Rate limit reached: ${value} tokens per minute; this request needs ${tokens}.`;
    case "concurrency_limit":
      return `Concurrency limit reached: ${value} requests in progress at once.`;
    case "token_budget_exhausted":
      return `Token budget exhausted: ${limit === "tokensPerDay" ? "daily" : "monthly"} budget of ${value} tokens.`;
    default:
      return `This request needs ${tokens} tokens, more than the ${limit} limit of ${value} can ever allow.`;
  }
}
