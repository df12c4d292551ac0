/**
 * Turns API errors into words for people: one message for the form, plus the
 * `google.rpc.BadRequest` field violations keyed by field, to show next to the fields.
 *
 * Decision a reader must know: forms name their fields after the proto fields
 * (`email`, `new_password`, `due_time`), so a violation's `field` lands next to its
 * input as is; a leading `task.` (UpdateTask's violations) is dropped.
 */

import { Code, ConnectError, fieldViolations, retryDelaySeconds } from "@todo/client";

export interface ErrorText {
  /** A sentence for the form or the status area. */
  message: string;
  /** Field name → what is wrong with it. */
  fields: Record<string, string>;
}

/** Wording for codes whose meaning depends on the call (e.g. UNAUTHENTICATED on Login). */
export type ErrorWording = Partial<Record<Code, string>>;

export function explainError(error: unknown, wording: ErrorWording = {}): ErrorText {
  const status = ConnectError.from(error);
  const fields: Record<string, string> = {};
  for (const [field, description] of Object.entries(fieldViolations(status))) {
    fields[field.replace(/^task\./, "")] = capitalize(description);
  }
  return { message: messageFor(status, wording, Object.keys(fields).length > 0), fields };
}

function messageFor(status: ConnectError, wording: ErrorWording, hasFieldErrors: boolean): string {
  const specific = wording[status.code];
  if (specific) return specific;
  switch (status.code) {
    case Code.InvalidArgument:
      return hasFieldErrors ? "Please correct the highlighted fields." : capitalize(status.rawMessage);
    case Code.ResourceExhausted: {
      const seconds = retryDelaySeconds(status);
      return seconds === undefined
        ? "Too many requests. Please wait a moment and try again."
        : `Too many attempts. Try again in ${formatWait(seconds)}.`;
    }
    case Code.Unauthenticated:
      return "Your session has ended. Please sign in again.";
    case Code.NotFound:
      return "That item no longer exists.";
    case Code.Aborted:
      return "It was changed somewhere else in the meantime.";
    case Code.AlreadyExists:
      return "That already exists.";
    case Code.Unimplemented:
      return "This server does not offer that yet.";
    case Code.Unavailable:
    case Code.DeadlineExceeded:
      return "The server cannot be reached right now. Check your connection and try again.";
    case Code.Unknown:
      if (status.cause instanceof TypeError) {
        return "The server cannot be reached right now. Check your connection and try again.";
      }
      return "Something went wrong. Please try again.";
    case Code.Canceled:
      return "The request was cancelled.";
    default:
      return "Something went wrong on our side. Please try again.";
  }
}

/** "45 s", "15 min", "2 h". */
export function formatWait(seconds: number): string {
  if (seconds < 90) return `${seconds} s`;
  if (seconds < 90 * 60) return `${Math.ceil(seconds / 60)} min`;
  return `${Math.ceil(seconds / 3600)} h`;
}

function capitalize(text: string): string {
  return text.length === 0 ? text : text[0]!.toUpperCase() + text.slice(1);
}
