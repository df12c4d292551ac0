/**
 * How values look on screen: dates, due dates, priorities, counts and the devices of
 * sessions. Everything uses the browser's locale.
 *
 * Decision a reader must know: a due date is a calendar day. The app stores it as the
 * end of that day (23:59:59.999) in the user's time zone, so "due today" stays due
 * until midnight and the day reads the same when shown back in that zone.
 */

import { type Timestamp, timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Priority } from "@todo/client";

export const PRIORITY_LABELS: Record<Priority, string> = {
  [Priority.UNSPECIFIED]: "None",
  [Priority.LOW]: "Low",
  [Priority.MEDIUM]: "Medium",
  [Priority.HIGH]: "High",
};

const dateFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium" });
const dateTimeFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
const relativeFormat = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });

export function formatDate(timestamp: Timestamp | undefined): string {
  return timestamp ? dateFormat.format(timestampDate(timestamp)) : "";
}

export function formatDateTime(timestamp: Timestamp | undefined): string {
  return timestamp ? dateTimeFormat.format(timestampDate(timestamp)) : "";
}

/** "Due today", "Due tomorrow", "Due in 3 days", "Overdue by 2 days", "Due 12 Jan 2027". */
export function describeDue(due: Timestamp, now = new Date()): { text: string; overdue: boolean } {
  const dueDate = timestampDate(due);
  const days = Math.round((startOfDay(dueDate).getTime() - startOfDay(now).getTime()) / 86_400_000);
  const overdue = dueDate.getTime() < now.getTime();
  if (overdue && days < 0) return { text: `Overdue: ${relativeFormat.format(days, "day")}`, overdue };
  if (Math.abs(days) <= 6) return { text: `Due ${relativeFormat.format(days, "day")}`, overdue };
  return { text: `Due ${dateFormat.format(dueDate)}`, overdue };
}

/** The value of an <input type="date"> for a due time ("" for none). */
export function dueToInputValue(due: Timestamp | undefined): string {
  if (!due) return "";
  const date = timestampDate(due);
  const pad = (n: number) => String(n).padStart(2, "0");
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}`;
}

/** The due time for an <input type="date"> value: the end of that day, locally. */
export function inputValueToDue(value: string): Timestamp | undefined {
  const match = /^(\d{4})-(\d{2})-(\d{2})$/.exec(value);
  if (!match) return undefined;
  const [, year, month, day] = match.map(Number) as [number, number, number, number];
  return timestampFromDate(new Date(year, month - 1, day, 23, 59, 59, 999));
}

export function pluralize(count: number, one: string, many: string): string {
  return `${count.toLocaleString()} ${count === 1 ? one : many}`;
}

/**
 * "Chrome on Linux" from a User-Agent string. A client library's agent (say
 * "connect-es/2.2.0", what a gateway may record for gRPC-Web) says nothing about the
 * device, so it reads "Unknown browser" with the raw string after it.
 */
export function describeDevice(userAgent: string): string {
  if (!userAgent) return "Unknown device";
  const browser =
    /Edg\//.test(userAgent) ? "Edge"
    : /OPR\//.test(userAgent) ? "Opera"
    : /Firefox\//.test(userAgent) ? "Firefox"
    : /Chrom(e|ium)\//.test(userAgent) ? "Chrome"
    : /Safari\//.test(userAgent) ? "Safari"
    : "";
  const system =
    /Android/.test(userAgent) ? "Android"
    : /iPhone|iPad|iPod/.test(userAgent) ? "iOS"
    : /Windows/.test(userAgent) ? "Windows"
    : /Mac OS X|Macintosh/.test(userAgent) ? "macOS"
    : /CrOS/.test(userAgent) ? "ChromeOS"
    : /Linux/.test(userAgent) ? "Linux"
    : "";
  if (!browser && !system) return `Unknown browser (${userAgent.length > 40 ? `${userAgent.slice(0, 39)}…` : userAgent})`;
  return [browser || "Browser", system].filter(Boolean).join(" on ");
}

function startOfDay(date: Date): Date {
  return new Date(date.getFullYear(), date.getMonth(), date.getDate());
}
