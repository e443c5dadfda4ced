import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import * as grpc from "@grpc/grpc-js";
import type { ProcessingResponse } from "../../extproc/src/grpc/messages.ts";
import { loadServices } from "../../extproc/src/grpc/protos.ts";
import { startTestGateway, type TestGateway } from "../helpers/gateway.ts";
import { standardPolicyInput } from "../helpers/policy.ts";
import {
  chatBody,
  extProcClient,
  openRawStream,
  requestBody,
  requestHeaders,
  responseHeaders,
  sendChat,
  setHeaders,
} from "../helpers/raw-ext-proc.ts";

const auth = (tenant: string) => ({ authorization: `Bearer key-${tenant}` });

function envelopeOf(response: ProcessingResponse) {
  const immediate = response.immediate_response;
  assert.ok(immediate, `expected an immediate_response, got ${JSON.stringify(Object.keys(response))}`);
  const body = JSON.parse(Buffer.from(immediate.body as Uint8Array).toString("utf8"));
  const status = Number(immediate.status?.code === undefined ? NaN : statusNumber(immediate.status.code));
  return { status, body, headers: setHeaders({ header_mutation: immediate.headers }) };
}

/** proto-loader decodes enums as names; Envoy's StatusCode names map to HTTP numbers. */
function statusNumber(code: number | string): number {
  if (typeof code === "number") return code;
  const names: Record<string, number> = {
    BadRequest: 400,
    Unauthorized: 401,
    NotFound: 404,
    PayloadTooLarge: 413,
    TooManyRequests: 429,
    InternalServerError: 500,
    ServiceUnavailable: 503,
  };
  return names[code] ?? Number.NaN;
}

describe("ext_proc protocol (real gRPC)", () => {
  let gw: TestGateway;
  let client: ReturnType<typeof extProcClient>;

  before(async () => {
    gw = await startTestGateway(
      standardPolicyInput({
        backends: [{ name: "engine", maxInFlightRequests: 1 }],
        requests: { maxBodyBytes: 1024 * 1024 },
      }),
    );
    client = extProcClient(gw.gateway.grpcPort);
  });
  after(async () => {
    client.close();
    await gw.close();
  });

  it("refuses an unknown API key with a 401 OpenAI envelope", async () => {
    const stream = openRawStream(client);
    stream.send(requestHeaders({ authorization: "Bearer wrong" }));
    const { status, body } = envelopeOf(await stream.next());
    assert.equal(status, 401);
    assert.equal(body.error.code, "unknown_api_key");
    assert.equal(body.error.type, "authentication_error");
    assert.equal(body.error.param, null);
    assert.equal(typeof body.error.message, "string");
    stream.end();
  });

  it("sets x-fairgate-tenant/priority upstream and strips spoofed x-fairgate-* headers", async () => {
    const stream = openRawStream(client);
    stream.send(
      requestHeaders({
        ...auth("acme"),
        "x-fairgate-tenant": "someone-else",
        "x-fairgate-debug": "1",
        "x-fairgate-priority": "0",
      }),
    );
    const headersReply = await stream.next();
    const mutation = headersReply.request_headers?.response;
    assert.ok(mutation, "expected a request_headers reply");
    const { "x-fairgate-request-id": requestId, ...identity } = setHeaders(mutation);
    assert.deepEqual(identity, { "x-fairgate-tenant": "acme", "x-fairgate-priority": "0" });
    // The usage (observability) stream names the request by this id.
    assert.match(requestId ?? "", /^[0-9a-f-]{36}$/);
    assert.deepEqual(mutation.header_mutation?.remove_headers, ["x-fairgate-debug"]);
    for (const option of mutation.header_mutation?.set_headers ?? []) {
      assert.equal(option.header.value ?? "", "", "values must travel in raw_value only");
      assert.equal(option.append_action, "OVERWRITE_IF_EXISTS_OR_ADD");
    }
    stream.send(requestBody(chatBody()));
    const bodyReply = await stream.next();
    assert.equal(bodyReply.request_body?.response?.status ?? "CONTINUE", "CONTINUE");
    stream.send(responseHeaders(200));
    const responseReply = await stream.next();
    const set = setHeaders(responseReply.response_headers?.response);
    assert.equal(set["x-fairgate-tenant"], "acme");
    assert.equal(set["x-fairgate-queue-wait-ms"], "0");
    assert.equal(set["x-fairgate-estimated-wait-ms"], "0");
    assert.equal(set["x-fairgate-worst-case-wait-ms"], "0");
    assert.match(set["x-fairgate-estimated-ttft-ms"] ?? "", /^\d+$/);
    stream.end();
    assert.equal((await stream.status).code, grpc.status.OK);
  });

  it("answers malformed bodies with 400 and keeps serving", async () => {
    const cases: Array<[Buffer | string | object, string]> = [
      ["{not json", "invalid_json"],
      [Buffer.from([0x7b, 0x22, 0xff, 0xfe, 0x22, 0x7d]), "invalid_encoding"],
      [{ model: "m", messages: "hello" }, "invalid_request_body"],
      [chatBody({ max_tokens: -5 }), "invalid_max_tokens"],
      [chatBody({ max_tokens: 10_000_000_000 }), "invalid_max_tokens"],
    ];
    for (const [body, code] of cases) {
      const stream = openRawStream(client);
      stream.send(requestHeaders(auth("globex")));
      await stream.next();
      stream.send(requestBody(body));
      const { status, body: envelope } = envelopeOf(await stream.next());
      assert.equal(status, 400, `status for ${code}`);
      assert.equal(envelope.error.code, code);
      stream.end();
    }
    const healthy = openRawStream(client);
    healthy.send(requestHeaders(auth("globex")));
    assert.ok((await healthy.next()).request_headers);
    healthy.end();
  });

  it("refuses a body over maxBodyBytes with 413", async () => {
    const stream = openRawStream(client);
    stream.send(requestHeaders(auth("globex")));
    await stream.next();
    stream.send(requestBody(Buffer.alloc(3 * 1024 * 1024, 0x61)));
    const { status, body } = envelopeOf(await stream.next());
    assert.equal(status, 413);
    assert.equal(body.error.code, "body_too_large");
    stream.end();
  });

  it("refuses prompt + max_tokens over the tenant's maxContextTokens", async () => {
    const stream = openRawStream(client);
    stream.send(requestHeaders(auth("acme")));
    await stream.next();
    stream.send(requestBody(chatBody({ max_tokens: 5_000 })));
    const { status, body } = envelopeOf(await stream.next());
    assert.equal(status, 400);
    assert.equal(body.error.code, "context_too_long");
    stream.end();
  });

  it("passes GET /v1/models through after identifying the tenant", async () => {
    const stream = openRawStream(client);
    stream.send(requestHeaders(auth("globex"), { method: "GET", path: "/v1/models", endOfStream: true }));
    const reply = await stream.next();
    assert.equal(setHeaders(reply.request_headers?.response)["x-fairgate-tenant"], "globex");
    stream.end();
  });

  it("ends a stream whose first message carries no phase with INVALID_ARGUMENT", async () => {
    const stream = openRawStream(client);
    stream.send({});
    const status = await stream.status;
    assert.equal(status.code, grpc.status.INVALID_ARGUMENT);
    assert.match(status.details, /no phase/);
  });

  it("ends a stream that sends the body before the headers with INVALID_ARGUMENT", async () => {
    const stream = openRawStream(client);
    stream.send(requestBody(chatBody()));
    assert.equal((await stream.status).code, grpc.status.INVALID_ARGUMENT);
  });

  it("holds a request while the backend is full, extends Envoy's timeout, and dispatches on release", async () => {
    const first = openRawStream(client);
    first.send(requestHeaders(auth("acme")));
    await first.next();
    first.send(requestBody(chatBody()));
    assert.ok((await first.next()).request_body, "first request dispatched");

    const second = openRawStream(client);
    second.send(requestHeaders(auth("globex")));
    await second.next();
    second.send(requestBody(chatBody()));
    const override = await second.next();
    assert.ok(override.override_message_timeout, "queued request must extend Envoy's message timeout");
    assert.ok(Number(override.override_message_timeout.seconds) >= 1);
    assert.equal(gw.gateway.scheduler.snapshot().tenants.find((t) => t.tenant === "globex")?.queued, 1);

    await new Promise((r) => setTimeout(r, 100));
    first.send(responseHeaders(200));
    await first.next();
    first.end();
    const dispatched = await second.next();
    assert.ok(dispatched.request_body, "second request dispatched after the first ended");
    second.send(responseHeaders(200));
    const waited = Number(
      setHeaders((await second.next()).response_headers?.response)["x-fairgate-queue-wait-ms"],
    );
    assert.ok(waited >= 90, `queue wait header ${waited} reflects the time held`);
    second.end();
  });

  it("removes a queued request at once when the client cancels", async () => {
    const holder = await sendChat(client, "key-acme");

    const waiting = await sendChat(client, "key-globex");
    waiting.cancel();
    await waiting.status;
    const deadline = Date.now() + 1_000;
    while (gw.gateway.scheduler.snapshot().backends[0]?.queued !== 0 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 10));
    }
    assert.equal(gw.gateway.scheduler.snapshot().backends[0]?.queued, 0);
    holder.end();
    await holder.status;
  });

  it("refuses with queue_timeout when held past maxQueueWaitMs, and with queue_full past maxQueued", async () => {
    const holder = await sendChat(client, "key-acme");

    const queued = openRawStream(client);
    queued.send(requestHeaders(auth("initech")));
    await queued.next();
    queued.send(requestBody(chatBody()));
    assert.ok((await queued.next()).override_message_timeout);

    const overflow = openRawStream(client);
    overflow.send(requestHeaders(auth("initech")));
    await overflow.next();
    overflow.send(requestBody(chatBody()));
    const full = envelopeOf(await overflow.next());
    assert.equal(full.status, 429);
    assert.equal(full.body.error.code, "queue_full");
    assert.match(full.headers["retry-after"] ?? "", /^\d+$/);

    const timedOut = envelopeOf(await queued.next(2_000));
    assert.equal(timedOut.status, 429);
    assert.equal(timedOut.body.error.code, "queue_timeout");
    holder.end();
    queued.end();
    overflow.end();
  });

  it("refuses at once when the worst-case wait exceeds x-fairgate-max-wait-ms", async () => {
    const holder = await sendChat(client, "key-acme");

    const impatient = openRawStream(client);
    impatient.send(requestHeaders({ ...auth("globex"), "x-fairgate-max-wait-ms": "1" }));
    await impatient.next();
    impatient.send(requestBody(chatBody()));
    const { status, body } = envelopeOf(await impatient.next());
    assert.equal(status, 429);
    assert.equal(body.error.code, "wait_exceeds_max");
    holder.end();
    impatient.end();
  });

  it("survives 200 streams opened and cancelled mid-request", async () => {
    const streams = Array.from({ length: 200 }, () => openRawStream(client));
    streams.forEach((s, i) => {
      s.send(requestHeaders(auth(i % 2 ? "acme" : "globex")));
      if (i % 3 === 0) s.send(requestBody(chatBody()));
    });
    await new Promise((r) => setTimeout(r, 100));
    for (const s of streams) s.cancel();
    await Promise.all(streams.map((s) => s.status));
    const deadline = Date.now() + 2_000;
    while (Date.now() < deadline) {
      const snapshot = gw.gateway.scheduler.snapshot();
      if (snapshot.backends.every((b) => b.inFlight === 0 && b.queued === 0)) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    const snapshot = gw.gateway.scheduler.snapshot();
    assert.ok(
      snapshot.backends.every((b) => b.inFlight === 0 && b.queued === 0),
      JSON.stringify(snapshot),
    );
    const after = openRawStream(client);
    after.send(requestHeaders(auth("acme")));
    assert.ok((await after.next()).request_headers);
    after.end();
  });

  it("reports SERVING on grpc.health.v1", async () => {
    const { health } = loadServices();
    const healthClient = new health(`127.0.0.1:${gw.gateway.grpcPort}`, grpc.credentials.createInsecure());
    const check = (service: string) =>
      new Promise<{ status: string }>((resolve, reject) =>
        (
          healthClient as unknown as {
            Check: (req: { service: string }, cb: (e: Error | null, r: { status: string }) => void) => void;
          }
        ).Check({ service }, (e: Error | null, r: { status: string }) => (e ? reject(e) : resolve(r))),
      );
    assert.equal((await check("")).status, "SERVING");
    assert.equal((await check("envoy.service.ext_proc.v3.ExternalProcessor")).status, "SERVING");
    await assert.rejects(check("nope"), /NOT_FOUND|unknown service/);
    healthClient.close();
  });
});
