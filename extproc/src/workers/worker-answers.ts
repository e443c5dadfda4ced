/** A `serve --workers` worker's side of the IPC channel: answers the primary's questions. */
import type { ApiSource } from "../http/api-source.ts";
import type { GatewayMetrics } from "../metrics/gateway-metrics.ts";
import { type AnswerMessage, isAsk, type ServingMessage, type WorkerQuestion } from "./messages.ts";

/** Starts answering; returns the function that stops it. */
export function answerPrimary(api: ApiSource, metrics: GatewayMetrics): () => void {
  const answer = async (question: WorkerQuestion): Promise<unknown> => {
    switch (question.kind) {
      case "readiness":
        return await api.readiness();
      case "queue":
        return await api.queue();
      case "estimate":
        return await api.estimate(question.query);
      case "metrics":
        return await metrics.registry.getMetricsAsJSON();
    }
  };
  const onMessage = (message: unknown) => {
    if (!isAsk(message)) return;
    answer(message.question).then(
      (value) => send({ fairgate: "answer", id: message.id, ok: true, value }),
      (error: unknown) => send({ fairgate: "answer", id: message.id, ok: false, error: String(error) }),
    );
  };
  process.on("message", onMessage);
  return () => process.off("message", onMessage);
}

/** Tells the primary this worker serves. */
export function announceServing(message: Omit<ServingMessage, "fairgate">): void {
  send({ fairgate: "serving", ...message });
}

function send(message: AnswerMessage | ServingMessage): void {
  // The primary may be gone (it is being stopped): nothing is waiting for the answer then.
  if (process.connected) process.send?.(message, undefined, undefined, () => {});
}
