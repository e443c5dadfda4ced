#!/usr/bin/env node
// Runs the compiled CLI (built by `npm ci` via the prepare script); falls back to the
// TypeScript sources through tsx so a checkout without a build still works.
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const compiled = join(root, "dist", "cli.js");
if (existsSync(compiled)) {
  await import(pathToFileURL(compiled).href);
} else {
  const { register } = await import("tsx/esm/api");
  register();
  await import(pathToFileURL(join(root, "extproc", "src", "cli.ts")).href);
}
