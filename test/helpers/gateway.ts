import type { Policy } from "../../extproc/src/config/policy.ts";
import type { PolicyInput } from "../../extproc/src/config/schema.ts";
import { type Gateway, type GatewayOptions, startGateway } from "../../extproc/src/gateway.ts";
import { silentLogger } from "../../extproc/src/log.ts";
import { policyFrom, standardPolicyInput } from "./policy.ts";

export { policyFrom, standardPolicyInput };

export interface TestGateway {
  gateway: Gateway;
  policy: Policy;
  close(): Promise<void>;
}

export async function startTestGateway(
  input: PolicyInput = standardPolicyInput(),
  options: Partial<GatewayOptions> = {},
): Promise<TestGateway> {
  let policy = policyFrom(input);
  const gateway = await startGateway({
    policy: () => policy,
    grpcListen: "127.0.0.1:0",
    httpListen: "127.0.0.1:0",
    logger: silentLogger,
    collectProcessMetrics: false,
    ...options,
  });
  return {
    gateway,
    get policy() {
      return policy;
    },
    set policy(next: Policy) {
      policy = next;
    },
    close: () => gateway.shutdown(0),
  };
}
