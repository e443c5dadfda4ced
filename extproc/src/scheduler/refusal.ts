import { FairgateError, shuttingDownError } from "../errors.ts";
import { refusalHeaders } from "./estimate-headers.ts";
import { QueueRefusal } from "./types.ts";

/**
 * The HTTP answer to a refusal, at the edge: a queue refusal becomes its catalog error,
 * with retry-after and the estimate as headers; a FairgateError stays as it is; anything
 * else is not a refusal (undefined).
 */
export function httpRefusal(error: unknown): FairgateError | undefined {
  if (error instanceof QueueRefusal) {
    if (error.code === "shutting_down") return shuttingDownError(error.message);
    return new FairgateError(error.code, {
      message: error.message,
      ...(error.estimate ? { headers: refusalHeaders(error.estimate) } : {}),
    });
  }
  return error instanceof FairgateError ? error : undefined;
}
