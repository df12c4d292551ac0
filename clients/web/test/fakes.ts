/**
 * Test doubles for the session and WatchTasks tests: a browser origin whose tabs share
 * one storage and one lock manager, and an in-memory auth + task server (Connect's
 * router transport) that rotates refresh tokens and, like the real one, revokes a whole
 * session when a spent refresh token is presented again.
 */

import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import {
  Code,
  ConnectError,
  type ConnectRouter,
  createClient,
  createRouterTransport,
  type HandlerContext,
  type Interceptor,
  type Transport,
} from "@connectrpc/connect";

import { type KeyValueStorage, type LockManagerLike, storageLeaseLock, webLocksLock } from "../src/cross-tab-lock.js";
import { AuthService, type TokenPair, TokenPairSchema } from "../src/gen/auth/v1/auth_pb.js";
import {
  TaskEventType,
  TaskSchema,
  TaskService,
  type WatchTasksResponse,
  WatchTasksResponseSchema,
} from "../src/gen/tasks/v1/tasks_pb.js";
import type { RotationLedger } from "../src/rotation-ledger.js";
import { BrowserSession, type SessionEnvironment, type StoredTokens } from "../src/session.js";

export const ACCESS_LIFETIME_MS = 15 * 60_000;

/**
 * One origin of a browser: tabs share its localStorage, its Web Locks and its IndexedDB
 * (here: the rotation ledger). Like Chromium, each tab reads its own copy of
 * localStorage, which another tab's write reaches (with a `storage` event) only after
 * `storageLagMs`; the locks and the ledger are consistent at once.
 */
export class FakeOrigin {
  /** The storage as the browser process holds it (what every tab will eventually see). */
  readonly items = new Map<string, string>();
  readonly ledger = memoryLedger();
  private readonly tabs = new Set<FakeTab>();
  private readonly queues = new Map<string, Promise<unknown>>();

  constructor(private readonly storageLagMs = 0) {}

  /** navigator.locks: grants each named lock to one callback at a time, in order. */
  readonly locks: LockManagerLike = {
    request: <T>(name: string, callback: () => Promise<T>): Promise<T> => {
      const previous = this.queues.get(name) ?? Promise.resolve();
      const result = previous.then(callback, callback);
      this.queues.set(
        name,
        result.catch(() => undefined),
      );
      return result;
    },
  };

  /** Changes an item in every tab at once, without events (a test's back door). */
  overwrite(key: string, value: string): void {
    this.items.set(key, value);
    for (const tab of this.tabs) tab.view.set(key, value);
  }

  /**
   * The environment of a new tab. `webLocks: false` makes it fall back to a storage
   * lease; `ledger: false` leaves the rotation ledger out (as where IndexedDB is missing).
   */
  newTab({ webLocks = true, ledger = true } = {}): SessionEnvironment {
    const tab: FakeTab = { view: new Map(this.items), notify: () => undefined };
    this.tabs.add(tab);
    const write = (key: string, value: string | null) => {
      for (const map of [tab.view, this.items]) {
        if (value === null) map.delete(key);
        else map.set(key, value);
      }
      for (const other of this.tabs) {
        if (other === tab) continue;
        setTimeout(() => {
          // Like the browser process, deliver the value as it stands now (all tabs converge).
          const settled = this.items.get(key);
          if (settled === undefined) other.view.delete(key);
          else other.view.set(key, settled);
          other.notify(key);
        }, this.storageLagMs);
      }
    };
    const storage: KeyValueStorage = {
      getItem: (key) => tab.view.get(key) ?? null,
      setItem: (key, value) => write(key, value),
      removeItem: (key) => write(key, null),
    };
    return {
      storage,
      lock: webLocks ? webLocksLock(this.locks, "refresh") : storageLeaseLock(storage, "refresh-lease"),
      ledger: ledger ? this.ledger : null,
      subscribeToOtherTabs: (callback) => {
        tab.notify = callback;
        return () => {
          tab.notify = () => undefined;
        };
      },
      now: () => Date.now(),
    };
  }
}

interface FakeTab {
  view: Map<string, string>;
  notify: (key: string | null) => void;
}

/** The rotation ledger in memory: consistent across the fake tabs, like IndexedDB. */
export function memoryLedger(): RotationLedger {
  const rotations = new Map<string, StoredTokens>();
  return {
    replacementFor: async (spent) => rotations.get(spent) ?? null,
    record: async (spent, replacement) => void rotations.set(spent, replacement),
    clear: async () => rotations.clear(),
  };
}

interface ServerSession {
  id: string;
  userId: string;
  revoked: boolean;
  liveRefreshToken: string;
  spentRefreshTokens: Set<string>;
}

/** The auth and task services, in memory. */
export class FakeServer {
  refreshCalls = 0;
  /** How long Refresh takes, so that racing callers really overlap. */
  refreshDelayMs = 50;
  readonly sessions = new Map<string, ServerSession>();
  private counter = 0;
  /** Scripts the n-th WatchTasks call (0-based); the default keeps the stream open. */
  watchScript: ((call: number, context: HandlerContext) => AsyncIterable<WatchTasksResponse>)[] = [];
  watchCalls = 0;

  private readonly routes = (router: ConnectRouter) => {
    router.service(AuthService, {
      refresh: async (request) => {
        this.refreshCalls++;
        await sleep(this.refreshDelayMs);
        const session = [...this.sessions.values()].find(
          (candidate) =>
            candidate.liveRefreshToken === request.refreshToken ||
            candidate.spentRefreshTokens.has(request.refreshToken),
        );
        if (!session || session.revoked) throw new ConnectError("invalid refresh token", Code.Unauthenticated);
        if (session.spentRefreshTokens.has(request.refreshToken)) {
          session.revoked = true; // reuse detection
          throw new ConnectError("refresh token reused", Code.Unauthenticated);
        }
        session.spentRefreshTokens.add(request.refreshToken);
        return { tokens: this.issue(session) };
      },
      logout: async (request) => {
        for (const session of this.sessions.values()) {
          if (session.liveRefreshToken === request.refreshToken) session.revoked = true;
        }
        return {};
      },
    });
    router.service(TaskService, {
      getTask: async (request, context) => {
        this.authorize(context);
        return { task: create(TaskSchema, { id: request.id, title: "a task" }) };
      },
      watchTasks: (_request, context) => {
        this.authorize(context);
        const call = this.watchCalls++;
        const script = this.watchScript[call];
        return script ? script(call, context) : openUntilCancelled(context);
      },
    });
  };

  readonly transport = this.transportWith([]);

  /** A transport to this server whose calls pass through `interceptors`. */
  transportWith(interceptors: Interceptor[]): Transport {
    return createRouterTransport(this.routes, { transport: { interceptors } });
  }

  /** The client a BrowserSession uses for Refresh and Logout. */
  readonly auth = createClient(AuthService, this.transport);
  readonly tasks = createClient(TaskService, this.transport);

  /** Starts a server-side session and returns its first pair. */
  signIn(userId = "user-1"): TokenPair {
    const session: ServerSession = {
      id: `session-${++this.counter}`,
      userId,
      revoked: false,
      liveRefreshToken: "",
      spentRefreshTokens: new Set(),
    };
    this.sessions.set(session.id, session);
    return this.issue(session);
  }

  revokeAll(): void {
    for (const session of this.sessions.values()) session.revoked = true;
  }

  /** Whether the access token is one of a live session's and not expired. */
  private authorize(context: HandlerContext): void {
    const token = context.requestHeader.get("authorization")?.replace(/^Bearer /, "") ?? "";
    const claims = JSON.parse(atob(token.split(".")[1] ?? "") || "{}") as { sid?: string; exp?: number };
    const session = claims.sid ? this.sessions.get(claims.sid) : undefined;
    if (!session || session.revoked || (claims.exp ?? 0) * 1000 <= Date.now()) {
      throw new ConnectError("missing or invalid access token", Code.Unauthenticated);
    }
  }

  private issue(session: ServerSession): TokenPair {
    const now = Date.now();
    const n = ++this.counter;
    const claims = { sub: session.userId, sid: session.id, iat: Math.floor(now / 1000), exp: Math.floor((now + ACCESS_LIFETIME_MS) / 1000), n };
    session.liveRefreshToken = `refresh-${n}`;
    return create(TokenPairSchema, {
      accessToken: `header.${btoa(JSON.stringify(claims))}.signature`,
      accessTokenExpireTime: timestampFromMs(claims.exp * 1000),
      refreshToken: session.liveRefreshToken,
      refreshTokenExpireTime: timestampFromMs(now + 30 * 24 * 3600_000),
      tokenType: "Bearer",
    });
  }
}

/** A BrowserSession in a tab of `origin`, talking to `server`. */
export function sessionInTab(
  server: FakeServer,
  origin: FakeOrigin,
  options?: { webLocks?: boolean; ledger?: boolean },
): BrowserSession {
  return new BrowserSession({ auth: server.auth, environment: origin.newTab(options) });
}

export function event(type: TaskEventType, id: string, title = id): WatchTasksResponse {
  return create(WatchTasksResponseSchema, { eventType: type, task: create(TaskSchema, { id, title }) });
}

export function heartbeat(): WatchTasksResponse {
  return create(WatchTasksResponseSchema, { eventType: TaskEventType.UNSPECIFIED });
}

/** A stream that stays open, sending nothing, until the client goes away. */
export async function* openUntilCancelled(context: HandlerContext): AsyncIterable<WatchTasksResponse> {
  yield heartbeat();
  await new Promise<void>((resolve) => context.signal.addEventListener("abort", () => resolve(), { once: true }));
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
