import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { before, describe, it } from "node:test";
import type protobuf from "protobufjs";
import { parse, parseAllDocuments } from "yaml";
import { SHIPPED_MAX_MESSAGE_TIMEOUT_MS } from "../../extproc/src/config/envoy-timeouts.ts";
import { loadPolicyFile } from "../../extproc/src/config/load.ts";
import { policySchema } from "../../extproc/src/config/schema.ts";
import { EXPECTED_PROCESSING_MODE, USAGE_PROCESSING_MODE } from "../../extproc/src/grpc/processing-mode.ts";
import { loadEnvoyRoot, validateMessage } from "../helpers/proto-schema.ts";

const read = (path: string) => readFileSync(new URL(`../../${path}`, import.meta.url), "utf8");
const EXT_PROC = "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor";

// biome-ignore lint/suspicious/noExplicitAny: the test walks arbitrary parsed YAML by known paths.
type Json = Record<string, any>;

describe("shipped Envoy and Istio configs against Envoy's protos", () => {
  let root: protobuf.Root;
  before(() => {
    root = loadEnvoyRoot([
      "envoy/config/bootstrap/v3/bootstrap.proto",
      "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto",
      "envoy/extensions/filters/http/ext_proc/v3/ext_proc.proto",
      "envoy/extensions/filters/http/router/v3/router.proto",
      "envoy/extensions/upstreams/http/v3/http_protocol_options.proto",
    ]);
  });

  const envoy = parse(read("envoy/envoy.yaml")) as Json;
  const hcm = envoy.static_resources.listeners[0].filter_chains[0].filters[0].typed_config as Json;
  const istioFilters = (
    parseAllDocuments(read("istio/envoyfilter.yaml")).map((d) => d.toJS()) as Json[]
  ).filter((d) => d.kind === "EnvoyFilter");

  it("envoy/envoy.yaml is a valid Bootstrap, typed_config included", () => {
    assert.deepEqual(validateMessage(root, "envoy.config.bootstrap.v3.Bootstrap", envoy), []);
  });

  it("every Istio EnvoyFilter patch is a valid HttpFilter inserted before the router", () => {
    assert.ok(istioFilters.length >= 1);
    for (const filter of istioFilters) {
      for (const patch of filter.spec.configPatches as Json[]) {
        assert.equal(patch.applyTo, "HTTP_FILTER");
        assert.equal(patch.patch.operation, "INSERT_BEFORE");
        assert.equal(patch.match.listener.filterChain.filter.subFilter.name, "envoy.filters.http.router");
        assert.deepEqual(
          validateMessage(
            root,
            "envoy.extensions.filters.network.http_connection_manager.v3.HttpFilter",
            patch.patch.value,
          ),
          [],
        );
      }
      assert.ok(filter.spec.workloadSelector?.labels, "scoped to the engine pods, never fairgate's own");
    }
  });

  /** The ext_proc filters of each shipped chain, in http_filters order. */
  const chains = (): Json[][] => [
    hcm.http_filters
      .filter((f: Json) => f.typed_config?.["@type"] === EXT_PROC)
      .map((f: Json) => f.typed_config),
    ...istioFilters.map((f) => f.spec.configPatches.map((p: Json) => p.patch.value.typed_config)),
  ];

  it("every shipped ext_proc filter uses the processing mode and timeouts fairgate expects", () => {
    for (const [main] of chains()) {
      assert.ok(main);
      assert.notEqual(main.observability_mode, true);
      assert.deepEqual(main.processing_mode, { ...EXPECTED_PROCESSING_MODE });
      assert.equal(main.message_timeout, "0.2s");
      assert.equal(Number.parseFloat(main.max_message_timeout) * 1000, SHIPPED_MAX_MESSAGE_TIMEOUT_MS);
    }
  });

  it("the shipped Envoy timeouts are the ones every example policy tells fairgate (server.envoy)", async () => {
    const seconds = (d: string) => Math.round(Number.parseFloat(d) * 1000);
    const shipped = chains().map(([main]) => ({
      maxMessageTimeoutMs: seconds(main?.max_message_timeout),
      messageTimeoutMs: seconds(main?.message_timeout),
    }));
    assert.deepEqual(policySchema.parse({}).server.envoy, shipped[0], "the policy default");
    const dir = new URL("../../policies/", import.meta.url);
    for (const file of readdirSync(dir).filter((f) => f.endsWith(".yaml"))) {
      const loaded = await loadPolicyFile(new URL(file, dir).pathname);
      assert.ok(loaded.ok, file);
      for (const chain of shipped) assert.deepEqual(loaded.policy.source.server.envoy, chain, file);
    }
  });

  it("every chain ends with the usage filter in observability mode, after the main filter", () => {
    for (const chain of chains()) {
      assert.equal(chain.length, 2);
      const usage = chain[1] as Json;
      assert.equal(usage.observability_mode, true);
      assert.deepEqual(usage.processing_mode, { ...USAGE_PROCESSING_MODE });
      // Reading usage must never fail a request; the stream outlives it briefly.
      assert.equal(usage.failure_mode_allow, true);
      assert.ok(usage.deferred_close_timeout);
      assert.deepEqual(usage.grpc_service, { envoy_grpc: chain[0]?.grpc_service.envoy_grpc });
    }
    const names = hcm.http_filters.map((f: Json) => f.name);
    assert.deepEqual(names, ["envoy.filters.http.ext_proc", "fairgate.usage", "envoy.filters.http.router"]);
  });

  it("orders ext_proc before the router, talks HTTP/2 to fairgate, and turns the route timeout off", () => {
    const names = hcm.http_filters.map((f: Json) => f.name);
    assert.ok(names.indexOf("envoy.filters.http.ext_proc") < names.indexOf("envoy.filters.http.router"));
    assert.equal(names.at(-1), "envoy.filters.http.router");
    const cluster = envoy.static_resources.clusters.find((c: Json) => c.name === "fairgate_ext_proc");
    const options =
      cluster.typed_extension_protocol_options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"];
    assert.ok(options.explicit_http_config.http2_protocol_options);
    assert.ok(cluster.circuit_breakers.thresholds[0].max_requests > 1024);
    assert.equal(hcm.route_config.virtual_hosts[0].routes[0].route.timeout, "0s");
  });

  it("the validator catches unknown fields, wrong types, bad enums, unresolvable @type and oneof clashes", () => {
    const filter = (typed: Json) =>
      validateMessage(root, "envoy.extensions.filters.network.http_connection_manager.v3.HttpFilter", {
        name: "x",
        typed_config: { "@type": EXT_PROC, ...typed },
      });
    assert.match(filter({ bogus_field: 1 }).join(), /typed_config\.bogus_field: unknown field/);
    assert.match(
      filter({ failure_mode_allow: "yes" }).join(),
      /typed_config\.failure_mode_allow: expected true or false/,
    );
    assert.match(
      filter({ processing_mode: { request_body_mode: "SOMETIMES" } }).join(),
      /request_body_mode: "SOMETIMES" is not a value/,
    );
    assert.match(filter({ message_timeout: 5 }).join(), /message_timeout: expected a duration/);
    assert.match(
      validateMessage(root, "envoy.extensions.filters.network.http_connection_manager.v3.HttpFilter", {
        name: "x",
        typed_config: { "@type": "type.googleapis.com/no.such.Type" },
      }).join(),
      /@type: cannot resolve/,
    );
    assert.match(
      validateMessage(root, "envoy.config.core.v3.GrpcService", {
        envoy_grpc: { cluster_name: "a" },
        google_grpc: { target_uri: "b", stat_prefix: "c" },
      }).join(),
      /at most one of envoy_grpc, google_grpc/,
    );
  });
});
