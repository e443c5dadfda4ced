/**
 * A load-generating client process of the lifecycle benchmark (test/bench/lifecycle.ts),
 * driven over IPC: "run" starts a load against one server on one shared channel, "mark"
 * opens the measured window, "stop" closes it (no new requests; the ones in flight
 * finish) and answers with the window's figures. Runs in its own process so that the
 * client's CPU is its own and several can share a load.
 */
import { seededRandom } from "../../../extproc/src/sim/random.ts";
import { GrpcChannel } from "./grpc-h2.ts";
import { LifecycleDriver, type LifecycleOptions, type MessageCounters } from "./lifecycle-client.ts";
import type { ClientCommand, ClientReport, CompletedCount, LoadShare } from "./protocol.ts";
import { percentile } from "./stats.ts";

/** One connection per server, kept across runs (as Envoy keeps its gRPC connection). */
const channels = new Map<number, GrpcChannel>();
const drivers = new Map<number, LifecycleDriver>();

async function driverFor(port: number, options: LifecycleOptions): Promise<LifecycleDriver> {
  const existing = drivers.get(port);
  if (existing && !channels.get(port)?.error) return existing;
  channels.get(port)?.close();
  const channel = await GrpcChannel.connect(port);
  const driver = new LifecycleDriver(channel, options);
  channels.set(port, channel);
  drivers.set(port, driver);
  return driver;
}

/** One load run: its window bookkeeping and the requests still in flight. */
class Run {
  readonly #driver: LifecycleDriver;
  readonly #share: LoadShare;
  readonly #inFlight = new Set<Promise<void>>();
  #next: number;
  #markAt: number | undefined;
  #windowEndAt: number | undefined;
  #stopped = false;
  readonly #latencies: number[] = [];
  readonly #lags: number[] = [];
  readonly #window: MessageCounters = { mainReplies: 0, overrides: 0, usageReplies: 0, resets: 0 };
  readonly #outside: MessageCounters = { mainReplies: 0, overrides: 0, usageReplies: 0, resets: 0 };
  #startedInWindow = 0;
  #completedInWindow = 0;
  /** Every request completed so far, window or not. */
  completed = 0;
  #refused = 0;
  #failed = 0;
  readonly #problems: string[] = [];
  #loop: Promise<void> = Promise.resolve();

  constructor(driver: LifecycleDriver, share: LoadShare) {
    this.#driver = driver;
    this.#share = share;
    this.#next = share.keyOffset;
  }

  start(): void {
    const load = this.#share.load;
    this.#loop =
      load.kind === "open" ? this.#openLoop(load.rate, load.arrivals) : this.#closedLoop(load.concurrency);
  }

  mark(): void {
    this.#markAt = performance.now();
  }

  /** The window is over; the load goes on until stop(). */
  endWindow(): void {
    this.#windowEndAt ??= performance.now();
  }

  async stop(): Promise<ClientReport> {
    this.endWindow();
    this.#stopped = true;
    await this.#loop;
    while (this.#inFlight.size > 0) await Promise.all([...this.#inFlight]);
    const windowEnd = this.#windowEndAt ?? performance.now();
    const windowMs = windowEnd - (this.#markAt ?? windowEnd);
    return {
      type: "result",
      windowMs,
      latencies: this.#latencies,
      startedInWindow: this.#startedInWindow,
      completedInWindow: this.#completedInWindow,
      refused: this.#refused,
      failed: this.#failed,
      problems: this.#problems.slice(0, 5),
      ...(this.#driver.connectionError ? { connectionError: this.#driver.connectionError } : {}),
      counters: this.#window,
      resetsInRun: this.#window.resets + this.#outside.resets,
      lagP99Ms: percentile(
        this.#lags.sort((a, b) => a - b),
        99,
      ),
    };
  }

  #inWindow(at: number): boolean {
    return (
      this.#markAt !== undefined &&
      at >= this.#markAt &&
      (this.#windowEndAt === undefined || at < this.#windowEndAt)
    );
  }

  /** Starts one request now; `scheduledAt` is when the open loop wanted it. */
  #issue(scheduledAt?: number): Promise<void> {
    const keys = this.#share.keys;
    const key = keys[this.#next++ % keys.length] as string;
    const startedAt = performance.now();
    const measured = this.#inWindow(startedAt);
    if (measured) {
      this.#startedInWindow++;
      if (scheduledAt !== undefined) this.#lags.push(startedAt - scheduledAt);
    }
    const counters = measured ? this.#window : this.#outside;
    const request = this.#driver.run(key, counters).then((outcome) => {
      const endedAt = performance.now();
      if (outcome.ok) {
        if (measured) this.#latencies.push(outcome.latencyMs);
        this.completed++;
        if (this.#inWindow(endedAt)) this.#completedInWindow++;
        return;
      }
      if (outcome.reason === "refused") this.#refused++;
      else this.#failed++;
      if (this.#problems.length < 5) this.#problems.push(`${outcome.reason}: ${outcome.detail}`);
    });
    const tracked = request.finally(() => this.#inFlight.delete(tracked));
    this.#inFlight.add(tracked);
    return tracked;
  }

  /** Requests start on schedule whether or not earlier ones finished. */
  async #openLoop(rate: number, arrivals: "poisson" | "uniform"): Promise<void> {
    const random = seededRandom(this.#share.seed);
    const gapMs = () => (arrivals === "uniform" ? 1000 / rate : (-Math.log(1 - random()) * 1000) / rate);
    let due = performance.now();
    while (!this.#stopped) {
      const now = performance.now();
      while (due <= now && !this.#stopped) {
        void this.#issue(due);
        due += gapMs();
      }
      await sleep(Math.max(0, due - performance.now()));
    }
  }

  async #closedLoop(concurrency: number): Promise<void> {
    const worker = async () => {
      while (!this.#stopped) await this.#issue();
    };
    await Promise.all(Array.from({ length: concurrency }, worker));
  }
}

let current: Run | undefined;

process.on("message", (command: ClientCommand) => {
  void handle(command).catch((error: unknown) => {
    process.stderr.write(`load client: ${(error as Error).stack ?? String(error)}\n`);
    process.exit(1);
  });
});

async function handle(command: ClientCommand): Promise<void> {
  switch (command.type) {
    case "run": {
      current = new Run(await driverFor(command.port, command.options), command.share);
      current.start();
      send({ type: "running" });
      return;
    }
    case "mark":
      current?.mark();
      return;
    case "end-window":
      current?.endWindow();
      return;
    case "count":
      send({ type: "count", completed: current?.completed ?? 0 });
      return;
    case "stop": {
      if (!current) throw new Error("stop without a run");
      const report = await current.stop();
      current = undefined;
      send(report);
      return;
    }
    case "exit":
      for (const channel of channels.values()) channel.close();
      process.exit(0);
  }
}

function send(message: ClientReport | CompletedCount | { type: "running" } | { type: "ready" }): void {
  process.send?.(message);
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

process.on("disconnect", () => process.exit(0));
send({ type: "ready" });
