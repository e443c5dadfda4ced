import assert from "node:assert/strict";
import { mkdtempSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { loadPolicyFile } from "../../extproc/src/config/load.ts";
import { PolicyHolder } from "../../extproc/src/config/reload.ts";
import { memoryLogger } from "../../extproc/src/log.ts";

const dir = mkdtempSync(join(tmpdir(), "fairgate-reload-"));
after(() => rmSync(dir, { recursive: true, force: true }));

const policyText = (rpm: number) => `tenants:\n  - id: acme\n    limits: { rpm: ${rpm} }\n`;

async function until(check: () => boolean, ms = 2_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error("condition not met in time");
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function holderFor(name: string, rpm: number) {
  const file = join(dir, name);
  writeFileSync(file, policyText(rpm));
  const initial = await loadPolicyFile(file);
  assert.ok(initial.ok);
  const logger = memoryLogger();
  const changes: number[] = [];
  const holder = new PolicyHolder(file, initial.policy, {
    logger,
    debounceMs: 20,
    onChange: (p) => changes.push(p.tenantFor("acme").limits.rpm ?? 0),
  });
  return { file, holder, logger, changes };
}

describe("PolicyHolder", () => {
  it("swaps in a valid edit seen by the file watch", async () => {
    const { file, holder, changes } = await holderFor("edit.yaml", 10);
    holder.watch();
    writeFileSync(file, policyText(20));
    await until(() => holder.current.tenantFor("acme").limits.rpm === 20);
    assert.deepEqual(changes, [20]);
    holder.close();
  });

  it("keeps the old policy and logs the error's line when the new file is invalid", async () => {
    const { file, holder, logger } = await holderFor("invalid.yaml", 10);
    writeFileSync(file, "tenants:\n  - id: acme\n    limits: { rpm: -1 }\n");
    const result = await holder.reload();
    assert.equal(result.ok, false);
    assert.equal(holder.current.tenantFor("acme").limits.rpm, 10);
    assert.equal(holder.reloadsRejected, 1);
    const warning = logger.records.find((r) => r.level === "warn");
    assert.ok(warning);
    assert.match(JSON.stringify(warning.errors), /invalid\.yaml:3:\d+: tenants\[0\]\.limits\.rpm/);
  });

  it("refuses a zero-byte file (a write caught half-way) instead of swapping every tenant for the defaults", async () => {
    const { file, holder } = await holderFor("truncated.yaml", 10);
    writeFileSync(file, "");
    const result = await holder.reload();
    assert.equal(result.ok, false);
    assert.equal(holder.current.tenantFor("acme").limits.rpm, 10, "the previous policy stays");
    writeFileSync(file, policyText(40));
    assert.equal((await holder.reload()).ok, true);
    assert.equal(holder.current.tenantFor("acme").limits.rpm, 40);
  });

  it("catches an editor-style rename-replace", async () => {
    const { file, holder } = await holderFor("renamed.yaml", 10);
    holder.watch();
    const temp = join(dir, ".renamed.yaml.swp");
    writeFileSync(temp, policyText(30));
    renameSync(temp, file);
    await until(() => holder.current.tenantFor("acme").limits.rpm === 30);
    holder.close();
  });

  it("ignores a rewrite with identical content", async () => {
    const { file, holder, changes } = await holderFor("same.yaml", 10);
    writeFileSync(file, policyText(10));
    await holder.reload();
    assert.deepEqual(changes, []);
    assert.equal(holder.reloadsApplied, 0);
  });
});
