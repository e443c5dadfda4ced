/**
 * The primary's side of one worker's IPC channel: questions with a deadline, matched to
 * their answers by id; a worker that exits fails what it had not answered.
 */
import type { Worker } from "node:cluster";
import { type AnswerMessage, isWorkerMessage, type QuestionOf, type WorkerAnswers } from "./messages.ts";

const ANSWER_TIMEOUT_MS = 5_000;

interface Pending {
  resolve(value: unknown): void;
  reject(error: Error): void;
  timer: NodeJS.Timeout;
}

export class WorkerChannel {
  /** Which worker slot (1..N) this process fills; a restarted worker keeps its slot. */
  readonly slot: number;
  readonly worker: Worker;
  readonly #pending = new Map<number, Pending>();
  #nextId = 0;

  constructor(slot: number, worker: Worker) {
    this.slot = slot;
    this.worker = worker;
    worker.on("message", (message: unknown) => {
      if (isWorkerMessage(message) && message.fairgate === "answer") this.#answered(message);
    });
    worker.once("exit", () => this.#failAll(new Error(`worker ${slot} exited`)));
  }

  ask<K extends keyof WorkerAnswers>(
    question: QuestionOf<K>,
    timeoutMs = ANSWER_TIMEOUT_MS,
  ): Promise<WorkerAnswers[K]> {
    const id = this.#nextId++;
    return new Promise<WorkerAnswers[K]>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(new Error(`worker ${this.slot} did not answer "${question.kind}" within ${timeoutMs} ms`));
      }, timeoutMs);
      this.#pending.set(id, { resolve: resolve as (value: unknown) => void, reject, timer });
      this.worker.send({ fairgate: "ask", id, question }, (error: Error | null) => {
        if (error) this.#settle(id)?.reject(error);
      });
    });
  }

  #answered(message: AnswerMessage): void {
    const pending = this.#settle(message.id);
    if (!pending) return;
    if (message.ok) pending.resolve(message.value);
    else pending.reject(new Error(`worker ${this.slot}: ${message.error}`));
  }

  #settle(id: number): Pending | undefined {
    const pending = this.#pending.get(id);
    if (!pending) return undefined;
    this.#pending.delete(id);
    clearTimeout(pending.timer);
    return pending;
  }

  #failAll(error: Error): void {
    for (const id of [...this.#pending.keys()]) this.#settle(id)?.reject(error);
  }
}
