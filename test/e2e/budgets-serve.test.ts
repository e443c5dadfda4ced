/**
 * Budgets as users meet them: `fairgate serve` processes with the built-in proxy in front
 * of a stand-in engine, with the memory store and with a real redis-server shared by
 * several replicas.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import type { ServerResponse } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { hashApiKey } from "../../extproc/src/identity/identify.ts";
import { httpRequest, type RecordingUpstream, startRecordingUpstream } from "../helpers/ext-proc-fake.ts";
import { freePort, startRedis, type TestRedis } from "../helpers/redis.ts";

const root = new URL("../../", import.meta.url).pathname;
const dir = mkdtempSync(join(tmpdir(), "fairgate-budgets-"));
after(() => rmSync(dir, { recursive: true, force: true }));
// Whatever a failed test left running is killed, so the file can end.
const running = new Set<ChildProcess>();
after(() => {
  for (const child of running) child.kill("SIGKILL");
});

interface Serve {
  readonly proxyUrl: string;
  readonly httpPort: number;
  readonly child: ChildProcess;
  output(): string;
  stop(signal?: NodeJS.Signals): Promise<void>;
}

/** Starts `fairgate serve` with its built-in proxy and waits until /readyz answers 200. */
async function startServe(policyYaml: string, upstream: string, name = "policy"): Promise<Serve> {
  const file = join(dir, `${name}-${Math.random().toString(36).slice(2)}.yaml`);
  writeFileSync(file, policyYaml);
  const [grpcPort, httpPort, proxyPort] = [await freePort(), await freePort(), await freePort()];
  const child = spawn(
    process.execPath,
    [
      join(root, "bin", "fairgate.js"),
      "serve",
      "--config",
      file,
      "--grpc-listen",
      `127.0.0.1:${grpcPort}`,
      "--http-listen",
      `127.0.0.1:${httpPort}`,
      "--proxy-listen",
      `127.0.0.1:${proxyPort}`,
      "--upstream",
      upstream,
      // Budget checks here may wait up to their 500 ms store timeout on a loaded machine:
      // Envoy's 200 ms per-message default would answer 504 first.
      "--message-timeout-ms",
      "1000",
      "--log-level",
      "warn",
    ],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  running.add(child);
  child.once("exit", () => running.delete(child));
  let output = "";
  child.stdout?.on("data", (d) => (output += d));
  child.stderr?.on("data", (d) => (output += d));
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const deadline = Date.now() + 20_000;
  for (;;) {
    try {
      const response = await fetch(`http://127.0.0.1:${httpPort}/readyz`);
      if (response.status === 200) break;
    } catch {
      // not listening yet
    }
    if (child.exitCode !== null || Date.now() > deadline) {
      child.kill("SIGKILL");
      throw new Error(`fairgate serve did not become ready:\n${output}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    proxyUrl: `http://127.0.0.1:${proxyPort}`,
    httpPort,
    child,
    output: () => output,
    stop: async (signal = "SIGTERM") => {
      if (child.exitCode === null) child.kill(signal);
      await exited;
    },
  };
}

function policy(store: string, tenants: Array<{ id: string; limits: string }>): string {
  return [
    `store: ${store}`,
    "tiers: { standard: { priority: 0, weight: 1 } }",
    "tenants:",
    ...tenants.flatMap((t) => [
      `  - id: ${t.id}`,
      "    tier: standard",
      `    apiKeys: ["${hashApiKey(`key-${t.id}`)}"]`,
      `    limits: ${t.limits}`,
    ]),
    "server: { shutdownGraceMs: 500 }",
  ].join("\n");
}

const chat = (maxTokens = 16) =>
  JSON.stringify({ model: "m", messages: [{ role: "user", content: "hi" }], max_tokens: maxTokens });

function post(serve: Serve, tenant: string, body = chat()) {
  return httpRequest(serve.proxyUrl, {
    method: "POST",
    path: "/v1/chat/completions",
    headers: { authorization: `Bearer key-${tenant}`, "content-type": "application/json" },
    body,
  });
}

function codeOf(response: { status: number; body: Buffer }): string {
  try {
    return (JSON.parse(response.body.toString()) as { error?: { code?: string } }).error?.code ?? "";
  } catch {
    return `status ${response.status}: ${response.body.toString().slice(0, 80)}`;
  }
}

/** An engine stand-in that answers after `delayMs` and counts concurrent requests per tenant. */
async function engine(delayMs = 0): Promise<RecordingUpstream & { peak: Map<string, number> }> {
  const active = new Map<string, number>();
  const peak = new Map<string, number>();
  const upstream = await startRecordingUpstream((request, response: ServerResponse, body: Buffer) => {
    const tenant = String(request.headers["x-fairgate-tenant"]);
    // Generates max_tokens, as with ignore_eos, so reconciliation keeps the admission charge.
    const maxTokens = Number(
      (JSON.parse(body.toString() || "{}") as { max_tokens?: number }).max_tokens ?? 16,
    );
    active.set(tenant, (active.get(tenant) ?? 0) + 1);
    peak.set(tenant, Math.max(peak.get(tenant) ?? 0, active.get(tenant) ?? 0));
    setTimeout(() => {
      active.set(tenant, (active.get(tenant) ?? 1) - 1);
      const payload = JSON.stringify({
        object: "chat.completion",
        choices: [],
        usage: { prompt_tokens: 10, completion_tokens: maxTokens, total_tokens: 10 + maxTokens },
      });
      response.writeHead(200, {
        "content-type": "application/json",
        "content-length": Buffer.byteLength(payload),
      });
      response.end(payload);
    }, delayMs);
  });
  return Object.assign(upstream, { peak });
}

describe("budgets through fairgate serve (memory store)", () => {
  it("rpm: 3 refuses the 4th quick request with 429 rate_limit_requests and an integer retry-after", async () => {
    const upstream = await engine();
    const serve = await startServe(
      policy("{ memory: {} }", [{ id: "small", limits: "{ rpm: 3 }" }]),
      upstream.url,
    );
    try {
      const statuses: number[] = [];
      let last: Awaited<ReturnType<typeof post>> | undefined;
      for (let i = 0; i < 4; i++) {
        last = await post(serve, "small");
        statuses.push(last.status);
      }
      assert.deepEqual(statuses, [200, 200, 200, 429]);
      assert.ok(last);
      assert.equal(codeOf(last), "rate_limit_requests");
      const retryAfter = String(last.headers["retry-after"]);
      assert.match(retryAfter, /^\d+$/);
      assert.ok(Number(retryAfter) > 0 && Number(retryAfter) <= 60, `retry-after ${retryAfter}`);
      assert.equal(last.headers["x-ratelimit-limit-requests"], "3");
      assert.equal(last.headers["x-ratelimit-remaining-requests"], "0");
      assert.ok(last.headers["x-ratelimit-reset-requests"]);
    } finally {
      await serve.stop();
      await upstream.close();
    }
  });

  it("tpm: 2000 admits one 1,500-token request and refuses the next; admitted responses carry the headers", async () => {
    const upstream = await engine();
    const serve = await startServe(
      policy("{ memory: {} }", [{ id: "tok", limits: "{ tpm: 2000 }" }]),
      upstream.url,
    );
    try {
      const first = await post(serve, "tok", chat(1490));
      assert.equal(first.status, 200);
      assert.equal(first.headers["x-ratelimit-limit-tokens"], "2000");
      const remaining = Number(first.headers["x-ratelimit-remaining-tokens"]);
      assert.ok(remaining >= 400 && remaining <= 520, `remaining ${remaining}`);
      const second = await post(serve, "tok", chat(1490));
      assert.equal(second.status, 429);
      assert.equal(codeOf(second), "rate_limit_tokens");
      const tooBig = await post(serve, "tok", chat(2500));
      assert.equal(tooBig.status, 429);
      assert.equal(codeOf(tooBig), "request_too_large_for_limit");
    } finally {
      await serve.stop();
      await upstream.close();
    }
  });

  it("maxConcurrency: 2 never has 3 in flight", async () => {
    const upstream = await engine(400);
    const serve = await startServe(
      policy("{ memory: {} }", [{ id: "conc", limits: "{ maxConcurrency: 2 }" }]),
      upstream.url,
    );
    try {
      const responses = await Promise.all(Array.from({ length: 6 }, () => post(serve, "conc")));
      const ok = responses.filter((r) => r.status === 200).length;
      const refused = responses.filter((r) => r.status === 429);
      assert.equal(ok, 2);
      assert.equal(refused.length, 4);
      for (const r of refused) {
        assert.equal(codeOf(r), "concurrency_limit");
        assert.match(String(r.headers["retry-after"]), /^\d+$/);
      }
      assert.equal(upstream.peak.get("conc"), 2);
      // The slots come back when the requests end.
      assert.equal((await post(serve, "conc")).status, 200);
    } finally {
      await serve.stop();
      await upstream.close();
    }
  });
});

describe("fairgate serve's built-in proxy under sustained load", () => {
  it("serves 3,000 quick requests without a single 5xx (streams are closed gracefully, not reset)", async () => {
    const upstream = await engine();
    const serve = await startServe(
      policy("{ memory: {} }", [{ id: "busy", limits: "{ rpm: 1000000 }" }]),
      upstream.url,
    );
    try {
      const statuses = new Map<number, number>();
      let next = 0;
      await Promise.all(
        Array.from({ length: 8 }, async () => {
          while (next++ < 3_000) {
            const r = await post(serve, "busy");
            statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1);
          }
        }),
      );
      assert.deepEqual([...statuses], [[200, 3_000]]);
      assert.doesNotMatch(serve.output(), /ext_proc stream failed/);
    } finally {
      await serve.stop();
      await upstream.close();
    }
  });
});

describe("budgets shared by several serve replicas on one Redis", () => {
  let redis: TestRedis;
  after(async () => redis?.stop());

  it("three replicas, 1,000 requests, rpm 300: admitted within 1 % of what the bucket allows", async () => {
    redis = await startRedis();
    const upstream = await engine();
    // This is about the shared bucket's accuracy: on a machine loaded by the test files
    // running alongside, three slow replies in a row must not count as a Redis outage.
    const text = policy(`{ redis: "${redis.url}", onOutage: fail-closed, timeoutMs: 500 }`, [
      { id: "shared", limits: "{ rpm: 300 }" },
    ]);
    const replicas = await Promise.all([0, 1, 2].map((i) => startServe(text, upstream.url, `replica-${i}`)));
    try {
      const started = Date.now();
      let admitted = 0;
      const other: string[] = [];
      const jobs: Array<Promise<void>> = [];
      for (let i = 0; i < 1_000; i++) {
        const replica = replicas[i % 3] as Serve;
        jobs.push(
          post(replica, "shared").then((r) => {
            if (r.status === 200) admitted++;
            else if (codeOf(r) !== "rate_limit_requests") other.push(codeOf(r));
          }),
        );
        if (jobs.length % 20 === 0) await Promise.all(jobs.splice(0));
      }
      await Promise.all(jobs);
      const elapsedMin = (Date.now() - started) / 60_000;
      const allowed = 300 + 300 * elapsedMin;
      assert.deepEqual(other, [], "every refusal is rate_limit_requests");
      assert.ok(
        admitted <= Math.ceil(allowed) + 1,
        `admitted ${admitted}, bucket allows ${allowed.toFixed(1)}`,
      );
      assert.ok(
        admitted >= Math.floor(allowed * 0.99) - 1,
        `admitted ${admitted}, bucket allows ${allowed.toFixed(1)}`,
      );
    } finally {
      await Promise.all(replicas.map((r) => r.stop()));
      await upstream.close();
    }
  });

  it("a replica killed with SIGKILL while holding leases leaks nothing beyond the lease TTL", async () => {
    redis ??= await startRedis();
    const slow = await engine(20_000);
    const fast = await engine(0);
    const text = (leaseTtlMs: number) =>
      policy(`{ redis: "${redis.url}", onOutage: fail-closed, leaseTtlMs: ${leaseTtlMs} }`, [
        { id: "leases", limits: "{ maxConcurrency: 2 }" },
      ]);
    let doomed: Serve | undefined;
    let survivor: Serve | undefined;
    try {
      doomed = await startServe(text(2_000), slow.url, "doomed");
      survivor = await startServe(text(2_000), fast.url, "survivor");
      // Two requests hang on the slow engine behind the doomed replica, holding both slots.
      const hanging = [post(doomed, "leases"), post(doomed, "leases")];
      for (const p of hanging) p.catch(() => {});
      await new Promise((r) => setTimeout(r, 500));
      const busy = await post(survivor, "leases");
      assert.equal(busy.status, 429);
      assert.equal(codeOf(busy), "concurrency_limit");
      await doomed.stop("SIGKILL");
      const killedAt = Date.now();
      let freedAfter: number | undefined;
      while (Date.now() - killedAt < 6_000) {
        const [a, b] = await Promise.all([post(survivor, "leases"), post(survivor, "leases")]);
        if (a.status === 200 && b.status === 200) {
          freedAfter = Date.now() - killedAt;
          break;
        }
        await new Promise((r) => setTimeout(r, 200));
      }
      assert.ok(freedAfter !== undefined, "the tenant's full concurrency came back");
      assert.ok(freedAfter <= 2_000 + 1_500, `freed ${freedAfter} ms after the kill (TTL 2000 ms)`);
    } finally {
      await doomed?.stop("SIGKILL");
      await survivor?.stop();
      await slow.close();
      await fast.close();
    }
  });
});

describe("Redis outage under load, and recovery without restart", () => {
  for (const mode of ["fail-open", "fail-closed"] as const) {
    it(`${mode}: behaves as configured while Redis is down and recovers when it is back`, async () => {
      let redis = await startRedis();
      const upstream = await engine();
      // A stopped Redis is a lost connection, an outage at once; the timeout only has to
      // keep slow replies on a loaded test machine from flapping the recovered state.
      const serve = await startServe(
        policy(`{ redis: "${redis.url}", onOutage: ${mode}, timeoutMs: 500 }`, [
          { id: "steady", limits: "{ rpm: 6000, tpm: 10000000 }" },
        ]),
        upstream.url,
        `outage-${mode}`,
      );
      try {
        const burst = async (n: number) => {
          const responses = await Promise.all(Array.from({ length: n }, () => post(serve, "steady")));
          return responses.map((r) => (r.status === 200 ? "ok" : `${r.status} ${codeOf(r)}`));
        };
        assert.deepEqual(new Set(await burst(10)), new Set(["ok"]));
        await redis.stop();
        const started = Date.now();
        const during = await burst(10);
        assert.ok(Date.now() - started < 5_000, "nothing hangs while Redis is down");
        if (mode === "fail-open")
          assert.deepEqual(new Set(during), new Set(["ok"]), "local budgets keep serving");
        else assert.deepEqual(new Set(during), new Set(["503 store_unavailable"]));
        const ready = await fetch(`http://127.0.0.1:${serve.httpPort}/readyz`);
        assert.equal(ready.status, mode === "fail-open" ? 200 : 503);
        redis = await startRedis({ port: redis.port });
        // Recovered: a burst all served and /readyz 200 together. On a loaded machine a slow
        // reply can still flap the state once right after recovery, so both are polled.
        let after: string[] = [];
        let readiness = 0;
        const deadline = Date.now() + 10_000;
        while (Date.now() < deadline) {
          after = await burst(5);
          readiness = (await fetch(`http://127.0.0.1:${serve.httpPort}/readyz`)).status;
          if (after.every((r) => r === "ok") && readiness === 200) break;
          await new Promise((r) => setTimeout(r, 200));
        }
        assert.deepEqual(new Set(after), new Set(["ok"]), "back to Redis without a restart");
        assert.equal(readiness, 200);
      } finally {
        await serve.stop();
        await upstream.close();
        await redis.stop();
      }
    });
  }
});
