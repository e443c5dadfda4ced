import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { runPoll } from "../../extproc/src/commands/poll.ts";
import { getPreset } from "../../extproc/src/sim/presets.ts";
import { type SimServer, startSimServer } from "../../extproc/src/sim/sim-server.ts";

const dir = mkdtempSync(join(tmpdir(), "fairgate-poll-"));

async function run(args: string[], signal?: AbortSignal) {
  let stdout = "";
  let stderr = "";
  const code = await runPoll(args, { stdout: (s) => (stdout += s), stderr: (s) => (stderr += s) }, signal);
  return { code, stdout, stderr, lines: () => stdout.trim().split("\n") };
}

describe("fairgate poll", () => {
  let sim: SimServer;
  let config: string;

  before(async () => {
    sim = await startSimServer({ listen: "127.0.0.1:0", preset: getPreset("test"), metricsCompat: "v0" });
    config = join(dir, "policy.yaml");
    writeFileSync(
      config,
      `backends:\n  - name: llm\n    metrics: ["${sim.url}/metrics", "http://127.0.0.1:1/metrics"]\n    scrapeIntervalMs: 50\n`,
    );
  });
  after(async () => {
    await sim.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("--once --json prints one document with every endpoint and the backend signals; exit 1 if one is not serving", async () => {
    const { code, stdout } = await run(["--config", config, "--once", "--json"]);
    assert.equal(code, 1, "the endpoint on port 1 cannot be reached");
    const doc = JSON.parse(stdout);
    assert.equal(doc.endpoints.length, 2);
    const up = doc.endpoints.find((e: { url: string }) => e.url.startsWith(sim.url));
    assert.equal(up.status, "serving");
    assert.equal(up.engine.running, 0);
    assert.deepEqual(up.engine.models, [getPreset("test").model]);
    const dead = doc.endpoints.find((e: { url: string }) => e.url.includes(":1/"));
    assert.equal(dead.status, "loading", "never seen up: still starting");
    assert.match(dead.error, /metrics: .*health: /);
    assert.deepEqual(doc.backends.llm, {
      running: 0,
      waiting: 0,
      kvCacheUsage: 0,
      kvCapacityTokens: up.engine.kvCapacityTokens,
      fresh: true,
    });
  });

  it("prints one line per scrape per endpoint until stopped", async () => {
    const stop = new AbortController();
    setTimeout(() => stop.abort(), 400);
    const { code, lines } = await run(["--config", config], stop.signal);
    assert.equal(code, 0);
    const upLines = lines().filter((l) => l.includes(`${sim.url}/metrics serving`));
    assert.ok(upLines.length >= 3, `${upLines.length} scrapes in 400 ms at 50 ms`);
    assert.match(
      upLines[0] ?? "",
      /^\d{4}-\d\d-\d\dT\S+Z llm \S+ serving running=0 waiting=0 kv=0\.000 kvTokens=\d+ /,
    );
    assert.ok(lines().some((l) => l.includes("127.0.0.1:1/metrics loading")));
  });

  it("exits 2 on a bad config, a missing --config, or a policy with no metrics URLs", async () => {
    const bad = join(dir, "bad.yaml");
    writeFileSync(bad, "backends:\n  - name: llm\n    metrics: [not-a-url]\n");
    const invalid = await run(["--config", bad]);
    assert.equal(invalid.code, 2);
    assert.match(invalid.stderr, /bad\.yaml:3:\d+: backends\[0\]\.metrics\[0\]/);
    assert.equal((await run([])).code, 2);
    const none = join(dir, "none.yaml");
    writeFileSync(none, "backends:\n  - name: llm\n");
    const empty = await run(["--config", none, "--once"]);
    assert.equal(empty.code, 2);
    assert.match(empty.stderr, /no backend lists metrics URLs/);
  });
});
