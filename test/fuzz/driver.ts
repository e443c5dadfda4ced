import * as grpc from "@grpc/grpc-js";
import { ERROR_CATALOG } from "../../extproc/src/errors.ts";
import {
  durationToMs,
  type ProcessingRequest,
  type ProcessingResponse,
} from "../../extproc/src/grpc/messages.ts";
import { streamResetLimitHonoured } from "../../extproc/src/grpc/stream-reset-limit.ts";
import { httpStatusNumber } from "../../extproc/src/proxy/status-codes.ts";
import type { extProcClient } from "../helpers/raw-ext-proc.ts";
import type { StreamCase } from "./cases.ts";

/** How long any reply may take when nothing is queued; a queued message gets its override on top. */
export const REPLY_BOUND_MS = 3_000;

/** gRPC statuses a stream may end with: a clean end, the client's own reset, a protocol
 * violation the client committed, or a message over the size limit. */
const ACCEPTABLE_STATUS = new Set([
  grpc.status.OK,
  grpc.status.CANCELLED,
  grpc.status.INVALID_ARGUMENT,
  grpc.status.RESOURCE_EXHAUSTED,
]);

export interface CaseOutcome {
  /** What the client saw: an HTTP status from an immediate response, "continued", or a gRPC status. */
  readonly result: string;
  /** Broken invariants, empty when the case passed. */
  readonly violations: string[];
}

/** Whether Envoy itself (request body BUFFERED or STREAMED, as shipped) could have sent
 * these messages in this order: headers, the body's chunks ending with end_of_stream or
 * trailers, then the response's headers, body chunks and trailers. */
export function envoyCouldSend(messages: readonly ProcessingRequest[]): boolean {
  const first = messages[0]?.request_headers;
  if (!first) return false;
  const pseudo = new Map((first.headers?.headers ?? []).map((h) => [h.key, h.raw_value ?? h.value]));
  if (!pseudo.get(":method")?.length || !pseudo.get(":path")?.length) return false;
  const letters = messages
    .map((m) => {
      if (m.request_headers) return m.request_headers.end_of_stream ? "h" : "H";
      if (m.request_body) return m.request_body.end_of_stream ? "E" : "B";
      if (m.request_trailers) return "T";
      if (m.response_headers) return "R";
      if (m.response_body) return "b";
      if (m.response_trailers) return "t";
      return "?";
    })
    .join("");
  return /^(h|HB*(E|T))(Rb*t?)?$/.test(letters);
}

/** Drives one stream to its end and checks what fairgate answered. */
export async function runCase(
  client: ReturnType<typeof extProcClient>,
  testCase: StreamCase,
): Promise<CaseOutcome> {
  const violations: string[] = [];
  const call = client.Process();
  const replies: ProcessingResponse[] = [];
  let wake: (() => void) | undefined;
  let ended = false;
  call.on("data", (reply: ProcessingResponse) => {
    replies.push(reply);
    wake?.();
  });
  const status = new Promise<grpc.StatusObject>((resolve) =>
    call.on("status", (s: grpc.StatusObject) => {
      ended = true;
      wake?.();
      resolve(s);
    }),
  );
  call.on("error", () => {});

  /** Waits for the next reply other than an override, within the bound (extended by an override). */
  const nextReply = async (): Promise<ProcessingResponse | "ended" | "timeout"> => {
    let deadline = Date.now() + REPLY_BOUND_MS;
    for (;;) {
      const reply = replies.shift();
      if (reply) {
        const override = durationToMs(reply.override_message_timeout);
        if (
          reply.override_message_timeout &&
          Object.keys(reply).filter((k) => k !== "response").length === 1
        ) {
          deadline = Date.now() + (override ?? 0) + REPLY_BOUND_MS;
          continue;
        }
        return reply;
      }
      if (ended) return "ended";
      const left = deadline - Date.now();
      if (left <= 0) return "timeout";
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      wake = undefined;
    }
  };

  let result = "continued";
  let repliesSeen = 0;
  const { ending } = testCase;
  for (const message of testCase.messages) {
    if (ended) break;
    call.write(message);
    if (ending.kind === "cancel") break;
    const reply = await nextReply();
    if (reply === "timeout") {
      violations.push(
        `no reply within ${REPLY_BOUND_MS} ms (plus any override) to ${Object.keys(message)[0] ?? "{}"}`,
      );
      break;
    }
    if (reply === "ended") break;
    repliesSeen++;
    if (reply.immediate_response) {
      result = `${httpStatusNumber(reply.immediate_response.status?.code) ?? "?"} ${envelopeCode(reply)}`;
      violations.push(...checkImmediate(reply));
      break;
    }
    if (ending.kind === "drop-after" && repliesSeen >= ending.replies) break;
    // Let through: the engine works on it for a while, holding its slot.
    if (reply.request_body && testCase.engineMs > 0)
      await new Promise((r) => setTimeout(r, testCase.engineMs));
  }
  if (ending.kind === "end") call.end();
  else call.cancel();
  const timeout = new Promise<"timeout">((resolve) =>
    setTimeout(() => resolve("timeout"), REPLY_BOUND_MS).unref(),
  );
  const final = await Promise.race([status, timeout]);
  if (final === "timeout") {
    violations.push("the stream did not end after the client finished");
    call.cancel();
  } else {
    if (isResetGuard(final)) result = "grpc:13 reset-guard";
    else if (!ACCEPTABLE_STATUS.has(final.code))
      violations.push(`gRPC status ${final.code} ${final.details}`);
    if (
      final.code === grpc.status.INVALID_ARGUMENT &&
      envoyCouldSend(testCase.messages) &&
      ending.kind === "end"
    ) {
      violations.push(`INVALID_ARGUMENT for a sequence Envoy sends: ${final.details}`);
    }
    if (final.code !== grpc.status.OK && (result === "continued" || result.startsWith("grpc"))) {
      result = isResetGuard(final) ? "grpc:13 reset-guard" : `grpc:${final.code}`;
    }
  }
  return { result, violations };
}

function checkImmediate(reply: ProcessingResponse): string[] {
  const immediate = reply.immediate_response;
  const problems: string[] = [];
  const status = httpStatusNumber(immediate?.status?.code) ?? Number.NaN;
  let envelope: { error?: { code?: string; message?: string; type?: string } } | undefined;
  try {
    envelope = JSON.parse(Buffer.from(immediate?.body ?? "").toString("utf8"));
  } catch {
    problems.push(`immediate response ${status} with a body that is not JSON`);
  }
  const code = envelope?.error?.code;
  const entry = code ? ERROR_CATALOG[code as keyof typeof ERROR_CATALOG] : undefined;
  if (!entry) problems.push(`immediate response ${status} with code ${code} not in the catalog`);
  else if (entry.status !== status)
    problems.push(`code ${code} sent as ${status}, catalog says ${entry.status}`);
  if (code === "internal_error") problems.push(`internal_error: ${envelope?.error?.message}`);
  if (typeof envelope?.error?.message !== "string" || !envelope.error.type)
    problems.push("envelope lacks message/type");
  return problems;
}

function envelopeCode(reply: ProcessingResponse): string {
  try {
    return JSON.parse(Buffer.from(reply.immediate_response?.body ?? "").toString("utf8")).error.code;
  } catch {
    return "?";
  }
}

/**
 * Node 20's HTTP/2 server closes the whole connection once its peer has reset more than
 * 1,000 streams in a burst and then more than 33 a second (the rapid-reset guard, which
 * that Node cannot raise: extproc/src/grpc/stream-reset-limit.ts). Every stream then open
 * on it ends INTERNAL. Counted apart: it is the platform's limit, reported in the docs,
 * not a fairgate answer.
 */
function isResetGuard(status: grpc.StatusObject): boolean {
  return (
    status.code === grpc.status.INTERNAL &&
    !streamResetLimitHonoured() &&
    /Session closed with error code 2|RST_STREAM with code 2/.test(status.details)
  );
}
