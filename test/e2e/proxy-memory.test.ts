/**
 * The built-in proxy keeps nothing of an exchange once it is over: the heap after a full
 * GC does not grow with the number of requests served. (Racing every exchange against one
 * shared never-settling promise kept each race's reactions, promises and closures alive.)
 */
import assert from "node:assert/strict";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, it } from "node:test";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import * as grpc from "@grpc/grpc-js";
import type { ProcessingRequest, ProcessingResponse } from "../../extproc/src/grpc/messages.ts";
import { loadServices } from "../../extproc/src/grpc/protos.ts";
import { type ExtProcProxy, startExtProcProxy } from "../../extproc/src/proxy/proxy-server.ts";
import { continueWith, httpRequest, phaseOf } from "../helpers/ext-proc-fake.ts";

setFlagsFromString("--expose-gc");
const gc = runInNewContext("gc") as () => void;

/** Heap in use after full collections. */
function settledHeap(): number {
  for (let i = 0; i < 3; i++) gc();
  return process.memoryUsage().heapUsed;
}

describe("built-in proxy: memory", () => {
  let processor: grpc.Server;
  let upstream: ReturnType<typeof createServer>;
  let proxy: ExtProcProxy;

  before(async () => {
    // A processor and an engine that remember nothing, unlike the recording test fakes.
    processor = new grpc.Server();
    processor.addService(loadServices().extProc.service, {
      Process: (call: grpc.ServerDuplexStream<ProcessingRequest, ProcessingResponse>) => {
        call.on("data", (message: ProcessingRequest) => {
          if (!message.observability_mode) call.write(continueWith(phaseOf(message)));
        });
        call.on("end", () => call.end());
        call.on("error", () => {});
      },
    });
    const port = await new Promise<number>((resolve, reject) =>
      processor.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (error, bound) =>
        error ? reject(error) : resolve(bound),
      ),
    );
    upstream = createServer((request, response) => {
      request.resume();
      request.on("end", () => response.writeHead(200, { "content-type": "application/json" }).end("{}"));
    });
    await new Promise<void>((resolve) => upstream.listen(0, "127.0.0.1", resolve));
    proxy = await startExtProcProxy({
      listen: "127.0.0.1:0",
      upstream: `http://127.0.0.1:${(upstream.address() as AddressInfo).port}`,
      extProc: { grpcTarget: `127.0.0.1:${port}`, gracefulClose: true },
    });
  });
  after(async () => {
    await proxy?.close();
    upstream?.closeAllConnections();
    await new Promise<void>((resolve) => (upstream ? upstream.close(() => resolve()) : resolve()));
    processor?.forceShutdown();
  });

  const serve = async (requests: number) => {
    let next = 0;
    await Promise.all(
      Array.from({ length: 8 }, async () => {
        while (next++ < requests) {
          const response = await httpRequest(proxy.url, {
            method: "POST",
            path: "/v1/chat/completions",
            headers: { "content-type": "application/json" },
            body: '{"model":"m","messages":[{"role":"user","content":"hi"}]}',
          });
          assert.equal(response.status, 200);
        }
      }),
    );
  };

  it("retains under 500 bytes per request served", async (t) => {
    // Past the JIT's warm-up, whose compiled code also lands on the heap.
    await serve(2_000);
    const before = settledHeap();
    await serve(2_000);
    const perRequest = (settledHeap() - before) / 2_000;
    t.diagnostic(`${perRequest.toFixed(0)} bytes retained per request`);
    assert.ok(perRequest < 500, `${perRequest.toFixed(0)} bytes retained per request`);
  });
});
