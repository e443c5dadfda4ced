import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { durationToMs } from "../../extproc/src/grpc/messages.ts";
import { LARGE_BODY_BYTES } from "../../extproc/src/grpc/processor.ts";
import { startTestGateway, type TestGateway } from "../helpers/gateway.ts";
import { standardPolicyInput } from "../helpers/policy.ts";
import {
  chatBody,
  extProcClient,
  openRawStream,
  requestBody,
  requestHeaders,
} from "../helpers/raw-ext-proc.ts";

describe("large request bodies ask Envoy for time before they are read", () => {
  let gw: TestGateway;
  let client: ReturnType<typeof extProcClient>;
  before(async () => {
    gw = await startTestGateway(standardPolicyInput({ requests: { maxBodyBytes: 8 * 1024 * 1024 } }));
    client = extProcClient(gw.gateway.grpcPort);
  });
  after(async () => {
    client.close();
    await gw.close();
  });

  const send = async (contentChars: number) => {
    const stream = openRawStream(client);
    stream.send(requestHeaders({ authorization: "Bearer key-globex" }));
    await stream.next();
    const body = chatBody({ messages: [{ role: "user", content: "word ".repeat(contentChars / 5) }] });
    stream.send(requestBody(body));
    const replies = [await stream.next(5_000)];
    if (!replies[0]?.request_body) replies.push(await stream.next(5_000));
    stream.cancel();
    return { replies, bytes: Buffer.byteLength(JSON.stringify(body)) };
  };

  it("a body over the threshold: override_message_timeout first, then the dispatch", async () => {
    const { replies, bytes } = await send(LARGE_BODY_BYTES * 4);
    assert.ok(bytes >= LARGE_BODY_BYTES);
    const [first, second] = replies;
    assert.ok(first?.override_message_timeout, "the override comes before the body is parsed");
    // globex has the default 30 s queue wait: held at most that, override half a second longer.
    assert.equal(durationToMs(first.override_message_timeout), 30_500);
    assert.equal(second?.request_body?.response?.status ?? "CONTINUE", "CONTINUE");
  });

  it("16 large bodies at once: each gets its override before any of them is parsed", async () => {
    const results = await Promise.all(Array.from({ length: 16 }, () => send(1024 * 1024)));
    for (const { replies } of results) {
      assert.ok(replies[0]?.override_message_timeout);
      assert.ok(replies[1]?.request_body);
    }
  });

  it("a small body gets no extra message when nothing queues", async () => {
    const { replies } = await send(1_000);
    assert.equal(replies.length, 1);
    assert.ok(replies[0]?.request_body);
    assert.equal(replies[0]?.override_message_timeout, undefined);
  });
});
