import assert from "node:assert/strict";
import * as http from "node:http";
import * as net from "node:net";
import { describe, it, type TestContext } from "node:test";
import type { ExtProcFilterConfig } from "../../extproc/src/proxy/config.ts";
import { startExtProcProxy } from "../../extproc/src/proxy/proxy-server.ts";
import {
  continueWith,
  type FakeScript,
  headerMutation,
  headerOf,
  httpRequest,
  immediateResponse,
  passThrough,
  phaseOf,
  startFakeExtProc,
  startRecordingUpstream,
  type UpstreamHandler,
} from "../helpers/ext-proc-fake.ts";

async function harness(
  t: TestContext,
  script: FakeScript,
  extProc: Partial<ExtProcFilterConfig> = {},
  upstreamHandler?: UpstreamHandler,
) {
  const fake = await startFakeExtProc(script);
  const upstream = await startRecordingUpstream(upstreamHandler);
  const proxy = await startExtProcProxy({
    listen: "127.0.0.1:0",
    upstream: upstream.url,
    extProc: { grpcTarget: fake.target, ...extProc },
  });
  t.after(async () => {
    await proxy.close();
    await upstream.close();
    await fake.close();
  });
  return { fake, upstream, proxy };
}

/** Replies CONTINUE to the request phases, then hands the response headers to `onResponse`. */
const atResponseHeaders =
  (onResponse: (stream: Parameters<FakeScript>[0]) => Promise<void>): FakeScript =>
  async (stream) => {
    for (;;) {
      const message = await stream.next();
      if (phaseOf(message) === "response_headers") break;
      stream.reply(continueWith(phaseOf(message)));
    }
    await onResponse(stream);
  };

const sse = (n: number) => `data: {"chunk":${n}}\n\n`;

describe("built-in proxy: response path", () => {
  it("applies response header mutations, :status included, before the client sees the headers", async (t) => {
    const { proxy } = await harness(
      t,
      atResponseHeaders(async (stream) => {
        stream.reply(
          continueWith("response_headers", {
            header_mutation: headerMutation(
              { "x-fairgate-queue-wait-ms": "12", ":status": "203", "x-envoy-decorator": "no" },
              ["x-upstream-secret"],
            ),
          }),
        );
      }),
      {},
      (_request, response) => {
        response.writeHead(200, {
          "content-type": "application/json",
          "x-upstream-secret": "s",
          "content-length": 2,
        });
        response.end("{}");
      },
    );
    const response = await httpRequest(proxy.url, { path: "/v1/models" });
    assert.equal(response.status, 203);
    assert.equal(response.headers["x-fairgate-queue-wait-ms"], "12");
    assert.equal(response.headers["x-upstream-secret"], undefined);
    assert.equal(response.headers["x-envoy-decorator"], undefined);
    assert.ok(response.headers["x-envoy-upstream-service-time"], "the router's header is there, as in Envoy");
    assert.equal(response.body.toString(), "{}");
  });

  it("forwards SSE chunks one at a time as the upstream produces them", async (t) => {
    let clientGotFirst: () => void = () => {};
    const firstArrived = new Promise<void>((resolve) => (clientGotFirst = resolve));
    const upstreamSentLastAt: number[] = [];
    const { proxy } = await harness(t, passThrough, {}, (_request, response) => {
      response.writeHead(200, { "content-type": "text/event-stream" });
      response.write(sse(1));
      // The rest waits until the client has the first chunk: buffering would deadlock here.
      void firstArrived.then(async () => {
        for (const n of [2, 3]) {
          await new Promise((resolve) => setTimeout(resolve, 20));
          response.write(sse(n));
        }
        upstreamSentLastAt.push(performance.now());
        response.end("data: [DONE]\n\n");
      });
    });
    const chunks: Array<{ at: number; text: string }> = [];
    await new Promise<void>((resolve, reject) => {
      const request = http.request(new URL("/v1/chat/completions", proxy.url), {
        method: "POST",
        agent: false,
      });
      request.on("response", (response) => {
        assert.equal(response.headers["content-type"], "text/event-stream");
        response.on("data", (chunk: Buffer) => {
          chunks.push({ at: performance.now(), text: chunk.toString() });
          if (chunks.length === 1) clientGotFirst();
        });
        response.on("end", resolve);
      });
      request.on("error", reject);
      request.end(JSON.stringify({ model: "m", stream: true, messages: [] }));
    });
    assert.equal(chunks[0]?.text, sse(1));
    assert.ok(
      (chunks[0]?.at ?? Infinity) < (upstreamSentLastAt[0] ?? 0),
      "first chunk arrived before the last was sent",
    );
    assert.ok(chunks.length >= 3, `chunks arrived separately (${chunks.length})`);
    assert.equal(chunks.map((c) => c.text).join(""), `${sse(1)}${sse(2)}${sse(3)}data: [DONE]\n\n`);
  });

  it("STREAMED mode sends every chunk to the processor and forwards its replacement", async (t) => {
    const { fake, proxy } = await harness(
      t,
      async (stream) => {
        for (;;) {
          const message = await stream.next();
          const phase = phaseOf(message);
          if (phase !== "response_body") {
            stream.reply(continueWith(phase));
            continue;
          }
          const text = Buffer.from(message.response_body?.body ?? []).toString();
          stream.reply(continueWith(phase, { body_mutation: { body: Buffer.from(text.toUpperCase()) } }));
        }
      },
      { processingMode: { response_body_mode: "STREAMED" } },
      (_request, response) => {
        response.writeHead(200, { "content-type": "text/plain", "content-length": 11 });
        response.write("hello ");
        setTimeout(() => response.end("world"), 20);
      },
    );
    const response = await httpRequest(proxy.url, { path: "/v1/x" });
    assert.equal(response.body.toString(), "HELLO WORLD");
    assert.equal(response.headers["content-length"], undefined, "STREAMED mode strips content-length");
    const bodies = (fake.streams[0]?.received ?? []).filter((m) => phaseOf(m) === "response_body");
    assert.ok(bodies.length >= 2);
    assert.equal(bodies.at(-1)?.response_body?.end_of_stream, true);
    assert.equal(
      bodies.map((m) => Buffer.from(m.response_body?.body ?? []).toString()).join(""),
      "hello world",
    );
    const responseHeaders = fake.streams[0]?.received.find((m) => phaseOf(m) === "response_headers");
    assert.equal(
      responseHeaders && headerOf(responseHeaders, "content-length"),
      "11",
      "the processor saw it",
    );
  });

  it("BUFFERED response mode sends the whole body once and applies the replacement", async (t) => {
    const replacement = '{"usage":{"total_tokens":3}}';
    const { fake, proxy } = await harness(
      t,
      atResponseHeaders(async (stream) => {
        stream.reply(continueWith("response_headers"));
        const body = await stream.next();
        assert.equal(Buffer.from(body.response_body?.body ?? []).toString(), "part1part2");
        assert.equal(body.response_body?.end_of_stream, true);
        stream.reply(
          continueWith("response_body", {
            header_mutation: headerMutation({ "content-length": String(replacement.length) }),
            body_mutation: { body: Buffer.from(replacement) },
          }),
        );
      }),
      { processingMode: { response_body_mode: "BUFFERED" } },
      (_request, response) => {
        response.writeHead(200, { "content-type": "application/json", "content-length": 10 });
        response.write("part1");
        setTimeout(() => response.end("part2"), 10);
      },
    );
    const response = await httpRequest(proxy.url, { path: "/v1/x" });
    assert.equal(response.status, 200);
    assert.equal(response.body.toString(), replacement);
    assert.equal(response.headers["content-length"], String(replacement.length));
    assert.equal(fake.streams[0]?.received.filter((m) => phaseOf(m) === "response_body").length, 1);
  });

  it("sends an ImmediateResponse at response headers instead of the upstream response", async (t) => {
    const { proxy } = await harness(
      t,
      atResponseHeaders(async (stream) => {
        stream.reply(immediateResponse(502, { body: "replaced" }));
      }),
    );
    const response = await httpRequest(proxy.url, { path: "/v1/models" });
    assert.equal(response.status, 502);
    assert.equal(response.body.toString(), "replaced");
    assert.equal(response.headers["content-type"], "text/plain");
  });

  it("answers 503 like Envoy's router when the upstream is down, without asking the processor", async (t) => {
    const fake = await startFakeExtProc(passThrough);
    const dead = net.createServer();
    await new Promise<void>((resolve) => dead.listen(0, "127.0.0.1", () => resolve()));
    const { port } = dead.address() as net.AddressInfo;
    await new Promise<void>((resolve) => dead.close(() => resolve()));
    const proxy = await startExtProcProxy({
      listen: "127.0.0.1:0",
      upstream: `http://127.0.0.1:${port}`,
      extProc: { grpcTarget: fake.target },
    });
    t.after(async () => {
      await proxy.close();
      await fake.close();
    });
    const response = await httpRequest(proxy.url, { path: "/v1/models" });
    assert.equal(response.status, 503);
    assert.match(
      response.body.toString(),
      /^upstream connect error or disconnect\/reset before headers\. reset reason: connection failure/,
    );
    assert.deepEqual(fake.streams[0]?.received.map(phaseOf), ["request_headers"]);
  });

  it("resets the client connection when the upstream dies after the response started", async (t) => {
    const { proxy } = await harness(t, passThrough, {}, (_request, response) => {
      response.writeHead(200, { "content-type": "text/event-stream" });
      response.write(sse(1));
      setTimeout(() => response.socket?.destroy(), 20);
    });
    const outcome = await new Promise<string>((resolve) => {
      const request = http.request(new URL("/v1/x", proxy.url), { agent: false });
      request.on("response", (response) => {
        response.on("data", () => {});
        response.on("end", () => resolve("complete"));
        response.on("aborted", () => resolve("aborted"));
        response.on("error", () => resolve("aborted"));
      });
      request.on("error", () => resolve("aborted"));
      request.end();
    });
    assert.equal(outcome, "aborted");
  });

  it("observability mode sends every message flagged and never waits for a reply", async (t) => {
    const { fake, upstream, proxy } = await harness(t, async () => {}, {
      observabilityMode: true,
      processingMode: { response_body_mode: "STREAMED" },
      deferredCloseTimeoutMs: 50,
    });
    const response = await httpRequest(proxy.url, { method: "POST", path: "/v1/x", body: "abc" });
    assert.equal(response.status, 200);
    assert.equal(upstream.requests[0]?.body.toString(), "abc");
    const stream = fake.streams[0];
    assert.ok(stream);
    await stream.cancelled;
    const phases = stream.received.map(phaseOf);
    assert.deepEqual(phases.slice(0, 2), ["request_headers", "response_headers"]);
    assert.ok(phases.includes("response_body"));
    assert.ok(!phases.includes("request_body"), "only STREAMED bodies are observed");
    assert.ok(stream.received.every((m) => m.observability_mode === true));
  });
});
