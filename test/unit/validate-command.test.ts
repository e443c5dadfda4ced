import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { runValidate } from "../../extproc/src/commands/validate.ts";

const dir = mkdtempSync(join(tmpdir(), "fairgate-validate-"));
after(() => rmSync(dir, { recursive: true, force: true }));

async function run(args: string[]) {
  let stdout = "";
  let stderr = "";
  const code = await runValidate(args, { stdout: (s) => (stdout += s), stderr: (s) => (stderr += s) });
  return { code, stdout, stderr };
}

describe("fairgate validate", () => {
  const good = join(dir, "good.yaml");
  const bad = join(dir, "bad.yaml");
  writeFileSync(good, "tenants:\n  - id: acme\n");
  writeFileSync(
    bad,
    "tiers: { gold: {} }\ntenants:\n  - id: acme\n    tier: silver\n    limits: { rpm: fast }\n",
  );

  it("exits 0 for a valid file and summarises it", async () => {
    const { code, stdout } = await run([good]);
    assert.equal(code, 0);
    assert.match(stdout, /good\.yaml: ok \(1 tenants, 0 tiers, 1 backends, version [0-9a-f]{12}\)/);
  });

  it("exits 2 listing a wrong type and an unknown tier with path and line", async () => {
    const { code, stderr } = await run([bad]);
    assert.equal(code, 2);
    assert.match(stderr, /bad\.yaml:4:11: tenants\[0\]\.tier: unknown tier "silver"/);
    assert.match(stderr, /bad\.yaml:5:20: tenants\[0\]\.limits\.rpm: expected a number, got string "fast"/);
    assert.match(stderr, /2 errors/);
  });

  it("prints JSON with --json", async () => {
    const { code, stdout } = await run(["--json", bad]);
    assert.equal(code, 2);
    const report = JSON.parse(stdout);
    assert.equal(report.ok, false);
    assert.deepEqual(
      report.errors.map((e: { path: string; line: number }) => [e.path, e.line]),
      [
        ["tenants[0].tier", 4],
        ["tenants[0].limits.rpm", 5],
      ],
    );
  });

  it("exits 2 for a missing file or no arguments", async () => {
    assert.equal((await run([join(dir, "absent.yaml")])).code, 2);
    assert.equal((await run([])).code, 2);
  });
});
