import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { Usage } from "../../extproc/src/accounting/usage.ts";
import { UsageRegistry } from "../../extproc/src/accounting/usage-registry.ts";
import { ManualClock } from "../../extproc/src/clock.ts";
import type { ProcessingRequest } from "../../extproc/src/grpc/messages.ts";
import { UsageStreamProcessor } from "../../extproc/src/grpc/usage-stream.ts";
import { HEADERS } from "../../extproc/src/headers.ts";
import { silentLogger } from "../../extproc/src/log.ts";
import { approximateCounter } from "../../extproc/src/openai/tokens.ts";

const usage = (completionTokens: number, complete = true): Usage => ({
  promptTokens: 5,
  completionTokens,
  exact: true,
  complete,
});

/** Lets promise callbacks run. */
const settled = async <T>(promise: Promise<T>): Promise<{ done: boolean; value?: T }> => {
  let state: { done: boolean; value?: T } = { done: false };
  void promise.then((value) => {
    state = { done: true, value };
  });
  for (let i = 0; i < 5; i++) await Promise.resolve();
  return state;
};

describe("UsageRegistry", () => {
  it("delivers a report to the registered request and forgets it", async () => {
    const registry = new UsageRegistry({ clock: new ManualClock() });
    const ticket = registry.register("a");
    assert.equal(registry.size, 1);
    assert.equal(registry.report("a", usage(9)), true);
    assert.deepEqual(await ticket.usage, usage(9));
    assert.deepEqual(await ticket.settle(300), usage(9));
    assert.equal(registry.size, 0);
    assert.equal(registry.report("a", usage(1)), false, "a second report finds nobody");
    assert.deepEqual(registry.stats, {
      registered: 1,
      reported: 1,
      partial: 0,
      missing: 0,
      orphaned: 1,
      orphanReconciled: 0,
      orphanRelayed: 0,
      relayApplied: 0,
    });
  });

  it("settle waits the grace for a late report from an attached usage stream", async () => {
    const clock = new ManualClock();
    const registry = new UsageRegistry({ clock });
    const ticket = registry.register("a");
    registry.observe("a", () => undefined);
    const pending = ticket.settle(300);
    clock.advance(299);
    assert.equal((await settled(pending)).done, false);
    registry.report("a", usage(4));
    assert.deepEqual(await pending, usage(4));
    clock.advance(10_000);
    assert.equal(registry.stats.missing, 0);
  });

  it("after the grace, settles with the usage stream's live view (client cancel); at once without a usage stream", async () => {
    const clock = new ManualClock();
    const registry = new UsageRegistry({ clock });
    const watched = registry.register("watched");
    assert.equal(
      registry.observe("watched", () => usage(3, false)),
      true,
    );
    assert.equal(
      registry.observe("nobody", () => usage(1)),
      false,
    );
    const unwatched = registry.register("unwatched");
    const a = watched.settle(300);
    const b = unwatched.settle(300);
    assert.equal(await b, undefined, "no usage filter: nothing to wait for");
    clock.advance(299);
    assert.equal((await settled(a)).done, false);
    clock.advance(1);
    assert.deepEqual(await a, usage(3, false));
    assert.equal(registry.size, 0);
    assert.equal(registry.stats.partial, 1);
    assert.equal(registry.stats.missing, 1);
    // The usage stream's report, arriving after the deferred close, finds nobody.
    assert.equal(registry.report("watched", usage(7)), false);
  });

  it("drops entries nobody settles after the TTL: no leaks", async () => {
    const clock = new ManualClock();
    const registry = new UsageRegistry({ clock, ttlMs: 60_000 });
    const tickets = Array.from({ length: 1000 }, (_, i) => registry.register(`r${i}`));
    assert.equal(registry.size, 1000);
    clock.advance(59_999);
    assert.equal(registry.size, 1000);
    clock.advance(1);
    assert.equal(registry.size, 0);
    assert.equal(await tickets[0]?.usage, undefined);
    assert.equal(registry.stats.missing, 1000);
  });

  it("close settles everything; a snapshot that throws counts as nothing", async () => {
    const clock = new ManualClock();
    const registry = new UsageRegistry({ clock });
    const ticket = registry.register("x");
    registry.observe("x", () => {
      throw new Error("boom");
    });
    const pending = ticket.settle(10);
    assert.equal((await settled(pending)).done, false);
    clock.advance(10);
    assert.equal(await pending, undefined);
    const other = registry.register("y");
    registry.close();
    assert.equal(await other.usage, undefined);
    assert.equal(registry.size, 0);
  });
});

const headers = (entries: Record<string, string>) => ({
  headers: {
    headers: Object.entries(entries).map(([key, v]) => ({ key, raw_value: Buffer.from(v) })),
  },
});

describe("UsageStreamProcessor", () => {
  const setup = () => {
    const clock = new ManualClock();
    const registry = new UsageRegistry({ clock });
    const processor = new UsageStreamProcessor({
      registry,
      tokenCounter: () => approximateCounter,
      logger: silentLogger,
    });
    return { clock, registry, processor };
  };
  const observed = (message: ProcessingRequest): ProcessingRequest => ({
    ...message,
    observability_mode: true,
  });

  it("reports the usage of a streamed body at end_of_stream", async () => {
    const { registry, processor } = setup();
    const ticket = registry.register("id-1");
    processor.onMessage(
      observed({ request_headers: { ...headers({ ":path": "/v1/chat", [HEADERS.requestId]: "id-1" }) } }),
    );
    processor.onMessage(
      observed({ response_headers: headers({ ":status": "200", "content-type": "text/event-stream" }) }),
    );
    const body = `data: {"choices":[{"delta":{"content":"hi"}}]}\n\ndata: {"choices":[],"usage":{"prompt_tokens":4,"completion_tokens":1}}\n\ndata: [DONE]\n\n`;
    processor.onMessage(observed({ response_body: { body: Buffer.from(body.slice(0, 30)) } }));
    processor.onMessage(observed({ response_body: { body: Buffer.from(body.slice(30)) } }));
    processor.onMessage(observed({ response_body: { body: Buffer.alloc(0), end_of_stream: true } }));
    assert.deepEqual(await ticket.usage, {
      promptTokens: 4,
      completionTokens: 1,
      exact: true,
      complete: true,
    });
  });

  it("tells the main stream once when the response's first bytes arrive (its prefill is over)", () => {
    const { registry, processor } = setup();
    const ticket = registry.register("id-f");
    let calls = 0;
    ticket.onFirstOutput(() => calls++);
    processor.onMessage(
      observed({ request_headers: { ...headers({ ":path": "/v1/chat", [HEADERS.requestId]: "id-f" }) } }),
    );
    processor.onMessage(
      observed({ response_headers: headers({ ":status": "200", "content-type": "text/event-stream" }) }),
    );
    assert.equal(calls, 0, "headers are not output");
    processor.onMessage(observed({ response_body: { body: Buffer.from("data: {}\n\n") } }));
    processor.onMessage(observed({ response_body: { body: Buffer.from("data: {}\n\n") } }));
    assert.equal(calls, 1);
    // A callback registered after the first bytes runs at once.
    let late = 0;
    ticket.onFirstOutput(() => late++);
    assert.equal(late, 1);
  });

  it("reports a partial when the stream closes early, zero output for an error status", async () => {
    const { registry, processor } = setup();
    const ticket = registry.register("id-2");
    processor.onMessage(observed({ request_headers: headers({ [HEADERS.requestId]: "id-2" }) }));
    processor.onMessage(
      observed({ response_headers: headers({ ":status": "200", "content-type": "text/event-stream" }) }),
    );
    processor.onMessage(
      observed({
        response_body: { body: Buffer.from('data: {"choices":[{"delta":{"content":"one two"}}]}\n\n') },
      }),
    );
    processor.close();
    const result = await ticket.usage;
    assert.equal(result?.complete, false);
    assert.equal(result?.exact, false);
    assert.equal(result?.completionTokens, approximateCounter.count("one two"));

    const second = setup();
    const failed = second.registry.register("id-3");
    second.processor.onMessage(observed({ request_headers: headers({ [HEADERS.requestId]: "id-3" }) }));
    second.processor.onMessage(
      observed({ response_headers: { ...headers({ ":status": "503" }), end_of_stream: true } }),
    );
    assert.deepEqual(await failed.usage, {
      promptTokens: undefined,
      completionTokens: 0,
      exact: true,
      complete: true,
    });
  });

  it("never throws on unexpected input and ignores requests without an id", () => {
    const { registry, processor } = setup();
    processor.onMessage({} as ProcessingRequest);
    processor.onMessage(observed({ response_body: { body: Buffer.from("garbage") } }));
    processor.onMessage(observed({ request_headers: headers({ ":path": "/health" }) }));
    processor.onMessage(observed({ response_headers: { headers: undefined } }));
    processor.onMessage(null as unknown as ProcessingRequest);
    processor.close();
    processor.close();
    assert.equal(registry.stats.orphaned, 0);
  });
});
