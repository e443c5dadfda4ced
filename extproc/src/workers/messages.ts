/**
 * What a `serve --workers` primary and its workers say to each other over cluster IPC
 * (structured-clone serialization, so Maps and Infinity cross intact): a worker announces
 * that it serves, and answers the primary's questions for the HTTP API it serves.
 */
import type { Registry } from "prom-client";
import type { EstimateQuery, QueueState, Readiness } from "../http/api-source.ts";
import type { WaitEstimate } from "../scheduler/types.ts";

/** A worker's registry as prom-client's AggregatorRegistry.aggregate takes it. */
export type WorkerMetrics = Awaited<ReturnType<Registry["getMetricsAsJSON"]>>;

export type WorkerQuestion =
  | { readonly kind: "readiness" }
  | { readonly kind: "queue" }
  | { readonly kind: "estimate"; readonly query: EstimateQuery }
  | { readonly kind: "metrics" };

export interface WorkerAnswers {
  readiness: Readiness;
  queue: QueueState;
  estimate: WaitEstimate;
  metrics: WorkerMetrics;
}

export type QuestionOf<K extends WorkerQuestion["kind"]> = Extract<WorkerQuestion, { kind: K }>;

export interface AskMessage {
  readonly fairgate: "ask";
  readonly id: number;
  readonly question: WorkerQuestion;
}

export type AnswerMessage =
  | { readonly fairgate: "answer"; readonly id: number; readonly ok: true; readonly value: unknown }
  | { readonly fairgate: "answer"; readonly id: number; readonly ok: false; readonly error: string };

/** Sent once the worker's gateway (and proxy) serve. */
export interface ServingMessage {
  readonly fairgate: "serving";
  readonly grpcPort: number;
  readonly proxyUrl: string | undefined;
}

export type WorkerMessage = AnswerMessage | ServingMessage;

export function isAsk(message: unknown): message is AskMessage {
  return (message as AskMessage | null)?.fairgate === "ask";
}

export function isWorkerMessage(message: unknown): message is WorkerMessage {
  const tag = (message as WorkerMessage | null)?.fairgate;
  return tag === "answer" || tag === "serving";
}
