import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort } from "./redis.ts";

/** `fairgate serve` as a real child process, as an operator runs it. */
export interface ServeProcess {
  readonly pid: number;
  readonly grpcPort: number;
  readonly httpPort: number;
  /** The built-in proxy's URL, when started with an upstream. */
  readonly proxyUrl: string | undefined;
  readonly child: ChildProcess;
  /** The policy file it serves (edit it to hot-reload). */
  readonly policyPath: string;
  /** Resolves when the process has exited, with how. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** The last 64 KiB it wrote to stdout and stderr. */
  output(): string;
  /** Signals the process (SIGTERM by default) and waits for it to exit. */
  stop(signal?: NodeJS.Signals): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** GET on the HTTP API, parsed as JSON. */
  api<T = unknown>(path: string): Promise<{ status: number; body: T }>;
}

export interface ServeOptions {
  policyYaml: string;
  /** Starts the built-in proxy in front of this engine URL. */
  upstream?: string;
  args?: string[];
  readyTimeoutMs?: number;
}

/** Each running child and its policy file's directory. */
const running = new Map<ChildProcess, string>();

/** SIGKILLs every serve process still running; for `after` hooks, so a failed test cannot
 * leave a child that keeps the test runner from ending. */
export function killLeftoverServes(): void {
  for (const [child, dir] of running) {
    child.kill("SIGKILL");
    // The runner may end before the exit event: remove the directory now.
    rmSync(dir, { recursive: true, force: true });
  }
  running.clear();
}

const bin = new URL("../../bin/fairgate.js", import.meta.url).pathname;

/** Starts `fairgate serve` on free ports and waits until /readyz answers 200. */
export async function startServe(options: ServeOptions): Promise<ServeProcess> {
  const dir = mkdtempSync(join(tmpdir(), "fairgate-serve-"));
  const file = join(dir, "policy.yaml");
  writeFileSync(file, options.policyYaml);
  const [grpcPort, httpPort] = [await freePort(), await freePort()];
  const proxyPort = options.upstream ? await freePort() : undefined;
  const proxyArgs = options.upstream
    ? ["--proxy-listen", `127.0.0.1:${proxyPort}`, "--upstream", options.upstream]
    : [];
  const child = spawn(
    process.execPath,
    [
      bin,
      "serve",
      "--config",
      file,
      "--grpc-listen",
      `127.0.0.1:${grpcPort}`,
      "--http-listen",
      `127.0.0.1:${httpPort}`,
      ...proxyArgs,
      "--log-level",
      "warn",
      ...(options.args ?? []),
    ],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  running.set(child, dir);
  // The tail only: a long run (test/soak) must not grow without bound.
  let output = "";
  const keep = (d: Buffer) => {
    output = (output + d.toString()).slice(-64 * 1024);
  };
  child.stdout?.on("data", keep);
  child.stderr?.on("data", keep);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once("exit", (code, signal) => {
      running.delete(child);
      rmSync(dir, { recursive: true, force: true });
      resolve({ code, signal });
    }),
  );
  const api = async <T>(path: string) => {
    const response = await fetch(`http://127.0.0.1:${httpPort}${path}`, {
      signal: AbortSignal.timeout(5_000),
    });
    const text = await response.text();
    let body: unknown = text;
    try {
      body = JSON.parse(text);
    } catch {
      // not JSON: kept as text
    }
    return { status: response.status, body: body as T };
  };
  const deadline = Date.now() + (options.readyTimeoutMs ?? 20_000);
  for (;;) {
    const ready = await api("/readyz").then(
      (r) => r.status === 200,
      () => false,
    );
    if (ready) break;
    if (child.exitCode !== null || Date.now() > deadline) {
      child.kill("SIGKILL");
      throw new Error(`fairgate serve did not become ready:\n${output}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    pid: child.pid as number,
    grpcPort,
    httpPort,
    proxyUrl: proxyPort === undefined ? undefined : `http://127.0.0.1:${proxyPort}`,
    child,
    policyPath: file,
    exited,
    output: () => output,
    api,
    stop: async (signal = "SIGTERM") => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return await exited;
    },
  };
}

/** What GET /v1/queue answers, the fields the fault tests read. */
export interface QueueView {
  backends: Array<{ backend: string; queued: number; in_flight: number }>;
  tenants: Array<{ tenant: string; queued: number; in_flight: number }>;
}

/** Requests in flight and queued on every backend of one serve process. */
export async function queueTotals(serve: ServeProcess): Promise<{ inFlight: number; queued: number }> {
  const { body } = await serve.api<QueueView>("/v1/queue");
  return {
    inFlight: body.backends.reduce((sum, b) => sum + b.in_flight, 0),
    queued: body.backends.reduce((sum, b) => sum + b.queued, 0),
  };
}
