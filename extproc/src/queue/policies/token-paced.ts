import type { WorkProbe } from "../policy.ts";

/**
 * What FCFS and round-robin share: no per-tenant accounts, and a progress clock that is
 * the cost dispatched, so the work ahead of a request is the distance that clock must
 * move, one unit per unit of cost.
 */
export abstract class TokenPacedPolicy {
  readonly tenantPaced = false;
  #dispatchedTokens = 0;

  abstract workAhead(probe: WorkProbe): number;

  /** Moves the progress clock by the cost of a request just dispatched. */
  protected countDispatched(cost: number): void {
    this.#dispatchedTokens += cost;
  }

  complete(): void {}

  progress(_priority: number): number {
    return this.#dispatchedTokens;
  }

  distance(probe: WorkProbe): number {
    return this.workAhead(probe);
  }

  progressPerToken(_probe: WorkProbe): number {
    return 1;
  }

  tenantCounters(): ReadonlyMap<string, number> {
    return new Map();
  }
}
