/**
 * Reads the machine-readable parts of an API error: the `google.rpc.BadRequest` field
 * violations (INVALID_ARGUMENT) and the `google.rpc.RetryInfo` delay (RESOURCE_EXHAUSTED).
 *
 * Decision a reader must know: the details arrive as Connect error details (or the
 * gRPC-Web `grpc-status-details-bin` trailer, which connect-web turns into the same
 * thing) and are decoded with the subset of google/rpc/error_details.proto in
 * ../proto. Wording for people is the app's business, not this module's.
 */

import { durationMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";

import { BadRequestSchema, RetryInfoSchema } from "./gen/google/rpc/error_details_pb.js";

export { Code, ConnectError };

/**
 * The field violations of an INVALID_ARGUMENT error, by field path (the first
 * violation of each field wins). Empty for any other error.
 */
export function fieldViolations(error: unknown): Record<string, string> {
  const violations: Record<string, string> = {};
  for (const detail of ConnectError.from(error).findDetails(BadRequestSchema)) {
    for (const violation of detail.fieldViolations) {
      const text = violation.localizedMessage?.message || violation.description;
      if (!(violation.field in violations)) violations[violation.field] = text;
    }
  }
  return violations;
}

/** How many seconds the server asks the client to wait (RetryInfo), rounded up; undefined if it did not say. */
export function retryDelaySeconds(error: unknown): number | undefined {
  for (const detail of ConnectError.from(error).findDetails(RetryInfoSchema)) {
    if (detail.retryDelay) return Math.max(1, Math.ceil(durationMs(detail.retryDelay) / 1000));
  }
  return undefined;
}

/** The status code of any thrown value (network failures are UNAVAILABLE or UNKNOWN). */
export function errorCode(error: unknown): Code {
  return ConnectError.from(error).code;
}
