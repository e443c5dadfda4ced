import { existsSync } from "node:fs";
import { join } from "node:path";
import protobuf from "protobufjs";
import { ENVOY_PROTO_INCLUDE_DIRS } from "../../extproc/src/grpc/protos.ts";

/** Envoy's own protos, for checking shipped YAML against the real schema. */
export function loadEnvoyRoot(files: readonly string[]): protobuf.Root {
  const root = new protobuf.Root();
  root.resolvePath = (_origin, target) => {
    for (const dir of ENVOY_PROTO_INCLUDE_DIRS) {
      const candidate = join(dir, target);
      if (existsSync(candidate)) return candidate;
    }
    return target;
  };
  root.loadSync([...files], { keepCase: true });
  root.resolveAll();
  return root;
}

const camel = (name: string) => name.replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase());
const INTEGER = new Set([
  "int32",
  "uint32",
  "sint32",
  "fixed32",
  "sfixed32",
  "int64",
  "uint64",
  "sint64",
  "fixed64",
  "sfixed64",
]);
const WRAPPERS: Record<string, string> = {
  "google.protobuf.BoolValue": "bool",
  "google.protobuf.UInt32Value": "uint32",
  "google.protobuf.UInt64Value": "uint64",
  "google.protobuf.Int32Value": "int32",
  "google.protobuf.Int64Value": "int64",
  "google.protobuf.DoubleValue": "double",
  "google.protobuf.FloatValue": "float",
  "google.protobuf.StringValue": "string",
  "google.protobuf.BytesValue": "bytes",
};

/** Checks a YAML/JSON value against a message type with proto3 JSON mapping rules.
 * Returns one error per problem, each naming its path. */
export function validateMessage(root: protobuf.Root, typeName: string, value: unknown, path = "$"): string[] {
  return checkMessage(root, root.lookupType(typeName), value, path);
}

function fullName(type: protobuf.ReflectionObject): string {
  return type.fullName.replace(/^\./, "");
}

function checkMessage(root: protobuf.Root, type: protobuf.Type, value: unknown, path: string): string[] {
  const name = fullName(type);
  if (name === "google.protobuf.Duration") {
    return typeof value === "string" && /^-?\d+(\.\d{1,9})?s$/.test(value)
      ? []
      : [`${path}: expected a duration like "0.2s", got ${JSON.stringify(value)}`];
  }
  if (name in WRAPPERS) return checkScalar(WRAPPERS[name] as string, value, path);
  if (name === "google.protobuf.Value") return [];
  if (name === "google.protobuf.Struct") return isObject(value) ? [] : [`${path}: expected a mapping`];
  if (name === "google.protobuf.ListValue") return Array.isArray(value) ? [] : [`${path}: expected a list`];
  if (!isObject(value)) return [`${path}: expected a mapping for ${name}, got ${JSON.stringify(value)}`];
  if (name === "google.protobuf.Any") {
    const typeUrl = value["@type"];
    if (typeof typeUrl !== "string") return [`${path}: Any needs "@type"`];
    const target = typeUrl.slice(typeUrl.lastIndexOf("/") + 1);
    let resolved: protobuf.Type;
    try {
      resolved = root.lookupType(target);
    } catch {
      return [`${path}.@type: cannot resolve ${typeUrl}`];
    }
    const { "@type": _ignored, ...rest } = value;
    return checkMessage(root, resolved, rest, path);
  }
  const errors: string[] = [];
  const byName = new Map<string, protobuf.Field>();
  for (const field of type.fieldsArray) {
    byName.set(field.name, field);
    byName.set(camel(field.name), field);
  }
  for (const [key, child] of Object.entries(value)) {
    const field = byName.get(key);
    if (!field) {
      errors.push(`${path}.${key}: unknown field of ${name}`);
      continue;
    }
    errors.push(...checkField(root, field, child, `${path}.${key}`));
  }
  for (const oneof of type.oneofsArray) {
    const set = oneof.fieldsArray.filter((f) => f.name in value || camel(f.name) in value);
    if (set.length > 1)
      errors.push(`${path}: at most one of ${set.map((f) => f.name).join(", ")} (oneof ${oneof.name})`);
  }
  return errors;
}

function checkField(root: protobuf.Root, field: protobuf.Field, value: unknown, path: string): string[] {
  if (field.map) {
    if (!isObject(value)) return [`${path}: expected a mapping`];
    return Object.entries(value).flatMap(([k, v]) => checkSingle(root, field, v, `${path}.${k}`));
  }
  if (field.repeated) {
    if (!Array.isArray(value)) return [`${path}: expected a list`];
    return value.flatMap((v, i) => checkSingle(root, field, v, `${path}[${i}]`));
  }
  return checkSingle(root, field, value, path);
}

function checkSingle(root: protobuf.Root, field: protobuf.Field, value: unknown, path: string): string[] {
  const resolved = field.resolvedType;
  if (resolved instanceof protobuf.Enum) {
    const ok =
      typeof value === "string"
        ? value in resolved.values
        : typeof value === "number" && Object.values(resolved.values).includes(value);
    return ok ? [] : [`${path}: ${JSON.stringify(value)} is not a value of ${fullName(resolved)}`];
  }
  if (resolved instanceof protobuf.Type) return checkMessage(root, resolved, value, path);
  return checkScalar(field.type, value, path);
}

function checkScalar(type: string, value: unknown, path: string): string[] {
  if (type === "string" || type === "bytes")
    return typeof value === "string" ? [] : [`${path}: expected a string, got ${JSON.stringify(value)}`];
  if (type === "bool")
    return typeof value === "boolean"
      ? []
      : [`${path}: expected true or false, got ${JSON.stringify(value)}`];
  if (INTEGER.has(type)) {
    const ok =
      (typeof value === "number" && Number.isInteger(value)) ||
      (typeof value === "string" && /^-?\d+$/.test(value));
    const unsigned = type.startsWith("u") || type.startsWith("fixed");
    if (!ok) return [`${path}: expected an integer, got ${JSON.stringify(value)}`];
    return unsigned && Number(value) < 0 ? [`${path}: expected a non-negative integer`] : [];
  }
  return typeof value === "number" ? [] : [`${path}: expected a number, got ${JSON.stringify(value)}`];
}

function isObject(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}
