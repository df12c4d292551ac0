/**
 * The one place that decides which wire protocol the browser speaks to the gateway.
 *
 * Decisions a reader must know: the app ships with the Connect protocol in JSON (the
 * default of `createConnectTransport`). `"grpc-web"` exists for development against a
 * gateway that does not speak Connect yet: flip DEFAULT below, or build with
 * `web/build.mjs --protocol grpc-web`, which sets TODO_API_PROTOCOL through esbuild's
 * `define`. The choice is one inline expression on purpose: esbuild folds it at build
 * time and drops the transport that is not chosen from the bundle (it would not see
 * through a named constant).
 */

import type { Interceptor, Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-web";

export type ApiProtocol = "connect" | "grpc-web";

/** Set only by a build that overrides the protocol (esbuild `define`). */
declare const TODO_API_PROTOCOL: ApiProtocol | undefined;

/** A transport to the gateway at `baseUrl` (the page's own origin in production). */
export function createApiTransport(baseUrl: string, interceptors: Interceptor[] = []): Transport {
  return (typeof TODO_API_PROTOCOL === "string" ? TODO_API_PROTOCOL : /* DEFAULT */ "connect") === "grpc-web"
    ? createGrpcWebTransport({ baseUrl, interceptors })
    : createConnectTransport({ baseUrl, interceptors });
}
