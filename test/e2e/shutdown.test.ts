import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { startTestGateway } from "../helpers/gateway.ts";
import { standardPolicyInput } from "../helpers/policy.ts";
import {
  chatBody,
  extProcClient,
  openRawStream,
  requestBody,
  requestHeaders,
  sendChat,
  setHeaders,
} from "../helpers/raw-ext-proc.ts";

describe("graceful shutdown", () => {
  it("stops being ready, refuses what is still queued after the grace period with 503, and closes", async () => {
    const gw = await startTestGateway(
      standardPolicyInput({ backends: [{ name: "engine", maxInFlightRequests: 1 }] }),
    );
    const client = extProcClient(gw.gateway.grpcPort);
    const running = await sendChat(client, "key-acme");
    const queued = openRawStream(client);
    queued.send(requestHeaders({ authorization: "Bearer key-globex" }));
    await queued.next();
    queued.send(requestBody(chatBody()));
    assert.ok((await queued.next()).override_message_timeout);

    const stopping = gw.gateway.shutdown(300);
    const readiness = await gw.gateway.readiness();
    assert.equal(readiness.ready, false);
    assert.equal(readiness.checks.shutdown?.ok, false);

    const refused = await queued.next(2_000);
    const immediate = refused.immediate_response;
    assert.ok(immediate);
    assert.equal(
      JSON.parse(Buffer.from(immediate.body as Uint8Array).toString()).error.code,
      "shutting_down",
    );
    assert.equal(setHeaders({ header_mutation: immediate.headers })["retry-after"], "1");
    await stopping;
    await running.status;
    client.close();
  });
});
