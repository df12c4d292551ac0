/**
 * The task list: filters, search, order, paging, the count, and live updates from the
 * user's other tabs and devices, plus the banner that asks to verify the email address.
 *
 * Decisions a reader must know:
 * - The list lives in a ref (the truth, read synchronously by event handlers) mirrored
 *   into render state. Every request carries a generation number; an answer for filters
 *   that are no longer current is dropped.
 * - A page can be short, or even empty, while a next_page_token still exists (the server
 *   filters after paging), so loading continues until enough tasks arrived or the token
 *   runs out.
 * - WatchTasks events and this tab's own writes go through the same `applyChange`, so a
 *   task shows once whichever arrives first; after a stream interruption the watch helper
 *   calls `relist`, which re-reads as many tasks as are on screen.
 */

import { Code, ConnectError, TaskEventType, type Task, type User, type WatchStatus, watchTasks } from "@todo/client";
import { useCallback, useEffect, useReducer, useRef, useState } from "preact/hooks";

import { api } from "./api.js";
import { useAnnounce } from "./announcer.js";
import { describeDue, formatDate, pluralize, PRIORITY_LABELS } from "./display-format.js";
import { explainError, formatWait } from "./error-text.js";
import { DeleteTaskDialog, EditTaskDialog, NewTaskForm } from "./task-editor.js";
import {
  applyChange,
  appendPage,
  type Completion,
  completedFilter,
  emptyList,
  type ListFilters,
  ORDER_OPTIONS,
  type OrderBy,
  replaceWithPage,
  type TaskChange,
  type TaskList,
} from "./task-list.js";

const PAGE_SIZE = 50;
const MAX_PAGE_SIZE = 500;
/** Requests per "load" before giving up on filling a page (each page may come back short). */
const MAX_REQUESTS_PER_LOAD = 20;
const SEARCH_DELAY_MS = 300;
const RECOUNT_DELAY_MS = 500;

interface Page {
  tasks: Task[];
  nextPageToken: string;
  totalSize: number;
}

/** Reads pages from `pageToken` on until at least `wanted` tasks arrived or there are no more. */
async function fetchAtLeast(filters: ListFilters, pageToken: string, wanted: number, pageSize: number): Promise<Page> {
  const tasks: Task[] = [];
  let token = pageToken;
  let totalSize = 0;
  for (let request = 0; request < MAX_REQUESTS_PER_LOAD; request++) {
    const answer = await api.tasks.listTasks({
      pageSize,
      pageToken: token,
      completed: completedFilter(filters.completion),
      query: filters.query.trim(),
      orderBy: filters.orderBy,
    });
    tasks.push(...answer.tasks);
    token = answer.nextPageToken;
    totalSize = answer.totalSize;
    if (tasks.length >= wanted || token === "") break;
  }
  return { tasks, nextPageToken: token, totalSize };
}

export function TasksPage({ user, onUserChanged }: { user: User; onUserChanged(user: User): void }) {
  const announce = useAnnounce();
  const [filters, setFilters] = useState<ListFilters>({ completion: "all", query: "", orderBy: "create_time desc" });
  const [searchText, setSearchText] = useState("");
  const listRef = useRef<TaskList>(emptyList(filters));
  const [, rerender] = useReducer((n: number) => n + 1, 0);
  const [loading, setLoading] = useState<"first" | "more" | null>("first");
  const [loadError, setLoadError] = useState("");
  const [watchStatus, setWatchStatus] = useState<{ status: WatchStatus; retryInMs?: number }>({ status: "connecting" });
  const [editing, setEditing] = useState<Task | null>(null);
  const [deleting, setDeleting] = useState<Task | null>(null);

  const filtersRef = useRef(filters);
  filtersRef.current = filters;
  const generation = useRef(0);
  /** Changes since the current first-page request started; replayed over its answer. */
  const journal = useRef<TaskChange[] | null>(null);
  const recountTimer = useRef<ReturnType<typeof setTimeout>>();

  const setList = useCallback((next: TaskList) => {
    listRef.current = next;
    rerender(0);
  }, []);

  const recount = useCallback(() => {
    clearTimeout(recountTimer.current);
    recountTimer.current = setTimeout(() => {
      const gen = generation.current;
      const current = filtersRef.current;
      api.tasks
        .listTasks({ pageSize: 1, completed: completedFilter(current.completion), query: current.query.trim(), orderBy: current.orderBy })
        .then((answer) => {
          if (gen === generation.current) setList({ ...listRef.current, totalSize: answer.totalSize });
        })
        .catch(() => undefined); // the count stays approximate until the next change
    }, RECOUNT_DELAY_MS);
  }, [setList]);

  const change = useCallback(
    (taskChange: TaskChange) => {
      journal.current?.push(taskChange);
      const { list, totalIsGuess } = applyChange(listRef.current, taskChange);
      setList(list);
      if (totalIsGuess) recount();
    },
    [recount, setList],
  );

  /** Loads the first page(s) for `current`; with `keepCount`, as many tasks as are shown now. */
  const loadFirst = useCallback(
    async (current: ListFilters, { keepCount = false } = {}) => {
      const gen = ++generation.current;
      journal.current = [];
      setLoading("first");
      setLoadError("");
      const wanted = keepCount ? Math.min(MAX_PAGE_SIZE, Math.max(PAGE_SIZE, listRef.current.tasks.length)) : PAGE_SIZE;
      try {
        const page = await fetchAtLeast(current, "", wanted, wanted);
        if (gen !== generation.current) return;
        const replayed = journal.current ?? [];
        setList(replaceWithPage(current, page, replayed));
        if (replayed.length > 0) recount();
      } catch (error) {
        if (gen === generation.current) setLoadError(explainError(error).message);
        throw error;
      } finally {
        if (gen === generation.current) {
          journal.current = null;
          setLoading(null);
        }
      }
    },
    [recount, setList],
  );

  const loadMore = async () => {
    const list = listRef.current;
    if (loading || list.nextPageToken === "") return;
    const gen = generation.current;
    setLoading("more");
    setLoadError("");
    try {
      const page = await fetchAtLeast(list.filters, list.nextPageToken, PAGE_SIZE, PAGE_SIZE);
      if (gen !== generation.current) return;
      const before = listRef.current.tasks.length;
      setList(appendPage(listRef.current, page));
      announce(`Loaded ${pluralize(listRef.current.tasks.length - before, "more task", "more tasks")}.`);
    } catch (error) {
      if (gen === generation.current) setLoadError(explainError(error).message);
    } finally {
      if (gen === generation.current) setLoading(null);
    }
  };

  useEffect(() => {
    document.title = "Your tasks · Todo";
  }, []);

  // A new filter, query or order starts the list again (the old one stays, dimmed, until then).
  useEffect(() => {
    loadFirst(filters).catch(() => undefined);
  }, [filters, loadFirst]);

  // Typing in the search box applies after a short pause.
  useEffect(() => {
    if (searchText.trim() === filters.query.trim()) return;
    const timer = setTimeout(() => setFilters((all) => ({ ...all, query: searchText })), SEARCH_DELAY_MS);
    return () => clearTimeout(timer);
  }, [searchText]);

  // Live updates from the other tabs and devices.
  useEffect(() => {
    let live = false;
    const watch = watchTasks({
      client: api.tasks,
      session: api.session,
      onEvent: (event) => {
        if (!event.task) return;
        if (event.eventType === TaskEventType.DELETED) change({ type: "remove", id: event.task.id });
        else change({ type: "upsert", task: event.task, created: event.eventType === TaskEventType.CREATED });
      },
      relist: () => loadFirst(filtersRef.current, { keepCount: true }),
      onStatus: (status, detail) => {
        live = status === "live";
        setWatchStatus({ status, retryInMs: detail?.retryInMs });
      },
    });
    // Back online, or the tab shown again: skip the rest of a backoff wait.
    const reconnect = () => {
      if (!live) watch.reconnectNow();
    };
    const onVisible = () => {
      if (document.visibilityState === "visible") reconnect();
    };
    window.addEventListener("online", reconnect);
    document.addEventListener("visibilitychange", onVisible);
    return () => {
      watch.stop();
      window.removeEventListener("online", reconnect);
      document.removeEventListener("visibilitychange", onVisible);
      clearTimeout(recountTimer.current);
    };
  }, [change, loadFirst]);

  const toggleCompleted = async (task: Task) => {
    const completed = !task.completed;
    change({ type: "upsert", task: { ...task, completed }, created: false });
    try {
      const answer = await api.tasks.setTaskCompleted({ id: task.id, completed });
      if (answer.task) change({ type: "upsert", task: answer.task, created: false });
      announce(completed ? `Marked “${task.title}” as done.` : `Reopened “${task.title}”.`, "success");
    } catch (error) {
      if (ConnectError.from(error).code === Code.NotFound) {
        change({ type: "remove", id: task.id });
        announce("That task was deleted on another device.", "error");
      } else {
        change({ type: "upsert", task, created: false });
        announce(explainError(error).message, "error");
      }
    }
  };

  const list = listRef.current;
  const filtered = filters.completion !== "all" || filters.query.trim() !== "";

  return (
    <div class="tasks-page">
      <div class="page-heading-row">
        <h1 tabIndex={-1} data-page-heading>
          {user.displayName ? `${user.displayName}’s tasks` : "Your tasks"}
        </h1>
        <LiveIndicator status={watchStatus.status} retryInMs={watchStatus.retryInMs} />
      </div>
      {!user.emailVerified && <VerifyEmailBanner user={user} onUserChanged={onUserChanged} />}

      <section aria-labelledby="add-heading" class="card">
        <h2 id="add-heading" class="visually-hidden">
          Add a task
        </h2>
        <NewTaskForm onCreated={(task) => change({ type: "upsert", task, created: true })} />
      </section>

      <section aria-labelledby="list-heading" class="card list-card">
        <h2 id="list-heading" class="visually-hidden">
          Task list
        </h2>
        <div class="toolbar" role="search" aria-label="Filter tasks">
          <fieldset class="segmented">
            <legend class="visually-hidden">Show</legend>
            {(["all", "open", "done"] as Completion[]).map((completion) => (
              <label key={completion} class="segment">
                <input
                  type="radio"
                  name="completion"
                  value={completion}
                  checked={filters.completion === completion}
                  onChange={() => setFilters((all) => ({ ...all, completion }))}
                />
                <span>{completion === "all" ? "All" : completion === "open" ? "Open" : "Done"}</span>
              </label>
            ))}
          </fieldset>
          <div class="field search-field">
            <label for="task-search">Search</label>
            <input
              id="task-search"
              type="search"
              value={searchText}
              placeholder="Title or notes"
              onInput={(event) => setSearchText(event.currentTarget.value)}
              onKeyDown={(event) => {
                if (event.key === "Enter") setFilters((all) => ({ ...all, query: searchText }));
              }}
            />
          </div>
          <div class="field order-field">
            <label for="task-order">Sort by</label>
            <select
              id="task-order"
              value={filters.orderBy}
              onChange={(event) => {
                const orderBy = event.currentTarget.value as OrderBy;
                setFilters((all) => ({ ...all, orderBy }));
              }}
            >
              {ORDER_OPTIONS.map((option) => (
                <option key={option.value} value={option.value}>
                  {option.label}
                </option>
              ))}
            </select>
          </div>
        </div>

        <p class="count" aria-live="polite" aria-atomic="true">
          {loading === "first" && list.tasks.length === 0
            ? "Loading…"
            : filtered
              ? `${pluralize(list.totalSize, "task matches", "tasks match")}`
              : pluralize(list.totalSize, "task", "tasks")}
        </p>

        {loadError && (
          <div class="load-error" role="alert">
            <p>{loadError}</p>
            <button type="button" class="button" onClick={() => loadFirst(filtersRef.current, { keepCount: true }).catch(() => undefined)}>
              Try again
            </button>
          </div>
        )}

        {list.tasks.length > 0 ? (
          <ul class="task-list" aria-label="Tasks" aria-busy={loading === "first" ? "true" : undefined}>
            {list.tasks.map((task) => (
              <TaskItem
                key={task.id}
                task={task}
                onToggle={() => void toggleCompleted(task)}
                onEdit={() => setEditing(task)}
                onDelete={() => setDeleting(task)}
              />
            ))}
          </ul>
        ) : (
          loading === null &&
          !loadError && (
            <p class="empty">
              {filtered ? "No tasks match. Try another search or filter." : "Nothing to do yet. Add your first task above."}
            </p>
          )
        )}

        {list.nextPageToken !== "" && (
          <div class="load-more">
            <button type="button" class="button" onClick={() => void loadMore()} aria-disabled={loading ? "true" : undefined}>
              {loading === "more" ? "Loading…" : "Load more"}
            </button>
          </div>
        )}
      </section>

      {editing && (
        <EditTaskDialog
          task={editing}
          onSaved={(task) => change({ type: "upsert", task, created: false })}
          onGone={(id) => change({ type: "remove", id })}
          onClose={() => setEditing(null)}
        />
      )}
      {deleting && (
        <DeleteTaskDialog
          task={deleting}
          onDeleted={(id) => change({ type: "remove", id })}
          onReloaded={(task) => change({ type: "upsert", task, created: false })}
          onClose={() => setDeleting(null)}
        />
      )}
    </div>
  );
}

function TaskItem({ task, onToggle, onEdit, onDelete }: { task: Task; onToggle(): void; onEdit(): void; onDelete(): void }) {
  const checkboxId = `task-${task.id}`;
  const due = task.dueTime && !task.completed ? describeDue(task.dueTime) : null;
  return (
    <li class={`task${task.completed ? " task-done" : ""}`} data-task-id={task.id}>
      <input id={checkboxId} type="checkbox" class="task-check" checked={task.completed} onChange={onToggle} />
      <div class="task-body">
        <label for={checkboxId} class="task-title">
          {task.title}
        </label>
        {task.description && <p class="task-description">{task.description}</p>}
        <p class="task-meta">
          {task.priority !== 0 && (
            <span class={`badge priority-${PRIORITY_LABELS[task.priority].toLowerCase()}`}>
              {PRIORITY_LABELS[task.priority]} priority
            </span>
          )}
          {due && <span class={due.overdue ? "due overdue" : "due"}>{due.text}</span>}
          {task.completed && task.completeTime && <span class="done-at">Done {formatDate(task.completeTime)}</span>}
        </p>
      </div>
      <div class="task-actions">
        <button type="button" class="button button-small" onClick={onEdit} aria-label={`Edit “${task.title}”`}>
          Edit
        </button>
        <button type="button" class="button button-small button-danger-quiet" onClick={onDelete} aria-label={`Delete “${task.title}”`}>
          Delete
        </button>
      </div>
    </li>
  );
}

function LiveIndicator({ status, retryInMs }: { status: WatchStatus; retryInMs?: number | undefined }) {
  const text =
    status === "live"
      ? "Live"
      : status === "connecting"
        ? "Connecting…"
        : status === "stopped"
          ? "Not updating"
          : retryInMs
            ? `Reconnecting in ${formatWait(Math.max(1, Math.round(retryInMs / 1000)))}…`
            : "Reconnecting…";
  return (
    <p class={`live live-${status}`} title="Changes from your other tabs and devices appear here as they happen">
      <span class="live-dot" aria-hidden="true" />
      {text}
    </p>
  );
}

function VerifyEmailBanner({ user, onUserChanged }: { user: User; onUserChanged(user: User): void }) {
  const [state, setState] = useState<"idle" | "sending" | "sent">("idle");
  const [error, setError] = useState("");
  const send = async () => {
    if (state === "sending") return;
    setState("sending");
    setError("");
    try {
      await api.auth.requestEmailVerification({});
      setState("sent");
    } catch (failure) {
      setState("idle");
      setError(explainError(failure).message);
    }
  };
  // Someone may have verified in another tab meanwhile: check when this tab is shown again.
  useEffect(() => {
    const onVisible = () => {
      if (document.visibilityState !== "visible") return;
      api.auth
        .getCurrentUser({})
        .then((answer) => {
          if (answer.user?.emailVerified) onUserChanged(answer.user);
        })
        .catch(() => undefined);
    };
    document.addEventListener("visibilitychange", onVisible);
    return () => document.removeEventListener("visibilitychange", onVisible);
  }, [onUserChanged]);
  return (
    <section class="banner" aria-labelledby="verify-heading">
      <div>
        <h2 id="verify-heading">Please verify your email address</h2>
        <p>
          We need to know that <strong>{user.email}</strong> is yours, so you can reset your password if you ever forget it.
        </p>
        <div role="status">{state === "sent" && <p class="form-success">Sent! Open the link in the email within 24 hours.</p>}</div>
        <div role="alert">{error && <p class="form-error">{error}</p>}</div>
      </div>
      <button type="button" class="button" onClick={() => void send()} aria-disabled={state === "sending" ? "true" : undefined}>
        {state === "sending" ? "Sending…" : state === "sent" ? "Send again" : "Send verification email"}
      </button>
    </section>
  );
}
