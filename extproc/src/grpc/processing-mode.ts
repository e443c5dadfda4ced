/**
 * The ext_proc processing mode fairgate is built for (DESIGN.md §2). The shipped Envoy and
 * Istio configs are tested against this, and the built-in proxy uses it by default.
 * Values are envoy.extensions.filters.http.ext_proc.v3.ProcessingMode enum names.
 */
export const EXPECTED_PROCESSING_MODE = Object.freeze({
  request_header_mode: "SEND",
  response_header_mode: "SEND",
  request_body_mode: "BUFFERED",
  response_body_mode: "NONE",
  request_trailer_mode: "SKIP",
  response_trailer_mode: "SEND",
} as const);

/**
 * The second, observability-mode ext_proc filter that reads each response's actual usage
 * (DESIGN.md §2 step 4). Envoy sends its messages without waiting for replies, so reading
 * every streamed chunk adds no latency. It sits after fairgate's main filter, so in the
 * decoder chain it sees the x-fairgate-request-id header the main filter added.
 */
export const USAGE_PROCESSING_MODE = Object.freeze({
  request_header_mode: "SEND",
  response_header_mode: "SEND",
  request_body_mode: "NONE",
  response_body_mode: "STREAMED",
  request_trailer_mode: "SKIP",
  response_trailer_mode: "SKIP",
} as const);
