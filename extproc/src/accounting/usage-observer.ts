import { HEADERS } from "../headers.ts";
import type { Logger } from "../log.ts";
import type { TokenCounter } from "../openai/tokens.ts";
import { createUsageParser, type Usage, type UsageParser } from "./usage.ts";
import type { UsageRegistry } from "./usage-registry.ts";

/** A report for a request whose main stream runs on another replica. */
export interface OrphanedUsage {
  readonly requestId: string;
  readonly tenantId: string;
  /** Tokens charged to the tenant's budgets at admission. */
  readonly chargedTokens: number;
  /** Prompt tokens fairgate counted at admission (used when `usage` has none). */
  readonly promptTokens: number | undefined;
  readonly usage: Usage;
}

export interface UsageStreamContext {
  registry: UsageRegistry;
  tokenCounter(): TokenCounter;
  logger: Logger;
  /**
   * Corrects the budget charge of another replica's request directly in the budget store;
   * true when it did. Called at most once per stream, only for a report no local main
   * stream ever waited for.
   */
  reconcileOrphan?: (orphan: OrphanedUsage) => boolean;
  /**
   * Sends the usage of another replica's request on to that replica, whose fair queue
   * and output predictor learn from it (usage-relay.ts). Called at most once per stream,
   * only for a report no local main stream ever waited for.
   */
  relayOrphan?: (requestId: string, usage: Usage) => void;
}

interface Handoff {
  tenantId: string;
  chargedTokens: number;
  promptTokens: number | undefined;
}

/**
 * Watches one response on its way to the client, to learn the request's usage and report
 * it to the registry. It reads the upstream request headers the main stream added so that
 * any replica can reconcile the budget charge: the request id, the tenant, the tokens
 * charged at admission (only with a budget ticket) and the prompt tokens counted then
 * (estimated usage carries no prompt count). Clients cannot send them: the main stream
 * strips every x-fairgate-*. It never fails on unexpected input: what it cannot read, it
 * does not report.
 */
export class UsageObserver {
  readonly #ctx: UsageStreamContext;
  #requestId: string | undefined;
  /** A local main stream registered the id: it reconciles, this observer never does. */
  #local = false;
  #handoff: Handoff | undefined;
  #parser: UsageParser | undefined;
  /** Response status was not 2xx: the engine generated nothing. */
  #failedStatus = false;
  #sawOutput = false;
  #done = false;

  constructor(ctx: UsageStreamContext) {
    this.#ctx = ctx;
  }

  /** True once the usage was reported (or is known never to be). */
  get done(): boolean {
    return this.#done;
  }

  requestHeaders(headers: ReadonlyMap<string, string>): void {
    if (this.#done) return;
    const id = headers.get(HEADERS.requestId)?.trim();
    if (!id || this.#requestId !== undefined) return;
    this.#requestId = id;
    this.#local = this.#ctx.registry.observe(id, () => this.#current(false));
    const tenantId = headers.get(HEADERS.tenant)?.trim();
    const chargedTokens = parseCount(headers.get(HEADERS.chargedTokens));
    if (!this.#local && tenantId && chargedTokens !== undefined) {
      this.#handoff = {
        tenantId,
        chargedTokens,
        promptTokens: parseCount(headers.get(HEADERS.promptTokens)),
      };
    }
  }

  responseHeaders(headers: ReadonlyMap<string, string>, endOfStream: boolean): void {
    if (this.#done || this.#requestId === undefined) return;
    const status = Number(headers.get(":status"));
    if (!(status >= 200 && status < 300)) this.#failedStatus = true;
    else {
      this.#parser = createUsageParser(
        { contentType: headers.get("content-type"), contentEncoding: headers.get("content-encoding") },
        this.#ctx.tokenCounter(),
      );
    }
    if (endOfStream) this.#finish(true);
  }

  responseBody(body: Uint8Array | undefined, endOfStream: boolean): void {
    if (this.#done) return;
    if (body && body.length > 0) {
      if (!this.#sawOutput && this.#local && this.#requestId !== undefined) {
        this.#sawOutput = true;
        this.#ctx.registry.firstOutput(this.#requestId);
      }
      this.#parser?.push(body);
    }
    if (endOfStream) this.#finish(true);
  }

  /** The response is complete (its trailers went by). */
  responseEnded(): void {
    if (this.#done) return;
    this.#finish(true);
  }

  /** The stream ended (deferred close after the request, reset, error). */
  close(): void {
    if (this.#done) return;
    this.#finish(false);
  }

  #current(complete: boolean): Usage | undefined {
    if (this.#failedStatus) return { promptTokens: undefined, completionTokens: 0, exact: true, complete };
    return this.#parser?.result(complete);
  }

  #finish(complete: boolean): void {
    this.#done = true;
    const id = this.#requestId;
    if (id === undefined) return;
    let usage: Usage | undefined;
    try {
      usage = this.#current(complete);
    } catch (error) {
      this.#ctx.logger.debug("usage stream: cannot read usage", { error: String(error) });
    }
    if (this.#ctx.registry.report(id, usage)) return;
    // Nobody here waits for it. Observed here: the local main stream already settled and
    // decided (late report). Never observed here: the main stream runs on another replica
    // and keeps its admission charge, so this stream corrects it in the shared store, and
    // relays the usage to that replica for its fair queue and output predictor.
    if (this.#local || !usage) return;
    try {
      this.#ctx.relayOrphan?.(id, usage);
    } catch (error) {
      this.#ctx.logger.warn("usage stream: orphan relay failed", { error: String(error) });
    }
    const handoff = this.#handoff;
    if (!handoff || !this.#ctx.reconcileOrphan) return;
    try {
      if (this.#ctx.reconcileOrphan({ requestId: id, ...handoff, usage }))
        this.#ctx.registry.orphanReconciled();
    } catch (error) {
      this.#ctx.logger.warn("usage stream: orphan reconcile failed", { error: String(error) });
    }
  }
}

/** A non-negative integer header value; undefined when absent or malformed. */
function parseCount(value: string | undefined): number | undefined {
  const trimmed = value?.trim();
  if (!trimmed || !/^\d{1,15}$/.test(trimmed)) return undefined;
  return Number(trimmed);
}
