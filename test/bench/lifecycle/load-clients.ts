import { type ChildProcess, spawn } from "node:child_process";
import { join } from "node:path";
import type { LifecycleOptions } from "./lifecycle-client.ts";
import type { ClientCommand, ClientReport, CompletedCount, Load, LoadShare } from "./protocol.ts";

const LOAD_CLIENT = join(import.meta.dirname, "load-client.ts");

/** The parent's side of the load-client processes: one channel per server in each. */
export class LoadClients {
  readonly #children: ChildProcess[];

  private constructor(children: ChildProcess[]) {
    this.#children = children;
  }

  static async start(count: number): Promise<LoadClients> {
    const children = Array.from({ length: count }, () =>
      spawn(process.execPath, ["--import", "tsx", LOAD_CLIENT], {
        stdio: ["ignore", "inherit", "inherit", "ipc"],
      }),
    );
    await Promise.all(children.map((child) => nextMessage(child, "ready")));
    return new LoadClients(children);
  }

  get count(): number {
    return this.#children.length;
  }

  get pids(): number[] {
    return this.#children.map((child) => child.pid as number);
  }

  /** Starts `load` against the server on `port`, split evenly over the clients. */
  async run(port: number, load: Load, keys: readonly string[], seed: number, options: LifecycleOptions) {
    const n = this.#children.length;
    await Promise.all(
      this.#children.map((child, i) => {
        const share: LoadShare = {
          load: splitLoad(load, i, n),
          keys,
          keyOffset: Math.floor((i * keys.length) / n),
          seed: seed * 1_000 + i,
        };
        const running = nextMessage(child, "running");
        send(child, { type: "run", port, share, options });
        return running;
      }),
    );
  }

  mark(): void {
    for (const child of this.#children) send(child, { type: "mark" });
  }

  endWindow(): void {
    for (const child of this.#children) send(child, { type: "end-window" });
  }

  /** Requests completed so far in the current run, over every client. */
  async completed(): Promise<number> {
    const counts = await Promise.all(
      this.#children.map((child) => {
        const count = nextMessage<CompletedCount>(child, "count");
        send(child, { type: "count" });
        return count;
      }),
    );
    return counts.reduce((sum, c) => sum + c.completed, 0);
  }

  async stop(): Promise<ClientReport[]> {
    return await Promise.all(
      this.#children.map((child) => {
        const result = nextMessage<ClientReport>(child, "result");
        send(child, { type: "stop" });
        return result;
      }),
    );
  }

  async close(): Promise<void> {
    await Promise.all(
      this.#children.map(
        (child) =>
          new Promise<void>((resolve) => {
            if (child.exitCode !== null) return resolve();
            child.once("exit", () => resolve());
            send(child, { type: "exit" });
          }),
      ),
    );
  }
}

function splitLoad(load: Load, index: number, count: number): Load {
  if (load.kind === "open") return { ...load, rate: load.rate / count };
  const base = Math.floor(load.concurrency / count);
  return { kind: "closed", concurrency: base + (index < load.concurrency % count ? 1 : 0) };
}

function send(child: ChildProcess, command: ClientCommand): void {
  child.send(command);
}

function nextMessage<T extends { type: string }>(child: ChildProcess, type: T["type"]): Promise<T> {
  return new Promise((resolve, reject) => {
    const onExit = (code: number | null) =>
      reject(new Error(`load client exited (${code}) waiting for ${type}`));
    const onMessage = (message: T) => {
      if (message.type !== type) return;
      child.off("message", onMessage);
      child.off("exit", onExit);
      resolve(message);
    };
    child.on("message", onMessage);
    child.once("exit", onExit);
  });
}
