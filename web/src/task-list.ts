/**
 * The task list on screen as a value: the loaded tasks for the current filters, the
 * token of the next page and the total, and pure functions that fold pages and changes
 * (this tab's own writes and WatchTasks events) into it.
 *
 * Decisions a reader must know:
 * - A change is placed by the same filters and order the server uses, so a task that no
 *   longer matches leaves the list, and one that sorts past the last loaded task while
 *   more pages exist is left for "Load more" (paging is keyset-stable on the server).
 * - A list answer can be older than events that arrived while it was in flight. The page
 *   keeps a journal of the changes since the request started and replays it over the
 *   answer (`replaceWithPage`), so a fresh create or delete is never undone by it.
 * - The total after an event is sometimes a guess (an update to a task on an unloaded
 *   page may or may not change the count); `applyChange` says so, and the page then asks
 *   the server for the count.
 */

import { timestampMs } from "@bufbuild/protobuf/wkt";
import type { Task } from "@todo/client";

export type OrderBy = "create_time desc" | "create_time" | "due_time" | "priority desc" | "title";
export type Completion = "all" | "open" | "done";

export const ORDER_OPTIONS: { value: OrderBy; label: string }[] = [
  { value: "create_time desc", label: "Newest first" },
  { value: "create_time", label: "Oldest first" },
  { value: "due_time", label: "Due date" },
  { value: "priority desc", label: "Priority" },
  { value: "title", label: "Title" },
];

export interface ListFilters {
  completion: Completion;
  query: string;
  orderBy: OrderBy;
}

export interface TaskList {
  filters: ListFilters;
  tasks: Task[];
  nextPageToken: string;
  totalSize: number;
}

export type TaskChange = { type: "upsert"; task: Task; created: boolean } | { type: "remove"; id: string };

export function emptyList(filters: ListFilters): TaskList {
  return { filters, tasks: [], nextPageToken: "", totalSize: 0 };
}

/** The ListTasks `completed` field for a completion filter. */
export function completedFilter(completion: Completion): boolean | undefined {
  return completion === "all" ? undefined : completion === "done";
}

/** Whether the server would list `task` under `filters` (query: case-insensitive substring). */
export function matches(task: Task, filters: ListFilters): boolean {
  const completed = completedFilter(filters.completion);
  if (completed !== undefined && task.completed !== completed) return false;
  const query = filters.query.trim().toLowerCase();
  if (!query) return true;
  return task.title.toLowerCase().includes(query) || task.description.toLowerCase().includes(query);
}

const millis = (task: Task, field: "createTime" | "dueTime" | "updateTime") => {
  const value = task[field];
  return value ? timestampMs(value) : undefined;
};
const byId = (a: Task, b: Task) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);

/** The server's orders (ids are UUIDv7, so they break ties in creation order). */
export function compareTasks(orderBy: OrderBy): (a: Task, b: Task) => number {
  switch (orderBy) {
    case "create_time desc":
      return (a, b) => (millis(b, "createTime") ?? 0) - (millis(a, "createTime") ?? 0) || byId(b, a);
    case "create_time":
      return (a, b) => (millis(a, "createTime") ?? 0) - (millis(b, "createTime") ?? 0) || byId(a, b);
    case "due_time":
      return (a, b) => {
        const dueA = millis(a, "dueTime");
        const dueB = millis(b, "dueTime");
        if (dueA === undefined || dueB === undefined) {
          return dueA === dueB ? byId(a, b) : dueA === undefined ? 1 : -1; // no due date last
        }
        return dueA - dueB || byId(a, b);
      };
    case "priority desc":
      return (a, b) => b.priority - a.priority || byId(b, a);
    case "title":
      return (a, b) => (a.title < b.title ? -1 : a.title > b.title ? 1 : byId(a, b));
  }
}

/** Folds one change into the list; `totalIsGuess` asks the caller to re-count on the server. */
export function applyChange(list: TaskList, change: TaskChange): { list: TaskList; totalIsGuess: boolean } {
  const id = change.type === "upsert" ? change.task.id : change.id;
  const index = list.tasks.findIndex((task) => task.id === id);
  const existing = index >= 0 ? list.tasks[index] : undefined;
  const hasMorePages = list.nextPageToken !== "";
  const without = existing ? list.tasks.filter((_, i) => i !== index) : list.tasks;

  if (change.type === "remove") {
    if (existing) return { list: { ...list, tasks: without, totalSize: Math.max(0, list.totalSize - 1) }, totalIsGuess: false };
    return { list, totalIsGuess: hasMorePages };
  }

  const task = change.task;
  if (existing && isOlder(task, existing)) return { list, totalIsGuess: false };
  if (!matches(task, list.filters)) {
    if (existing) return { list: { ...list, tasks: without, totalSize: Math.max(0, list.totalSize - 1) }, totalIsGuess: false };
    return { list, totalIsGuess: hasMorePages && !change.created };
  }

  const compare = compareTasks(list.filters.orderBy);
  let position = without.findIndex((other) => compare(task, other) < 0);
  if (position < 0) position = without.length;
  const beyondLoaded = hasMorePages && position === without.length;
  const tasks = beyondLoaded ? without : [...without.slice(0, position), task, ...without.slice(position)];
  if (existing) return { list: { ...list, tasks }, totalIsGuess: false };
  // A task new to this list: created now, or updated into the filters (or on an unloaded page).
  const certain = change.created || !hasMorePages;
  return { list: { ...list, tasks, totalSize: list.totalSize + 1 }, totalIsGuess: !certain };
}

/** The list after a first page (or a re-list) answered, with the changes since replayed. */
export function replaceWithPage(
  filters: ListFilters,
  page: { tasks: Task[]; nextPageToken: string; totalSize: number },
  changesSinceRequest: TaskChange[],
): TaskList {
  let list: TaskList = { filters, tasks: page.tasks, nextPageToken: page.nextPageToken, totalSize: page.totalSize };
  for (const change of changesSinceRequest) list = applyChange(list, change).list;
  return list;
}

/** The list after "Load more": the page's tasks appended (each task once). */
export function appendPage(list: TaskList, page: { tasks: Task[]; nextPageToken: string; totalSize: number }): TaskList {
  const known = new Set(list.tasks.map((task) => task.id));
  return {
    ...list,
    tasks: [...list.tasks, ...page.tasks.filter((task) => !known.has(task.id))],
    nextPageToken: page.nextPageToken,
    totalSize: page.totalSize,
  };
}

function isOlder(candidate: Task, current: Task): boolean {
  const a = millis(candidate, "updateTime");
  const b = millis(current, "updateTime");
  return a !== undefined && b !== undefined && a < b;
}
