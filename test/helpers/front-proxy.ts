import { SHIPPED_MAX_MESSAGE_TIMEOUT_MS } from "../../extproc/src/grpc/processing-mode.ts";
import { silentLogger } from "../../extproc/src/log.ts";
import { startExtProcProxy } from "../../extproc/src/proxy/proxy-server.ts";

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
): Promise<FrontProxy> {
  const proxy = await startExtProcProxy({
    listen: "127.0.0.1:0",
    upstream,
    extProc: {
      grpcTarget: `127.0.0.1:${grpcPort}`,
      maxMessageTimeoutMs: SHIPPED_MAX_MESSAGE_TIMEOUT_MS,
      failureModeAllow: false,
      maxRequestBodyBytes,
    },
    logger: silentLogger,
  });
  return { kind: "builtin", url: proxy.url, close: () => proxy.close() };
}
