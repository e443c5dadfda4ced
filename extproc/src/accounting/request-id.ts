/**
 * Ids of main ext_proc streams that name the replica holding the stream: `<uuid>@<replica>`.
 * The id travels upstream in x-fairgate-request-id, so a replica whose usage stream finds
 * no local main stream for it knows where to relay the report (usage-relay.ts).
 */
import { randomUUID } from "node:crypto";

const SEPARATOR = "@";

export function streamIdOn(replicaId: string): string {
  return `${randomUUID()}${SEPARATOR}${replicaId}`;
}

/** The replica named in a stream id; undefined for ids that name none. */
export function replicaOf(requestId: string): string | undefined {
  const at = requestId.lastIndexOf(SEPARATOR);
  if (at <= 0 || at === requestId.length - 1) return undefined;
  return requestId.slice(at + 1);
}
