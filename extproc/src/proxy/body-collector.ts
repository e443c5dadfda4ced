import type { Readable } from "node:stream";

export type CollectOutcome = "complete" | "too-large" | "aborted";

/**
 * Buffers a body the way Envoy's filter manager does for a buffering filter: from the
 * moment the headers arrive, up to the buffer limit. Going over the limit settles with
 * "too-large" at once (Envoy answers 413 before the body has finished arriving).
 * `unlimit()` is for a filter that stopped buffering: the rest is kept regardless of size.
 */
export class BodyCollector {
  readonly done: Promise<CollectOutcome>;
  #chunks: Buffer[] = [];
  #size = 0;
  #limit: number;

  constructor(source: Readable, limitBytes: number) {
    this.#limit = limitBytes;
    this.done = new Promise<CollectOutcome>((resolve) => {
      const onData = (chunk: Buffer) => {
        this.#chunks.push(chunk);
        this.#size += chunk.length;
        if (this.#size > this.#limit) {
          detach();
          this.#chunks = [];
          source.resume();
          resolve("too-large");
        }
      };
      const onEnd = () => {
        detach();
        resolve("complete");
      };
      const onClose = () => {
        detach();
        resolve(source.readableEnded ? "complete" : "aborted");
      };
      const detach = () => {
        source.off("data", onData);
        source.off("end", onEnd);
        source.off("close", onClose);
        source.off("error", onClose);
      };
      source.on("data", onData);
      source.on("end", onEnd);
      source.on("close", onClose);
      source.on("error", onClose);
    });
  }

  get size(): number {
    return this.#size;
  }

  unlimit(): void {
    this.#limit = Number.POSITIVE_INFINITY;
  }

  body(): Buffer {
    return Buffer.concat(this.#chunks);
  }
}
