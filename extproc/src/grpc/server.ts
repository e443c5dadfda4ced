import { randomUUID } from "node:crypto";
import * as grpc from "@grpc/grpc-js";
import { reconcileOrphanedUsage } from "../accounting/orphan-reconcile.ts";
import { streamIdOn } from "../accounting/request-id.ts";
import type { Usage } from "../accounting/usage.ts";
import type { ProcessingRequest, ProcessingResponse } from "./messages.ts";
import { type ProcessorContext, ProtocolError, StreamProcessor } from "./processor.ts";
import { EXT_PROC_SERVICE, HEALTH_SERVICE, loadServices } from "./protos.ts";
import { raiseStreamResetLimit, streamResetLimitHonoured } from "./stream-reset-limit.ts";
import { UsageStreamProcessor } from "./usage-stream.ts";

export type ServingStatus = "SERVING" | "NOT_SERVING";

/** gRPC messages may carry whole prompts; the limit sits just above the policy's body cap
 * so an oversized body reaches the processor and is refused with a clean 413. */
const MESSAGE_OVERHEAD_BYTES = 64 * 1024;

export interface ExtProcServer {
  readonly port: number;
  activeStreams(): number;
  setServingStatus(status: ServingStatus): void;
  /** Waits until no stream is open or the deadline passes. */
  drain(deadlineMs: number): Promise<boolean>;
  close(): Promise<void>;
}

export async function startExtProcServer(options: {
  listen: string;
  context: ProcessorContext;
  maxMessageBytes: number;
}): Promise<ExtProcServer> {
  const { extProc, health } = loadServices();
  const { context } = options;
  const server = new grpc.Server({
    "grpc.max_receive_message_length": options.maxMessageBytes + MESSAGE_OVERHEAD_BYTES,
    "grpc.max_send_message_length": options.maxMessageBytes + MESSAGE_OVERHEAD_BYTES,
    "grpc.keepalive_permit_without_calls": 1,
  });
  if (!raiseStreamResetLimit(server) || !streamResetLimitHonoured()) {
    context.logger.warn(
      "this Node cannot raise its HTTP/2 stream-reset limit (Node >= 22 can): if Envoy resets more than 1000 ext_proc streams in a burst and then over 33 a second, Node closes that connection and its other requests fail; keep Envoy's ext_proc_graceful_grpc_close runtime flag on (envoy/envoy.yaml)",
      { node: process.versions.node },
    );
  }
  const streams = new Set<grpc.ServerDuplexStream<ProcessingRequest, ProcessingResponse>>();
  /** Observability-mode (usage) streams: they hold nothing and Envoy keeps them open for
   * deferred_close_timeout after the request, so they do not count towards draining. */
  const observers = new Set<grpc.ServerDuplexStream<ProcessingRequest, ProcessingResponse>>();
  let idleWaiters: Array<() => void> = [];
  const wakeIdle = () => {
    if (streams.size > 0) return;
    const waiters = idleWaiters;
    idleWaiters = [];
    for (const wake of waiters) wake();
  };
  let status: ServingStatus = "SERVING";
  const watchers = new Set<grpc.ServerWritableStream<{ service?: string }, { status: string }>>();

  server.addService(extProc.service, {
    Process(call: grpc.ServerDuplexStream<ProcessingRequest, ProcessingResponse>) {
      streams.add(call);
      context.metrics.streamsActive.inc();
      const id = context.replicaId ? streamIdOn(context.replicaId) : randomUUID();
      let finished = false;
      const processor = new StreamProcessor(context, id, (response) => {
        if (!finished && !call.destroyed) call.write(response);
      });
      // Set when the first message says observability_mode: the stream then goes to a
      // UsageStreamProcessor, which never replies (Envoy ignores replies in that mode).
      let observer: UsageStreamProcessor | undefined;
      const finish = (reason: "end" | "cancelled" | "error") => {
        if (finished) return;
        finished = true;
        if (observer) {
          observer.close();
          observers.delete(call);
          return;
        }
        processor.close(reason);
        streams.delete(call);
        context.metrics.streamsActive.dec();
        wakeIdle();
      };
      const observe = () => {
        observer = new UsageStreamProcessor({
          registry: context.usage,
          tokenCounter: context.tokenCounter,
          logger: context.logger,
          // Another replica's request: reconcile its budgets here (usage-registry.ts).
          reconcileOrphan: (orphan) => reconcileOrphanedUsage(context.budgets, context.policy(), orphan),
          ...(context.relayUsage ? { relayOrphan: relayOrphan(context) } : {}),
        });
        streams.delete(call);
        observers.add(call);
        context.metrics.streamsActive.dec();
        wakeIdle();
      };
      let first = true;
      const fail = (error: unknown) => {
        const protocol = error instanceof ProtocolError;
        context.metrics.streamErrors.inc({ reason: protocol ? "protocol" : "internal" });
        if (!protocol) context.logger.error("ext_proc stream failed", { stream: id, error: String(error) });
        finish("error");
        if (!call.destroyed) {
          call.emit("error", {
            code: protocol ? grpc.status.INVALID_ARGUMENT : grpc.status.INTERNAL,
            details: protocol ? (error as Error).message : "internal error",
          });
        }
      };
      // Messages of one stream are handled strictly in order.
      let chain = Promise.resolve();
      call.on("data", (message: ProcessingRequest) => {
        if (first) {
          first = false;
          if (message?.observability_mode === true) observe();
        }
        if (observer) {
          if (!finished) observer.onMessage(message);
          return;
        }
        chain = chain.then(() => (finished ? undefined : processor.onMessage(message))).catch(fail);
      });
      call.on("end", () => {
        chain = chain.then(() => {
          finish("end");
          if (!call.destroyed) call.end();
        });
      });
      call.on("cancelled", () => {
        if (observer) {
          finish("cancelled");
          return;
        }
        // Envoy half-closes and then resets the stream once it has the last reply it needs,
        // so a cancellation after the request phases is the normal end, not an error.
        if (!processor.requestPhasesDone) context.metrics.streamErrors.inc({ reason: "cancelled" });
        finish("cancelled");
      });
      call.on("error", () => finish("error"));
      call.on("close", () => finish("cancelled"));
    },
  });

  const statusFor = (service: string | undefined) =>
    service === "" || service === undefined || service === EXT_PROC_SERVICE ? status : undefined;
  server.addService(health.service, {
    Check(call: grpc.ServerUnaryCall<{ service?: string }, unknown>, callback: grpc.sendUnaryData<unknown>) {
      const current = statusFor(call.request.service);
      if (current === undefined) callback({ code: grpc.status.NOT_FOUND, details: "unknown service" });
      else callback(null, { status: current });
    },
    List(_call: unknown, callback: grpc.sendUnaryData<unknown>) {
      callback(null, { statuses: { "": { status }, [EXT_PROC_SERVICE]: { status } } });
    },
    Watch(call: grpc.ServerWritableStream<{ service?: string }, { status: string }>) {
      call.write({ status: statusFor(call.request.service) ?? "SERVICE_UNKNOWN" });
      watchers.add(call);
      call.on("cancelled", () => watchers.delete(call));
      call.on("close", () => watchers.delete(call));
    },
  });

  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(options.listen, grpc.ServerCredentials.createInsecure(), (error, bound) =>
      error ? reject(error) : resolve(bound),
    );
  });

  return {
    port,
    activeStreams: () => streams.size,
    setServingStatus(next) {
      status = next;
      for (const watcher of watchers) watcher.write({ status });
    },
    drain(deadlineMs) {
      if (streams.size === 0) return Promise.resolve(true);
      return new Promise<boolean>((resolve) => {
        const timer = setTimeout(() => resolve(streams.size === 0), deadlineMs);
        idleWaiters.push(() => {
          clearTimeout(timer);
          resolve(true);
        });
      });
    },
    async close() {
      for (const watcher of watchers) watcher.end();
      watchers.clear();
      // Usage streams outlive their requests by Envoy's deferred_close_timeout; every main
      // stream is done by now, so they have nothing left to report.
      for (const call of observers) call.end();
      observers.clear();
      await new Promise<void>((resolve) => {
        const force = setTimeout(() => {
          server.forceShutdown();
          resolve();
        }, 2_000);
        server.tryShutdown(() => {
          clearTimeout(force);
          resolve();
        });
      });
      for (const call of streams) call.destroy();
    },
  };
}

export { HEALTH_SERVICE };

/** Relays an orphaned report in the background; the usage stream never waits for Redis. */
function relayOrphan(context: ProcessorContext): (requestId: string, usage: Usage) => void {
  return (requestId, usage) => {
    context.relayUsage?.(requestId, usage).then(
      (sent) => {
        if (sent) context.usage.orphanRelayed();
      },
      // Redis is down: the shared queue state already reports it, once.
      (error) => context.logger.debug("usage relay failed", { error: String(error) }),
    );
  };
}
