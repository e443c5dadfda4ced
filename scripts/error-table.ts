// Prints the error catalog as a Markdown table (used to keep docs/reference.md in step).
import { ERROR_CATALOG } from "../extproc/src/errors.ts";

process.stdout.write("| code | HTTP status | type | meaning |\n|---|---|---|---|\n");
for (const [code, entry] of Object.entries(ERROR_CATALOG)) {
  process.stdout.write(`| \`${code}\` | ${entry.status} | \`${entry.type}\` | ${entry.message} |\n`);
}
