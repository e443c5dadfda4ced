import * as http from "node:http";
import type { LocalReply } from "./local-reply.ts";

/**
 * The router's side of the proxy: one keep-alive connection pool to the upstream, and
 * upstream failures before response headers turned into Envoy's router local replies
 * (source/common/router/router.cc, Filter::onUpstreamReset): 503, or 502 for a protocol
 * error, with Envoy's body text.
 */

export interface Upstream {
  readonly hostname: string;
  readonly port: number;
  readonly agent: http.Agent;
}

export function createUpstream(url: string): Upstream {
  const parsed = new URL(url);
  if (parsed.protocol !== "http:") throw new Error(`upstream must be an http:// URL, got "${url}"`);
  if (parsed.pathname !== "/" || parsed.search !== "") {
    throw new Error(`upstream "${url}" must not carry a path; request paths are forwarded as they are`);
  }
  return {
    hostname: parsed.hostname.replace(/^\[|\]$/g, ""),
    port: Number(parsed.port || 80),
    agent: new http.Agent({ keepAlive: true }),
  };
}

export type UpstreamOutcome = { ok: true; response: http.IncomingMessage } | { ok: false; reply: LocalReply };

export interface UpstreamExchange {
  readonly request: http.ClientRequest;
  readonly outcome: Promise<UpstreamOutcome>;
}

const CONNECT_ERRORS = new Set([
  "ECONNREFUSED",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "ENOTFOUND",
  "EAI_AGAIN",
  "EADDRNOTAVAIL",
]);

export function startUpstreamRequest(
  upstream: Upstream,
  head: { method: string; path: string; headers: Record<string, string | string[]> },
): UpstreamExchange {
  const request = http.request({
    hostname: upstream.hostname,
    port: upstream.port,
    agent: upstream.agent,
    method: head.method,
    path: head.path,
    headers: head.headers,
    // The connection manager already stripped what node:http would otherwise add itself.
    setHost: false,
  });
  let connected = false;
  request.on("socket", (socket) => {
    if (!socket.connecting) connected = true;
    else socket.once("connect", () => (connected = true));
  });
  const outcome = new Promise<UpstreamOutcome>((resolve) => {
    request.once("response", (response) => resolve({ ok: true, response }));
    // A destroyed request may report more errors; only the first one decides.
    request.on("error", (error: NodeJS.ErrnoException) => {
      resolve({ ok: false, reply: upstreamResetReply(error, connected) });
    });
  });
  return { request, outcome };
}

function upstreamResetReply(error: NodeJS.ErrnoException, connected: boolean): LocalReply {
  const code = error.code ?? "";
  let reason: string;
  let status = 503;
  if (code.startsWith("HPE_")) {
    reason = "protocol error";
    status = 502;
  } else if (!connected || CONNECT_ERRORS.has(code)) {
    reason = "connection failure";
  } else {
    reason = "connection termination";
  }
  const transport = !connected && code ? `, transport failure reason: ${code}` : "";
  return {
    status,
    body: Buffer.from(
      `upstream connect error or disconnect/reset before headers. reset reason: ${reason}${transport}`,
    ),
    details: `upstream_reset_before_response_started{${reason.replace(/ /g, "_")}}`,
  };
}
