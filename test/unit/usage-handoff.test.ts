/**
 * The budget handoff between the two ext_proc streams of one request: a usage report
 * for a main stream registered on this replica goes to that stream (which reconciles its
 * own ticket); a report no local main stream ever waited for (the main stream ran on
 * another replica) is reconciled by the usage stream itself from the request's
 * x-fairgate-tenant / x-fairgate-charged-tokens headers. Never both, never twice.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { reconcileOrphanedUsage } from "../../extproc/src/accounting/orphan-reconcile.ts";
import type { Usage } from "../../extproc/src/accounting/usage.ts";
import { UsageRegistry } from "../../extproc/src/accounting/usage-registry.ts";
import { BudgetGate } from "../../extproc/src/budget/budget-gate.ts";
import { MemoryBudgetStore } from "../../extproc/src/budget/memory-store.ts";
import type { BudgetLimits } from "../../extproc/src/budget/store.ts";
import { ManualClock } from "../../extproc/src/clock.ts";
import type { TenantPolicy } from "../../extproc/src/config/policy.ts";
import type { ProcessingRequest } from "../../extproc/src/grpc/messages.ts";
import { UsageStreamProcessor } from "../../extproc/src/grpc/usage-stream.ts";
import { HEADERS } from "../../extproc/src/headers.ts";
import { silentLogger } from "../../extproc/src/log.ts";
import { approximateCounter } from "../../extproc/src/openai/tokens.ts";
import { policyFrom, standardPolicyInput } from "../helpers/policy.ts";

const TPM = 10_000;
const CHARGED = 1_000;

/** A memory store that records every charge correction (reconcile, or settle's). */
class CountingStore extends MemoryBudgetStore {
  readonly deltas: number[] = [];
  override reconcile(tenant: string, limits: BudgetLimits, delta: number): Promise<void> {
    this.deltas.push(delta);
    return super.reconcile(tenant, limits, delta);
  }
  override settle(
    tenant: string,
    limits: BudgetLimits,
    leaseId: string | undefined,
    delta: number,
  ): Promise<void> {
    if (delta !== 0) this.deltas.push(delta);
    return super.settle(tenant, limits, leaseId, delta);
  }
}

function setup() {
  const clock = new ManualClock();
  const input = standardPolicyInput();
  input.tenants = (input.tenants ?? []).map((t) => (t.id === "globex" ? { ...t, limits: { tpm: TPM } } : t));
  const policy = policyFrom(input);
  const store = new CountingStore({ clock });
  const gate = new BudgetGate({ store, clock, logger: silentLogger });
  const registry = new UsageRegistry({ clock });
  const orphans: number[] = [];
  const usageStream = () =>
    new UsageStreamProcessor({
      registry,
      tokenCounter: () => approximateCounter,
      logger: silentLogger,
      reconcileOrphan: (orphan) => {
        orphans.push(orphan.chargedTokens);
        return reconcileOrphanedUsage(gate, policy, orphan);
      },
    });
  const tenant = policy.tenants.get("globex") as TenantPolicy;
  return { clock, policy, store, gate, registry, usageStream, orphans, tenant };
}

const header = (key: string, value: string) => ({ key, raw_value: Buffer.from(value) });

function requestHeaders(id: string, extra: Record<string, string>): ProcessingRequest {
  return {
    observability_mode: true,
    request_headers: {
      headers: {
        headers: [
          header(":method", "POST"),
          header(":path", "/v1/chat/completions"),
          header(HEADERS.requestId, id),
          ...Object.entries(extra).map(([k, v]) => header(k, v)),
        ],
      },
    },
  };
}

const handoffHeaders = (tenant = "globex", charged = CHARGED, prompt = 40) => ({
  [HEADERS.tenant]: tenant,
  [HEADERS.chargedTokens]: String(charged),
  [HEADERS.promptTokens]: String(prompt),
});

const responseHeaders: ProcessingRequest = {
  observability_mode: true,
  response_headers: {
    headers: { headers: [header(":status", "200"), header("content-type", "application/json")] },
  },
};

function body(text: string, endOfStream: boolean): ProcessingRequest {
  return { observability_mode: true, response_body: { body: Buffer.from(text), end_of_stream: endOfStream } };
}

const jsonWithUsage = (prompt: number, completion: number) =>
  JSON.stringify({
    choices: [{ message: { content: "hi" } }],
    usage: { prompt_tokens: prompt, completion_tokens: completion },
  });

/** What the main stream's settlement does when its request ends (pipeline/settlement.ts). */
async function mainSettles(
  ticket: ReturnType<UsageRegistry["register"]>,
  budget: Awaited<ReturnType<BudgetGate["admit"]>>,
  promptTokens: number,
  graceMs = 300,
): Promise<Usage | undefined> {
  const usage = await ticket.settle(graceMs);
  if (usage) budget.settle((usage.promptTokens ?? promptTokens) + usage.completionTokens);
  return usage;
}

const flush = async () => {
  for (let i = 0; i < 5; i++) await Promise.resolve();
};

describe("usage handoff between the main stream and the usage stream", () => {
  it("main stream local: the report goes to it, it reconciles once, the usage stream does not", async () => {
    const { store, gate, registry, usageStream, orphans, tenant } = setup();
    const budget = await gate.admit(tenant, CHARGED, "req-local");
    assert.equal(budget.chargedTokens, CHARGED);
    const ticket = registry.register("req-local");
    const stream = usageStream();
    stream.onMessage(requestHeaders("req-local", handoffHeaders()));
    stream.onMessage(responseHeaders);
    stream.onMessage(body(jsonWithUsage(40, 60), true));
    stream.close();
    const usage = await mainSettles(ticket, budget, 40);
    assert.equal(usage?.completionTokens, 60);
    await flush();
    assert.deepEqual(store.deltas, [100 - CHARGED]);
    assert.deepEqual(orphans, [], "the usage stream never reconciles a local request");
    assert.equal(registry.stats.reported, 1);
    assert.equal(registry.stats.orphaned, 0);
    assert.equal(registry.stats.orphanReconciled, 0);
    budget.settle(undefined);
  });

  it("main stream elsewhere: its registration settles as missing (charge kept), this usage stream reconciles once", async () => {
    // Replica A admitted and dispatched; replica B got the usage stream. One shared store.
    const a = setup();
    const b = setup();
    const gateB = new BudgetGate({ store: a.store, clock: a.clock, logger: silentLogger });
    const orphansB: number[] = [];
    const streamB = new UsageStreamProcessor({
      registry: b.registry,
      tokenCounter: () => approximateCounter,
      logger: silentLogger,
      reconcileOrphan: (orphan) => {
        orphansB.push(orphan.chargedTokens);
        return reconcileOrphanedUsage(gateB, b.policy, orphan);
      },
    });
    const budget = await a.gate.admit(a.tenant, CHARGED, "req-remote");
    const ticket = a.registry.register("req-remote");
    streamB.onMessage(requestHeaders("req-remote", handoffHeaders()));
    streamB.onMessage(responseHeaders);
    // A's main stream ends first: no usage stream attached there, so nothing to wait for.
    assert.equal(await mainSettles(ticket, budget, 40), undefined);
    assert.equal(a.registry.stats.missing, 1);
    streamB.onMessage(body(jsonWithUsage(40, 60), true));
    streamB.close(); // a close after the final report changes nothing
    await flush();
    assert.deepEqual(orphansB, [CHARGED]);
    assert.deepEqual(a.store.deltas, [100 - CHARGED], "exactly one reconcile, by B");
    assert.equal(b.registry.stats.orphaned, 1);
    assert.equal(b.registry.stats.orphanReconciled, 1);
    const peek = await a.store.peek("globex", { tpm: TPM });
    assert.equal(Math.round(peek.tokens?.remaining ?? 0), TPM - 100, "the bucket holds the actual usage");
    budget.settle(undefined);
  });

  it("an orphaned stream cut off mid-body reconciles its partial, with the admission's prompt count", async () => {
    const { store, registry, usageStream, orphans } = setup();
    const stream = usageStream();
    stream.onMessage(requestHeaders("req-cut", handoffHeaders("globex", CHARGED, 40)));
    stream.onMessage(responseHeaders);
    stream.onMessage(body('{"choices":[{"message":{"content":"one two three four', false));
    stream.close();
    await flush();
    assert.deepEqual(orphans, [CHARGED]);
    assert.equal(store.deltas.length, 1);
    const delta = store.deltas[0] as number;
    // prompt 40 (from the header) + a few estimated tokens, minus the 1000 charged.
    assert.ok(delta > 40 - CHARGED && delta < 60 - CHARGED, `delta ${delta}`);
    assert.equal(registry.stats.orphanReconciled, 1);
  });

  it("a late report for a local request that already settled is dropped, not reconciled again", async () => {
    const { clock, store, gate, registry, usageStream, orphans, tenant } = setup();
    const budget = await gate.admit(tenant, CHARGED, "req-late");
    const ticket = registry.register("req-late");
    const stream = usageStream();
    stream.onMessage(requestHeaders("req-late", handoffHeaders()));
    stream.onMessage(responseHeaders);
    stream.onMessage(body(jsonWithUsage(40, 60), false)); // usage seen, body not ended
    const settled = mainSettles(ticket, budget, 40, 300);
    clock.advance(300); // the grace passes: the main stream takes the partial view
    const usage = await settled;
    assert.equal(usage?.complete, false);
    assert.equal(registry.stats.partial, 1);
    stream.onMessage(body("", true)); // the final report arrives late
    await flush();
    assert.equal(store.deltas.length, 1, "reconciled once, by the main stream");
    assert.deepEqual(orphans, []);
    assert.equal(registry.stats.orphaned, 1);
    assert.equal(registry.stats.orphanReconciled, 0);
    budget.settle(undefined);
  });

  it("an orphaned report is relayed once, with or without a budget handoff; a local one never is", async () => {
    const { gate, registry, tenant } = setup();
    const relayed: Array<[string, number]> = [];
    const stream = () =>
      new UsageStreamProcessor({
        registry,
        tokenCounter: () => approximateCounter,
        logger: silentLogger,
        relayOrphan: (id, usage) => relayed.push([id, usage.completionTokens]),
      });
    const finish = (s: UsageStreamProcessor, id: string, headers: Record<string, string>) => {
      s.onMessage(requestHeaders(id, headers));
      s.onMessage(responseHeaders);
      s.onMessage(body(jsonWithUsage(40, 60), true));
      s.close();
    };
    finish(stream(), "remote-with-budget", handoffHeaders());
    finish(stream(), "remote-without-budget", { [HEADERS.tenant]: "acme" });
    const budget = await gate.admit(tenant, CHARGED, "local");
    const ticket = registry.register("local");
    finish(stream(), "local", handoffHeaders());
    await ticket.usage;
    assert.deepEqual(relayed, [
      ["remote-with-budget", 60],
      ["remote-without-budget", 60],
    ]);
    budget.settle(undefined);
  });

  it("no handoff headers (no budget ticket), unknown tenants and tenants without limits are skipped", async () => {
    const { store, registry, usageStream, orphans } = setup();
    const cases: Array<Record<string, string>> = [
      { [HEADERS.tenant]: "globex" }, // no charge header: nothing was charged
      handoffHeaders("nobody"), // not in the policy
      handoffHeaders("acme"), // listed, but without budget limits
      { [HEADERS.tenant]: "globex", [HEADERS.chargedTokens]: "12abc" }, // malformed
    ];
    for (const [i, headers] of cases.entries()) {
      const stream = usageStream();
      stream.onMessage(requestHeaders(`req-skip-${i}`, headers));
      stream.onMessage(responseHeaders);
      stream.onMessage(body(jsonWithUsage(40, 60), true));
    }
    await flush();
    assert.deepEqual(orphans, [CHARGED, CHARGED], "only well-formed handoffs are tried");
    assert.deepEqual(store.deltas, []);
    assert.equal(registry.stats.orphaned, 4);
    assert.equal(registry.stats.orphanReconciled, 0);
  });
});
