import type { FairgateError } from "../errors.ts";
import {
  type HeaderMap,
  type HeaderMutation,
  type HeaderValueOption,
  headerValueText,
  type ImmediateResponse,
  type ProcessingResponse,
} from "./messages.ts";

/** Header values go in raw_value only: Envoy rejects a HeaderValue with both fields set. */
export function setHeader(key: string, value: string): HeaderValueOption {
  return {
    header: { key, raw_value: Buffer.from(value, "latin1") },
    append_action: "OVERWRITE_IF_EXISTS_OR_ADD",
  };
}

export function headerMutation(set: Record<string, string>, remove: readonly string[] = []): HeaderMutation {
  const mutation: HeaderMutation = { set_headers: Object.entries(set).map(([k, v]) => setHeader(k, v)) };
  if (remove.length > 0) mutation.remove_headers = [...remove];
  return mutation;
}

/** The local reply Envoy sends instead of forwarding the request. */
export function immediateError(
  error: FairgateError,
  extraHeaders: Record<string, string> = {},
): ProcessingResponse {
  const body = Buffer.from(JSON.stringify(error.toEnvelope()));
  const immediate: ImmediateResponse = {
    status: { code: error.status },
    headers: headerMutation({ "content-type": "application/json", ...extraHeaders, ...error.headers }),
    body,
    details: `fairgate_${error.code}`,
  };
  return { immediate_response: immediate };
}

/** Lower-cased header names to values; Envoy sends one entry per header line, so
 * repeated headers are joined with "," as HTTP allows. */
export function headerMapToRecord(map: HeaderMap | undefined): Map<string, string> {
  const result = new Map<string, string>();
  for (const header of map?.headers ?? []) {
    const key = header.key.toLowerCase();
    const value = headerValueText(header);
    const existing = result.get(key);
    result.set(key, existing === undefined ? value : `${existing},${value}`);
  }
  return result;
}
