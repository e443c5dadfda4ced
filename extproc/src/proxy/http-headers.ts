import { randomUUID } from "node:crypto";
import type { IncomingMessage } from "node:http";
import { HeaderMap } from "./header-map.ts";

/**
 * HTTP/1.1 messages as Envoy's header maps: the HTTP/1 codec turns the request line and
 * Host into pseudo-headers, the connection manager drops connection-level headers and
 * adds x-forwarded-proto and x-request-id, and the router stamps the response with
 * x-envoy-upstream-service-time before encoder filters see it.
 */

// What ConnectionManagerUtility::mutateRequestHeaders strips as "proxy headers"; the
// connection-level ones are not forwarded from responses either.
const CONNECTION_HEADERS = new Set([
  "x-envoy-internal",
  "connection",
  "keep-alive",
  "proxy-connection",
  "transfer-encoding",
  "upgrade",
]);

function regularHeaders(rawHeaders: readonly string[]): Array<[string, string]> {
  const result: Array<[string, string]> = [];
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    const name = (rawHeaders[i] ?? "").toLowerCase();
    const value = rawHeaders[i + 1] ?? "";
    if (CONNECTION_HEADERS.has(name)) continue;
    // Envoy keeps "te" only when it asks for trailers.
    if (name === "te" && value.trim().toLowerCase() !== "trailers") continue;
    result.push([name, value]);
  }
  return result;
}

export function requestHeaderMap(request: IncomingMessage): HeaderMap {
  const headers = new HeaderMap([
    [":method", request.method ?? "GET"],
    [":path", request.url ?? "/"],
    [":authority", request.headers.host ?? ""],
    [":scheme", "http"],
  ]);
  for (const [name, value] of regularHeaders(request.rawHeaders)) {
    if (name !== "host") headers.add(name, value);
  }
  if (!headers.has("x-forwarded-proto")) headers.add("x-forwarded-proto", "http");
  if (!headers.get("x-request-id")) headers.set("x-request-id", randomUUID());
  return headers;
}

/** Envoy's HTTP/1 codec ends the stream with the headers when no body is framed. */
export function requestHasNoBody(request: IncomingMessage): boolean {
  if (request.headers["transfer-encoding"] !== undefined) return false;
  const length = request.headers["content-length"];
  return length === undefined || Number(length) === 0;
}

export function responseHeaderMap(response: IncomingMessage, serviceTimeMs: number): HeaderMap {
  const headers = new HeaderMap([[":status", String(response.statusCode ?? 502)]]);
  for (const [name, value] of regularHeaders(response.rawHeaders)) headers.add(name, value);
  headers.set("x-envoy-upstream-service-time", String(Math.max(0, Math.round(serviceTimeMs))));
  return headers;
}

export function responseHasNoBody(method: string, response: IncomingMessage): boolean {
  const status = response.statusCode ?? 0;
  if (method === "HEAD" || status === 204 || status === 304) return true;
  const length = response.headers["content-length"];
  return length !== undefined && Number(length) === 0;
}

/** The request line and headers node:http needs; Envoy forwards :authority as Host. */
export function upstreamRequestHead(headers: HeaderMap): {
  method: string;
  path: string;
  headers: Record<string, string | string[]>;
} {
  const nodeHeaders = headers.toNodeHeaders();
  const authority = headers.get(":authority");
  if (authority) nodeHeaders.host = authority;
  return { method: headers.get(":method") ?? "GET", path: headers.get(":path") ?? "/", headers: nodeHeaders };
}

export function statusOf(headers: HeaderMap, fallback: number): number {
  const status = Number(headers.get(":status"));
  return Number.isInteger(status) && status >= 100 && status <= 999 ? status : fallback;
}
