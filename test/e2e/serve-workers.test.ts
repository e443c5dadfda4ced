/**
 * `fairgate serve --workers 2` as an operator runs it: one primary, two worker processes
 * sharing the gRPC port, one Redis. In front, four Envoy-faithful proxies (like the worker
 * threads of an Envoy, each holding its own connection to the ext_proc cluster), so the
 * cluster's round robin spreads their connections over both workers. The engine records
 * which replica admitted each request (x-fairgate-request-id names it) and how many it
 * serves at once.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import type { ServerResponse } from "node:http";
import { type AddressInfo, createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { hashApiKey } from "../../extproc/src/identity/identify.ts";
import { httpRequest, type RecordingUpstream, startRecordingUpstream } from "../helpers/ext-proc-fake.ts";
import { type FrontProxy, startBuiltinFront } from "../helpers/front-proxy.ts";
import { startRedis, type TestRedis } from "../helpers/redis.ts";
import { killLeftoverServes, type ServeProcess, startServe } from "../helpers/serve-process.ts";

const FRONTS = 4;
const MAX_IN_FLIGHT = 2;
const HOLD_MS = 60;
const MODEL = "test-model";
const BIN = new URL("../../bin/fairgate.js", import.meta.url).pathname;

function policy(store: string): string {
  return [
    `store: ${store}`,
    `backends: [{ name: engine, maxInFlightRequests: ${MAX_IN_FLIGHT} }]`,
    "tiers: { heavy: { priority: 0, weight: 4 }, light: { priority: 0, weight: 1 } }",
    "tenants:",
    ...["heavy", "light"].flatMap((tier) => [
      `  - id: ${tier}`,
      `    tier: ${tier}`,
      `    apiKeys: ["${hashApiKey(`key-${tier}`)}"]`,
      "    limits: { maxQueued: 1000, maxQueueWaitMs: 60000 }",
    ]),
    "server: { shutdownGraceMs: 5000 }",
  ].join("\n");
}

interface Served {
  tenant: string;
  replica: string;
}

/** Serves each request for HOLD_MS; records the order, the replica and the peak load. */
async function countingEngine(): Promise<RecordingUpstream & { served: Served[]; peak(): number }> {
  const served: Served[] = [];
  let active = 0;
  let peak = 0;
  const upstream = await startRecordingUpstream((request, response: ServerResponse) => {
    const id = String(request.headers["x-fairgate-request-id"] ?? "");
    served.push({
      tenant: String(request.headers["x-fairgate-tenant"]),
      replica: id.slice(id.lastIndexOf("@") + 1),
    });
    active++;
    peak = Math.max(peak, active);
    setTimeout(() => {
      active--;
      const body = JSON.stringify({
        object: "chat.completion",
        choices: [{ index: 0, message: { role: "assistant", content: "ok" } }],
        usage: { prompt_tokens: 10, completion_tokens: 16, total_tokens: 26 },
      });
      response.writeHead(200, {
        "content-type": "application/json",
        "content-length": Buffer.byteLength(body),
      });
      response.end(body);
    }, HOLD_MS);
  });
  return Object.assign(upstream, { served, peak: () => peak });
}

function chat(front: FrontProxy, tenant: string) {
  return httpRequest(front.url, {
    method: "POST",
    path: "/v1/chat/completions",
    headers: { authorization: `Bearer key-${tenant}`, "content-type": "application/json" },
    body: JSON.stringify({
      model: MODEL,
      max_tokens: 16,
      messages: [{ role: "user", content: "hello there" }],
    }),
  });
}

/** The sum of a metric's samples whose labels contain `match`. */
function metricSum(text: string, name: string, match = ""): number {
  let sum = 0;
  for (const line of text.split("\n")) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    if (!line.includes(match)) continue;
    sum += Number(line.slice(line.lastIndexOf(" ") + 1));
  }
  return sum;
}

async function until(check: () => Promise<boolean>, ms = 15_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check().catch(() => false))) {
    if (Date.now() > deadline) throw new Error("timed out");
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe("serve --workers 2", () => {
  let redis: TestRedis;
  let engine: Awaited<ReturnType<typeof countingEngine>>;
  let serve: ServeProcess;
  const fronts: FrontProxy[] = [];

  before(async () => {
    redis = await startRedis();
    engine = await countingEngine();
    serve = await startServe({
      // A loaded test machine can hold a Redis reply past the default 25 ms.
      policyYaml: policy(`{ redis: "${redis.url}", onOutage: fail-closed, timeoutMs: 1000 }`),
      args: ["--workers", "2", "--log-level", "info"],
    });
    for (let i = 0; i < FRONTS; i++) fronts.push(await startBuiltinFront(serve.grpcPort, engine.url));
  });
  after(async () => {
    for (const front of fronts) await front.close();
    killLeftoverServes();
    await engine?.close();
    await redis?.stop();
  });

  it("answers /readyz for the host: ready with both workers ready", async () => {
    const ready = await serve.api<{
      ready: boolean;
      checks: Record<string, { ok: boolean; detail?: string }>;
    }>("/readyz");
    assert.equal(ready.status, 200);
    assert.deepEqual(ready.body.checks.workers, { ok: true, detail: "2 of 2 ready" });
    assert.equal(ready.body.checks["worker-1.store"]?.ok, true);
    assert.equal(ready.body.checks["worker-2.store"]?.ok, true);
  });

  it("spreads requests over both workers, holds the backend cap exactly across them, and keeps weights 4:1", async () => {
    engine.served.length = 0;
    const perTenant = 40;
    const responses = await Promise.all(
      ["heavy", "light"].flatMap((tenant) =>
        Array.from({ length: perTenant }, (_, i) => chat(fronts[i % FRONTS] as FrontProxy, tenant)),
      ),
    );
    assert.deepEqual(
      responses.filter((r) => r.status !== 200).map((r) => `${r.status} ${r.body.toString().slice(0, 200)}`),
      [],
    );
    const replicas = new Set(engine.served.map((s) => s.replica));
    assert.equal(replicas.size, 2, `requests admitted by ${[...replicas].join(", ")}`);
    assert.ok(engine.peak() <= MAX_IN_FLIGHT, `the engine served ${engine.peak()} at once`);
    assert.equal(engine.peak(), MAX_IN_FLIGHT, "the cap is used, not just respected");
    // While both tenants are backlogged (the first half of the dispatches), VTC with weights
    // 4:1 serves heavy about 4 times as often; FCFS would serve them alike.
    const early = engine.served.slice(0, perTenant);
    const heavy = early.filter((s) => s.tenant === "heavy").length;
    assert.ok(heavy >= 0.65 * early.length, `heavy got ${heavy} of the first ${early.length}`);
  });

  it("sums the workers' counters in one /metrics scrape, and sums their queues in /v1/queue", async () => {
    const metrics = await serve.api<string>("/metrics");
    assert.equal(metrics.status, 200);
    const dispatched = metricSum(metrics.body, "fairgate_requests_total", 'outcome="dispatched"');
    assert.equal(dispatched, engine.requests.length);
    assert.match(metrics.body, /^fairgate_policy_info\{version="[^"]+"\} 1$/m);
    const queue = await serve.api<{
      backends: Array<{ backend: string; queued: number; in_flight: number }>;
    }>("/v1/queue");
    assert.deepEqual(
      queue.body.backends.map((b) => [b.backend, b.queued, b.in_flight]),
      [["engine", 0, 0]],
    );
    const estimate = await serve.api<{ tenant: string; estimated_wait_ms: number }>(
      "/v1/estimate?tenant=light&prompt_tokens=10&max_tokens=16",
    );
    assert.equal(estimate.status, 200);
    assert.equal(estimate.body.tenant, "light");
  });

  it("hot-reloads the policy in every worker and in the primary", async () => {
    type Ready = { checks: Record<string, { detail?: string }> };
    const versions = async () => {
      const { body } = await serve.api<Ready>("/readyz");
      const queue = await serve.api<{ policy_version: string }>("/v1/queue");
      return [
        body.checks["worker-1.policy"]?.detail,
        body.checks["worker-2.policy"]?.detail,
        `version ${queue.body.policy_version}`,
      ];
    };
    const [before] = await versions();
    writeFileSync(serve.policyPath, `${readFileSync(serve.policyPath, "utf8")}\n# edited\n`);
    await until(async () => {
      const now = await versions();
      return now[0] !== before && new Set(now).size === 1;
    });
  });

  it("restarts a worker that crashes, and is ready again with both", async () => {
    const pids = JSON.parse(/"pids":(\[[^\]]*\])/.exec(serve.output())?.[1] ?? "[]") as number[];
    assert.equal(pids.length, 2);
    process.kill(pids[0] as number, "SIGKILL");
    await until(async () => /"msg":"worker exited; restarting"/.test(serve.output()));
    await until(async () => /"msg":"worker serving"/.test(serve.output()));
    const ready = await serve.api<{ checks: Record<string, { detail?: string }> }>("/readyz");
    assert.equal(ready.status, 200);
    assert.equal(ready.body.checks.workers?.detail, "2 of 2 ready");
    assert.match(
      serve.output(),
      /"msg":"worker exited; restarting","worker":1,"pid":\d+,"code":null,"signal":"SIGKILL"/,
    );
  });

  it("drains both workers on SIGTERM: queued requests still reach the engine, and it exits 0", async () => {
    engine.served.length = 0;
    const pending = Array.from({ length: 12 }, (_, i) => chat(fronts[i % FRONTS] as FrontProxy, "light"));
    await until(async () => engine.served.length > 0);
    const exit = serve.stop("SIGTERM");
    const responses = await Promise.all(pending);
    assert.deepEqual(
      responses.map((r) => r.status),
      responses.map(() => 200),
    );
    assert.deepEqual(await exit, { code: 0, signal: null });
    assert.match(serve.output(), /"msg":"stopped","workers":2/);
  });
});

/** Runs `fairgate serve --config FILE ARGS` or `fairgate validate FILE` on `policyText` to its exit. */
async function runToExit(
  command: "serve" | "validate",
  policyText: string,
  args: string[] = [],
): Promise<{ code: number | null; output: string }> {
  const dir = mkdtempSync(join(tmpdir(), "fairgate-workers-"));
  try {
    const file = join(dir, "policy.yaml");
    writeFileSync(file, policyText);
    const fileArgs = command === "serve" ? ["--config", file] : [file];
    const child = spawn(process.execPath, [BIN, command, ...fileArgs, ...args], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let output = "";
    child.stderr.on("data", (d) => (output += d));
    child.stdout.on("data", (d) => (output += d));
    const timer = setTimeout(() => child.kill("SIGKILL"), 20_000);
    const code = await new Promise<number | null>((resolve) => child.once("exit", resolve));
    clearTimeout(timer);
    return { code, output };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

describe("serve --workers refusing to run", () => {
  it("refuses the memory store before any worker starts: exit 2, naming --workers and the store", async () => {
    const { code, output } = await runToExit("serve", policy("{ memory: {} }"), ["--workers", "2"]);
    assert.equal(code, 2);
    assert.match(output, /--workers 2 needs the Redis store.*store\.redis.*--redis URL/);
    assert.doesNotMatch(output, /fairgate serving/);
  });

  it("rejects server.workers above 1 with the memory store in validate, at its path and line", async () => {
    const text = policy("{ memory: {} }").replace("server: {", "server: { workers: 2,");
    const { code, output } = await runToExit("validate", text);
    assert.equal(code, 2);
    assert.match(output, /policy\.yaml:\d+:\d+: server\.workers: more than one worker needs the Redis store/);
  });

  it("gives up with exit 1 when workers keep exiting before they serve (the gRPC port is taken)", async () => {
    const redis = await startRedis();
    const taken = createServer();
    await new Promise<void>((resolve) => taken.listen(0, "127.0.0.1", resolve));
    try {
      const { port } = taken.address() as AddressInfo;
      const { code, output } = await runToExit("serve", policy(`{ redis: "${redis.url}" }`), [
        "--workers",
        "2",
        "--grpc-listen",
        `127.0.0.1:${port}`,
        "--http-listen",
        "127.0.0.1:0",
      ]);
      assert.equal(code, 1);
      assert.match(output, /"msg":"worker exited; restarting","worker":\d,"pid":\d+,"code":1/);
      assert.match(output, /"msg":"worker keeps exiting before it serves; stopping fairgate"/);
      assert.doesNotMatch(output, /"msg":"fairgate serving"/);
    } finally {
      taken.close();
      await redis.stop();
    }
  });
});
