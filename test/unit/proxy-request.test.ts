import assert from "node:assert/strict";
import { describe, it, type TestContext } from "node:test";
import type { ProcessingRequest } from "../../extproc/src/grpc/messages.ts";
import { memoryLogger } from "../../extproc/src/log.ts";
import type { ExtProcFilterConfig } from "../../extproc/src/proxy/config.ts";
import { startExtProcProxy } from "../../extproc/src/proxy/proxy-server.ts";
import {
  continueWith,
  type FakeScript,
  headerMutation,
  headerOf,
  headersOf,
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
  const logger = memoryLogger();
  const proxy = await startExtProcProxy({
    listen: "127.0.0.1:0",
    upstream: upstream.url,
    extProc: { grpcTarget: fake.target, ...extProc },
    logger,
  });
  t.after(async () => {
    await proxy.close();
    await upstream.close();
    await fake.close();
  });
  return { fake, upstream, proxy, logger };
}

const chat = JSON.stringify({ model: "m", messages: [{ role: "user", content: "hi" }] });

describe("built-in proxy: request path", () => {
  it("sends request headers like Envoy: pseudo-headers first, raw_value only, then the whole buffered body", async (t) => {
    const { fake, upstream, proxy } = await harness(t, passThrough);
    const response = await httpRequest(proxy.url, {
      method: "POST",
      path: "/v1/chat/completions?x=1",
      headers: { "content-type": "application/json", "x-client": "a" },
      body: chat,
    });
    assert.equal(response.status, 200);
    const stream = fake.streams[0];
    assert.ok(stream);
    const [headers, body, responseHeaders] = stream.received as [
      ProcessingRequest,
      ProcessingRequest,
      ProcessingRequest,
    ];
    assert.deepEqual(
      headersOf(headers)
        .slice(0, 4)
        .map(([k]) => k),
      [":method", ":path", ":authority", ":scheme"],
    );
    assert.equal(headerOf(headers, ":method"), "POST");
    assert.equal(headerOf(headers, ":path"), "/v1/chat/completions?x=1");
    assert.equal(headerOf(headers, ":authority"), new URL(proxy.url).host);
    assert.equal(headerOf(headers, ":scheme"), "http");
    assert.equal(headerOf(headers, "x-client"), "a");
    assert.equal(headerOf(headers, "content-length"), String(Buffer.byteLength(chat)));
    assert.equal(headerOf(headers, "host"), undefined, "Host travels as :authority");
    assert.ok(headerOf(headers, "x-request-id"), "the connection manager adds x-request-id");
    for (const header of headers.request_headers?.headers?.headers ?? []) {
      assert.ok((header.value ?? "") === "", `${header.key} carries its value in raw_value only`);
    }
    assert.equal(headers.request_headers?.end_of_stream, false);
    assert.equal(phaseOf(body), "request_body");
    assert.equal(Buffer.from(body.request_body?.body ?? []).toString(), chat);
    assert.equal(body.request_body?.end_of_stream, true);
    assert.equal(phaseOf(responseHeaders), "response_headers");
    assert.equal(headerOf(responseHeaders, ":status"), "200");
    assert.equal(headersOf(responseHeaders)[0]?.[0], ":status");
    assert.equal(stream.received.length, 3, "response body mode NONE sends no body");
    // Envoy closes the stream after the last reply it needs (half-close plus reset).
    await stream.cancelled;
    assert.equal(upstream.requests[0]?.body.toString(), chat);
  });

  it("with gracefulClose half-closes the stream and lets the processor end it", async (t) => {
    const { fake, proxy } = await harness(
      t,
      async (stream) => {
        stream.reply(continueWith(phaseOf(await stream.next())));
        stream.reply(continueWith(phaseOf(await stream.next())));
        await stream.halfClosed;
        stream.end();
      },
      { processingMode: { request_body_mode: "NONE" }, gracefulClose: true },
    );
    const response = await httpRequest(proxy.url, { path: "/v1/models" });
    assert.equal(response.status, 200);
    const stream = fake.streams[0];
    await stream?.halfClosed;
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.equal(stream?.isCancelled, false);
  });

  it("marks a bodyless request end_of_stream and sends no body message", async (t) => {
    const { fake, proxy } = await harness(t, passThrough);
    const response = await httpRequest(proxy.url, { path: "/v1/models" });
    assert.equal(response.status, 200);
    const received = fake.streams[0]?.received ?? [];
    assert.equal(received[0]?.request_headers?.end_of_stream, true);
    assert.deepEqual(received.map(phaseOf), ["request_headers", "response_headers"]);
  });

  it("applies set and remove mutations from raw_value, appending only with the deprecated append flag", async (t) => {
    const { upstream, proxy } = await harness(t, async (stream) => {
      await stream.next();
      const mutation = headerMutation({ "x-fairgate-tenant": "acme" }, ["x-remove-me"]);
      mutation.set_headers?.push(
        { header: { key: "x-value-only", value: "ignored" } },
        { header: { key: "x-multi", raw_value: Buffer.from("two") }, append: { value: true } } as never,
        {
          header: { key: "x-action", raw_value: Buffer.from("new") },
          append_action: "APPEND_IF_EXISTS_OR_ADD",
        },
      );
      stream.reply(continueWith("request_headers", { header_mutation: mutation }));
      await passThrough(stream);
    });
    const response = await httpRequest(proxy.url, {
      method: "POST",
      path: "/v1/chat/completions",
      headers: {
        "x-remove-me": "1",
        "x-multi": "one",
        "x-action": "old",
        "content-type": "application/json",
      },
      body: chat,
    });
    assert.equal(response.status, 200);
    const seen = upstream.requests[0]?.headers ?? {};
    assert.equal(seen["x-fairgate-tenant"], "acme");
    assert.equal(seen["x-remove-me"], undefined);
    assert.equal(seen["x-value-only"], "", "only raw_value is read; value alone sets an empty header");
    assert.equal(seen["x-multi"], "one, two");
    assert.equal(seen["x-action"], "new", "append_action is ignored: a set overwrites");
  });

  it("ignores mutations of host, :authority, :method, :scheme and x-envoy-* but allows :path", async (t) => {
    const { upstream, proxy } = await harness(t, async (stream) => {
      await stream.next();
      stream.reply(
        continueWith("request_headers", {
          header_mutation: headerMutation(
            {
              host: "evil.example",
              ":authority": "evil.example",
              ":method": "DELETE",
              ":scheme": "https",
              "x-envoy-original-path": "/x",
              ":path": "/v1/rewritten",
              "x-allowed": "yes",
            },
            ["x-envoy-keep", ":path", "host"],
          ),
        }),
      );
      await passThrough(stream);
    });
    const response = await httpRequest(proxy.url, {
      method: "POST",
      path: "/v1/chat/completions",
      headers: { "x-envoy-keep": "1", "content-type": "application/json" },
      body: chat,
    });
    assert.equal(response.status, 200);
    const seen = upstream.requests[0];
    assert.equal(seen?.method, "POST");
    assert.equal(seen?.url, "/v1/rewritten");
    assert.equal(seen?.headers.host, new URL(proxy.url).host);
    assert.equal(seen?.headers["x-envoy-original-path"], undefined);
    assert.equal(seen?.headers["x-envoy-keep"], "1");
    assert.equal(seen?.headers["x-allowed"], "yes");
    assert.equal(proxy.stats.rejected_header_mutations, 8);
  });

  it("fails the request with 500 when disallow_is_error and a disallowed header is set", async (t) => {
    const { upstream, proxy, fake } = await harness(
      t,
      async (stream) => {
        await stream.next();
        stream.reply(continueWith("request_headers", { header_mutation: headerMutation({ host: "evil" }) }));
        await passThrough(stream);
      },
      { mutationRules: { disallowIsError: true } },
    );
    const response = await httpRequest(proxy.url, { path: "/v1/models" });
    assert.equal(response.status, 500);
    assert.equal(upstream.requests.length, 0);
    await fake.streams[0]?.cancelled;
  });

  it("answers 500 when a header sets both value and raw_value", async (t) => {
    const { upstream, proxy } = await harness(t, async (stream) => {
      await stream.next();
      stream.reply(
        continueWith("request_headers", {
          header_mutation: {
            set_headers: [{ header: { key: "x-a", value: "1", raw_value: Buffer.from("1") } }],
          },
        }),
      );
    });
    const response = await httpRequest(proxy.url, { path: "/v1/models" });
    assert.equal(response.status, 500);
    assert.equal(upstream.requests.length, 0);
  });

  it("replaces a buffered body when the processor sets a matching content-length", async (t) => {
    const replacement = JSON.stringify({ model: "m", messages: [], stream_options: { include_usage: true } });
    const { upstream, proxy } = await harness(t, async (stream) => {
      stream.reply(continueWith(phaseOf(await stream.next())));
      await stream.next();
      stream.reply(
        continueWith("request_body", {
          header_mutation: headerMutation({ "content-length": String(Buffer.byteLength(replacement)) }),
          body_mutation: { body: Buffer.from(replacement) },
        }),
      );
      await passThrough(stream);
    });
    const response = await httpRequest(proxy.url, {
      method: "POST",
      path: "/v1/chat/completions",
      headers: { "content-type": "application/json" },
      body: chat,
    });
    assert.equal(response.status, 200);
    assert.equal(upstream.requests[0]?.body.toString(), replacement);
    assert.equal(upstream.requests[0]?.headers["content-length"], String(Buffer.byteLength(replacement)));
  });

  it("rejects a body mutation whose length does not match the kept content-length (500)", async (t) => {
    const { upstream, proxy } = await harness(t, async (stream) => {
      stream.reply(continueWith(phaseOf(await stream.next())));
      await stream.next();
      stream.reply(continueWith("request_body", { body_mutation: { body: Buffer.from("{}") } }));
    });
    const response = await httpRequest(proxy.url, {
      method: "POST",
      path: "/v1/chat/completions",
      body: chat,
    });
    assert.equal(response.status, 500);
    assert.equal(upstream.requests.length, 0);
  });

  it("CONTINUE_AND_REPLACE on headers drops the original body and content-length", async (t) => {
    const { upstream, fake, proxy } = await harness(t, async (stream) => {
      await stream.next();
      stream.reply(
        continueWith("request_headers", {
          status: "CONTINUE_AND_REPLACE",
          body_mutation: { body: Buffer.from("new") },
        }),
      );
      await passThrough(stream);
    });
    const response = await httpRequest(proxy.url, { method: "POST", path: "/v1/x", body: "original body" });
    assert.equal(response.status, 200);
    assert.equal(upstream.requests[0]?.body.toString(), "new");
    assert.equal(upstream.requests[0]?.headers["content-length"], undefined);
    assert.equal(upstream.requests[0]?.headers["transfer-encoding"], "chunked");
    assert.ok(!fake.streams[0]?.received.some((m) => phaseOf(m) === "request_body"));
  });

  it("sends an ImmediateResponse to the client and nothing more to the processor", async (t) => {
    const { upstream, fake, proxy } = await harness(t, async (stream) => {
      await stream.next();
      stream.reply(
        immediateResponse(429, {
          body: '{"error":{"code":"rate_limit_requests"}}',
          headers: { "content-type": "application/json", "retry-after": "7" },
          details: "rate limited",
        }),
      );
    });
    const response = await httpRequest(proxy.url, {
      method: "POST",
      path: "/v1/chat/completions",
      body: chat,
    });
    assert.equal(response.status, 429);
    assert.equal(response.headers["retry-after"], "7");
    assert.equal(response.headers["content-type"], "application/json");
    assert.equal(response.body.toString(), '{"error":{"code":"rate_limit_requests"}}');
    assert.equal(upstream.requests.length, 0);
    const stream = fake.streams[0];
    await stream?.cancelled;
    assert.deepEqual(stream?.received.map(phaseOf), ["request_headers"]);
  });

  it("treats a reply for the wrong phase as spurious: 500, or pass-through with failure_mode_allow", async (t) => {
    for (const failureModeAllow of [false, true]) {
      const { upstream, proxy } = await harness(
        t,
        async (stream) => {
          await stream.next();
          stream.reply(continueWith("request_body", { header_mutation: headerMutation({ "x-wrong": "1" }) }));
        },
        { failureModeAllow },
      );
      const response = await httpRequest(proxy.url, { method: "POST", path: "/v1/x", body: chat });
      assert.equal(response.status, failureModeAllow ? 200 : 500);
      assert.equal(upstream.requests.length, failureModeAllow ? 1 : 0);
      assert.equal(upstream.requests[0]?.headers["x-wrong"], undefined);
      assert.equal(proxy.stats.spurious_msgs_received, 1);
    }
  });

  it("honours mode_override on a headers reply only when allow_mode_override is set", async (t) => {
    for (const allowModeOverride of [true, false]) {
      const { fake, proxy } = await harness(
        t,
        async (stream) => {
          await stream.next();
          stream.reply({
            ...continueWith("request_headers"),
            mode_override: { request_body_mode: "NONE", response_header_mode: "SKIP" },
          } as never);
          await passThrough(stream);
        },
        { allowModeOverride },
      );
      const response = await httpRequest(proxy.url, { method: "POST", path: "/v1/x", body: chat });
      assert.equal(response.status, 200);
      const phases = fake.streams[0]?.received.map(phaseOf);
      assert.deepEqual(
        phases,
        allowModeOverride ? ["request_headers"] : ["request_headers", "request_body", "response_headers"],
      );
    }
  });

  it("answers 413 when a buffered body exceeds the buffer limit", async (t) => {
    const { upstream, proxy } = await harness(t, passThrough, { maxRequestBodyBytes: 1024 });
    const response = await httpRequest(proxy.url, { method: "POST", path: "/v1/x", body: "x".repeat(4096) });
    assert.equal(response.status, 413);
    assert.equal(response.body.toString(), "Payload Too Large");
    assert.equal(upstream.requests.length, 0);
  });

  it("streams bodies larger than the buffer limit through when the body mode is NONE", async (t) => {
    const { upstream, fake, proxy } = await harness(t, passThrough, {
      maxRequestBodyBytes: 1024,
      processingMode: { request_body_mode: "NONE" },
    });
    const big = "y".repeat(256 * 1024);
    const response = await httpRequest(proxy.url, { method: "POST", path: "/v1/x", body: big });
    assert.equal(response.status, 200);
    assert.equal(upstream.requests[0]?.body.length, big.length);
    assert.deepEqual(fake.streams[0]?.received.map(phaseOf), ["request_headers", "response_headers"]);
  });
});
