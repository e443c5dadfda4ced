import { ENVOY_DEFAULT_MESSAGE_TIMEOUT_MS } from "../config/envoy-timeouts.ts";
import { EXPECTED_PROCESSING_MODE, USAGE_PROCESSING_MODE } from "../grpc/processing-mode.ts";

/**
 * Configuration of the built-in proxy's ext_proc filter. Field names follow
 * envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor; defaults are Envoy's,
 * except the processing mode, which defaults to the one fairgate is built for.
 */

export type HeaderSendMode = "DEFAULT" | "SEND" | "SKIP";
export type BodySendMode = "NONE" | "STREAMED" | "BUFFERED" | "BUFFERED_PARTIAL" | "FULL_DUPLEX_STREAMED";

export interface ProcessingMode {
  request_header_mode: HeaderSendMode;
  response_header_mode: HeaderSendMode;
  request_body_mode: BodySendMode;
  response_body_mode: BodySendMode;
  request_trailer_mode: HeaderSendMode;
  response_trailer_mode: HeaderSendMode;
}

/** envoy.config.common.mutation_rules.v3.HeaderMutationRules. */
export interface MutationRulesConfig {
  allowAllRouting?: boolean;
  allowEnvoy?: boolean;
  disallowSystem?: boolean;
  disallowAll?: boolean;
  /** A regular expression (RE2 subset JavaScript understands) of header names always allowed. */
  allowExpression?: string;
  /** A regular expression of header names never allowed; beats every other rule. */
  disallowExpression?: string;
  disallowIsError?: boolean;
}

export interface ExtProcFilterConfig {
  /** host:port of the ext_proc gRPC service (plaintext). */
  grpcTarget: string;
  processingMode?: Partial<ProcessingMode>;
  /** Per-message timeout; Envoy's default is 200 ms. */
  messageTimeoutMs?: number;
  /** Ceiling for override_message_timeout; 0 (Envoy's default) ignores every override. */
  maxMessageTimeoutMs?: number;
  failureModeAllow?: boolean;
  /** Send messages without waiting for replies; replies are ignored. */
  observabilityMode?: boolean;
  /** Observability mode only: how long a stream may outlive its HTTP request (Envoy: 5 s). */
  deferredCloseTimeoutMs?: number;
  allowModeOverride?: boolean;
  disableImmediateResponse?: boolean;
  mutationRules?: MutationRulesConfig;
  /** HTTP status of the local reply when the stream fails or a mutation is rejected (Envoy: 500). */
  statusOnError?: number;
  /**
   * false (Envoy's default): finishing a stream half-closes and resets it, so the processor
   * sees CANCELLED. true mirrors `envoy.reloadable_features.ext_proc_graceful_grpc_close`:
   * half-close and wait up to remoteCloseTimeoutMs for the processor to end the stream.
   */
  gracefulClose?: boolean;
  remoteCloseTimeoutMs?: number;
  /** Envoy's decoder buffer limit (listener per_connection_buffer_limit_bytes, 1 MiB by default). */
  maxRequestBodyBytes?: number;
  /** Envoy's encoder buffer limit (the same 1 MiB by default). */
  maxResponseBodyBytes?: number;
  /** HttpConnectionManager max_headers_count (100) and max_request_headers_kb (60). */
  maxHeadersCount?: number;
  maxHeadersKb?: number;
}

/** How one direction (request = decoding, response = encoding) talks to the processor. */
export interface DirectionMode {
  readonly sendHeaders: boolean;
  readonly bodyMode: BodySendMode;
  readonly sendTrailers: boolean;
}

export interface ResolvedFilterConfig {
  readonly grpcTarget: string;
  readonly processingMode: Readonly<ProcessingMode>;
  readonly messageTimeoutMs: number;
  readonly maxMessageTimeoutMs: number;
  readonly failureModeAllow: boolean;
  readonly observabilityMode: boolean;
  readonly deferredCloseTimeoutMs: number;
  readonly allowModeOverride: boolean;
  readonly disableImmediateResponse: boolean;
  readonly mutationRules: Readonly<MutationRulesConfig>;
  readonly statusOnError: number;
  readonly gracefulClose: boolean;
  readonly remoteCloseTimeoutMs: number;
  readonly maxRequestBodyBytes: number;
  readonly maxResponseBodyBytes: number;
  readonly maxHeadersCount: number;
  readonly maxHeadersKb: number;
}

export const ENVOY_BUFFER_LIMIT_BYTES = 1024 * 1024;
const MAX_DURATION_MS = 3_600_000;
const SUPPORTED_REQUEST_BODY_MODES: readonly BodySendMode[] = ["NONE", "BUFFERED"];
const SUPPORTED_RESPONSE_BODY_MODES: readonly BodySendMode[] = ["NONE", "BUFFERED", "STREAMED"];

export function resolveFilterConfig(config: ExtProcFilterConfig): ResolvedFilterConfig {
  const processingMode: ProcessingMode = { ...EXPECTED_PROCESSING_MODE, ...config.processingMode };
  const errors: string[] = [];
  if (!/^[^\s]+:\d{1,5}$/.test(config.grpcTarget)) {
    errors.push(`grpcTarget "${config.grpcTarget}" is not host:port`);
  }
  if (!SUPPORTED_REQUEST_BODY_MODES.includes(processingMode.request_body_mode)) {
    errors.push(
      `request_body_mode ${processingMode.request_body_mode} is not supported by the built-in proxy`,
    );
  }
  if (!SUPPORTED_RESPONSE_BODY_MODES.includes(processingMode.response_body_mode)) {
    errors.push(
      `response_body_mode ${processingMode.response_body_mode} is not supported by the built-in proxy`,
    );
  }
  const duration = (name: string, value: number | undefined, fallback: number): number => {
    const ms = value ?? fallback;
    if (!Number.isFinite(ms) || ms < 0 || ms > MAX_DURATION_MS) {
      errors.push(`${name} must be between 0 and ${MAX_DURATION_MS} ms`);
    }
    return ms;
  };
  const positive = (name: string, value: number | undefined, fallback: number): number => {
    const n = value ?? fallback;
    if (!Number.isInteger(n) || n <= 0) errors.push(`${name} must be a positive integer`);
    return n;
  };
  const statusOnError = config.statusOnError ?? 500;
  if (!Number.isInteger(statusOnError) || statusOnError < 200 || statusOnError > 599) {
    errors.push("statusOnError must be an HTTP status between 200 and 599");
  }
  for (const key of ["allowExpression", "disallowExpression"] as const) {
    const source = config.mutationRules?.[key];
    if (source === undefined) continue;
    try {
      new RegExp(source);
    } catch {
      errors.push(`mutationRules.${key} is not a valid regular expression`);
    }
  }
  const resolved: ResolvedFilterConfig = {
    grpcTarget: config.grpcTarget,
    processingMode: Object.freeze(processingMode),
    messageTimeoutMs: duration("messageTimeoutMs", config.messageTimeoutMs, ENVOY_DEFAULT_MESSAGE_TIMEOUT_MS),
    maxMessageTimeoutMs: duration("maxMessageTimeoutMs", config.maxMessageTimeoutMs, 0),
    failureModeAllow: config.failureModeAllow ?? false,
    observabilityMode: config.observabilityMode ?? false,
    deferredCloseTimeoutMs: duration("deferredCloseTimeoutMs", config.deferredCloseTimeoutMs, 5_000),
    allowModeOverride: config.allowModeOverride ?? false,
    disableImmediateResponse: config.disableImmediateResponse ?? false,
    mutationRules: Object.freeze({ ...config.mutationRules }),
    statusOnError,
    gracefulClose: config.gracefulClose ?? false,
    remoteCloseTimeoutMs: duration("remoteCloseTimeoutMs", config.remoteCloseTimeoutMs, 1_000),
    maxRequestBodyBytes: positive(
      "maxRequestBodyBytes",
      config.maxRequestBodyBytes,
      ENVOY_BUFFER_LIMIT_BYTES,
    ),
    maxResponseBodyBytes: positive(
      "maxResponseBodyBytes",
      config.maxResponseBodyBytes,
      ENVOY_BUFFER_LIMIT_BYTES,
    ),
    maxHeadersCount: positive("maxHeadersCount", config.maxHeadersCount, 100),
    maxHeadersKb: positive("maxHeadersKb", config.maxHeadersKb, 60),
  };
  if (errors.length > 0) throw new Error(`invalid ext_proc filter config: ${errors.join("; ")}`);
  return Object.freeze(resolved);
}

/** fairgate's usage filter: observability mode, response bodies STREAMED (see envoy/envoy.yaml). */
export function usageFilterConfig(grpcTarget: string): ExtProcFilterConfig {
  return { grpcTarget, observabilityMode: true, processingMode: { ...USAGE_PROCESSING_MODE } };
}

/** Headers are sent unless SKIP; trailers only when SEND (Envoy's setProcessingModeInternal). */
export function requestDirectionMode(mode: Readonly<ProcessingMode>): DirectionMode {
  return {
    sendHeaders: mode.request_header_mode !== "SKIP",
    bodyMode: mode.request_body_mode,
    sendTrailers: mode.request_trailer_mode === "SEND",
  };
}

export function responseDirectionMode(mode: Readonly<ProcessingMode>): DirectionMode {
  return {
    sendHeaders: mode.response_header_mode !== "SKIP",
    bodyMode: mode.response_body_mode,
    sendTrailers: mode.response_trailer_mode === "SEND",
  };
}
