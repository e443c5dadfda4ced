import { formatPolicyErrors, loadPolicyFile } from "../config/load.ts";
import type { CommandIo } from "./io.ts";

export const VALIDATE_USAGE = `Usage: fairgate validate [--json] FILE [FILE...]

Checks policy files. Exit 0 when every file is valid; exit 2 with every error, one per
line as FILE:LINE:COL: PATH: message.
`;

export async function runValidate(args: string[], io: CommandIo): Promise<number> {
  const json = args.includes("--json");
  const files = args.filter((a) => a !== "--json");
  if (files.includes("--help") || files.includes("-h")) {
    io.stdout(VALIDATE_USAGE);
    return 0;
  }
  const unknownFlag = files.find((f) => f.startsWith("-"));
  if (unknownFlag || files.length === 0) {
    io.stderr(
      `${unknownFlag ? `fairgate validate: unknown option ${unknownFlag}\n\n` : ""}${VALIDATE_USAGE}`,
    );
    return 2;
  }
  let failed = false;
  const reports: unknown[] = [];
  for (const file of files) {
    const result = await loadPolicyFile(file);
    if (json) {
      reports.push(
        result.ok
          ? { file, ok: true, version: result.policy.version, warnings: result.warnings, errors: [] }
          : { file, ok: false, errors: result.errors },
      );
      failed ||= !result.ok;
      continue;
    }
    if (!result.ok) {
      failed = true;
      io.stderr(`${formatPolicyErrors(file, result.errors)}\n`);
      io.stderr(`${file}: ${result.errors.length} error${result.errors.length === 1 ? "" : "s"}\n`);
      continue;
    }
    const { policy } = result;
    io.stdout(
      `${file}: ok (${policy.tenants.size} tenants, ${Object.keys(policy.source.tiers).length} tiers, ${policy.backends.length} backends, version ${policy.version})\n`,
    );
    if (result.warnings.length > 0)
      io.stderr(`${formatPolicyErrors(file, result.warnings).replace(/^/gm, "warning: ")}\n`);
  }
  if (json) io.stdout(`${JSON.stringify(files.length === 1 ? reports[0] : reports, null, 2)}\n`);
  return failed ? 2 : 0;
}
