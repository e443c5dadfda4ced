import type { HeaderValue } from "../grpc/messages.ts";

/**
 * An ordered multi-map of lower-cased header names, pseudo-headers (":method", ":status"…)
 * included, the way Envoy's HeaderMap holds a request or response. Values are byte strings
 * kept as latin1 so raw_value round-trips exactly.
 */
export class HeaderMap {
  #entries: Array<[string, string]> = [];

  constructor(entries: Iterable<readonly [string, string]> = []) {
    for (const [key, value] of entries) this.add(key, value);
  }

  get size(): number {
    return this.#entries.length;
  }

  /** Sum of name and value lengths, as Envoy's HeaderMap::byteSize counts it. */
  get byteSize(): number {
    let total = 0;
    for (const [key, value] of this.#entries) total += key.length + value.length;
    return total;
  }

  get(key: string): string | undefined {
    const name = key.toLowerCase();
    return this.#entries.find(([k]) => k === name)?.[1];
  }

  getAll(key: string): string[] {
    const name = key.toLowerCase();
    return this.#entries.filter(([k]) => k === name).map(([, v]) => v);
  }

  has(key: string): boolean {
    return this.get(key) !== undefined;
  }

  add(key: string, value: string): void {
    const name = key.toLowerCase();
    // Envoy keeps pseudo-headers ahead of regular ones.
    if (name.startsWith(":")) {
      const firstRegular = this.#entries.findIndex(([k]) => !k.startsWith(":"));
      if (firstRegular >= 0) {
        this.#entries.splice(firstRegular, 0, [name, value]);
        return;
      }
    }
    this.#entries.push([name, value]);
  }

  /** Replaces every value of the header with one, keeping the first one's position. */
  set(key: string, value: string): void {
    const name = key.toLowerCase();
    const index = this.#entries.findIndex(([k]) => k === name);
    if (index < 0) {
      this.add(name, value);
      return;
    }
    this.#entries[index] = [name, value];
    this.#entries = this.#entries.filter(([k], i) => k !== name || i === index);
  }

  remove(key: string): void {
    const name = key.toLowerCase();
    this.#entries = this.#entries.filter(([k]) => k !== name);
  }

  entries(): Array<[string, string]> {
    return this.#entries.map(([k, v]) => [k, v]);
  }

  /** Regular headers only, grouped for node:http (duplicates as arrays). */
  toNodeHeaders(): Record<string, string | string[]> {
    const result: Record<string, string | string[]> = {};
    for (const [key, value] of this.#entries) {
      if (key.startsWith(":")) continue;
      const existing = result[key];
      if (existing === undefined) result[key] = value;
      else if (Array.isArray(existing)) existing.push(value);
      else result[key] = [existing, value];
    }
    return result;
  }

  /** config.core.v3.HeaderMap entries with the value in raw_value, as Envoy sends them. */
  toProto(): HeaderValue[] {
    return this.#entries.map(([key, value]) => ({ key, raw_value: Buffer.from(value, "latin1") }));
  }

  clone(): HeaderMap {
    return new HeaderMap(this.#entries);
  }
}

// RFC 9110 token characters; pseudo-header names are a ':' followed by a token.
const HEADER_NAME = /^:?[!#$%&'*+\-.^_`|~0-9a-zA-Z]+$/;

export function isValidHeaderName(name: string): boolean {
  return HEADER_NAME.test(name);
}

/** Envoy's HeaderUtility::headerValueIsValid: no NUL, CR or LF. */
export function isValidHeaderValue(value: string): boolean {
  return !/[\0\r\n]/.test(value);
}
