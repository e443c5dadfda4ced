/**
 * The estimates as an independent client checks them: an Envoy-emulating client floods a
 * backend capped at 4 requests in flight (50 ms of service each) through real ext_proc
 * streams, reads x-fairgate-estimated-wait-ms and x-fairgate-worst-case-wait-ms on every
 * response and compares them with the waits it timed itself; /v1/estimate, asked right
 * before a request is sent, must predict that request's wait as well.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { hashApiKey } from "../../extproc/src/identity/identify.ts";
import { accuracy, type ClientOptions, flood, type Observed } from "../helpers/estimate-client.ts";
import { startTestGateway, type TestGateway } from "../helpers/gateway.ts";
import { extProcClient } from "../helpers/raw-ext-proc.ts";

describe("estimates through the ext_proc protocol (4 slots, 50 ms service)", () => {
  let gw: TestGateway;
  let grpc: ReturnType<typeof extProcClient>;
  let options: ClientOptions;
  before(async () => {
    const tenant = (id: string) => ({ id, tier: "one", apiKeys: [hashApiKey(`key-${id}`)] });
    gw = await startTestGateway({
      tiers: { one: { priority: 0, weight: 1 } },
      tenants: [tenant("heavy"), tenant("other")],
      backends: [{ name: "engine", maxInFlightRequests: 4 }],
      defaults: { tier: "one", limits: { maxQueued: 1000, maxQueueWaitMs: 60_000 } },
    } as never);
    grpc = extProcClient(gw.gateway.grpcPort);
    options = { grpc, httpPort: gw.gateway.httpPort, serviceMs: () => 50 };
  });
  after(async () => {
    grpc.close();
    await gw.close();
  });

  // This file runs alone (Makefile): beside another test file on a 2-core machine, a 50 ms
  // sleep stops being 50 ms and no estimate can follow. The bounds still leave room for
  // some load; on an idle machine the errors are 5-10 % and 2-4 % past the worst case.
  it("a tenant keeping 40 requests outstanding from a cold start: headers and /v1/estimate within 25 % median, worst case exceeded by <= 15 %", async () => {
    const log: Observed[] = [];
    const until = performance.now() + 3_000;
    await Promise.all([
      flood(options, "heavy", 36, until, log),
      flood(options, "heavy", 4, until, log, true),
    ]);
    const waited = log.filter((o) => o.waitedMs > 2 || o.estimatedMs > 0);
    assert.ok(waited.length >= 150, `${waited.length} requests waited`);
    const headers = accuracy(waited);
    assert.ok(headers.medianWaitMs >= 300, `median wait ${headers.medianWaitMs} ms: the flood queued`);
    assert.ok(headers.medianError <= 0.25, `headers: median error ${headers.medianError.toFixed(2)}`);
    assert.ok(
      headers.violations <= 0.15,
      `headers: ${(headers.violations * 100).toFixed(1)} % past the worst case`,
    );
    const asked = accuracy(
      waited.filter((o) => o.askedMs !== undefined),
      (o) => o.askedMs,
    );
    assert.ok(asked.count >= 15, `${asked.count} requests asked /v1/estimate first`);
    assert.ok(asked.medianError <= 0.25, `/v1/estimate: median error ${asked.medianError.toFixed(2)}`);
  });

  // After the flood above, the heavy tenant's measured pace is that of a tenant alone: now
  // it has a competitor, and its estimates must follow at once (the pace is scaled to the
  // weight now waiting), not after the 20 s measurement window has forgotten.
  it("then two equal tenants share the backend: each one's estimates within 25 % median", async () => {
    const heavy: Observed[] = [];
    const other: Observed[] = [];
    const start = performance.now();
    const until = start + 3_000;
    await Promise.all([flood(options, "heavy", 20, until, heavy), flood(options, "other", 20, until, other)]);
    for (const [name, log] of [
      ["heavy", heavy],
      ["other", other],
    ] as const) {
      // Requests of the first burst were sent before the competitor's, which then went
      // first under VTC: no estimate made before an arrival can know of it.
      const settled = log.filter((o) => o.sentAt > start + 100);
      const result = accuracy(settled.filter((o) => o.waitedMs > 2 || o.estimatedMs > 0));
      assert.ok(result.medianError <= 0.25, `${name}: median error ${result.medianError.toFixed(2)}`);
      assert.ok(
        result.violations <= 0.15,
        `${name}: ${(result.violations * 100).toFixed(1)} % past the worst case`,
      );
    }
  });
});
