import assert from "node:assert/strict";
import type { ServerResponse } from "node:http";
import { request as httpRequestRaw } from "node:http";
import { after, before, describe, it } from "node:test";
import { httpRequest, type RecordingUpstream, startRecordingUpstream } from "../helpers/ext-proc-fake.ts";
import { type FrontProxy, startBuiltinFront } from "../helpers/front-proxy.ts";
import { startTestGateway, type TestGateway } from "../helpers/gateway.ts";
import { standardPolicyInput } from "../helpers/policy.ts";

const chat = (extra: Record<string, unknown> = {}) =>
  JSON.stringify({ model: "m", messages: [{ role: "user", content: "hello" }], max_tokens: 16, ...extra });

/** An engine stand-in: /slow answers after 400 ms, /stream sends SSE chunks 100 ms apart. */
function engine(
  request: { url?: string; headers: Record<string, unknown> },
  response: ServerResponse,
  body: Buffer,
) {
  const parsed = body.length ? JSON.parse(body.toString()) : {};
  if (parsed.stream) {
    response.writeHead(200, { "content-type": "text/event-stream" });
    let n = 0;
    const timer = setInterval(() => {
      if (n < 3) response.write(`data: {"n":${n++}}\n\n`);
      else {
        response.end("data: [DONE]\n\n");
        clearInterval(timer);
      }
    }, 100);
    return;
  }
  const delay = typeof parsed.user === "string" && parsed.user.startsWith("slow") ? 400 : 0;
  setTimeout(() => {
    const payload = JSON.stringify({
      object: "chat.completion",
      tenant: request.headers["x-fairgate-tenant"],
    });
    response.writeHead(200, {
      "content-type": "application/json",
      "content-length": Buffer.byteLength(payload),
    });
    response.end(payload);
  }, delay);
}

describe("client → built-in proxy → fairgate (gRPC) → engine", () => {
  let gw: TestGateway;
  let upstream: RecordingUpstream;
  let front: FrontProxy;

  before(async () => {
    gw = await startTestGateway(
      standardPolicyInput({ backends: [{ name: "engine", maxInFlightRequests: 1 }] }),
    );
    upstream = await startRecordingUpstream((req, res, body) => engine(req, res, body));
    front = await startBuiltinFront(gw.gateway.grpcPort, upstream.url);
  });
  after(async () => {
    await front.close();
    await upstream.close();
    await gw.close();
  });

  const post = (key: string, body: string, headers: Record<string, string> = {}) =>
    httpRequest(front.url, {
      method: "POST",
      path: "/v1/chat/completions",
      headers: { authorization: `Bearer ${key}`, "content-type": "application/json", ...headers },
      body,
    });

  it("refuses an unknown key with 401 and never reaches the engine", async () => {
    const before = upstream.requests.length;
    const response = await post("wrong", chat());
    assert.equal(response.status, 401);
    assert.equal(JSON.parse(response.body.toString()).error.code, "unknown_api_key");
    assert.equal(upstream.requests.length, before);
  });

  it("identifies the tenant, strips spoofed headers upstream and reports waits to the client", async () => {
    const response = await post("key-acme", chat(), { "x-fairgate-tenant": "evil", "x-fairgate-debug": "1" });
    assert.equal(response.status, 200);
    const seen = upstream.requests.at(-1);
    assert.equal(seen?.headers["x-fairgate-tenant"], "acme");
    assert.equal(seen?.headers["x-fairgate-priority"], "0");
    assert.equal(seen?.headers["x-fairgate-debug"], undefined);
    assert.equal(
      JSON.parse(seen?.body.toString() ?? "{}").model,
      "m",
      "the body reaches the engine unchanged",
    );
    assert.equal(response.headers["x-fairgate-tenant"], "acme");
    assert.equal(response.headers["x-fairgate-queue-wait-ms"], "0");
    assert.ok(response.headers["x-fairgate-estimated-wait-ms"] !== undefined);
    assert.ok(response.headers["x-fairgate-worst-case-wait-ms"] !== undefined);
  });

  it("answers a malformed body with 400 and keeps serving", async () => {
    const bad = await post("key-globex", "{nope");
    assert.equal(bad.status, 400);
    assert.equal(JSON.parse(bad.body.toString()).error.code, "invalid_json");
    assert.equal((await post("key-globex", chat())).status, 200);
  });

  it("holds a request longer than Envoy's 200 ms message timeout and then serves it", async () => {
    const first = post("key-acme", chat({ user: "slow-1" }));
    await new Promise((r) => setTimeout(r, 50));
    const second = await post("key-globex", chat());
    assert.equal(second.status, 200, second.body.toString());
    const waited = Number(second.headers["x-fairgate-queue-wait-ms"]);
    assert.ok(waited >= 250, `queued ${waited} ms behind the slow request`);
    assert.equal((await first).status, 200);
  });

  it("streams SSE chunks to the client as the engine sends them", async () => {
    const arrivals: number[] = [];
    const started = Date.now();
    const text = await new Promise<string>((resolve, reject) => {
      const req = httpRequestRaw(
        new URL("/v1/chat/completions", front.url),
        {
          method: "POST",
          agent: false,
          headers: { authorization: "Bearer key-acme", "content-type": "application/json" },
        },
        (res) => {
          let all = "";
          res.on("data", (chunk: Buffer) => {
            arrivals.push(Date.now() - started);
            all += chunk.toString();
          });
          res.on("end", () => resolve(all));
          res.on("error", reject);
        },
      );
      req.on("error", reject);
      req.end(chat({ stream: true }));
    });
    assert.match(text, /data: \{"n":0\}[\s\S]*data: \[DONE\]/);
    assert.ok(arrivals.length >= 3, `chunks arrived separately (${arrivals.length})`);
    assert.ok((arrivals.at(-1) ?? 0) - (arrivals[0] ?? 0) >= 200, "chunks spread over time, not buffered");
  });

  it("holds a streaming request's engine slot until its last chunk, not its response headers", async () => {
    // maxInFlightRequests is 1: the chat sent while the stream runs waits for the stream's end
    // (about 400 ms: four chunks 100 ms apart), because response_trailer_mode SEND keeps
    // Envoy's ext_proc stream open until the HTTP exchange ends.
    const started = Date.now();
    const stream = post("key-acme", chat({ stream: true }));
    await new Promise((r) => setTimeout(r, 50));
    const second = await post("key-globex", chat());
    const streamed = await stream;
    assert.equal(streamed.status, 200);
    assert.match(streamed.body.toString(), /data: \[DONE\]/);
    const waited = Number(second.headers["x-fairgate-queue-wait-ms"]);
    assert.ok(waited >= 250, `the second request waited for the stream to end (${waited} ms)`);
    assert.ok(Date.now() - started >= 350);
    // The slot is freed when the proxy closes the ext_proc stream, just after the client's end.
    let inFlight = 1;
    for (let i = 0; i < 50 && inFlight > 0; i++) {
      await new Promise((r) => setTimeout(r, 10));
      inFlight = gw.gateway.scheduler.snapshot().backends[0]?.inFlight ?? 0;
    }
    assert.equal(inFlight, 0, "both slots released");
  });

  it("drops a queued request from the queue when the client disconnects", async () => {
    const slow = post("key-acme", chat({ user: "slow-2" }));
    await new Promise((r) => setTimeout(r, 50));
    const req = httpRequestRaw(new URL("/v1/chat/completions", front.url), {
      method: "POST",
      agent: false,
      headers: { authorization: "Bearer key-globex", "content-type": "application/json" },
    });
    req.on("error", () => {});
    req.end(chat());
    const queuedSoon = async () => {
      for (let i = 0; i < 50; i++) {
        if ((gw.gateway.scheduler.snapshot().backends[0]?.queued ?? 0) > 0) return true;
        await new Promise((r) => setTimeout(r, 10));
      }
      return false;
    };
    assert.ok(await queuedSoon(), "second request queued");
    req.destroy();
    let queued = 1;
    for (let i = 0; i < 50 && queued > 0; i++) {
      await new Promise((r) => setTimeout(r, 10));
      queued = gw.gateway.scheduler.snapshot().backends[0]?.queued ?? 0;
    }
    assert.equal(queued, 0, "the abandoned request left the queue");
    assert.equal((await slow).status, 200);
  });
});
