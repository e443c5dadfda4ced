/**
 * The lifecycle benchmark's baseline, run as its own process: a bare grpc-js ext_proc
 * server that answers CONTINUE to every message expecting a reply, ignores
 * observability-mode messages, and ends each stream when the client half-closes it.
 * Prints nothing; sends its port to the parent over IPC.
 */
import * as grpc from "@grpc/grpc-js";
import type { ProcessingRequest, ProcessingResponse } from "../../../extproc/src/grpc/messages.ts";
import { loadServices } from "../../../extproc/src/grpc/protos.ts";
import { continueWith, phaseOf } from "../../helpers/ext-proc-fake.ts";

const { extProc } = loadServices();
const server = new grpc.Server({
  "grpc.max_receive_message_length": -1,
  "grpc.max_send_message_length": -1,
});
server.addService(extProc.service, {
  Process(call: grpc.ServerDuplexStream<ProcessingRequest, ProcessingResponse>) {
    call.on("data", (message: ProcessingRequest) => {
      if (!message.observability_mode) call.write(continueWith(phaseOf(message)));
    });
    call.on("end", () => call.end());
    call.on("error", () => {});
  },
});
const port = await new Promise<number>((resolve, reject) =>
  server.bindAsync(
    `127.0.0.1:${process.argv[2] ?? "0"}`,
    grpc.ServerCredentials.createInsecure(),
    (error, bound) => (error ? reject(error) : resolve(bound)),
  ),
);
process.send?.({ type: "listening", port });
process.on("SIGTERM", () => {
  server.forceShutdown();
  process.exit(0);
});
process.on("disconnect", () => process.exit(0));
