import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { httpRequest, type RecordingUpstream, startRecordingUpstream } from "../helpers/ext-proc-fake.ts";
import { type FrontProxy, startBuiltinFront } from "../helpers/front-proxy.ts";
import { startTestGateway, type TestGateway } from "../helpers/gateway.ts";
import { standardPolicyInput } from "../helpers/policy.ts";
import {
  extProcClient,
  openRawStream,
  requestBody,
  requestHeaders,
  responseHeaders,
} from "../helpers/raw-ext-proc.ts";

const sha = (bytes: Buffer) => createHash("sha256").update(bytes).digest("hex");

/** vLLM's POST endpoints fairgate does not schedule, and paths nobody knows. */
const PASSTHROUGH_POSTS = [
  "/tokenize",
  "/detokenize",
  "/v1/responses",
  "/v1/rerank",
  "/rerank",
  "/v1/score",
  "/pooling",
  "/classify",
  "/v1/audio/transcriptions",
  "/some/unknown/path?x=1",
];

describe("requests fairgate does not parse keep their bodies through the proxy", () => {
  let gw: TestGateway;
  let upstream: RecordingUpstream;
  let front: FrontProxy;

  before(async () => {
    gw = await startTestGateway(standardPolicyInput());
    upstream = await startRecordingUpstream((_req, res, body) => {
      const payload = JSON.stringify({ received: sha(body), bytes: body.length });
      res.writeHead(200, {
        "content-type": "application/json",
        "content-length": Buffer.byteLength(payload),
      });
      res.end(payload);
    });
    front = await startBuiltinFront(gw.gateway.grpcPort, upstream.url);
  });
  after(async () => {
    await front.close();
    await upstream.close();
    await gw.close();
  });

  for (const path of PASSTHROUGH_POSTS) {
    it(`POST ${path} reaches the engine with its body intact`, async () => {
      const body = Buffer.from(JSON.stringify({ model: "m", prompt: "hello", input: ["a", "b"] }));
      const response = await httpRequest(front.url, {
        method: "POST",
        path,
        headers: { authorization: "Bearer key-acme", "content-type": "application/json" },
        body,
      });
      assert.equal(response.status, 200, response.body.toString());
      const answer = JSON.parse(response.body.toString());
      assert.equal(answer.received, sha(body));
      assert.equal(response.headers["x-fairgate-tenant"], "acme");
    });
  }

  it("a PUT or PATCH with a body, and a large binary body, pass unchanged", async () => {
    const big = Buffer.alloc(1024 * 1024 + 7);
    for (let i = 0; i < big.length; i++) big[i] = (i * 31 + 7) & 0xff;
    for (const [method, path, body] of [
      ["PUT", "/v1/chat/completions", Buffer.from('{"not":"scheduled"}')],
      ["PATCH", "/admin/thing", Buffer.from("plain text")],
      ["POST", "/v1/files", big],
    ] as const) {
      const response = await httpRequest(front.url, {
        method,
        path,
        headers: { authorization: "Bearer key-globex", "content-type": "application/octet-stream" },
        body,
      });
      assert.equal(response.status, 200, `${method} ${path}: ${response.body.toString()}`);
      assert.equal(JSON.parse(response.body.toString()).received, sha(body), `${method} ${path}`);
    }
  });
});

describe("a pass-through body over raw ext_proc, in every way Envoy may send it", () => {
  let gw: TestGateway;
  let client: ReturnType<typeof extProcClient>;

  before(async () => {
    gw = await startTestGateway(standardPolicyInput());
    client = extProcClient(gw.gateway.grpcPort);
  });
  after(async () => {
    client.close();
    await gw.close();
  });

  const open = async (path: string) => {
    const stream = openRawStream(client);
    stream.send(requestHeaders({ authorization: "Bearer key-acme" }, { path }));
    const headers = await stream.next();
    assert.equal(headers.request_headers?.response?.status ?? "CONTINUE", "CONTINUE");
    return stream;
  };

  it("BUFFERED: one body message, answered CONTINUE with no body mutation", async () => {
    const stream = await open("/tokenize");
    stream.send(requestBody({ model: "m", prompt: "hi" }));
    const reply = await stream.next();
    assert.ok(reply.request_body, "a request_body reply");
    assert.equal(reply.request_body.response?.body_mutation, undefined);
    stream.send(responseHeaders());
    assert.ok((await stream.next()).response_headers);
    stream.end();
    assert.equal((await stream.status).code, 0);
  });

  it("STREAMED: every chunk acknowledged, then request trailers, then the response", async () => {
    const stream = await open("/v1/responses");
    for (const piece of ['{"input":', '"hi"', "}"]) {
      stream.send(requestBody(piece, false));
      assert.ok((await stream.next()).request_body);
    }
    stream.send({ request_trailers: { trailers: { headers: [] } } });
    assert.ok((await stream.next()).request_trailers);
    stream.send(responseHeaders());
    assert.ok((await stream.next()).response_headers);
    stream.end();
    assert.equal((await stream.status).code, 0);
  });

  it("body mode NONE: the response headers follow the request headers directly", async () => {
    const stream = await open("/pooling");
    stream.send(responseHeaders());
    assert.ok((await stream.next()).response_headers);
    stream.end();
    assert.equal((await stream.status).code, 0);
  });
});
