/**
 * The signed-in session of this browser: the token pair, shared by every tab of the
 * origin, and the interceptor that puts `authorization: Bearer <access token>` on calls.
 *
 * Decisions a reader must know:
 * - localStorage is the single source of truth for the pair. Every use re-reads it, so
 *   a pair that another tab rotated is picked up at once, and its `storage` events tell
 *   the other tabs about sign-in, sign-out and new tokens.
 * - A refresh token is single use, and presenting a spent one revokes the whole session
 *   on the server (reuse detection). So refreshing is single-flight: one promise per tab,
 *   and one tab at a time across the origin (a CrossTabLock). After taking the lock a
 *   tab re-reads storage, and asks the rotation ledger (IndexedDB, see rotation-ledger.ts:
 *   localStorage can lag behind the lock): if the pair it meant to spend was rotated
 *   meanwhile, it adopts the new pair instead of spending the old token again.
 */

import { timestampMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";

import {
  type CrossTabLock,
  type KeyValueStorage,
  type LockManagerLike,
  inTabLock,
  storageLeaseLock,
  webLocksLock,
} from "./cross-tab-lock.js";
import type { TokenPair } from "./gen/auth/v1/auth_pb.js";
import { indexedDbLedger, type RotationLedger } from "./rotation-ledger.js";

/** The localStorage key of the token pair. */
export const SESSION_STORAGE_KEY = "todo.session";
const REFRESH_LOCK_NAME = "todo.session.refresh";
const REFRESH_LEASE_KEY = "todo.session.refresh-lease";
/** Why the last session ended (a SignOutReason), so the other tabs can say the same. */
const END_REASON_KEY = "todo.session.end-reason";

/** Refresh this long before the access token expires (at most a quarter of its lifetime). */
const REFRESH_MARGIN_MS = 60_000;
/** A refresh that takes longer than this is abandoned (and the lock freed for other tabs). */
const REFRESH_TIMEOUT_MS = 15_000;
/** After a refresh failed for a reason other than a refusal, try again this much later. */
const REFRESH_RETRY_MS = 15_000;

/** AuthService methods that need no access token. */
const PUBLIC_AUTH_METHODS = new Set([
  "Register",
  "Login",
  "Refresh",
  "Logout",
  "GetJwks",
  "VerifyEmail",
  "RequestPasswordReset",
  "ResetPassword",
]);
/**
 * Methods whose UNAUTHENTICATED can mean a wrong password rather than a stale token:
 * refreshing and retrying them would count a second failed sign-in.
 */
const NO_RETRY_METHODS = new Set(["ChangePassword", "DeleteAccount"]);

/** The token pair as kept in storage; times are on this browser's clock (ms since epoch). */
export interface StoredTokens {
  accessToken: string;
  accessExpiresAt: number;
  /** When this browser received the access token: with accessExpiresAt, its lifetime. */
  accessReceivedAt: number;
  refreshToken: string;
  refreshExpiresAt: number;
  /** The `sid` claim: which server-side session the pair belongs to. */
  sessionId: string;
  /** The `sub` claim: whose session it is. */
  userId: string;
}

export type SessionChange =
  | { type: "signed-in" }
  | { type: "tokens" }
  | { type: "signed-out"; reason: SignOutReason };

/**
 * Why the session ended here: `local` this tab signed out, `revoked` the server refused
 * to refresh it (revoked elsewhere, expired, or a reused refresh token; in this tab or
 * another), `other-tab` another tab of this browser signed out.
 */
export type SignOutReason = "local" | "revoked" | "other-tab";

/** The two AuthService calls the session makes itself (no access token needed). */
export interface SessionAuthClient {
  refresh(request: { refreshToken: string }, options?: { timeoutMs?: number }): Promise<{ tokens?: TokenPair }>;
  logout(request: { refreshToken: string }, options?: { timeoutMs?: number }): Promise<unknown>;
}

/** What the session needs from the browser; tests pass fakes of it. */
export interface SessionEnvironment {
  storage: KeyValueStorage;
  lock: CrossTabLock;
  /** Which refresh tokens were spent lately, consistent with the lock; null where unavailable. */
  ledger: RotationLedger | null;
  /** Calls `listener` when another tab changes storage (`key` null: storage cleared). */
  subscribeToOtherTabs(listener: (key: string | null) => void): () => void;
  now(): number;
}

export interface SessionOptions {
  /** An AuthService client on a transport WITHOUT this session's interceptor. */
  auth: SessionAuthClient;
  environment?: SessionEnvironment;
}

export class BrowserSession {
  private readonly auth: SessionAuthClient;
  private readonly env: SessionEnvironment;
  private readonly listeners = new Set<(change: SessionChange) => void>();
  /** The pair this tab last told its listeners about. */
  private announced: StoredTokens | null;
  private refreshInFlight: Promise<StoredTokens> | null = null;
  private refreshTimer: ReturnType<typeof setTimeout> | undefined;
  private readonly unsubscribeFromOtherTabs: () => void;

  constructor({ auth, environment = browserEnvironment() }: SessionOptions) {
    this.auth = auth;
    this.env = environment;
    this.announced = this.read();
    if (this.announced && this.announced.refreshExpiresAt <= this.env.now()) {
      this.env.storage.removeItem(SESSION_STORAGE_KEY);
      this.announced = null;
    }
    this.unsubscribeFromOtherTabs = this.env.subscribeToOtherTabs((key) => {
      if (key === null || key === SESSION_STORAGE_KEY) this.sync("other-tab");
    });
    this.scheduleRefresh();
  }

  /** Whether a token pair is stored (the server may still have ended the session). */
  get signedIn(): boolean {
    return this.read() !== null;
  }

  /** The stored pair, or null when signed out. */
  get tokens(): StoredTokens | null {
    return this.read();
  }

  /** Listens for sign-in, sign-out and new tokens, in this tab and in the others. */
  subscribe(listener: (change: SessionChange) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Starts a session from a Register or Login answer. */
  signIn(tokens: TokenPair): void {
    this.write(fromTokenPair(tokens, this.env.now()));
  }

  /** Stores a fresh pair for the current session (ChangePassword returns one). */
  replaceTokens(tokens: TokenPair): void {
    const previous = this.read();
    const next = fromTokenPair(tokens, this.env.now());
    // A tab that still sees the old pair must find the new one in the ledger, not spend the old token.
    if (previous) void this.env.ledger?.record(previous.refreshToken, next);
    this.write(next);
  }

  /** Ends the session on the server (best effort) and here, in every tab. */
  async signOut(): Promise<void> {
    const tokens = this.read();
    this.clear("local");
    if (tokens) {
      await this.auth.logout({ refreshToken: tokens.refreshToken }, { timeoutMs: REFRESH_TIMEOUT_MS }).catch(() => {
        // The pair is gone from this browser either way; the server ends the session
        // when the refresh token expires.
      });
    }
  }

  /** Forgets the pair without telling the server (it already ended the session). */
  forget(reason: SignOutReason = "revoked"): void {
    this.clear(reason);
  }

  /**
   * A pair whose access token is not about to expire, refreshing first if needed.
   * Rejects with UNAUTHENTICATED when signed out or when the server ends the session.
   */
  async freshTokens(): Promise<StoredTokens> {
    const current = this.read();
    if (current === null) {
      this.sync("other-tab");
      throw signedOutError();
    }
    if (!this.needsRefresh(current)) return current;
    try {
      return await this.refresh(current);
    } catch (error) {
      // Offline for a moment: the old access token is still good for a while.
      const stillValid = current.accessExpiresAt - this.env.now() > 5_000;
      if (stillValid && ConnectError.from(error).code !== Code.Unauthenticated) return current;
      throw error;
    }
  }

  /**
   * A pair to retry with after the server refused `rejected`'s access token: another
   * tab's newer pair if there is one, else a refreshed pair.
   */
  async renewRejected(rejected: StoredTokens): Promise<StoredTokens> {
    const current = this.read();
    if (current === null) {
      this.sync("other-tab");
      throw signedOutError();
    }
    if (current.accessToken !== rejected.accessToken && !this.needsRefresh(current)) return current;
    return this.refresh(current);
  }

  /** Refreshes now, whatever the expiry (for tests and for "the token was refused"). */
  forceRefresh(): Promise<StoredTokens> {
    const current = this.read();
    if (current === null) return Promise.reject(signedOutError());
    return this.refresh(current);
  }

  /** Adds `authorization: Bearer` to calls that need it, and retries once after a refresh. */
  readonly interceptor: Interceptor = (next) => async (request) => {
    const isPublic =
      request.service.typeName === "auth.v1.AuthService" && PUBLIC_AUTH_METHODS.has(request.method.name);
    if (isPublic || request.header.has("authorization")) return next(request);
    const used = await this.freshTokens();
    request.header.set("authorization", `Bearer ${used.accessToken}`);
    if (request.stream || NO_RETRY_METHODS.has(request.method.name)) return next(request);
    try {
      return await next(request);
    } catch (error) {
      if (ConnectError.from(error).code !== Code.Unauthenticated) throw error;
      const renewed = await this.renewRejected(used);
      request.header.set("authorization", `Bearer ${renewed.accessToken}`);
      return next(request);
    }
  };

  /** Stops timers and listeners (tests; a page never needs it). */
  dispose(): void {
    clearTimeout(this.refreshTimer);
    this.unsubscribeFromOtherTabs();
    this.listeners.clear();
  }

  /** Single flight: one refresh per tab at a time, and one per origin (the lock). */
  private refresh(seen: StoredTokens): Promise<StoredTokens> {
    if (this.refreshInFlight === null) {
      this.refreshInFlight = this.refreshAcrossTabs(seen).finally(() => {
        this.refreshInFlight = null;
      });
    }
    return this.refreshInFlight;
  }

  private refreshAcrossTabs(seen: StoredTokens): Promise<StoredTokens> {
    return this.env.lock.withLock(async () => {
      const current = this.read();
      if (current === null) throw signedOutError();
      // Another tab rotated the pair while this one waited for the lock: spending
      // `seen.refreshToken` now would be reuse and revoke the session. Use theirs.
      if (current.refreshToken !== seen.refreshToken) {
        this.sync("other-tab");
        return current;
      }
      // This tab's view of localStorage may not show that rotation yet; the ledger does
      // (follow it to the newest pair: writing an older one back would undo a rotation).
      let replacement: StoredTokens | null = null;
      for (let hops = 0, spent = current.refreshToken; hops < 10; hops++) {
        const next = (await this.env.ledger?.replacementFor(spent)) ?? null;
        if (next === null) break;
        replacement = next;
        spent = next.refreshToken;
      }
      if (replacement) {
        this.write(replacement);
        return replacement;
      }
      let answer: { tokens?: TokenPair };
      try {
        answer = await this.auth.refresh({ refreshToken: current.refreshToken }, { timeoutMs: REFRESH_TIMEOUT_MS });
      } catch (error) {
        if (ConnectError.from(error).code === Code.Unauthenticated) {
          // Revoked elsewhere, expired, or reused: the session is over everywhere.
          this.clear("revoked");
        } else {
          this.scheduleRetry();
        }
        throw error;
      }
      if (!answer.tokens) throw new ConnectError("Refresh answered without tokens", Code.Internal);
      const renewed = fromTokenPair(answer.tokens, this.env.now());
      // Into the ledger before the lock is released, so the next holder cannot miss it.
      await this.env.ledger?.record(current.refreshToken, renewed);
      this.write(renewed);
      return renewed;
    });
  }

  private needsRefresh(tokens: StoredTokens): boolean {
    return this.env.now() >= this.refreshAt(tokens);
  }

  private refreshAt(tokens: StoredTokens): number {
    const lifetime = Math.max(0, tokens.accessExpiresAt - tokens.accessReceivedAt);
    return tokens.accessExpiresAt - Math.min(REFRESH_MARGIN_MS, lifetime / 4);
  }

  private read(): StoredTokens | null {
    let raw: string | null;
    try {
      raw = this.env.storage.getItem(SESSION_STORAGE_KEY);
    } catch {
      return null;
    }
    return raw === null ? null : parseStoredTokens(raw);
  }

  private write(tokens: StoredTokens): void {
    this.env.storage.setItem(SESSION_STORAGE_KEY, JSON.stringify(tokens));
    this.sync("local");
  }

  private clear(reason: SignOutReason): void {
    this.env.storage.setItem(END_REASON_KEY, reason);
    this.env.storage.removeItem(SESSION_STORAGE_KEY);
    void this.env.ledger?.clear();
    this.sync(reason);
  }

  /** Tells the listeners how storage differs from what they last heard, and re-arms the timer. */
  private sync(signOutReason: SignOutReason): void {
    const before = this.announced;
    const after = this.read();
    this.announced = after;
    this.scheduleRefresh();
    let change: SessionChange | null = null;
    if (before === null && after !== null) change = { type: "signed-in" };
    else if (before !== null && after === null) {
      // Ended by another tab: revoked there is revoked here too; a sign-out there is "other-tab".
      const reason = signOutReason === "other-tab" && this.env.storage.getItem(END_REASON_KEY) === "revoked" ? "revoked" : signOutReason;
      change = { type: "signed-out", reason };
    }
    else if (before !== null && after !== null) {
      if (before.sessionId !== after.sessionId || before.userId !== after.userId) change = { type: "signed-in" };
      else if (before.accessToken !== after.accessToken) change = { type: "tokens" };
    }
    if (change) for (const listener of [...this.listeners]) listener(change);
  }

  /** Refreshes a little before the access token expires (every tab arms this timer; the lock makes it one refresh). */
  private scheduleRefresh(delayMs?: number): void {
    clearTimeout(this.refreshTimer);
    const tokens = this.read();
    if (tokens === null) return;
    const delay = delayMs ?? Math.max(0, this.refreshAt(tokens) - this.env.now());
    this.refreshTimer = setTimeout(() => {
      const current = this.read();
      if (current === null) return;
      if (!this.needsRefresh(current)) return this.scheduleRefresh();
      this.refresh(current).catch(() => {
        // Refused: already signed out. Otherwise a retry is scheduled.
      });
    }, Math.min(delay, 2 ** 31 - 1));
  }

  private scheduleRetry(): void {
    this.scheduleRefresh(REFRESH_RETRY_MS);
  }
}

/** The environment of a page: localStorage, Web Locks (or a storage lease), `storage` events. */
export function browserEnvironment(): SessionEnvironment {
  const storage = usableLocalStorage();
  const locks = typeof navigator !== "undefined" ? (navigator.locks as LockManagerLike | undefined) : undefined;
  const lock = locks
    ? webLocksLock(locks, REFRESH_LOCK_NAME)
    : storage
      ? storageLeaseLock(storage, REFRESH_LEASE_KEY)
      : inTabLock();
  return {
    storage: storage ?? memoryStorage(),
    lock,
    ledger: storage ? indexedDbLedger() : null,
    subscribeToOtherTabs(listener) {
      if (typeof window === "undefined") return () => undefined;
      const onStorage = (event: StorageEvent) => {
        if (event.storageArea === null || event.storageArea === storage) listener(event.key);
      };
      window.addEventListener("storage", onStorage);
      return () => window.removeEventListener("storage", onStorage);
    },
    now: () => Date.now(),
  };
}

/** Converts a TokenPair from the server into the stored form, on this browser's clock. */
export function fromTokenPair(pair: TokenPair, receivedAt: number): StoredTokens {
  const claims = jwtClaims(pair.accessToken);
  // The server's clock may differ from ours: `iat` is the server's "now" at issue.
  const skew = typeof claims.iat === "number" ? claims.iat * 1000 - receivedAt : 0;
  const correct = (serverMs: number) => serverMs - (Math.abs(skew) > 5_000 ? skew : 0);
  const accessExpiresAt = pair.accessTokenExpireTime
    ? correct(timestampMs(pair.accessTokenExpireTime))
    : receivedAt + 60_000;
  const refreshExpiresAt = pair.refreshTokenExpireTime
    ? correct(timestampMs(pair.refreshTokenExpireTime))
    : Number.MAX_SAFE_INTEGER;
  return {
    accessToken: pair.accessToken,
    accessExpiresAt,
    accessReceivedAt: receivedAt,
    refreshToken: pair.refreshToken,
    refreshExpiresAt,
    sessionId: typeof claims.sid === "string" ? claims.sid : "",
    userId: typeof claims.sub === "string" ? claims.sub : "",
  };
}

function parseStoredTokens(raw: string): StoredTokens | null {
  try {
    const value = JSON.parse(raw) as Partial<StoredTokens>;
    if (
      typeof value.accessToken === "string" &&
      typeof value.refreshToken === "string" &&
      typeof value.accessExpiresAt === "number" &&
      typeof value.refreshExpiresAt === "number"
    ) {
      return {
        accessToken: value.accessToken,
        accessExpiresAt: value.accessExpiresAt,
        accessReceivedAt: typeof value.accessReceivedAt === "number" ? value.accessReceivedAt : value.accessExpiresAt,
        refreshToken: value.refreshToken,
        refreshExpiresAt: value.refreshExpiresAt,
        sessionId: typeof value.sessionId === "string" ? value.sessionId : "",
        userId: typeof value.userId === "string" ? value.userId : "",
      };
    }
  } catch {
    // Not ours or corrupted: treat as signed out.
  }
  return null;
}

/** The payload of a JWT, unverified (the server verifies; the client only reads times and ids). */
function jwtClaims(token: string): Record<string, unknown> {
  const payload = token.split(".")[1];
  if (!payload) return {};
  try {
    const base64 = payload.replace(/-/g, "+").replace(/_/g, "/");
    const json = decodeURIComponent(
      Array.from(atob(base64), (char) => `%${char.charCodeAt(0).toString(16).padStart(2, "0")}`).join(""),
    );
    const claims: unknown = JSON.parse(json);
    return claims !== null && typeof claims === "object" ? (claims as Record<string, unknown>) : {};
  } catch {
    return {};
  }
}

function signedOutError(): ConnectError {
  return new ConnectError("signed out", Code.Unauthenticated);
}

function usableLocalStorage(): KeyValueStorage | null {
  try {
    if (typeof localStorage === "undefined") return null;
    const probe = `${SESSION_STORAGE_KEY}.probe`;
    localStorage.setItem(probe, "1");
    localStorage.removeItem(probe);
    return localStorage;
  } catch {
    return null; // Disabled storage (some private modes): this tab keeps its own session.
  }
}

function memoryStorage(): KeyValueStorage {
  const items = new Map<string, string>();
  return {
    getItem: (key) => items.get(key) ?? null,
    setItem: (key, value) => void items.set(key, value),
    removeItem: (key) => void items.delete(key),
  };
}
