/**
 * Keeps a TaskService.WatchTasks stream open for as long as a page wants live updates.
 *
 * Decisions a reader must know:
 * - The stream has no resume point: whatever changed while it was down is lost. So after
 *   every interruption the caller's `relist()` runs again, once the new stream is open
 *   (it sent a message, or its headers came and it stayed up a moment): a change after
 *   that point arrives as an event, a change before it is in the fresh list, and nothing
 *   falls in between.
 * - The server sends a heartbeat after 30 s of quiet. A stream silent for much longer is
 *   dead without an error (a laptop woke from sleep, a proxy dropped it), so a watchdog
 *   treats it as a drop.
 * - Drops (network errors, UNAVAILABLE, RESOURCE_EXHAUSTED "too far behind", the server
 *   ending the stream) reconnect with capped, jittered exponential backoff. UNAUTHENTICATED
 *   (the token that opened the stream expired, or the session ended) refreshes the token
 *   first; if the refresh is refused the session is gone and the watch stops.
 */

import { Code, ConnectError } from "@connectrpc/connect";

import type { WatchTasksRequest, WatchTasksResponse } from "./gen/tasks/v1/tasks_pb.js";
import { TaskEventType } from "./gen/tasks/v1/tasks_pb.js";
import { retryDelaySeconds } from "./rpc-errors.js";
import type { BrowserSession, StoredTokens } from "./session.js";

/** A stream whose headers came counts as open once it lived this long without failing. */
const OPEN_SETTLE_MS = 300;

export type WatchStatus = "connecting" | "live" | "reconnecting" | "stopped";

/** The call that opens the stream: `createClient(TaskService, transport)` has it. */
export interface WatchTasksClient {
  watchTasks(
    request: Partial<WatchTasksRequest>,
    options: { signal: AbortSignal; headers: Record<string, string>; onHeader?: (headers: Headers) => void },
  ): AsyncIterable<WatchTasksResponse>;
}

export interface WatchTasksOptions {
  client: WatchTasksClient;
  session: Pick<BrowserSession, "freshTokens" | "renewRejected">;
  /** A CREATED, UPDATED or DELETED event; heartbeats never reach it. */
  onEvent(event: WatchTasksResponse): void;
  /** Re-reads the list; called after every reconnect (not after the first open). */
  relist(): unknown;
  /** `retryInMs` is set while waiting to reconnect; `error` is why the stream ended. */
  onStatus?(status: WatchStatus, detail?: { retryInMs?: number; error?: ConnectError }): void;
  /** Backoff of reconnects: the first wait, the longest wait. */
  initialBackoffMs?: number;
  maxBackoffMs?: number;
  /** A stream open for less than this counts as a failure, so a flapping server is not hammered. */
  healthyAfterMs?: number;
  /** No message (not even a heartbeat) for this long means the stream is dead. */
  silenceLimitMs?: number;
  random?: () => number;
}

export interface TaskWatch {
  /** Closes the stream for good. */
  stop(): void;
  /** Skips the current backoff wait, or reopens now (e.g. the browser came back online). */
  reconnectNow(): void;
  /** Settles when the watch has stopped: by `stop()`, or because the session ended. */
  readonly done: Promise<void>;
}

export function watchTasks(options: WatchTasksOptions): TaskWatch {
  const {
    client,
    session,
    onEvent,
    relist,
    onStatus = () => undefined,
    initialBackoffMs = 1_000,
    maxBackoffMs = 30_000,
    healthyAfterMs = 10_000,
    silenceLimitMs = 75_000,
    random = Math.random,
  } = options;

  let stopped = false;
  /** Aborts the current stream or backoff wait. */
  let interrupt = new AbortController();

  const backoffMs = (failures: number) => {
    const ceiling = Math.min(maxBackoffMs, initialBackoffMs * 2 ** Math.max(0, failures - 1));
    return Math.round(ceiling * (0.5 + random() / 2));
  };

  const run = async () => {
    let failures = 0;
    let needsRelist = false;
    let refreshedWithoutOpening = false;

    while (!stopped) {
      const attempt = interrupt;
      onStatus(needsRelist ? "reconnecting" : "connecting");

      let tokens: StoredTokens;
      try {
        tokens = await session.freshTokens();
      } catch (error) {
        const status = ConnectError.from(error);
        if (status.code === Code.Unauthenticated) break; // signed out
        failures++;
        await wait(backoffMs(failures), attempt.signal, (retryInMs) => onStatus("reconnecting", { retryInMs, error: status }));
        continue;
      }

      let openedAt = 0;
      let relistFailed = false;
      let settleTimer: ReturnType<typeof setTimeout> | undefined;
      let silenceTimer: ReturnType<typeof setTimeout> | undefined;
      /** Restarts the watchdog; when it fires, this attempt is dropped (and reconnects). */
      const heardFromServer = () => {
        clearTimeout(silenceTimer);
        silenceTimer = setTimeout(() => {
          interrupt = new AbortController();
          attempt.abort();
        }, silenceLimitMs);
      };
      /** The stream is open: it sent a message, or its headers came and it lived on a moment. */
      const confirmOpen = () => {
        clearTimeout(settleTimer);
        if (openedAt !== 0) return;
        openedAt = Date.now();
        refreshedWithoutOpening = false;
        onStatus("live");
        if (needsRelist) {
          needsRelist = false;
          Promise.resolve()
            .then(relist)
            .catch(() => {
              // The list may be stale: drop this stream (with backoff), so the next one re-lists.
              relistFailed = true;
              interrupt = new AbortController();
              attempt.abort();
            });
        }
      };
      // Headers alone do not prove much (an error answer has headers too), so a stream
      // counts as open after its first message, or once it survived OPEN_SETTLE_MS.
      const onHeader = (headers: Headers) => {
        if (headers.has("grpc-status")) return; // a trailers-only error answer
        heardFromServer();
        settleTimer = setTimeout(confirmOpen, OPEN_SETTLE_MS);
      };

      let ended: ConnectError;
      heardFromServer(); // also bounds the wait for the response headers
      try {
        const stream = client.watchTasks(
          {},
          {
            signal: attempt.signal,
            headers: { authorization: `Bearer ${tokens.accessToken}` },
            onHeader,
          },
        );
        for await (const event of stream) {
          heardFromServer();
          confirmOpen();
          if (event.eventType === TaskEventType.UNSPECIFIED || !event.task) continue; // heartbeat
          onEvent(event);
        }
        ended = new ConnectError("the server ended the stream", Code.Unavailable);
      } catch (error) {
        ended = ConnectError.from(error);
      }
      clearTimeout(settleTimer);
      clearTimeout(silenceTimer);
      if (stopped) break;
      needsRelist = true;

      if (attempt.signal.aborted && interrupt !== attempt && !relistFailed) continue; // reconnectNow()
      if (ended.code === Code.Unauthenticated && !refreshedWithoutOpening) {
        // The access token expired (or the session ended): renew it, and reopen at once.
        refreshedWithoutOpening = true;
        try {
          await session.renewRejected(tokens);
          continue;
        } catch (error) {
          if (ConnectError.from(error).code === Code.Unauthenticated) break; // session gone
        }
      }

      const wasHealthy = openedAt !== 0 && Date.now() - openedAt >= healthyAfterMs;
      failures = wasHealthy ? 1 : failures + 1;
      const serverAsked = (retryDelaySeconds(ended) ?? 0) * 1000;
      const delay = Math.max(backoffMs(failures), serverAsked);
      await wait(delay, interrupt.signal, (retryInMs) => onStatus("reconnecting", { retryInMs, error: ended }));
    }
    stopped = true;
    onStatus("stopped");
  };

  /** Waits `ms`, or less if interrupted; replaces the interrupt controller afterwards. */
  const wait = async (ms: number, signal: AbortSignal, announce: (retryInMs: number) => void) => {
    announce(ms);
    if (!signal.aborted) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, ms);
        signal.addEventListener(
          "abort",
          () => {
            clearTimeout(timer);
            resolve();
          },
          { once: true },
        );
      });
    }
    if (interrupt.signal.aborted) interrupt = new AbortController();
  };

  const done = run();

  return {
    stop() {
      stopped = true;
      interrupt.abort();
    },
    reconnectNow() {
      const previous = interrupt;
      interrupt = new AbortController();
      previous.abort();
    },
    done,
  };
}
