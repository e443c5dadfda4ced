import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { parsePrometheusText } from "../../extproc/src/engine/prom-parse.ts";
import { startTestGateway, type TestGateway } from "../helpers/gateway.ts";
import { standardPolicyInput } from "../helpers/policy.ts";
import { extProcClient, openRawStream, requestHeaders, sendChat } from "../helpers/raw-ext-proc.ts";
import { startRedis, type TestRedis } from "../helpers/redis.ts";

async function get(port: number, path: string) {
  const response = await fetch(`http://127.0.0.1:${port}${path}`);
  const text = await response.text();
  return { status: response.status, text, type: response.headers.get("content-type") ?? "" };
}

describe("HTTP API", () => {
  let gw: TestGateway;
  before(async () => {
    gw = await startTestGateway(
      standardPolicyInput({ backends: [{ name: "engine", maxInFlightRequests: 1 }] }),
    );
  });
  after(() => gw.close());

  it("answers /healthz and /readyz", async () => {
    const health = await get(gw.gateway.httpPort, "/healthz");
    assert.equal(health.status, 200);
    assert.deepEqual(JSON.parse(health.text), { status: "ok" });
    const ready = await get(gw.gateway.httpPort, "/readyz");
    assert.equal(ready.status, 200);
    const body = JSON.parse(ready.text);
    assert.equal(body.ready, true);
    assert.equal(body.checks.store.ok, true);
  });

  it("serves /metrics in parseable Prometheus text with fairgate's series", async () => {
    const client = extProcClient(gw.gateway.grpcPort);
    const refused = openRawStream(client);
    refused.send(requestHeaders({ authorization: "Bearer nope" }));
    await refused.next();
    refused.end();
    client.close();

    const metrics = await get(gw.gateway.httpPort, "/metrics");
    assert.equal(metrics.status, 200);
    assert.match(metrics.type, /text\/plain/);
    const parsed = parsePrometheusText(metrics.text);
    assert.deepEqual(parsed.errors, []);
    const requests = parsed.families.get("fairgate_requests_total");
    assert.equal(requests?.type, "counter");
    assert.ok(
      requests?.samples.some(
        (s) => s.labels.outcome === "refused" && s.labels.code === "unknown_api_key" && s.value >= 1,
      ),
    );
    for (const name of [
      "fairgate_ext_proc_streams_active",
      "fairgate_queued_requests",
      "fairgate_policy_info",
      "fairgate_queue_wait_seconds",
    ]) {
      assert.ok(parsed.families.has(name), `missing ${name}`);
    }
  });

  it("shows queued and in-flight requests per tenant in /v1/queue", async () => {
    const client = extProcClient(gw.gateway.grpcPort);
    const running = await sendChat(client, "key-acme");
    const waiting = await sendChat(client, "key-globex");

    const queue = JSON.parse((await get(gw.gateway.httpPort, "/v1/queue")).text);
    assert.equal(queue.object, "fairgate.queue");
    assert.equal(queue.policy_version, gw.policy.version);
    const acme = queue.tenants.find((t: { tenant: string }) => t.tenant === "acme");
    const globex = queue.tenants.find((t: { tenant: string }) => t.tenant === "globex");
    assert.equal(acme.in_flight, 1);
    assert.equal(globex.queued, 1);
    assert.ok(globex.worst_case_wait_ms >= globex.estimated_wait_ms);
    assert.deepEqual(Object.keys(globex).sort(), [
      "estimated_wait_ms",
      "in_flight",
      "in_flight_tokens",
      "queued",
      "queued_tokens",
      "tenant",
      "tier",
      "virtual_counters",
      "worst_case_wait_ms",
    ]);

    const estimate = JSON.parse(
      (await get(gw.gateway.httpPort, "/v1/estimate?tenant=globex&prompt_tokens=100&max_tokens=50")).text,
    );
    assert.equal(estimate.object, "fairgate.estimate");
    assert.equal(estimate.tenant, "globex");
    assert.ok(estimate.estimated_wait_ms > 0, "a queue ahead means a positive estimate");
    assert.ok(estimate.worst_case_wait_ms >= estimate.estimated_wait_ms);
    running.cancel();
    waiting.cancel();
    client.close();
  });

  it("refuses bad /v1/estimate parameters with the OpenAI envelope", async () => {
    const missing = await get(gw.gateway.httpPort, "/v1/estimate");
    assert.equal(missing.status, 400);
    assert.equal(JSON.parse(missing.text).error.param, "tenant");
    const bad = await get(gw.gateway.httpPort, "/v1/estimate?tenant=acme&max_tokens=-1");
    assert.equal(bad.status, 400);
    assert.equal(JSON.parse(bad.text).error.param, "max_tokens");
    const unknownRoute = await get(gw.gateway.httpPort, "/nope");
    assert.equal(unknownRoute.status, 404);
  });
});

describe("readiness follows the store and its outage mode", () => {
  let redis: TestRedis;
  before(async () => {
    redis = await startRedis();
  });
  after(() => redis.stop());

  for (const onOutage of ["fail-closed", "fail-open"] as const) {
    it(`${onOutage}: ready while Redis answers; ${onOutage === "fail-closed" ? "not ready" : "still ready"} while it is paused`, async () => {
      const gw = await startTestGateway(
        standardPolicyInput({ store: { redis: redis.url, onOutage, timeoutMs: 100 } }),
      );
      try {
        const up = await gw.gateway.readiness();
        assert.equal(up.ready, true, JSON.stringify(up));
        redis.pause();
        const down = await gw.gateway.readiness();
        assert.equal(down.ready, onOutage === "fail-open", JSON.stringify(down));
        assert.match(down.checks.store?.detail ?? "", /unreachable/);
        redis.resume();
        const back = await gw.gateway.readiness();
        assert.equal(back.ready, true, JSON.stringify(back));
      } finally {
        redis.resume();
        await gw.close();
      }
    });
  }
});
