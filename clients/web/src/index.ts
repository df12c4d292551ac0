/**
 * @todo/client: the typed browser client of the todo API.
 *
 * `createTodoApi` wires the pieces the app needs: a BrowserSession (token pair shared by
 * all tabs, refreshed single-flight) whose interceptor authorizes the AuthService and
 * TaskService clients. The session's own Refresh and Logout calls go through a second
 * transport without that interceptor, so a refresh can never wait on itself.
 */

import { type Client, createClient } from "@connectrpc/connect";

import { AuthService } from "./gen/auth/v1/auth_pb.js";
import { TaskService } from "./gen/tasks/v1/tasks_pb.js";
import { BrowserSession, type SessionEnvironment } from "./session.js";
import { createApiTransport } from "./transport.js";

export * from "./gen/auth/v1/auth_pb.js";
export * from "./gen/tasks/v1/tasks_pb.js";
export { type CrossTabLock, type KeyValueStorage, storageLeaseLock, webLocksLock } from "./cross-tab-lock.js";
export { Code, ConnectError, errorCode, fieldViolations, retryDelaySeconds } from "./rpc-errors.js";
export {
  browserEnvironment,
  SESSION_STORAGE_KEY,
  BrowserSession,
  type SessionChange,
  type SessionEnvironment,
  type SignOutReason,
  type StoredTokens,
} from "./session.js";
export { type ApiProtocol, createApiTransport } from "./transport.js";
export { type TaskWatch, type WatchStatus, watchTasks } from "./watch-tasks.js";

export interface TodoApi {
  session: BrowserSession;
  auth: Client<typeof AuthService>;
  tasks: Client<typeof TaskService>;
}

/** Clients for the gateway at `baseUrl` (in production the page's own origin). */
export function createTodoApi({
  baseUrl,
  environment,
}: {
  baseUrl: string;
  environment?: SessionEnvironment;
}): TodoApi {
  const sessionAuth = createClient(AuthService, createApiTransport(baseUrl));
  const session = new BrowserSession({ auth: sessionAuth, environment });
  const transport = createApiTransport(baseUrl, [session.interceptor]);
  return {
    session,
    auth: createClient(AuthService, transport),
    tasks: createClient(TaskService, transport),
  };
}
