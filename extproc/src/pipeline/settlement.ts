import type { LateUsage } from "../accounting/late-usage.ts";
import type { UsageTicket } from "../accounting/usage-registry.ts";
import type { BudgetTicket } from "../budget/budget-gate.ts";
import type { TenantPolicy } from "../config/policy.ts";
import type { Logger } from "../log.ts";
import type { Dispatch } from "../scheduler/types.ts";
import type { UsageInfo } from "./context.ts";

export interface SettlementContext {
  logger: Logger;
  lateUsage?: LateUsage;
  onUsage?: (info: UsageInfo) => void;
}

/** What a dispatched request holds until its usage is known. */
export interface Dispatched {
  readonly dispatch: Dispatch;
  /** usage: the response's actual usage, awaited when the request ends. */
  readonly usage: UsageTicket;
  /** Tokens charged to the scheduler at dispatch (prompt + expected output). */
  readonly chargedTokens: number;
  readonly promptTokens: number;
}

/**
 * The one owner of what a request holds — its budget ticket (lease, token charge) and,
 * once dispatched, its engine slot — and the one place that gives them back. Each is
 * released exactly once, whichever way the request ends: refused, cancelled while queued,
 * or finished (with its usage, or after the grace without it). A dispatched request's
 * budget settles (one store call: the charge corrected, the lease released) once both its
 * stream has ended and its usage is known; the usage normally arrives first.
 */
export class Settlement {
  readonly #ctx: SettlementContext;
  readonly #requestId: string;
  readonly #tenant: () => TenantPolicy | undefined;
  #ticket: BudgetTicket | undefined;
  #dispatched: Dispatched | undefined;
  #finishing = false;
  #streamOver = false;
  /** Set once the usage settled: the tokens really used (undefined: the charge stands). */
  #actualTokens: { value: number | undefined } | undefined;

  constructor(ctx: SettlementContext, requestId: string, tenant: () => TenantPolicy | undefined) {
    this.#ctx = ctx;
    this.#requestId = requestId;
    this.#tenant = tenant;
  }

  /** The budget charge this request holds, if it was admitted and not yet refunded. */
  get ticket(): BudgetTicket | undefined {
    return this.#ticket;
  }

  get dispatch(): Dispatch | undefined {
    return this.#dispatched?.dispatch;
  }

  admitted(ticket: BudgetTicket): void {
    this.#ticket = ticket;
  }

  dispatched(dispatched: Dispatched): void {
    this.#dispatched = dispatched;
  }

  /** Never dispatched (refused, or the client left): nothing was generated, so nothing is
   * charged, and the lease goes back. */
  refund(): void {
    const ticket = this.#ticket;
    this.#ticket = undefined;
    ticket?.settle(0);
  }

  /** usage: frees the engine slot once the response's usage is known (or `graceMs`
   * passed), telling the scheduler the tokens generated, settles the budget if the stream
   * is over, and reports the usage to onUsage. Later calls do nothing. */
  responseEnded(graceMs: number): void {
    const held = this.#dispatched;
    if (!held || this.#finishing) return;
    this.#finishing = true;
    void held.usage.settle(graceMs).then((usage) => {
      held.dispatch.release(usage ? { completionTokens: usage.completionTokens } : undefined);
      // Its usage stream may have reached another replica, which relays the usage here.
      if (!usage)
        this.#ctx.lateUsage?.settled(this.#requestId, (late) =>
          held.dispatch.correct?.({ completionTokens: late.completionTokens }),
        );
      // Budgets: charge what was really used (prompt + generated, even if cut off by a
      // cancel); without a report the admission charge stands.
      this.#actualTokens = {
        value: usage ? (usage.promptTokens ?? held.promptTokens) + usage.completionTokens : undefined,
      };
      this.#settleBudget();
      this.#report(held, usage);
    });
  }

  /** The stream is over: whatever was not given back yet is. */
  streamEnded(graceMs: number): void {
    if (!this.#dispatched) {
      this.refund();
      return;
    }
    this.#streamOver = true;
    this.responseEnded(graceMs);
    this.#settleBudget();
  }

  #settleBudget(): void {
    const actual = this.#actualTokens;
    if (!this.#streamOver || !actual) return;
    const ticket = this.#ticket;
    this.#ticket = undefined;
    ticket?.settle(actual.value);
  }

  #report(held: Dispatched, usage: UsageInfo["usage"]): void {
    const tenant = this.#tenant();
    if (!tenant || !this.#ctx.onUsage) return;
    try {
      this.#ctx.onUsage({ tenant, requestId: this.#requestId, chargedTokens: held.chargedTokens, usage });
    } catch (error) {
      this.#ctx.logger.error("onUsage failed", { stream: this.#requestId, error: String(error) });
    }
  }
}
