import assert from "node:assert/strict";
import * as http from "node:http";
import * as net from "node:net";
import { describe, it, type TestContext } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { memoryLogger } from "../../extproc/src/log.ts";
import type { ExtProcFilterConfig } from "../../extproc/src/proxy/config.ts";
import { startExtProcProxy } from "../../extproc/src/proxy/proxy-server.ts";
import {
  continueWith,
  type FakeScript,
  headerMutation,
  httpRequest,
  overrideMessageTimeout,
  passThrough,
  phaseOf,
  startFakeExtProc,
  startRecordingUpstream,
} from "../helpers/ext-proc-fake.ts";

async function harness(t: TestContext, script: FakeScript, extProc: Partial<ExtProcFilterConfig> = {}) {
  const fake = await startFakeExtProc(script);
  const upstream = await startRecordingUpstream();
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

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const chat = JSON.stringify({ model: "m", messages: [{ role: "user", content: "hi" }] });
const post = { method: "POST", path: "/v1/chat/completions", body: chat };

/** A port nothing listens on. */
async function deadTarget(): Promise<string> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return `127.0.0.1:${port}`;
}

/** Holds the request at request_body, the way fairgate holds a queued request. */
const holdBody =
  (then: (stream: Parameters<FakeScript>[0]) => Promise<void>): FakeScript =>
  async (stream) => {
    stream.reply(continueWith(phaseOf(await stream.next())));
    await stream.next();
    await then(stream);
  };

describe("built-in proxy: timeouts and failures", () => {
  it("answers 504 when the processor does not reply within message_timeout (200 ms)", async (t) => {
    const { fake, upstream, proxy, logger } = await harness(t, async (stream) => {
      await stream.next();
    });
    const started = performance.now();
    const response = await httpRequest(proxy.url, post);
    const elapsed = performance.now() - started;
    assert.equal(response.status, 504);
    assert.ok(elapsed >= 190 && elapsed < 600, `timed out after ${elapsed} ms`);
    assert.equal(upstream.requests.length, 0);
    assert.equal(proxy.stats.message_timeouts, 1);
    assert.ok(logger.records.some((r) => r.details === "ext_proc_error_per-message_timeout_exceeded"));
    await fake.streams[0]?.cancelled;
  });

  it("lets override_message_timeout extend the wait up to max_message_timeout", async (t) => {
    const { upstream, proxy } = await harness(
      t,
      holdBody(async (stream) => {
        stream.reply(overrideMessageTimeout(1_000));
        await sleep(500);
        stream.reply(continueWith("request_body"));
        await passThrough(stream);
      }),
      { maxMessageTimeoutMs: 2_000 },
    );
    const response = await httpRequest(proxy.url, post);
    assert.equal(response.status, 200);
    assert.equal(upstream.requests.length, 1);
    assert.equal(proxy.stats.override_message_timeout_received, 1);
  });

  it("ignores an override above max_message_timeout (and every override when it is 0)", async (t) => {
    for (const maxMessageTimeoutMs of [300, 0]) {
      const { proxy } = await harness(
        t,
        holdBody(async (stream) => {
          stream.reply(overrideMessageTimeout(1_000));
          await sleep(500);
          stream.reply(continueWith("request_body"));
        }),
        { maxMessageTimeoutMs },
      );
      const started = performance.now();
      const response = await httpRequest(proxy.url, post);
      assert.equal(response.status, 504);
      assert.ok(performance.now() - started < 450, "the original 200 ms timer kept running");
      assert.equal(proxy.stats.override_message_timeout_ignored, 1);
    }
  });

  it("honours only the first override for a message", async (t) => {
    const { proxy } = await harness(
      t,
      holdBody(async (stream) => {
        stream.reply(overrideMessageTimeout(300));
        await sleep(100);
        stream.reply(overrideMessageTimeout(1_500));
        await sleep(700);
        stream.reply(continueWith("request_body"));
      }),
      { maxMessageTimeoutMs: 2_000 },
    );
    const started = performance.now();
    const response = await httpRequest(proxy.url, post);
    const elapsed = performance.now() - started;
    assert.equal(response.status, 504);
    assert.ok(elapsed >= 290 && elapsed < 650, `timed out after ${elapsed} ms`);
    assert.equal(proxy.stats.override_message_timeout_received, 1);
    assert.equal(proxy.stats.override_message_timeout_ignored, 1);
  });

  it("passes the request through unmodified on a timeout with failure_mode_allow", async (t) => {
    const { upstream, proxy } = await harness(
      t,
      holdBody(async (stream) => {
        await sleep(400);
        stream.reply(continueWith("request_body", { header_mutation: headerMutation({ "x-late": "1" }) }));
      }),
      { failureModeAllow: true },
    );
    const response = await httpRequest(proxy.url, post);
    assert.equal(response.status, 200);
    assert.equal(upstream.requests[0]?.body.toString(), chat);
    assert.equal(upstream.requests[0]?.headers["x-late"], undefined);
    assert.equal(proxy.stats.failure_mode_allowed, 1);
  });

  it("with a dead processor: 500 without failure_mode_allow, pass-through with it", async (t) => {
    const target = await deadTarget();
    const upstream = await startRecordingUpstream();
    t.after(() => upstream.close());
    for (const failureModeAllow of [false, true]) {
      const proxy = await startExtProcProxy({
        listen: "127.0.0.1:0",
        upstream: upstream.url,
        extProc: { grpcTarget: target, failureModeAllow, messageTimeoutMs: 2_000 },
      });
      t.after(() => proxy.close());
      const response = await httpRequest(proxy.url, post);
      assert.equal(response.status, failureModeAllow ? 200 : 500);
      assert.equal(proxy.stats.streams_failed, 1);
    }
    assert.equal(upstream.requests.length, 1);
    assert.equal(upstream.requests[0]?.body.toString(), chat);
  });

  it("answers 500 when the processor ends the stream with an error status", async (t) => {
    const { upstream, proxy } = await harness(t, async (stream) => {
      await stream.next();
      stream.fail(grpc.status.RESOURCE_EXHAUSTED, "overloaded");
    });
    const response = await httpRequest(proxy.url, post);
    assert.equal(response.status, 500);
    assert.equal(upstream.requests.length, 0);
  });

  it("fails the request when the stream breaks while the upstream is working (500, upstream aborted)", async (t) => {
    let upstreamAborted: () => void = () => {};
    const aborted = new Promise<void>((resolve) => (upstreamAborted = resolve));
    const fake = await startFakeExtProc(
      holdBody(async (stream) => {
        stream.reply(continueWith("request_body"));
        await sleep(50);
        stream.fail(grpc.status.INTERNAL, "processor crashed");
      }),
    );
    const upstream = await startRecordingUpstream((_request, response) => {
      response.on("close", () => {
        if (!response.writableFinished) upstreamAborted();
      });
      setTimeout(() => response.end("late"), 1_000).unref();
    });
    const proxy = await startExtProcProxy({
      listen: "127.0.0.1:0",
      upstream: upstream.url,
      extProc: { grpcTarget: fake.target },
    });
    t.after(async () => {
      await proxy.close();
      await upstream.close();
      await fake.close();
    });
    const started = performance.now();
    const response = await httpRequest(proxy.url, post);
    assert.equal(response.status, 500);
    assert.ok(performance.now() - started < 500, "did not wait for the upstream");
    await aborted;
  });

  it("continues unmodified when the processor closes the stream with OK", async (t) => {
    const { upstream, proxy } = await harness(t, async (stream) => {
      await stream.next();
      stream.end();
    });
    const response = await httpRequest(proxy.url, post);
    assert.equal(response.status, 200);
    assert.equal(upstream.requests[0]?.body.toString(), chat);
  });

  it("cancels the stream at once when the client leaves while the request is held", async (t) => {
    let held: () => void = () => {};
    const heldAtBody = new Promise<void>((resolve) => (held = resolve));
    const { fake, upstream, proxy } = await harness(
      t,
      holdBody(async (stream) => {
        stream.reply(overrideMessageTimeout(5_000));
        held();
        await stream.cancelled;
      }),
      { maxMessageTimeoutMs: 10_000 },
    );
    const request = http.request(new URL("/v1/chat/completions", proxy.url), {
      method: "POST",
      agent: false,
    });
    request.on("error", () => {});
    request.end(chat);
    await heldAtBody;
    const leftAt = performance.now();
    request.destroy();
    const stream = await fake.nextStream();
    await stream.cancelled;
    assert.ok(performance.now() - leftAt < 300, "the processor saw CANCELLED promptly");
    assert.equal(stream.isCancelled, true);
    assert.equal(upstream.requests.length, 0);
  });
});
