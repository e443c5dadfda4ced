import type * as grpc from "@grpc/grpc-js";

/**
 * Node's HTTP/2 server (nghttp2) closes a whole session once its peer has reset more than
 * 1,000 streams in a burst or 33 a second after it: the "rapid reset" (CVE-2023-44487)
 * guard. Envoy resets an ext_proc stream for every request whose client goes away, and
 * carries thousands of requests a second over a handful of connections, so the guard
 * fires in ordinary operation and takes every other request on that connection with it
 * (gRPC INTERNAL, the client sees a 500). fairgate's ext_proc port is for Envoy only, so
 * the limits are raised far above any legitimate rate instead.
 */
export const STREAM_RESET_BURST = 1_000_000;
export const STREAM_RESET_RATE_PER_SEC = 1_000_000;

/** Whether this Node's http2 reads streamResetBurst/streamResetRate (Node 20 does not:
 * there the guard stays at 1,000 / 33 per second). */
export function streamResetLimitHonoured(): boolean {
  const [major = 0] = process.versions.node.split(".").map(Number);
  return major >= 22;
}

/**
 * grpc-js passes no option through to these http2 settings (streamResetBurst and
 * streamResetRate, Node ≥ 20.12), so they are added to the options it gives
 * http2.createServer. Must run before bindAsync. Returns false if grpc-js no longer keeps
 * them where expected (a test checks it does).
 */
export function raiseStreamResetLimit(server: grpc.Server): boolean {
  const options = (server as unknown as { commonServerOptions?: Record<string, unknown> })
    .commonServerOptions;
  if (!options || typeof options !== "object") return false;
  options.streamResetBurst = STREAM_RESET_BURST;
  options.streamResetRate = STREAM_RESET_RATE_PER_SEC;
  return true;
}
