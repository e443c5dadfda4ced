/**
 * Budgets in Redis, shared by every gateway replica. Each operation is one Lua script call
 * (lua/*.lua) using the server's clock, so limits hold exactly across replicas whatever their
 * clock skew. Keys live under `{keyPrefix}b:{tenant}:` — the `{tenant}` hash tag keeps one
 * tenant's keys in one cluster slot — and carry TTLs, so idle tenants cost nothing.
 *
 * Every call has a deadline (`timeoutMs`): on timeout, connection failure or any Redis error
 * it rejects with StoreUnavailableError; a refusal is a result, never an error.
 * Caveat: a call that timed out may still have reached Redis and be applied later (a charge
 * with no admission; ResilientBudgetStore follows such an admit with a release of its
 * lease). Charges are never resent after a reconnect.
 */
import type { Redis } from "ioredis";
import { createBudgetRedisClient } from "./redis-client.ts";
import { ADMIT_LIMIT, ADMIT_STATUS, type BudgetCommands, withBudgetCommands } from "./redis-scripts.ts";
import {
  type AdmitRequest,
  type AdmitResult,
  type BudgetLimits,
  type BudgetSnapshot,
  type BudgetStore,
  bucketCapacity,
  hasTokenLimits,
  StoreUnavailableError,
} from "./store.ts";

export interface RedisBudgetStoreOptions {
  /** redis:// or rediss:// URL; or pass `client`. */
  readonly url?: string;
  /** An existing client (not closed by close()). */
  readonly client?: Redis;
  /** Default "fairgate:". */
  readonly keyPrefix?: string;
  /** Deadline of every call, ms (default 25). */
  readonly timeoutMs?: number;
}

export class RedisBudgetStore implements BudgetStore {
  readonly kind = "redis" as const;
  readonly keyPrefix: string;
  readonly timeoutMs: number;
  readonly #client: Redis & BudgetCommands;
  readonly #ownsClient: boolean;
  #connecting: Promise<void> | undefined;
  #replies = 0;

  constructor(options: RedisBudgetStoreOptions) {
    this.keyPrefix = options.keyPrefix ?? "fairgate:";
    this.timeoutMs = options.timeoutMs ?? 25;
    if (options.client) {
      this.#client = withBudgetCommands(options.client);
      this.#ownsClient = false;
    } else if (options.url) {
      this.#client = withBudgetCommands(createBudgetRedisClient(options.url, this.timeoutMs));
      this.#ownsClient = true;
    } else {
      throw new TypeError("RedisBudgetStore needs a url or a client");
    }
  }

  /** The underlying client (with the budget commands defined), e.g. for a ReplicaRegistry. */
  get client(): Redis & BudgetCommands {
    return this.#client;
  }

  /** `{prefix}b:{tenant}:` — the braces are a cluster hash tag. */
  tenantKey(tenant: string, suffix: string): string {
    return `${this.keyPrefix}b:{${tenant}}:${suffix}`;
  }

  async admit(request: AdmitRequest): Promise<AdmitResult> {
    const { tenant, limits } = request;
    const reply = await this.call("admit", () =>
      this.#client.fairgateBudgetAdmit(
        this.tenantKey(tenant, "rpm"),
        this.tenantKey(tenant, "tpm"),
        this.tenantKey(tenant, "leases"),
        this.tenantKey(tenant, "day"),
        this.tenantKey(tenant, "month"),
        limits.rpm ?? 0,
        limits.rpm === undefined ? 0 : bucketCapacity(limits.rpm, limits.rpmBurst),
        limits.tpm ?? 0,
        limits.tpm === undefined ? 0 : bucketCapacity(limits.tpm, limits.tpmBurst),
        limits.maxConcurrency ?? 0,
        limits.tokensPerDay ?? 0,
        limits.tokensPerMonth ?? 0,
        Math.max(0, Math.ceil(request.tokens)),
        request.leaseId,
        Math.max(1, Math.ceil(request.leaseTtlMs)),
      ),
    );
    const [status, limitIndex, retryAfterMs, rr, rs, tr, ts, leased] = reply;
    const snapshot = snapshotFrom(limits, rr, rs, tr, ts);
    if (status === 0) return { ok: true, snapshot, leased: leased === 1 };
    const code = ADMIT_STATUS[status];
    const limit = ADMIT_LIMIT[limitIndex];
    if (!code || !limit) throw new StoreUnavailableError(`redis admit: unexpected reply ${String(reply)}`);
    return { ok: false, code, limit, retryAfterMs: retryAfterMs < 0 ? undefined : retryAfterMs, snapshot };
  }

  async reconcile(tenant: string, limits: BudgetLimits, deltaTokens: number): Promise<void> {
    const delta = Math.round(deltaTokens);
    if (delta === 0) return;
    if (!hasTokenLimits(limits)) return;
    await this.call("reconcile", () =>
      this.#client.fairgateBudgetReconcile(
        this.tenantKey(tenant, "tpm"),
        this.tenantKey(tenant, "day"),
        this.tenantKey(tenant, "month"),
        limits.tpm ?? 0,
        limits.tpm === undefined ? 0 : bucketCapacity(limits.tpm, limits.tpmBurst),
        limits.tokensPerDay ?? 0,
        limits.tokensPerMonth ?? 0,
        delta,
      ),
    );
  }

  async renewLease(tenant: string, leaseId: string, ttlMs: number): Promise<boolean> {
    const renewed = await this.call("renew", () =>
      this.#client.fairgateBudgetRenew(
        this.tenantKey(tenant, "leases"),
        leaseId,
        Math.max(1, Math.ceil(ttlMs)),
      ),
    );
    return renewed === 1;
  }

  async releaseLease(tenant: string, leaseId: string): Promise<void> {
    await this.call("release", () =>
      this.#client.fairgateBudgetRelease(this.tenantKey(tenant, "leases"), leaseId),
    );
  }

  async settle(
    tenant: string,
    limits: BudgetLimits,
    leaseId: string | undefined,
    deltaTokens: number,
  ): Promise<void> {
    const delta = hasTokenLimits(limits) ? Math.round(deltaTokens) : 0;
    if (delta === 0 && leaseId === undefined) return;
    await this.call("settle", () =>
      this.#client.fairgateBudgetSettle(
        this.tenantKey(tenant, "tpm"),
        this.tenantKey(tenant, "day"),
        this.tenantKey(tenant, "month"),
        this.tenantKey(tenant, "leases"),
        limits.tpm ?? 0,
        limits.tpm === undefined ? 0 : bucketCapacity(limits.tpm, limits.tpmBurst),
        limits.tokensPerDay ?? 0,
        limits.tokensPerMonth ?? 0,
        delta,
        leaseId ?? "",
      ),
    );
  }

  async peek(tenant: string, limits: BudgetLimits): Promise<BudgetSnapshot> {
    if (limits.rpm === undefined && limits.tpm === undefined) return {};
    const [rr, rs, tr, ts] = await this.call("peek", () =>
      this.#client.fairgateBudgetPeek(
        this.tenantKey(tenant, "rpm"),
        this.tenantKey(tenant, "tpm"),
        limits.rpm ?? 0,
        limits.rpm === undefined ? 0 : bucketCapacity(limits.rpm, limits.rpmBurst),
        limits.tpm ?? 0,
        limits.tpm === undefined ? 0 : bucketCapacity(limits.tpm, limits.tpmBurst),
      ),
    );
    return snapshotFrom(limits, rr, rs, tr, ts);
  }

  /** PING under the same deadline: the outage probe. */
  async ping(): Promise<void> {
    const pong = await this.call("ping", () => this.#client.ping());
    if (pong !== "PONG") throw new StoreUnavailableError(`redis ping: unexpected reply ${pong}`);
  }

  async close(): Promise<void> {
    if (this.#ownsClient) this.#client.disconnect();
  }

  /** True while the client holds a working connection. */
  get connected(): boolean {
    return this.#client.status === "ready";
  }

  /** Calls Redis answered within their deadline so far. An operation with nothing to send
   * (a reconcile for a tenant without token limits) resolves without one. */
  get replies(): number {
    return this.#replies;
  }

  /** Runs one Redis operation under the deadline; every failure becomes StoreUnavailableError. */
  async call<T>(what: string, run: () => Promise<T>): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    try {
      const attempt = (async () => {
        await this.#ensureConnected();
        return await run();
      })();
      attempt.catch(() => {});
      const deadline = new Promise<never>((_, reject) => {
        // Timers run before I/O in Node's loop: when the loop itself lagged past the
        // deadline, a reply already waiting on the socket would lose the race to the timer.
        // One setImmediate lets pending I/O land first, so only a silent Redis times out.
        timer = setTimeout(
          () =>
            setImmediate(() =>
              reject(new StoreUnavailableError(`redis ${what}: no answer within ${this.timeoutMs} ms`)),
            ),
          this.timeoutMs,
        );
      });
      const reply = await Promise.race([attempt, deadline]);
      this.#replies++;
      return reply;
    } catch (error) {
      if (error instanceof StoreUnavailableError) throw error;
      throw new StoreUnavailableError(`redis ${what} failed: ${(error as Error).message}`, { cause: error });
    } finally {
      clearTimeout(timer);
    }
  }

  #ensureConnected(): Promise<void> | undefined {
    const status = this.#client.status;
    if (status === "wait" || status === "end") {
      this.#connecting ??= this.#client.connect().finally(() => {
        this.#connecting = undefined;
      });
    }
    return this.#connecting;
  }
}

function snapshotFrom(
  limits: BudgetLimits,
  requestsRemaining: number,
  requestsResetMs: number,
  tokensRemaining: number,
  tokensResetMs: number,
): BudgetSnapshot {
  const snapshot: { requests?: BudgetSnapshot["requests"]; tokens?: BudgetSnapshot["tokens"] } = {};
  if (limits.rpm !== undefined && requestsRemaining >= 0)
    snapshot.requests = { limit: limits.rpm, remaining: requestsRemaining, resetMs: requestsResetMs };
  if (limits.tpm !== undefined && tokensRemaining >= 0)
    snapshot.tokens = { limit: limits.tpm, remaining: tokensRemaining, resetMs: tokensResetMs };
  return snapshot;
}
