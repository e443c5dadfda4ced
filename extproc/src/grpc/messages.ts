/**
 * TypeScript shapes of the envoy.service.ext_proc.v3 messages as @grpc/proto-loader
 * decodes them with `keepCase: true, oneofs: true, enums: String, longs: Number`.
 * Only the fields fairgate reads or writes are typed. Field numbers live in Envoy's
 * external_processor.proto; these names are the proto field names.
 */

export interface HeaderValue {
  key: string;
  /** Envoy sends and accepts header values in raw_value; setting both fields is an error. */
  value?: string;
  raw_value?: Buffer | Uint8Array;
}

export interface HeaderMap {
  headers?: HeaderValue[];
}

export interface HttpHeaders {
  headers?: HeaderMap;
  end_of_stream?: boolean;
}

export interface HttpBody {
  body?: Buffer | Uint8Array;
  end_of_stream?: boolean;
}

export interface HttpTrailers {
  trailers?: HeaderMap;
}

export type RequestPhase =
  | "request_headers"
  | "response_headers"
  | "request_body"
  | "response_body"
  | "request_trailers"
  | "response_trailers";

export interface ProcessingRequest {
  request_headers?: HttpHeaders;
  response_headers?: HttpHeaders;
  request_body?: HttpBody;
  response_body?: HttpBody;
  request_trailers?: HttpTrailers;
  response_trailers?: HttpTrailers;
  /** The oneof discriminator proto-loader adds with `oneofs: true`. */
  request?: RequestPhase;
  observability_mode?: boolean;
}

export type HeaderAppendAction =
  | "APPEND_IF_EXISTS_OR_ADD"
  | "ADD_IF_ABSENT"
  | "OVERWRITE_IF_EXISTS_OR_ADD"
  | "OVERWRITE_IF_EXISTS";

export interface HeaderValueOption {
  header: HeaderValue;
  append_action?: HeaderAppendAction | number;
}

export interface HeaderMutation {
  set_headers?: HeaderValueOption[];
  remove_headers?: string[];
}

export interface BodyMutation {
  body?: Buffer | Uint8Array;
  clear_body?: boolean;
}

export type ResponseStatus = "CONTINUE" | "CONTINUE_AND_REPLACE";

export interface CommonResponse {
  status?: ResponseStatus | number;
  header_mutation?: HeaderMutation;
  body_mutation?: BodyMutation;
  clear_route_cache?: boolean;
}

export interface HeadersResponse {
  response?: CommonResponse;
}

export interface BodyResponse {
  response?: CommonResponse;
}

export interface TrailersResponse {
  header_mutation?: HeaderMutation;
}

export interface ImmediateResponse {
  /** envoy.type.v3.HttpStatus; `code` is the StatusCode enum (its numeric value is the HTTP status). */
  status?: { code?: number | string };
  headers?: HeaderMutation;
  body?: Buffer | Uint8Array | string;
  details?: string;
}

export interface Duration {
  seconds?: number | string;
  nanos?: number;
}

export interface ProcessingResponse {
  request_headers?: HeadersResponse;
  response_headers?: HeadersResponse;
  request_body?: BodyResponse;
  response_body?: BodyResponse;
  request_trailers?: TrailersResponse;
  response_trailers?: TrailersResponse;
  immediate_response?: ImmediateResponse;
  override_message_timeout?: Duration;
  response?: RequestPhase | "immediate_response";
}

/** Reads a header value the way Envoy sends it (raw_value), falling back to value. */
export function headerValueText(header: HeaderValue): string {
  if (header.raw_value && header.raw_value.length > 0)
    return Buffer.from(header.raw_value).toString("latin1");
  return header.value ?? "";
}

export function durationToMs(duration: Duration | undefined): number | undefined {
  if (!duration) return undefined;
  return Number(duration.seconds ?? 0) * 1000 + Math.floor((duration.nanos ?? 0) / 1e6);
}

export function msToDuration(ms: number): Duration {
  const whole = Math.max(0, Math.floor(ms));
  return { seconds: Math.floor(whole / 1000), nanos: (whole % 1000) * 1e6 };
}
