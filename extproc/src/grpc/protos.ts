import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";

/**
 * Loads Envoy's ext_proc service definition from the Envoy API protos shipped in
 * @grpc/grpc-js-xds, and the standard gRPC health service from extproc/proto.
 */

const require = createRequire(import.meta.url);
const xdsRoot = dirname(require.resolve("@grpc/grpc-js-xds/package.json"));
const here = dirname(fileURLToPath(import.meta.url));

/** Include paths resolving every import of Envoy's API protos. */
export const ENVOY_PROTO_INCLUDE_DIRS: readonly string[] = [
  join(xdsRoot, "deps", "envoy-api"),
  join(xdsRoot, "deps", "xds"),
  join(xdsRoot, "deps", "googleapis"),
  join(xdsRoot, "deps", "protoc-gen-validate"),
];

/** extproc/proto, found from both extproc/src/grpc (tsx) and dist/grpc (compiled). */
function ownProtoDir(): string {
  const candidates = [join(here, "..", "..", "proto"), join(here, "..", "..", "extproc", "proto")];
  for (const dir of candidates) {
    if (existsSync(join(dir, "grpc", "health", "v1", "health.proto"))) return dir;
  }
  throw new Error(`cannot find fairgate's proto directory from ${here}`);
}

const loaderOptions: protoLoader.Options = {
  keepCase: true,
  longs: Number,
  enums: String,
  defaults: false,
  oneofs: true,
  includeDirs: [...ENVOY_PROTO_INCLUDE_DIRS],
};

export const EXT_PROC_SERVICE = "envoy.service.ext_proc.v3.ExternalProcessor";
export const HEALTH_SERVICE = "grpc.health.v1.Health";

let cached: { extProc: grpc.ServiceClientConstructor; health: grpc.ServiceClientConstructor } | undefined;

// Loading and parsing ~200 proto files takes a noticeable moment; do it once per process.
export function loadServices(): {
  extProc: grpc.ServiceClientConstructor;
  health: grpc.ServiceClientConstructor;
} {
  if (cached) return cached;
  const extProcDef = protoLoader.loadSync(
    "envoy/service/ext_proc/v3/external_processor.proto",
    loaderOptions,
  );
  const healthDef = protoLoader.loadSync(join(ownProtoDir(), "grpc", "health", "v1", "health.proto"), {
    ...loaderOptions,
    includeDirs: [],
  });
  const extProcPkg = grpc.loadPackageDefinition(extProcDef) as unknown as {
    envoy: { service: { ext_proc: { v3: { ExternalProcessor: grpc.ServiceClientConstructor } } } };
  };
  const healthPkg = grpc.loadPackageDefinition(healthDef) as unknown as {
    grpc: { health: { v1: { Health: grpc.ServiceClientConstructor } } };
  };
  cached = {
    extProc: extProcPkg.envoy.service.ext_proc.v3.ExternalProcessor,
    health: healthPkg.grpc.health.v1.Health,
  };
  return cached;
}
