import { type ChildProcess, spawn } from "node:child_process";
import { createServer } from "node:net";
import { Redis } from "ioredis";

/** A private redis-server on a free port, so tests never touch a shared Redis on 6379. */
export interface TestRedis {
  readonly url: string;
  readonly port: number;
  stop(): Promise<void>;
  /** SIGSTOP/SIGCONT, to make Redis unresponsive without closing its socket. */
  pause(): void;
  resume(): void;
}

/**
 * A port nobody listens on, for a child process to bind. Picked at random below the
 * kernel's ephemeral range (32768+ on Linux): a port the kernel just handed out and took
 * back (listen(0)) is soon reused as the source port of some outgoing connection, and the
 * child's bind then fails with EADDRINUSE.
 */
export async function freePort(): Promise<number> {
  for (let attempt = 0; ; attempt++) {
    const port = 20_000 + Math.floor(Math.random() * 12_000);
    if (await canListen(port)) return port;
    if (attempt > 200) throw new Error("no free port between 20000 and 32000");
  }
}

async function canListen(port: number): Promise<boolean> {
  return await new Promise((resolve) => {
    const server = createServer();
    server.once("error", () => resolve(false));
    server.listen(port, "127.0.0.1", () => server.close(() => resolve(true)));
  });
}

/** `port`: reuse a port (to restart a stopped server where its clients expect it);
 * `args`: further redis-server options, e.g. ["--enable-debug-command", "local"]. */
export async function startRedis(options: { port?: number; args?: string[] } = {}): Promise<TestRedis> {
  const port = options.port ?? (await freePort());
  const child: ChildProcess = spawn(
    "redis-server",
    [
      "--port",
      String(port),
      "--bind",
      "127.0.0.1",
      "--save",
      "",
      "--appendonly",
      "no",
      "--protected-mode",
      "no",
      ...(options.args ?? []),
    ],
    { stdio: "ignore" },
  );
  const url = `redis://127.0.0.1:${port}`;
  const deadline = Date.now() + 5_000;
  for (;;) {
    const probe = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
    probe.on("error", () => {});
    try {
      await probe.connect();
      if ((await probe.ping()) === "PONG") break;
    } catch {
      if (Date.now() > deadline) {
        child.kill("SIGKILL");
        throw new Error(`redis-server did not start on port ${port}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    } finally {
      probe.disconnect();
    }
  }
  return {
    url,
    port,
    pause: () => child.kill("SIGSTOP"),
    resume: () => child.kill("SIGCONT"),
    stop: () =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null || child.signalCode !== null) return resolve();
        child.once("exit", () => resolve());
        child.kill("SIGCONT");
        child.kill("SIGKILL");
      }),
  };
}
