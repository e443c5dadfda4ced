import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { type ParsedExposition, parsePrometheusText } from "../../extproc/src/engine/prom-parse.ts";
import { startTestGateway, type TestGateway } from "../helpers/gateway.ts";
import { standardPolicyInput } from "../helpers/policy.ts";
import { extProcClient, type RawStream, sendChat } from "../helpers/raw-ext-proc.ts";

async function scrape(port: number): Promise<ParsedExposition> {
  const response = await fetch(`http://127.0.0.1:${port}/metrics`);
  assert.equal(response.status, 200);
  const parsed = parsePrometheusText(await response.text());
  assert.deepEqual(parsed.errors, []);
  return parsed;
}

/** The value of the one sample of `family` whose labels include `labels`, if any. */
function value(parsed: ParsedExposition, family: string, labels: Record<string, string> = {}) {
  const matches = (parsed.families.get(family)?.samples ?? []).filter((s) =>
    Object.entries(labels).every(([k, v]) => s.labels[k] === v),
  );
  assert.ok(matches.length <= 1, `${family} ${JSON.stringify(labels)} matches ${matches.length} samples`);
  return matches[0]?.value;
}

/** Scrapes until `check` holds (cancellations reach the server asynchronously). */
async function scrapeUntil(
  port: number,
  check: (parsed: ParsedExposition) => boolean,
  ms = 3_000,
): Promise<ParsedExposition> {
  const deadline = Date.now() + ms;
  for (;;) {
    const parsed = await scrape(port);
    if (check(parsed)) return parsed;
    if (Date.now() > deadline) return parsed;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

describe("gateway metrics, scraped from /metrics", () => {
  let gw: TestGateway;
  let client: ReturnType<typeof extProcClient>;
  const streams: RawStream[] = [];
  before(async () => {
    gw = await startTestGateway(
      standardPolicyInput({ backends: [{ name: "engine", maxInFlightRequests: 1 }] }),
    );
    client = extProcClient(gw.gateway.grpcPort);
  });
  after(async () => {
    for (const stream of streams) stream.cancel();
    client.close();
    await gw.close();
  });

  it("exports per-tenant and per-backend queue state, refusals by code and growing virtual counters", async () => {
    const port = gw.gateway.httpPort;
    const idle = await scrape(port);
    // Configured backends have series before their first request.
    assert.equal(value(idle, "fairgate_backend_queued_requests", { backend: "engine" }), 0);
    assert.equal(value(idle, "fairgate_backend_in_flight_requests", { backend: "engine" }), 0);

    const running = await sendChat(client, "key-acme"); // dispatched: the one engine slot
    streams.push(running);
    for (let i = 0; i < 2; i++) streams.push(await sendChat(client, "key-acme"));
    const globex: RawStream[] = [];
    for (let i = 0; i < 3; i++) globex.push(await sendChat(client, "key-globex"));
    streams.push(...globex);
    // initech has maxQueued 1: the second is refused with queue_full.
    streams.push(await sendChat(client, "key-initech"));
    streams.push(await sendChat(client, "key-initech"));

    const queued = await scrape(port);
    const acme = { tenant: "acme", tier: "premium" };
    const globexLabels = { tenant: "globex", tier: "standard" };
    assert.equal(value(queued, "fairgate_queued_requests", acme), 2);
    assert.equal(value(queued, "fairgate_queued_requests", globexLabels), 3);
    assert.equal(value(queued, "fairgate_queued_requests", { tenant: "initech" }), 1);
    assert.equal(value(queued, "fairgate_in_flight_requests", acme), 1);
    assert.equal(value(queued, "fairgate_in_flight_requests", globexLabels), 0);
    const acmeQueuedTokens = value(queued, "fairgate_queued_tokens", acme) ?? 0;
    const acmeInFlightTokens = value(queued, "fairgate_in_flight_tokens", acme) ?? 0;
    assert.ok(acmeInFlightTokens > 32, "prompt + max_tokens 32");
    assert.equal(acmeQueuedTokens, 2 * acmeInFlightTokens, "same request body");
    assert.equal(value(queued, "fairgate_queued_tokens", globexLabels), 3 * acmeInFlightTokens);
    assert.equal(value(queued, "fairgate_backend_queued_requests", { backend: "engine" }), 6);
    assert.equal(value(queued, "fairgate_backend_in_flight_requests", { backend: "engine" }), 1);
    assert.equal(
      value(queued, "fairgate_backend_in_flight_tokens", { backend: "engine" }),
      acmeInFlightTokens,
    );
    const worst = value(queued, "fairgate_worst_case_wait_seconds", globexLabels) ?? 0;
    const expected = value(queued, "fairgate_estimated_wait_seconds", globexLabels) ?? 0;
    assert.ok(worst > 0 && worst >= expected, `worst ${worst} >= expected ${expected}`);
    assert.equal(
      value(queued, "fairgate_requests_total", {
        tenant: "initech",
        outcome: "refused",
        code: "queue_full",
      }),
      1,
    );
    assert.equal(value(queued, "fairgate_requests_total", { tenant: "acme", outcome: "dispatched" }), 1);
    const counterBefore = value(queued, "fairgate_tenant_virtual_counter", {
      backend: "engine",
      tenant: "acme",
    });
    assert.ok(counterBefore !== undefined && counterBefore > 0, `acme's counter ${counterBefore}`);
    assert.equal(queued.families.get("fairgate_tenant_virtual_counter")?.type, "gauge");
    // /v1/queue shows the same counter, per backend.
    const view = (await (await fetch(`http://127.0.0.1:${port}/v1/queue`)).json()) as {
      tenants: Array<{ tenant: string; virtual_counters: Record<string, number> }>;
    };
    const acmeRow = view.tenants.find((t) => t.tenant === "acme");
    assert.equal(acmeRow?.virtual_counters.engine, counterBefore);

    // The running request ends: the next acme request (priority 0) is dispatched and charged.
    running.cancel();
    const after = await scrapeUntil(
      port,
      (p) => value(p, "fairgate_requests_total", { tenant: "acme", outcome: "dispatched" }) === 2,
    );
    assert.equal(value(after, "fairgate_requests_total", { tenant: "acme", outcome: "dispatched" }), 2);
    assert.equal(value(after, "fairgate_queued_requests", acme), 1);
    const counterAfter =
      value(after, "fairgate_tenant_virtual_counter", { backend: "engine", tenant: "acme" }) ?? 0;
    assert.ok(counterAfter > counterBefore, `acme's counter grew: ${counterBefore} -> ${counterAfter}`);
    const wait = after.families.get("fairgate_queue_wait_seconds");
    assert.equal(wait?.type, "histogram");
    const bucket = (le: string) =>
      wait?.samples.find(
        (s) =>
          s.name === "fairgate_queue_wait_seconds_bucket" && s.labels.tenant === "acme" && s.labels.le === le,
      )?.value;
    assert.equal(bucket("+Inf"), 2);
    assert.equal(bucket("600"), 2, "buckets reach 10 min");
    assert.ok(bucket("0.001") !== undefined, "buckets start at 1 ms");
    // The dispatched request had queued: its estimate's error is observed.
    const error = after.families.get("fairgate_wait_estimate_error_ratio");
    assert.equal(error?.type, "histogram");
    assert.equal(
      error?.samples.find(
        (s) => s.name === "fairgate_wait_estimate_error_ratio_count" && s.labels.backend === "engine",
      )?.value,
      1,
    );
    assert.equal(after.families.get("fairgate_wait_worst_case_exceeded_total")?.type, "counter");

    // A queued client that goes away is counted as cancelled, not as a refusal.
    globex[0]?.cancel();
    const cancelled = await scrapeUntil(
      port,
      (p) => value(p, "fairgate_requests_total", { tenant: "globex", outcome: "cancelled" }) === 1,
    );
    assert.equal(value(cancelled, "fairgate_requests_total", { tenant: "globex", outcome: "cancelled" }), 1);
    assert.equal(value(cancelled, "fairgate_queued_requests", globexLabels), 2);
  });
});
