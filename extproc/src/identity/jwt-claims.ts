import { FairgateError } from "../errors.ts";

/**
 * Reads one claim from the header Envoy's jwt_authn filter writes with
 * `forward_payload_header`: the verified JWT payload, base64url-encoded JSON. Envoy has
 * already checked the signature; fairgate only decodes.
 *
 * The claim name is tried verbatim first (claims such as "https://example.com/tenant"
 * contain dots), then as a dotted path into nested objects ("org.id").
 */
export function readJwtClaim(headerValue: string, claim: string): string | undefined {
  const payload = decodePayload(headerValue.trim());
  const direct = payload[claim];
  const value = direct !== undefined ? direct : lookupPath(payload, claim.split("."));
  if (value === undefined || value === null) return undefined;
  if (typeof value === "string") return value.trim() || undefined;
  if (typeof value === "number" && Number.isFinite(value)) return String(value);
  throw new FairgateError("invalid_jwt_payload", {
    message: `The JWT claim "${claim}" must be a string or number.`,
  });
}

function decodePayload(encoded: string): Record<string, unknown> {
  if (!/^[A-Za-z0-9_-]+={0,2}$/.test(encoded)) {
    throw new FairgateError("invalid_jwt_payload", {
      message: "The forwarded JWT payload is not base64url.",
    });
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(encoded, "base64url").toString("utf8"));
  } catch {
    throw new FairgateError("invalid_jwt_payload", { message: "The forwarded JWT payload is not JSON." });
  }
  if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
    throw new FairgateError("invalid_jwt_payload", {
      message: "The forwarded JWT payload is not a JSON object.",
    });
  }
  return parsed as Record<string, unknown>;
}

function lookupPath(root: Record<string, unknown>, path: string[]): unknown {
  let current: unknown = root;
  for (const part of path) {
    if (current === null || typeof current !== "object" || Array.isArray(current)) return undefined;
    current = (current as Record<string, unknown>)[part];
  }
  return current;
}
