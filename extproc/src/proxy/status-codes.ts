import * as protoLoader from "@grpc/proto-loader";
import { ENVOY_PROTO_INCLUDE_DIRS } from "../grpc/protos.ts";

/**
 * envoy.type.v3.StatusCode arrives as its enum name ("TooManyRequests") because the
 * ext_proc protos are loaded with `enums: String`; the numbers come from the same proto.
 */

let byName: Map<string, number> | undefined;

function statusCodesByName(): Map<string, number> {
  if (byName) return byName;
  const definition = protoLoader.loadSync("envoy/type/v3/http_status.proto", {
    includeDirs: [...ENVOY_PROTO_INCLUDE_DIRS],
  });
  const statusCode = definition["envoy.type.v3.StatusCode"] as unknown as {
    type: { value: Array<{ name: string; number: number }> };
  };
  byName = new Map(statusCode.type.value.map((entry) => [entry.name, entry.number]));
  return byName;
}

/** The numeric HTTP status of an HttpStatus.code, or undefined when it is not one. */
export function httpStatusNumber(code: number | string | undefined): number | undefined {
  if (code === undefined) return undefined;
  if (typeof code === "number") return code;
  if (/^\d+$/.test(code)) return Number(code);
  return statusCodesByName().get(code);
}
