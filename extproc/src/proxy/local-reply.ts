import type { HeaderMutation, ImmediateResponse } from "../grpc/messages.ts";
import { HeaderMap } from "./header-map.ts";
import { applyHeaderMutation, type HeaderMutationOptions } from "./header-mutations.ts";
import { httpStatusNumber } from "./status-codes.ts";

/**
 * A response the proxy makes up itself (Envoy's sendLocalReply): from an ImmediateResponse,
 * or for a failure. `details` is Envoy's %RESPONSE_CODE_DETAILS%: logged, never sent.
 */
export interface LocalReply {
  status: number;
  body: Buffer;
  headerMutation?: HeaderMutation;
  details: string;
}

const ERROR_PREFIX = "ext_proc_error";

/** Filter::onMessageTimeout without failure_mode_allow. */
export function messageTimeoutReply(): LocalReply {
  return { status: 504, body: Buffer.alloc(0), details: `${ERROR_PREFIX}_per-message_timeout_exceeded` };
}

/** Filter::onGrpcError without failure_mode_allow. */
export function grpcErrorReply(statusOnError: number, code: number, message: string): LocalReply {
  return {
    status: statusOnError,
    body: Buffer.alloc(0),
    details: noSpaces(`${ERROR_PREFIX}_gRPC_error_${code}{${message}}`),
  };
}

/** Filter::handleErrorResponse: a rejected mutation, a spurious message… */
export function processingErrorReply(statusOnError: number, message: string): LocalReply {
  return { status: statusOnError, body: Buffer.alloc(0), details: noSpaces(message) };
}

/** The connection manager's reply when a buffering filter's request body exceeds the limit. */
export function requestTooLargeReply(): LocalReply {
  return { status: 413, body: Buffer.from("Payload Too Large"), details: "request_payload_too_large" };
}

/** …and when a buffered response body exceeds it before headers went out. */
export function responseTooLargeReply(): LocalReply {
  return { status: 500, body: Buffer.from("Internal Server Error"), details: "response_payload_too_large" };
}

/** Filter::sendImmediateResponse: an invalid or missing status becomes 200. */
export function immediateReply(response: ImmediateResponse): LocalReply {
  const code = httpStatusNumber(response.status?.code);
  const status = code !== undefined && code >= 200 && code <= 999 ? code : 200;
  const body =
    typeof response.body === "string"
      ? Buffer.from(response.body)
      : Buffer.from(response.body ?? Buffer.alloc(0));
  return { status, body, headerMutation: response.headers, details: noSpaces(response.details ?? "") };
}

/**
 * The headers of a local reply: ":status", the processor's mutation (checked with the
 * filter's rules; a rejected one is only logged by Envoy), then content-length and a
 * text/plain content-type unless the mutation set one.
 */
export function localReplyHeaders(reply: LocalReply, mutationOptions: HeaderMutationOptions): HeaderMap {
  const headers = new HeaderMap([[":status", String(reply.status)]]);
  if (reply.headerMutation) applyHeaderMutation(reply.headerMutation, headers, mutationOptions);
  headers.set("content-length", String(reply.body.length));
  if (reply.body.length > 0 && !headers.has("content-type")) headers.set("content-type", "text/plain");
  return headers;
}

function noSpaces(text: string): string {
  return text.replace(/\s/g, "_");
}
