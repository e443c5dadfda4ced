import { SHIPPED_MAX_MESSAGE_TIMEOUT_MS } from "../../extproc/src/config/envoy-timeouts.ts";
import { silentLogger } from "../../extproc/src/log.ts";
import { usageFilterConfig } from "../../extproc/src/proxy/config.ts";
import { type ExtProcProxy, startExtProcProxy } from "../../extproc/src/proxy/proxy-server.ts";

/** Whatever sits in front of fairgate in a test: the built-in Envoy-faithful proxy, or a
 * real Envoy when one is on PATH (see envoy-front.ts). */
export interface FrontProxy {
  readonly kind: "builtin" | "envoy";
  readonly url: string;
  close(): Promise<void>;
}

export async function startBuiltinFront(
  grpcPort: number,
  upstream: string,
  maxRequestBodyBytes = 4 * 1024 * 1024,
  options: {
    usageFilter?: boolean;
    maxMessageTimeoutMs?: number;
    messageTimeoutMs?: number;
    gracefulClose?: boolean;
  } = {},
): Promise<FrontProxy & { proxy: ExtProcProxy }> {
  const proxy = await startExtProcProxy({
    listen: "127.0.0.1:0",
    upstream,
    extProc: {
      grpcTarget: `127.0.0.1:${grpcPort}`,
      maxMessageTimeoutMs: options.maxMessageTimeoutMs ?? SHIPPED_MAX_MESSAGE_TIMEOUT_MS,
      ...(options.messageTimeoutMs === undefined ? {} : { messageTimeoutMs: options.messageTimeoutMs }),
      failureModeAllow: false,
      maxRequestBodyBytes,
      // Envoy's default (false); envoy/envoy.yaml turns ext_proc_graceful_grpc_close on.
      gracefulClose: options.gracefulClose ?? false,
    },
    // fairgate's usage filter after the main one, as in envoy/envoy.yaml (on by default).
    observers:
      options.usageFilter === false
        ? []
        : [{ ...usageFilterConfig(`127.0.0.1:${grpcPort}`), gracefulClose: options.gracefulClose ?? false }],
    logger: silentLogger,
  });
  return { kind: "builtin", url: proxy.url, proxy, close: () => proxy.close() };
}
