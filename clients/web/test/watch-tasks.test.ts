/**
 * The WatchTasks helper's promises: heartbeats never reach the page; after a drop
 * (network error, UNAVAILABLE, RESOURCE_EXHAUSTED, the server closing) it reconnects
 * with backoff and re-lists once the new stream is open; UNAUTHENTICATED refreshes the
 * token and reconnects; a session that is gone stops it.
 */

import type { HandlerContext } from "@connectrpc/connect";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";

import { TaskEventType, type WatchTasksResponse } from "../src/gen/tasks/v1/tasks_pb.js";
import { Code, ConnectError } from "../src/rpc-errors.js";
import type { BrowserSession } from "../src/session.js";
import { type TaskWatch, type WatchStatus, watchTasks } from "../src/watch-tasks.js";
import { ACCESS_LIFETIME_MS, event, FakeOrigin, FakeServer, heartbeat, openUntilCancelled, sessionInTab } from "./fakes.js";

let server: FakeServer;
let session: BrowserSession;
let watch: TaskWatch | undefined;
let log: string[];
let statuses: WatchStatus[];

function startWatch(): TaskWatch {
  watch = watchTasks({
    client: server.tasks,
    session,
    onEvent: (change) => log.push(`${TaskEventType[change.eventType]} ${change.task?.id}`),
    relist: () => log.push(`relist (stream ${server.watchCalls})`),
    onStatus: (status) => statuses.push(status),
    random: () => 1, // no jitter: waits are exactly the backoff
  });
  return watch;
}

/** A stream that sends `events`, then ends with `end` (or closes normally). */
function dropsAfter(events: WatchTasksResponse[], end?: Error) {
  return async function* (_call: number, _context: HandlerContext) {
    for (const item of events) yield item;
    if (end) throw end;
  };
}

beforeEach(() => {
  vi.useFakeTimers();
  server = new FakeServer();
  session = sessionInTab(server, new FakeOrigin());
  session.signIn(server.signIn());
  log = [];
  statuses = [];
});

afterEach(async () => {
  watch?.stop();
  await vi.runOnlyPendingTimersAsync();
  session.dispose();
  vi.useRealTimers();
});

describe("watchTasks", () => {
  it("passes events on, never heartbeats, and does not re-list on the first open", async () => {
    server.watchScript[0] = async function* (_call, context) {
      yield heartbeat();
      yield event(TaskEventType.CREATED, "a");
      yield heartbeat();
      yield event(TaskEventType.DELETED, "a");
      yield* openUntilCancelled(context);
    };
    startWatch();
    await vi.advanceTimersByTimeAsync(100);
    expect(log).toEqual(["CREATED a", "DELETED a"]);
    expect(statuses.at(-1)).toBe("live");
  });

  it.each([
    ["a network error", new Error("Failed to fetch")],
    ["UNAVAILABLE", new ConnectError("task-service restarting", Code.Unavailable)],
    ["RESOURCE_EXHAUSTED (too far behind)", new ConnectError("watcher too far behind", Code.ResourceExhausted)],
    ["the server closing the stream", undefined],
  ])("after %s it reconnects with backoff and re-lists once the new stream is open", async (_name, end) => {
    server.watchScript[0] = dropsAfter([heartbeat(), event(TaskEventType.CREATED, "a")], end);
    server.watchScript[1] = async function* (_call, context) {
      yield heartbeat();
      yield event(TaskEventType.UPDATED, "b");
      yield* openUntilCancelled(context);
    };
    startWatch();
    await vi.advanceTimersByTimeAsync(10);
    expect(log).toEqual(["CREATED a"]);
    expect(statuses).toContain("reconnecting");
    expect(server.watchCalls).toBe(1); // backing off, not reconnecting in a hot loop

    await vi.advanceTimersByTimeAsync(1_000);
    expect(server.watchCalls).toBe(2);
    expect(log).toEqual(["CREATED a", "relist (stream 2)", "UPDATED b"]);
    expect(statuses.at(-1)).toBe("live");
  });

  it("backs off exponentially while the server stays down, and re-lists once when it is back", async () => {
    const down = () => dropsAfter([], new ConnectError("down", Code.Unavailable));
    server.watchScript = [dropsAfter([heartbeat()], new ConnectError("down", Code.Unavailable)), down(), down(), down()];
    startWatch();
    await vi.advanceTimersByTimeAsync(1_000 + 2_000 + 4_000 - 1);
    expect(server.watchCalls).toBe(3);
    await vi.advanceTimersByTimeAsync(1 + 8_000);
    expect(server.watchCalls).toBe(5);
    expect(log).toEqual(["relist (stream 5)"]);
  });

  it("refreshes the token after UNAUTHENTICATED and reconnects at once", async () => {
    server.watchScript[0] = dropsAfter([heartbeat()], new ConnectError("token expired", Code.Unauthenticated));
    startWatch();
    await vi.advanceTimersByTimeAsync(200); // the refresh takes 50 ms, then no backoff
    expect(server.refreshCalls).toBe(1);
    expect(server.watchCalls).toBe(2);
    expect(log).toEqual(["relist (stream 2)"]);
    expect(statuses.at(-1)).toBe("live");
  });

  it("reopens with a fresh token when the one that opened the stream expires", async () => {
    // The real server ends the stream with UNAUTHENTICATED when its token expires.
    startWatch();
    await vi.advanceTimersByTimeAsync(ACCESS_LIFETIME_MS + 1_000);
    expect(server.refreshCalls).toBe(1); // the session's own timer; the stream stays fine
    expect(session.signedIn).toBe(true);
  });

  it("stops, signed out, when the session was revoked (the refresh is refused)", async () => {
    server.watchScript[0] = async function* (_call, context) {
      yield heartbeat();
      await new Promise((resolve) => setTimeout(resolve, 5_000));
      server.revokeAll(); // "sign out everywhere else" on another device
      if (!context.signal.aborted) throw new ConnectError("session ended", Code.Unauthenticated);
    };
    const running = startWatch();
    await vi.advanceTimersByTimeAsync(6_000);
    await running.done;
    expect(statuses.at(-1)).toBe("stopped");
    expect(session.signedIn).toBe(false);
    expect(server.watchCalls).toBe(1);
  });

  it("treats a stream that went silent (no heartbeat) as dead, and reconnects and re-lists", async () => {
    startWatch();
    await vi.advanceTimersByTimeAsync(60_000);
    expect(server.watchCalls).toBe(1);
    await vi.advanceTimersByTimeAsync(15_000 + 100); // past the 75 s limit: reopened at once
    expect(server.watchCalls).toBe(2);
    expect(log).toEqual(["relist (stream 2)"]);
  });

  it("stop() closes the stream for good", async () => {
    const running = startWatch();
    await vi.advanceTimersByTimeAsync(10);
    running.stop();
    await vi.advanceTimersByTimeAsync(60_000);
    await running.done;
    expect(server.watchCalls).toBe(1);
    expect(statuses.at(-1)).toBe("stopped");
  });

  it("reconnectNow() skips the backoff wait", async () => {
    server.watchScript[0] = dropsAfter([heartbeat()], new ConnectError("down", Code.Unavailable));
    const running = startWatch();
    await vi.advanceTimersByTimeAsync(10);
    expect(server.watchCalls).toBe(1);
    running.reconnectNow();
    await vi.advanceTimersByTimeAsync(10);
    expect(server.watchCalls).toBe(2);
    expect(log).toEqual(["relist (stream 2)"]);
  });
});
