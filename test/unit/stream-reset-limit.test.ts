import assert from "node:assert/strict";
import { describe, it } from "node:test";
import * as grpc from "@grpc/grpc-js";
import {
  raiseStreamResetLimit,
  STREAM_RESET_BURST,
  STREAM_RESET_RATE_PER_SEC,
} from "../../extproc/src/grpc/stream-reset-limit.ts";

describe("the HTTP/2 stream-reset guard on the ext_proc server", () => {
  it("reaches the options grpc-js gives http2.createServer (fails if grpc-js moves them)", () => {
    const server = new grpc.Server();
    assert.equal(raiseStreamResetLimit(server), true);
    const options = (server as unknown as { commonServerOptions: Record<string, unknown> })
      .commonServerOptions;
    assert.equal(options.streamResetBurst, STREAM_RESET_BURST);
    assert.equal(options.streamResetRate, STREAM_RESET_RATE_PER_SEC);
  });
});
