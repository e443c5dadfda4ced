import { randomUUID } from "node:crypto";
import type { HeaderMutation, ProcessingRequest } from "../../../extproc/src/grpc/messages.ts";
import { HeaderMap } from "../../../extproc/src/proxy/header-map.ts";
import { applyHeaderMutation } from "../../../extproc/src/proxy/header-mutations.ts";
import { MutationChecker } from "../../../extproc/src/proxy/mutation-rules.ts";

/**
 * The ext_proc messages Envoy sends for one OpenAI chat completion through envoy/envoy.yaml
 * (docs/envoy-fidelity.md, extproc/src/proxy/): header maps as Envoy's HTTP/1 codec and
 * connection manager build them (pseudo-headers first, values in raw_value, x-forwarded-proto
 * and x-request-id added), a BUFFERED request body in one message with end_of_stream, and a
 * short vLLM SSE response whose chunks the usage filter receives one STREAMED message each,
 * ended by an empty end_of_stream chunk.
 */

export const BENCH_MODEL = "meta-llama/Llama-3.1-8B-Instruct";

/** A typical 2-message chat completion, streamed, asking for the usage chunk. */
export const CHAT_REQUEST_BODY: Buffer = Buffer.from(
  JSON.stringify({
    model: BENCH_MODEL,
    messages: [
      { role: "system", content: "You are a helpful assistant. Answer briefly." },
      {
        role: "user",
        content: "Summarise the benefits of weighted fair queuing for shared inference in three bullets.",
      },
    ],
    max_tokens: 256,
    temperature: 0.7,
    stream: true,
    stream_options: { include_usage: true },
  }),
);

/** The completion's tokens, one SSE chunk each as vLLM streams them. */
const COMPLETION_TOKENS = ["Fair", " queuing", " shares", " capacity", " by", " weight."];
const PROMPT_TOKENS = 52;

/** The response body chunks as the usage filter sees them (without the final empty one). */
export const SSE_RESPONSE_CHUNKS: readonly Buffer[] = sseChunks();

function sseChunks(): Buffer[] {
  const id = "chatcmpl-5d3c1a1e2f0b4b7c9a8e6d4c2b0a9f8e";
  const created = 1_764_000_000;
  const chunk = (choices: unknown[], usage?: unknown) =>
    Buffer.from(
      `data: ${JSON.stringify({ id, object: "chat.completion.chunk", created, model: BENCH_MODEL, choices, ...(usage ? { usage } : {}) })}\n\n`,
    );
  const delta = (content: Record<string, string>, finish: string | null = null) => ({
    index: 0,
    delta: content,
    logprobs: null,
    finish_reason: finish,
  });
  return [
    chunk([delta({ role: "assistant", content: "" })]),
    ...COMPLETION_TOKENS.map((token) => chunk([delta({ content: token })])),
    chunk([delta({}, "stop")]),
    chunk([], {
      prompt_tokens: PROMPT_TOKENS,
      completion_tokens: COMPLETION_TOKENS.length,
      total_tokens: PROMPT_TOKENS + COMPLETION_TOKENS.length,
    }),
    Buffer.from("data: [DONE]\n\n"),
  ];
}

/** The request header map Envoy builds for the OpenAI Python SDK's POST. */
export function chatRequestHeaderMap(apiKey: string): HeaderMap {
  return new HeaderMap([
    [":method", "POST"],
    [":path", "/v1/chat/completions"],
    [":authority", "llm-gateway.internal:8080"],
    [":scheme", "http"],
    ["accept-encoding", "gzip, deflate"],
    ["accept", "application/json"],
    ["content-type", "application/json"],
    ["user-agent", "OpenAI/Python 1.54.4"],
    ["x-stainless-lang", "python"],
    ["x-stainless-package-version", "1.54.4"],
    ["x-stainless-os", "Linux"],
    ["x-stainless-arch", "x64"],
    ["x-stainless-runtime", "CPython"],
    ["x-stainless-runtime-version", "3.12.7"],
    ["authorization", `Bearer ${apiKey}`],
    ["x-stainless-retry-count", "0"],
    ["content-length", String(CHAT_REQUEST_BODY.length)],
    ["x-forwarded-proto", "http"],
    ["x-request-id", randomUUID()],
  ]);
}

/** vLLM's streaming response headers after Envoy's router (transfer-encoding dropped,
 * x-envoy-upstream-service-time added). */
const RESPONSE_HEADERS = new HeaderMap([
  [":status", "200"],
  ["date", "Tue, 25 Nov 2025 10:00:00 GMT"],
  ["server", "uvicorn"],
  ["content-type", "text/event-stream; charset=utf-8"],
  ["x-envoy-upstream-service-time", "3"],
]).toProto();

const checker = new MutationChecker({});

/** Applies a processor's header mutation the way Envoy does, so the usage filter (which
 * comes after the main filter in the decoder chain) sees the headers the main filter set. */
export function applyMutation(headers: HeaderMap, mutation: HeaderMutation | undefined): void {
  if (!mutation) return;
  applyHeaderMutation(mutation, headers, { checker, maxHeadersCount: 100, maxHeadersKb: 60 });
}

export function requestHeadersMessage(headers: HeaderMap, observed = false): ProcessingRequest {
  return withMode(
    { request_headers: { headers: { headers: headers.toProto() }, end_of_stream: false } },
    observed,
  );
}

export const REQUEST_BODY_MESSAGE: ProcessingRequest = {
  request_body: { body: CHAT_REQUEST_BODY, end_of_stream: true },
};

export function responseHeadersMessage(observed = false): ProcessingRequest {
  return withMode(
    { response_headers: { headers: { headers: RESPONSE_HEADERS }, end_of_stream: false } },
    observed,
  );
}

/** The usage filter's STREAMED body messages: every chunk, then the empty end_of_stream one. */
export const OBSERVED_BODY_MESSAGES: readonly ProcessingRequest[] = [
  ...SSE_RESPONSE_CHUNKS.map((body) => ({
    response_body: { body, end_of_stream: false },
    observability_mode: true,
  })),
  { response_body: { body: Buffer.alloc(0), end_of_stream: true }, observability_mode: true },
];

/** Response trailers as older Envoy versions synthesise them at the end of the body. */
export const RESPONSE_TRAILERS_MESSAGE: ProcessingRequest = {
  response_trailers: { trailers: { headers: [] } },
};

function withMode(message: ProcessingRequest, observed: boolean): ProcessingRequest {
  return observed ? { ...message, observability_mode: true } : message;
}
