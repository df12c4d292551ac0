/**
 * The session's promises: it refreshes a little before the access token expires, spends
 * each refresh token exactly once however many callers and tabs race, and signs out
 * (in every tab) when the server refuses a refresh.
 */

import { createClient } from "@connectrpc/connect";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";

import { inTabLock } from "../src/cross-tab-lock.js";
import { AuthService } from "../src/gen/auth/v1/auth_pb.js";
import { TaskService } from "../src/gen/tasks/v1/tasks_pb.js";
import { Code, ConnectError } from "../src/rpc-errors.js";
import { SESSION_STORAGE_KEY, BrowserSession, type SessionChange, type StoredTokens } from "../src/session.js";
import { ACCESS_LIFETIME_MS, FakeOrigin, FakeServer, sessionInTab } from "./fakes.js";

const MINUTE = 60_000;

let server: FakeServer;
let origin: FakeOrigin;
const sessions: BrowserSession[] = [];

function tab(options?: { webLocks?: boolean; ledger?: boolean }): BrowserSession {
  const session = sessionInTab(server, origin, options);
  sessions.push(session);
  return session;
}

function changesOf(session: BrowserSession): SessionChange[] {
  const seen: SessionChange[] = [];
  session.subscribe((change) => seen.push(change));
  return seen;
}

beforeEach(() => {
  vi.useFakeTimers();
  server = new FakeServer();
  origin = new FakeOrigin();
});

afterEach(() => {
  for (const session of sessions.splice(0)) session.dispose();
  vi.useRealTimers();
});

describe("refresh before expiry", () => {
  it("refreshes about a minute before the access token expires, not before", async () => {
    const session = tab();
    session.signIn(server.signIn());
    const first = session.tokens!;

    await vi.advanceTimersByTimeAsync(ACCESS_LIFETIME_MS - 2 * MINUTE);
    expect(server.refreshCalls).toBe(0);

    await vi.advanceTimersByTimeAsync(MINUTE + 1_000);
    expect(server.refreshCalls).toBe(1);
    expect(session.tokens!.refreshToken).not.toBe(first.refreshToken);
    expect(session.tokens!.accessExpiresAt).toBeGreaterThan(first.accessExpiresAt);
  });

  it("hands out the stored token while it is fresh and refreshes when it is about to expire", async () => {
    const session = tab();
    session.signIn(server.signIn());
    const first = session.tokens!;
    expect((await session.freshTokens()).accessToken).toBe(first.accessToken);

    vi.setSystemTime(Date.now() + ACCESS_LIFETIME_MS - 30_000); // timers not run: a throttled background tab
    const fresh = session.freshTokens();
    await vi.advanceTimersByTimeAsync(100);
    expect((await fresh).accessToken).not.toBe(first.accessToken);
    expect(server.refreshCalls).toBe(1);
  });

  it("adds the bearer token, and after UNAUTHENTICATED refreshes once and retries the call", async () => {
    const session = tab();
    session.signIn(server.signIn());
    const tasks = createClient(TaskService, server.transportWith([session.interceptor]));
    expect((await tasks.getTask({ id: "t1" })).task?.id).toBe("t1");
    expect(server.refreshCalls).toBe(0);

    // An access token the server refuses although it has not expired (say, its key was retired).
    const stored = JSON.parse(origin.items.get(SESSION_STORAGE_KEY)!) as StoredTokens;
    origin.overwrite(SESSION_STORAGE_KEY, JSON.stringify({ ...stored, accessToken: "header.e30.signature" }));

    const answer = tasks.getTask({ id: "t2" });
    await vi.advanceTimersByTimeAsync(200);
    expect((await answer).task?.id).toBe("t2");
    expect(server.refreshCalls).toBe(1);
  });

  it("does not refresh and retry a wrong password (DeleteAccount and ChangePassword)", async () => {
    const session = tab();
    session.signIn(server.signIn());
    let calls = 0;
    const call = session.interceptor(async (request) => {
      calls++;
      expect(request.header.get("authorization")).toMatch(/^Bearer /);
      throw new ConnectError("wrong password", Code.Unauthenticated);
    });
    const request = {
      stream: false,
      service: AuthService,
      method: AuthService.method.deleteAccount,
      header: new Headers(),
    };
    await expect(call(request as never)).rejects.toMatchObject({ code: Code.Unauthenticated });
    expect(calls).toBe(1);
    expect(server.refreshCalls).toBe(0);
    expect(session.signedIn).toBe(true);
  });
});

describe("single-flight refresh", () => {
  it("two concurrent callers in one tab share one refresh", async () => {
    const session = tab();
    session.signIn(server.signIn());
    vi.setSystemTime(Date.now() + ACCESS_LIFETIME_MS);

    const both = Promise.all([session.freshTokens(), session.freshTokens()]);
    await vi.advanceTimersByTimeAsync(200);
    const [a, b] = await both;
    expect(server.refreshCalls).toBe(1);
    expect(a.accessToken).toBe(b.accessToken);
  });

  it.each([
    ["Web Locks", true],
    ["a storage lease (no Web Locks)", false],
  ])("two tabs sharing storage and %s spend the refresh token exactly once", async (_name, webLocks) => {
    const tabA = tab({ webLocks });
    const tabB = tab({ webLocks });
    tabA.signIn(server.signIn());
    await vi.advanceTimersByTimeAsync(0); // tab B hears of the sign-in
    const changesB = changesOf(tabB);
    const spent = tabA.tokens!.refreshToken;
    vi.setSystemTime(Date.now() + ACCESS_LIFETIME_MS - 10_000);

    // Both tabs decide to refresh at the same moment, holding the same pair.
    const both = Promise.all([tabA.forceRefresh(), tabB.forceRefresh()]);
    await vi.advanceTimersByTimeAsync(2_000);
    const [a, b] = await both;

    expect(server.refreshCalls).toBe(1);
    expect(a.refreshToken).toBe(b.refreshToken);
    expect(a.refreshToken).not.toBe(spent);
    expect([...server.sessions.values()].every((session) => !session.revoked)).toBe(true);
    expect(tabA.signedIn && tabB.signedIn).toBe(true);
    expect(changesB).toContainEqual({ type: "tokens" });
  });

  it("spends the token once even when localStorage reaches the other tab after the lock (Chromium), thanks to the ledger", async () => {
    origin = new FakeOrigin(200); // the refresh takes 50 ms, the write reaches tab B 200 ms later
    const tabA = tab();
    const tabB = tab();
    tabA.signIn(server.signIn());
    await vi.advanceTimersByTimeAsync(300);
    const both = Promise.all([tabA.forceRefresh(), tabB.forceRefresh()]);
    await vi.advanceTimersByTimeAsync(1_000);
    const [a, b] = await both;
    expect(server.refreshCalls).toBe(1);
    expect(b.refreshToken).toBe(a.refreshToken);
    expect([...server.sessions.values()][0]!.revoked).toBe(false);
  });

  it("(control) with that lag and no ledger, the second tab spends the old token and the server revokes the session", async () => {
    origin = new FakeOrigin(200);
    const tabA = tab({ ledger: false });
    const tabB = tab({ ledger: false });
    tabA.signIn(server.signIn());
    await vi.advanceTimersByTimeAsync(300);
    const both = Promise.allSettled([tabA.forceRefresh(), tabB.forceRefresh()]);
    await vi.advanceTimersByTimeAsync(1_000);
    await both;
    expect(server.refreshCalls).toBe(2);
    expect([...server.sessions.values()][0]!.revoked).toBe(true);
  });

  it("follows the ledger to the newest pair when two rotations happened out of its sight", async () => {
    origin = new FakeOrigin(60_000); // tab B hears nothing for a minute
    const tabA = tab();
    const tabB = tab();
    tabA.signIn(server.signIn());
    await vi.advanceTimersByTimeAsync(60_001);
    const first = tabA.forceRefresh();
    await vi.advanceTimersByTimeAsync(100);
    await first;
    const second = tabA.forceRefresh();
    await vi.advanceTimersByTimeAsync(100);
    const newest = await second;
    const fromB = tabB.forceRefresh(); // tab B still holds the very first pair
    await vi.advanceTimersByTimeAsync(100);
    expect((await fromB).refreshToken).toBe(newest.refreshToken);
    expect(server.refreshCalls).toBe(2);
    expect([...server.sessions.values()][0]!.revoked).toBe(false);
  });

  it("the timers of every tab fire together and still make one refresh", async () => {
    const tabs = [tab(), tab(), tab()];
    tabs[0]!.signIn(server.signIn());
    await vi.advanceTimersByTimeAsync(0);
    await vi.advanceTimersByTimeAsync(ACCESS_LIFETIME_MS);
    expect(server.refreshCalls).toBe(1);
    expect(tabs.every((session) => session.signedIn)).toBe(true);
  });

  it("(control) without a shared lock the second tab reuses the token and the server revokes the session", async () => {
    const lonely = () => {
      const environment = { ...origin.newTab({ ledger: false }), lock: inTabLock() };
      const session = new BrowserSession({ auth: server.auth, environment });
      sessions.push(session);
      return session;
    };
    const tabA = lonely();
    const tabB = lonely();
    tabA.signIn(server.signIn());
    await vi.advanceTimersByTimeAsync(0);

    const both = Promise.allSettled([tabA.forceRefresh(), tabB.forceRefresh()]);
    await vi.advanceTimersByTimeAsync(2_000);
    await both;
    expect(server.refreshCalls).toBe(2);
    expect([...server.sessions.values()][0]!.revoked).toBe(true);
  });
});

describe("sign-out on a refused refresh", () => {
  it("clears the pair and tells this tab and the others when Refresh answers UNAUTHENTICATED", async () => {
    const tabA = tab();
    const tabB = tab();
    tabA.signIn(server.signIn());
    await vi.advanceTimersByTimeAsync(0);
    const changesA = changesOf(tabA);
    const changesB = changesOf(tabB);
    server.revokeAll(); // e.g. "sign out everywhere else" on another device

    const refused = tabA.forceRefresh();
    const settled = expect(refused).rejects.toMatchObject({ code: Code.Unauthenticated });
    await vi.advanceTimersByTimeAsync(200);
    await settled;

    expect(tabA.signedIn).toBe(false);
    expect(tabB.signedIn).toBe(false);
    expect(origin.items.has(SESSION_STORAGE_KEY)).toBe(false);
    expect(changesA).toEqual([{ type: "signed-out", reason: "revoked" }]);
    expect(changesB).toEqual([{ type: "signed-out", reason: "revoked" }]);
    await expect(tabB.freshTokens()).rejects.toBeInstanceOf(ConnectError);
  });

  it("keeps the session when a refresh fails for another reason (offline), and tries again", async () => {
    const session = tab();
    session.signIn(server.signIn());
    const offline = vi.spyOn(server.auth, "refresh").mockRejectedValueOnce(new ConnectError("offline", Code.Unavailable));
    await vi.advanceTimersByTimeAsync(ACCESS_LIFETIME_MS - 60_000 + 1_000);
    expect(offline).toHaveBeenCalledTimes(1);
    expect(session.signedIn).toBe(true);
    offline.mockRestore();
    await vi.advanceTimersByTimeAsync(16_000);
    expect(server.refreshCalls).toBe(1);
    expect(session.signedIn).toBe(true);
  });

  it("signs in the other tabs, and signs them all out with signOut()", async () => {
    const tabA = tab();
    const tabB = tab();
    const changesB = changesOf(tabB);
    tabA.signIn(server.signIn());
    await vi.advanceTimersByTimeAsync(0);
    expect(changesB).toEqual([{ type: "signed-in" }]);

    const signedOut = tabA.signOut();
    await vi.advanceTimersByTimeAsync(10);
    await signedOut;
    expect(changesB).toEqual([{ type: "signed-in" }, { type: "signed-out", reason: "other-tab" }]);
    expect([...server.sessions.values()][0]!.revoked).toBe(true);
  });
});
