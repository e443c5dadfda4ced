import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { getPreset } from "../../extproc/src/sim/presets.ts";
import { type SimServer, startSimServer } from "../../extproc/src/sim/sim-server.ts";
import { httpRequest, type RecordingUpstream, startRecordingUpstream } from "../helpers/ext-proc-fake.ts";
import { type FrontProxy, startBuiltinFront } from "../helpers/front-proxy.ts";
import { startTestGateway, type TestGateway } from "../helpers/gateway.ts";
import { standardPolicyInput } from "../helpers/policy.ts";

const chat = (extra: Record<string, unknown> = {}) =>
  JSON.stringify({ model: "m", messages: [{ role: "user", content: "hello" }], max_tokens: 8, ...extra });

describe("engine priority passthrough (backends[].enginePriority)", () => {
  let gw: TestGateway;
  let upstream: RecordingUpstream;
  let front: FrontProxy;
  before(async () => {
    gw = await startTestGateway(
      standardPolicyInput({ backends: [{ name: "engine", enginePriority: true }] }),
    );
    upstream = await startRecordingUpstream();
    front = await startBuiltinFront(gw.gateway.grpcPort, upstream.url);
  });
  after(async () => {
    await front.close();
    await upstream.close();
    await gw.close();
  });

  const post = (key: string, body: string) =>
    httpRequest(front.url, {
      method: "POST",
      path: "/v1/chat/completions",
      headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
      body,
    });

  it("sets the body's priority to the tenant's tier priority, with a matching content-length", async () => {
    // acme is premium (priority 0), globex standard (priority 1); a client-sent priority is overwritten.
    for (const [key, expected] of [
      ["key-acme", 0],
      ["key-globex", 1],
    ] as const) {
      const response = await post(key, chat({ priority: -100, temperature: 0.5 }));
      assert.equal(response.status, 200);
      const seen = upstream.requests.at(-1);
      assert.ok(seen);
      const body = JSON.parse(seen.body.toString()) as Record<string, unknown>;
      assert.equal(body.priority, expected);
      assert.equal(body.temperature, 0.5, "the rest of the body is kept");
      assert.equal(Number(seen.headers["content-length"]), seen.body.length);
    }
  });
});

describe("engine priority passthrough against sim-engine --scheduling-policy priority", () => {
  let engine: SimServer;
  let gw: TestGateway;
  let front: FrontProxy;
  before(async () => {
    engine = await startSimServer({
      listen: "127.0.0.1:0",
      preset: getPreset("test"),
      servedModelName: "m",
      schedulingPolicy: "priority",
    });
    gw = await startTestGateway(
      standardPolicyInput({ backends: [{ name: "engine", enginePriority: true }] }),
    );
    front = await startBuiltinFront(gw.gateway.grpcPort, engine.url);
  });
  after(async () => {
    await front.close();
    await gw.close();
    await engine.close();
  });

  it("is accepted by a priority-scheduling vLLM-compatible engine", async () => {
    const response = await httpRequest(front.url, {
      method: "POST",
      path: "/v1/chat/completions",
      headers: { authorization: "Bearer key-globex", "content-type": "application/json" },
      body: chat(),
    });
    assert.equal(response.status, 200, response.body.toString());
    const body = JSON.parse(response.body.toString()) as { usage: { completion_tokens: number } };
    assert.ok(body.usage.completion_tokens >= 1);
  });
});
