import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ManualClock } from "../../extproc/src/clock.ts";
import { resolveFilterConfig } from "../../extproc/src/proxy/config.ts";
import { HeaderMap } from "../../extproc/src/proxy/header-map.ts";
import { applyBodyMutation, applyHeaderMutation } from "../../extproc/src/proxy/header-mutations.ts";
import { immediateReply, localReplyHeaders } from "../../extproc/src/proxy/local-reply.ts";
import { MessageTimer } from "../../extproc/src/proxy/message-timer.ts";
import { MutationChecker } from "../../extproc/src/proxy/mutation-rules.ts";

const raw = (key: string, value: string) => ({ header: { key, raw_value: Buffer.from(value) } });
const limits = { maxHeadersCount: 100, maxHeadersKb: 60 };

describe("MutationChecker (Envoy's mutation_rules.cc)", () => {
  it("by default refuses routing and x-envoy headers but allows :path, :status and the rest", () => {
    const checker = new MutationChecker({});
    for (const name of [":authority", "host", ":method", ":scheme", "x-envoy-retry-on"]) {
      assert.equal(checker.check("set", name, "x"), "ignore", name);
    }
    assert.equal(checker.check("set", ":path", "/v2"), "ok");
    assert.equal(checker.check("set", ":status", "429"), "ok");
    assert.equal(checker.check("set", "x-fairgate-tenant", "acme"), "ok");
  });

  it("never removes pseudo-headers or host, and never appends to a pseudo-header", () => {
    const checker = new MutationChecker({ allowAllRouting: true, allowExpression: ".*" });
    assert.equal(checker.check("remove", ":path", ""), "ignore");
    assert.equal(checker.check("remove", "host", ""), "ignore");
    assert.equal(new MutationChecker({}).check("append", ":path", "/x"), "ignore");
  });

  it("validates values of :status, :scheme and the authority", () => {
    const checker = new MutationChecker({ allowAllRouting: true });
    assert.equal(checker.check("set", ":status", "199"), "ignore");
    assert.equal(checker.check("set", ":status", "abc"), "ignore");
    assert.equal(checker.check("set", ":scheme", "ftp"), "ignore");
    assert.equal(checker.check("set", ":authority", "a b"), "ignore");
    assert.equal(checker.check("set", ":authority", "api.example:8080"), "ok");
    assert.equal(checker.check("set", "x-a", "bad\r\nvalue"), "ignore");
  });

  it("applies the options in Envoy's order", () => {
    assert.equal(new MutationChecker({ allowEnvoy: true }).check("set", "x-envoy-a", "1"), "ok");
    assert.equal(new MutationChecker({ disallowSystem: true }).check("set", ":path", "/"), "ignore");
    assert.equal(new MutationChecker({ disallowAll: true }).check("set", "x-a", "1"), "ignore");
    const expressions = new MutationChecker({
      disallowAll: true,
      allowExpression: "x-ok-.*",
      disallowExpression: "x-ok-no",
    });
    assert.equal(expressions.check("set", "x-ok-yes", "1"), "ok");
    assert.equal(expressions.check("set", "x-ok-no", "1"), "ignore");
    assert.equal(expressions.check("set", "x-ok", "1"), "ignore", "expressions match whole names");
    assert.equal(new MutationChecker({ disallowIsError: true }).check("set", "host", "h"), "fail");
  });
});

describe("applyHeaderMutation (Envoy's mutation_utils.cc)", () => {
  const options = { checker: new MutationChecker({}), ...limits };

  it("overwrites by default, appends with append=true, and lets CONTINUE_AND_REPLACE change :method", () => {
    const headers = new HeaderMap([
      [":method", "GET"],
      ["x-a", "1"],
    ]);
    const result = applyHeaderMutation(
      {
        set_headers: [
          raw("x-a", "2"),
          { ...raw("x-a", "3"), append: { value: true } } as never,
          raw(":method", "POST"),
        ],
      },
      headers,
      { ...options, replacingMessage: true },
    );
    assert.deepEqual(result, { ok: true, rejected: 0 });
    assert.deepEqual(headers.getAll("x-a"), ["2", "3"]);
    assert.equal(headers.get(":method"), "POST");
  });

  it("skips content-length when the body mode strips it", () => {
    const headers = new HeaderMap([["content-length", "5"]]);
    applyHeaderMutation({ set_headers: [raw("content-length", "9")] }, headers, {
      ...options,
      removeContentLength: true,
    });
    assert.equal(headers.get("content-length"), "5");
  });

  it("fails on invalid names, on both value fields, and beyond the header limits", () => {
    const headers = new HeaderMap();
    const bad = (mutation: Parameters<typeof applyHeaderMutation>[0], opts = options) =>
      applyHeaderMutation(mutation, headers, opts).ok;
    assert.equal(bad({ set_headers: [raw("bad name", "1")] }), false);
    assert.equal(bad({ remove_headers: ["bad\nname"] }), false);
    assert.equal(
      bad({ set_headers: [{ header: { key: "x-a", value: "1", raw_value: Buffer.from("1") } }] }),
      false,
    );
    assert.equal(
      bad({ set_headers: [raw("x-a", "1"), raw("x-b", "2")] }, { ...options, maxHeadersCount: 1 }),
      false,
    );
    assert.equal(
      bad({ set_headers: [raw("x-a", "y".repeat(2048))] }, { ...options, maxHeadersKb: 1 }),
      false,
    );
  });

  it("replaces or clears a body", () => {
    const body = Buffer.from("old");
    assert.equal(applyBodyMutation({ body: Buffer.from("new") }, body).toString(), "new");
    assert.equal(applyBodyMutation({ clear_body: true }, body).length, 0);
    assert.equal(applyBodyMutation(undefined, body), body);
  });
});

describe("local replies", () => {
  it("maps enum-name statuses, defaults invalid ones to 200 and adds text/plain only when there is a body", () => {
    const reply = immediateReply({ status: { code: "TooManyRequests" }, body: Buffer.from("slow down") });
    assert.equal(reply.status, 429);
    const headers = localReplyHeaders(reply, { checker: new MutationChecker({}), ...limits });
    assert.equal(headers.get("content-type"), "text/plain");
    assert.equal(headers.get("content-length"), "9");
    assert.equal(immediateReply({ status: { code: 100 } }).status, 200);
    assert.equal(immediateReply({}).status, 200);
  });
});

describe("MessageTimer", () => {
  it("fires after the timeout, and can be extended once per message", () => {
    const clock = new ManualClock();
    let fired = 0;
    const timer = new MessageTimer(clock, () => fired++);
    timer.start(200);
    clock.advance(150);
    assert.equal(timer.override(500), true);
    assert.equal(timer.override(5_000), false, "only the first override counts");
    clock.advance(499);
    assert.equal(fired, 0);
    clock.advance(1);
    assert.equal(fired, 1);
    timer.start(200);
    assert.equal(timer.override(300), true, "a new message may be extended again");
    timer.stop();
    assert.equal(timer.override(300), false, "nothing to extend once the reply came");
  });
});

describe("resolveFilterConfig", () => {
  it("defaults to Envoy's timeouts and fairgate's processing mode, and rejects what the proxy cannot do", () => {
    const config = resolveFilterConfig({ grpcTarget: "127.0.0.1:9002" });
    assert.equal(config.messageTimeoutMs, 200);
    assert.equal(config.maxMessageTimeoutMs, 0);
    assert.equal(config.maxRequestBodyBytes, 1024 * 1024);
    assert.equal(config.processingMode.request_body_mode, "BUFFERED");
    assert.throws(
      () => resolveFilterConfig({ grpcTarget: "x:1", processingMode: { request_body_mode: "STREAMED" } }),
      /request_body_mode STREAMED/,
    );
    assert.throws(() => resolveFilterConfig({ grpcTarget: "nope" }), /grpcTarget/);
  });
});
