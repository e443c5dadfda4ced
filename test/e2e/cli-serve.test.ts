import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { freePort } from "../helpers/redis.ts";

const root = new URL("../../", import.meta.url).pathname;
const dir = mkdtempSync(join(tmpdir(), "fairgate-cli-"));
after(() => rmSync(dir, { recursive: true, force: true }));

function run(args: string[]): ChildProcess & { output: () => string; exited: Promise<number | null> } {
  const child = spawn(process.execPath, [join(root, "bin", "fairgate.js"), ...args], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  child.stdout?.on("data", (d) => (output += d));
  child.stderr?.on("data", (d) => (output += d));
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  return Object.assign(child, { output: () => output, exited });
}

async function until<T>(fn: () => Promise<T | undefined>, ms = 15_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      const value = await fn();
      if (value !== undefined) return value;
    } catch {
      // not yet
    }
    if (Date.now() > deadline) throw new Error("timed out");
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe("fairgate CLI", () => {
  it("validate exits 2 with path and line for a wrong type and an unknown tier", async () => {
    const bad = join(dir, "bad.yaml");
    writeFileSync(bad, "tenants:\n  - id: a\n    tier: gold\n    limits: { rpm: many }\n");
    const child = run(["validate", bad]);
    assert.equal(await child.exited, 2);
    assert.match(child.output(), /bad\.yaml:3:11: tenants\[0\]\.tier: unknown tier "gold"/);
    assert.match(child.output(), /bad\.yaml:4:20: tenants\[0\]\.limits\.rpm: expected a number/);
  });

  it("serve starts, moves /metrics with --metrics-listen, reloads on SIGHUP, rejects an invalid edit, and exits 0 on SIGTERM", async () => {
    const policy = join(dir, "policy.yaml");
    copyFileSync(join(root, "policies", "demo.yaml"), policy);
    const [grpcPort, httpPort, metricsPort] = [await freePort(), await freePort(), await freePort()];
    const child = run([
      "serve",
      "--config",
      policy,
      "--grpc-listen",
      `127.0.0.1:${grpcPort}`,
      "--http-listen",
      `127.0.0.1:${httpPort}`,
      "--metrics-listen",
      `127.0.0.1:${metricsPort}`,
    ]);
    try {
      const ready = await until(async () => {
        const response = await fetch(`http://127.0.0.1:${httpPort}/readyz`);
        return response.status === 200 ? ((await response.json()) as { ready: boolean }) : undefined;
      });
      assert.equal(ready.ready, true);
      const metrics = await fetch(`http://127.0.0.1:${metricsPort}/metrics`);
      assert.equal(metrics.status, 200);
      assert.match(await metrics.text(), /^fairgate_policy_info\{/m);
      assert.equal((await fetch(`http://127.0.0.1:${httpPort}/metrics`)).status, 404);
      assert.match(child.output(), /"metricsPort":\d+/);
      assert.match(child.output(), /the HTTP API is unauthenticated/);
      const versionOf = async () =>
        ((await (await fetch(`http://127.0.0.1:${httpPort}/v1/queue`)).json()) as { policy_version: string })
          .policy_version;
      const first = await versionOf();

      writeFileSync(policy, `${readFileSync(policy, "utf8")}\n# edited\n`);
      child.kill("SIGHUP");
      const second = await until(async () => {
        const v = await versionOf();
        return v !== first ? v : undefined;
      });
      assert.notEqual(second, first);

      writeFileSync(policy, "tenants: [{ id: 5 }]\n");
      child.kill("SIGHUP");
      await until(async () => (child.output().includes("policy reload rejected") ? true : undefined));
      assert.equal(await versionOf(), second, "the last valid policy keeps serving");
      assert.match(child.output(), /policy\.yaml:1:\d+: tenants\[0\]\.id/);

      child.kill("SIGTERM");
      assert.equal(await child.exited, 0);
      assert.match(child.output(), /"msg":"stopped"/);
    } finally {
      if (child.exitCode === null) child.kill("SIGKILL");
    }
  });

  it("serve refuses a missing --config with exit 2", async () => {
    const child = run(["serve"]);
    assert.equal(await child.exited, 2);
    assert.match(child.output(), /--config FILE is required/);
  });

  it("serve refuses a message timeout outside 1 ms..max-message-timeout with exit 2", async () => {
    const file = join(dir, "timeout-policy.yaml");
    copyFileSync(join(root, "policies", "minimal.yaml"), file);
    for (const value of ["0", "1.5", "400000"]) {
      const child = run(["serve", "--config", file, "--message-timeout-ms", value]);
      assert.equal(await child.exited, 2, value);
      assert.match(
        child.output(),
        /--message-timeout-ms must be an integer from 1 to the max_message_timeout \(--max-message-timeout-ms\)/,
      );
    }
  });

  it("serve refuses a --max-message-timeout-ms that a tenant's maxQueueWaitMs cannot fit under", async () => {
    const file = join(dir, "wait-policy.yaml");
    writeFileSync(file, "tenants:\n  - id: slow\n    limits: { maxQueueWaitMs: 120000 }\n");
    const child = run(["serve", "--config", file, "--max-message-timeout-ms", "60000"]);
    assert.equal(await child.exited, 2);
    assert.match(
      child.output(),
      /tenants\[0\] \(slow\)\.limits\.maxQueueWaitMs: maxQueueWaitMs 120000 cannot fit under Envoy's max_message_timeout of 60000 ms \(--max-message-timeout-ms\)/,
    );
  });
});
