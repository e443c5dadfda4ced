import type { MutationRulesConfig } from "./config.ts";
import { isValidHeaderValue } from "./header-map.ts";

/**
 * Envoy's header mutation rule checker (source/extensions/filters/common/mutation_rules/
 * mutation_rules.cc, Checker::check / isAllowed / isValidValue), reproduced rule for rule.
 */

export type MutationOperation = "set" | "append" | "remove";
/** ok: apply; ignore: skip it (and count it); fail: the whole response is an error. */
export type MutationCheck = "ok" | "ignore" | "fail";

// Envoy's ExtraRoutingHeaders; Http::Headers::Host is ":authority", HostLegacy is "host".
const ROUTING_HEADERS = new Set([":authority", "host", ":method", ":scheme"]);
const ENVOY_HEADER_PREFIX = "x-envoy";

export class MutationChecker {
  readonly #rules: Readonly<MutationRulesConfig>;
  readonly #allow: RegExp | undefined;
  readonly #disallow: RegExp | undefined;

  constructor(rules: Readonly<MutationRulesConfig>) {
    this.#rules = rules;
    this.#allow = fullMatch(rules.allowExpression);
    this.#disallow = fullMatch(rules.disallowExpression);
  }

  check(operation: MutationOperation, name: string, value: string): MutationCheck {
    if (this.#isAllowed(operation, name) && (operation === "remove" || isValidValue(name, value)))
      return "ok";
    return this.#rules.disallowIsError ? "fail" : "ignore";
  }

  #isAllowed(operation: MutationOperation, name: string): boolean {
    // No rule lets "host" or a ":" header be removed.
    if (operation === "remove" && (name.startsWith(":") || name === "host")) return false;
    if (this.#disallow?.test(name)) return false;
    if (this.#allow?.test(name)) return true;
    if (this.#rules.disallowAll) return false;
    if (!this.#rules.allowAllRouting && ROUTING_HEADERS.has(name)) return false;
    // System headers take one value, so appending is never allowed.
    if (name.startsWith(":") && (operation === "append" || this.#rules.disallowSystem)) return false;
    if (!this.#rules.allowEnvoy && name.startsWith(ENVOY_HEADER_PREFIX)) return false;
    return true;
  }
}

/** Envoy's RegexMatcher matches the whole name. */
function fullMatch(source: string | undefined): RegExp | undefined {
  return source === undefined ? undefined : new RegExp(`^(?:${source})$`);
}

function isValidValue(name: string, value: string): boolean {
  if (!name.startsWith(":") && !isValidHeaderValue(value)) return false;
  if ((name === ":authority" || name === "host") && !isValidAuthority(value)) return false;
  if (name === ":scheme" && value !== "http" && value !== "https") return false;
  if (name === ":status") {
    if (!/^\d+$/.test(value)) return false;
    if (Number(value) < 200) return false;
  }
  return true;
}

function isValidAuthority(value: string): boolean {
  return value.length > 0 && /^[^\s/?#@]+$/.test(value);
}
