import type { BodyMutation, HeaderMutation, HeaderValueOption } from "../grpc/messages.ts";
import { type HeaderMap, isValidHeaderName, isValidHeaderValue } from "./header-map.ts";
import type { MutationChecker } from "./mutation-rules.ts";

/**
 * Applies a HeaderMutation the way Envoy's ext_proc filter does
 * (source/extensions/filters/http/ext_proc/mutation_utils.cc, applyHeaderMutations):
 *  - only `raw_value` is read; setting both `value` and `raw_value` is an error, and a
 *    header given only `value` is set to the empty string;
 *  - `append_action` is ignored (envoyproxy/envoy#36982): a set overwrites unless the
 *    deprecated `append` BoolValue is true;
 *  - every change is checked against the mutation rules; a disallowed one is skipped
 *    (and counted) or, with disallow_is_error, fails the whole mutation;
 *  - the header count and size limits of the connection manager are enforced.
 */

/** HeaderValueOption as decoded from the wire, with the deprecated BoolValue `append`. */
type WireHeaderValueOption = HeaderValueOption & { append?: { value?: boolean } | null };

export interface HeaderMutationOptions {
  checker: MutationChecker;
  /** CONTINUE_AND_REPLACE lets ":method" change regardless of the rules. */
  replacingMessage?: boolean;
  /** Set when the body mode strips content-length, so processors cannot set it back. */
  removeContentLength?: boolean;
  maxHeadersCount: number;
  maxHeadersKb: number;
}

export type MutationResult =
  | { ok: true; rejected: number }
  | { ok: false; message: string; rejected: number };

export function applyHeaderMutation(
  mutation: HeaderMutation | undefined,
  headers: HeaderMap,
  options: HeaderMutationOptions,
): MutationResult {
  const removes = mutation?.remove_headers ?? [];
  const sets = (mutation?.set_headers ?? []) as WireHeaderValueOption[];
  let rejected = 0;
  const fail = (message: string): MutationResult => ({ ok: false, message, rejected: rejected + 1 });

  if (removes.length > options.maxHeadersCount || sets.length > options.maxHeadersCount) {
    return fail(
      `Header mutation remove header count ${removes.length} or set header count ${sets.length} exceed the HCM header count limit ${options.maxHeadersCount}`,
    );
  }

  for (const raw of removes) {
    if (!isValidHeaderName(raw)) return fail("Invalid character in remove_headers mutation.");
    const name = raw.toLowerCase();
    const verdict = options.checker.check("remove", name, "");
    if (verdict === "fail") return fail(`Invalid attempt to remove ${name}`);
    if (verdict === "ignore") rejected++;
    else headers.remove(name);
  }

  for (const option of sets) {
    const header = option.header;
    if (!header) continue;
    if (options.removeContentLength && header.key.toLowerCase() === "content-length") continue;
    const rawValue = header.raw_value ? Buffer.from(header.raw_value) : Buffer.alloc(0);
    if ((header.value ?? "") !== "" && rawValue.length > 0) {
      return fail("Only one of value or raw_value in the HeaderValue message should be set.");
    }
    const value = rawValue.toString("latin1");
    if (!isValidHeaderName(header.key) || !isValidHeaderValue(value)) {
      return fail("Invalid character in set_headers mutation.");
    }
    const name = header.key.toLowerCase();
    const append = option.append?.value ?? false;
    const operation = append && headers.has(name) ? "append" : "set";
    let verdict = options.checker.check(operation, name, value);
    if (options.replacingMessage && name === ":method") verdict = "ok";
    if (verdict === "fail") return fail(`Invalid attempt to modify ${name}`);
    if (verdict === "ignore") {
      rejected++;
      continue;
    }
    if (append) headers.add(name, value);
    else headers.set(name, value);
  }

  if (headers.byteSize > options.maxHeadersKb * 1024 || headers.size > options.maxHeadersCount) {
    return fail(
      `Header mutation causes end result header count ${headers.size} or header size ${headers.byteSize} bytes, exceeding the count limit ${options.maxHeadersCount} or the size limit ${options.maxHeadersKb} kilobytes`,
    );
  }
  return { ok: true, rejected };
}

/** BodyMutation: `body` replaces the chunk, `clear_body` empties it, neither leaves it. */
export function applyBodyMutation(mutation: BodyMutation | undefined, body: Buffer): Buffer {
  if (!mutation) return body;
  const which =
    (mutation as BodyMutation & { mutation?: string }).mutation ??
    (mutation.body !== undefined ? "body" : mutation.clear_body !== undefined ? "clear_body" : undefined);
  if (which === "clear_body") return mutation.clear_body ? Buffer.alloc(0) : body;
  if (which === "body") return Buffer.from(mutation.body ?? Buffer.alloc(0));
  return body;
}
