import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import type { ProcessingResponse } from "../../extproc/src/grpc/messages.ts";
import { startTestGateway, type TestGateway } from "../helpers/gateway.ts";
import { standardPolicyInput } from "../helpers/policy.ts";
import {
  chatBody,
  extProcClient,
  openRawStream,
  requestBody,
  requestHeaders,
} from "../helpers/raw-ext-proc.ts";
import { startRedis, type TestRedis } from "../helpers/redis.ts";

/** Issue 16: with the Redis store, a request that does not queue costs no extra message. */
describe("override_message_timeout only when a request has to wait", () => {
  let redis: TestRedis;
  let gw: TestGateway;
  let client: ReturnType<typeof extProcClient>;
  before(async () => {
    redis = await startRedis();
    const base = standardPolicyInput();
    gw = await startTestGateway({
      ...base,
      // A long store timeout, so a paused Redis makes the check slow rather than failed.
      store: { redis: redis.url, onOutage: "fail-open", timeoutMs: 1_500 },
      tenants: (base.tenants ?? []).map((t) => ({
        ...t,
        limits: { ...t.limits, rpm: 100_000, maxConcurrency: 50 },
      })),
    });
    client = extProcClient(gw.gateway.grpcPort);
  });
  after(async () => {
    redis.resume();
    client.close();
    await gw.close();
    await redis.stop();
  });

  /** The replies to the body message, up to and including the one that answers it. */
  const bodyReplies = async (): Promise<ProcessingResponse[]> => {
    const stream = openRawStream(client);
    stream.send(requestHeaders({ authorization: "Bearer key-globex" }));
    await stream.next();
    stream.send(requestBody(chatBody()));
    const replies = [await stream.next(5_000)];
    while (!replies.at(-1)?.request_body && !replies.at(-1)?.immediate_response)
      replies.push(await stream.next(5_000));
    stream.cancel();
    return replies;
  };

  it("a budget-checked request that is dispatched at once gets its body reply and nothing else", async () => {
    await bodyReplies(); // warm: the Redis scripts are loaded
    for (let i = 0; i < 5; i++) {
      const replies = await bodyReplies();
      assert.equal(replies.length, 1, JSON.stringify(replies.map((r) => Object.keys(r))));
      assert.ok(replies[0]?.request_body);
    }
  });

  it("a budget check that is slow (Redis paused) gets the override before Envoy's 200 ms", async () => {
    redis.pause();
    const started = performance.now();
    const pending = bodyReplies();
    const replies = await pending;
    redis.resume();
    assert.ok(replies[0]?.override_message_timeout, "override first");
    assert.ok(replies.at(-1)?.request_body || replies.at(-1)?.immediate_response);
    assert.ok(performance.now() - started > 100, "the check really was slow");
  });
});
