/**
 * Writing tasks: the "add a task" form, the edit dialog and the delete confirmation.
 *
 * Decisions a reader must know:
 * - Edits are conditional: UpdateTask sends only the changed fields in update_mask and
 *   the etag the dialog opened with. ABORTED means someone changed the task meanwhile:
 *   the dialog reloads it, shows the latest version and says so, instead of overwriting.
 *   DeleteTask sends the etag too, for the same reason.
 * - A new task carries a request_id that stays the same until the create succeeds, so
 *   pressing "Add" again after a network error cannot make a duplicate.
 */

import { create } from "@bufbuild/protobuf";
import { FieldMaskSchema } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, Priority, type Task, TaskSchema } from "@todo/client";
import type { ComponentChildren } from "preact";
import { useEffect, useId, useRef, useState } from "preact/hooks";

import { api } from "./api.js";
import { useAnnounce } from "./announcer.js";
import { dueToInputValue, inputValueToDue, PRIORITY_LABELS } from "./display-format.js";
import { type ErrorText, explainError } from "./error-text.js";
import { FormMessage, SelectField, SubmitButton, TextAreaField, TextField } from "./form.js";

const PRIORITIES = [Priority.UNSPECIFIED, Priority.LOW, Priority.MEDIUM, Priority.HIGH];

interface TaskFields {
  title: string;
  description: string;
  priority: string;
  due_time: string;
}

function fieldsOf(task: Task): TaskFields {
  return {
    title: task.title,
    description: task.description,
    priority: String(task.priority),
    due_time: dueToInputValue(task.dueTime),
  };
}

const EMPTY_FIELDS: TaskFields = { title: "", description: "", priority: String(Priority.UNSPECIFIED), due_time: "" };

/** The inputs shared by the add form and the edit dialog. */
function TaskDetailsFields({
  fields,
  setField,
  failure,
}: {
  fields: TaskFields;
  setField(name: keyof TaskFields, value: string): void;
  failure: ErrorText | null;
}) {
  const onInput = (name: keyof TaskFields) => (event: Event) =>
    setField(name, (event.currentTarget as HTMLInputElement).value);
  return (
    <>
      <TextAreaField
        label="Notes"
        name="description"
        optional
        rows={3}
        maxLength={4000}
        value={fields.description}
        error={failure?.fields.description}
        onInput={onInput("description")}
      />
      <div class="field-row">
        <SelectField
          label="Priority"
          name="priority"
          value={fields.priority}
          error={failure?.fields.priority}
          onChange={onInput("priority")}
        >
          {PRIORITIES.map((priority) => (
            <option key={priority} value={String(priority)}>
              {PRIORITY_LABELS[priority]}
            </option>
          ))}
        </SelectField>
        <TextField
          label="Due date"
          name="due_time"
          type="date"
          optional
          value={fields.due_time}
          error={failure?.fields.due_time}
          onInput={onInput("due_time")}
        />
      </div>
    </>
  );
}

export function NewTaskForm({ onCreated }: { onCreated(task: Task): void }) {
  const announce = useAnnounce();
  const [fields, setFields] = useState<TaskFields>(EMPTY_FIELDS);
  const [showDetails, setShowDetails] = useState(false);
  const [busy, setBusy] = useState(false);
  const [failure, setFailure] = useState<ErrorText | null>(null);
  const requestId = useRef("");
  if (!requestId.current) requestId.current = randomUuid();
  const titleInput = useRef<HTMLInputElement>(null);
  const detailsId = useId();

  const setField = (name: keyof TaskFields, value: string) => setFields((all) => ({ ...all, [name]: value }));

  // A problem with a detail must be visible: open the details.
  useEffect(() => {
    if (failure && (failure.fields.description || failure.fields.priority || failure.fields.due_time)) setShowDetails(true);
  }, [failure]);

  const onSubmit = async (event: Event) => {
    event.preventDefault();
    if (busy) return;
    if (!fields.title.trim()) {
      setFailure({ message: "", fields: { title: "Give the task a title." } });
      titleInput.current?.focus();
      return;
    }
    setBusy(true);
    setFailure(null);
    try {
      const answer = await api.tasks.createTask({
        title: fields.title.trim(),
        description: fields.description,
        priority: Number(fields.priority) as Priority,
        dueTime: inputValueToDue(fields.due_time),
        requestId: requestId.current,
      });
      requestId.current = randomUuid();
      if (answer.task) onCreated(answer.task);
      announce(`Added “${fields.title.trim()}”.`, "success");
      setFields(EMPTY_FIELDS);
      titleInput.current?.focus();
    } catch (error) {
      setFailure(explainError(error));
    } finally {
      setBusy(false);
    }
  };

  return (
    <form class="new-task" onSubmit={onSubmit} noValidate>
      <FormMessage error={failure?.message || undefined} />
      <div class="new-task-row">
        <div class="field grow">
          <label for="new-task-title">New task</label>
          <input
            id="new-task-title"
            ref={titleInput}
            name="title"
            value={fields.title}
            maxLength={200}
            placeholder="What needs doing?"
            autoComplete="off"
            aria-invalid={failure?.fields.title ? "true" : undefined}
            aria-describedby={failure?.fields.title ? "new-task-title-error" : undefined}
            onInput={(event) => setField("title", event.currentTarget.value)}
          />
          {failure?.fields.title && (
            <p id="new-task-title-error" class="field-error">
              {failure.fields.title}
            </p>
          )}
        </div>
        <button
          type="button"
          class="button button-quiet"
          aria-expanded={showDetails}
          aria-controls={detailsId}
          onClick={() => setShowDetails((shown) => !shown)}
        >
          {showDetails ? "Fewer details" : "Details"}
        </button>
        <SubmitButton busy={busy} busyLabel="Adding…">
          Add task
        </SubmitButton>
      </div>
      <div id={detailsId} class="new-task-details" hidden={!showDetails}>
        <TaskDetailsFields fields={fields} setField={setField} failure={failure} />
      </div>
    </form>
  );
}

/** A modal <dialog> that opens when mounted and calls onClose when dismissed (Esc, Cancel). */
function Dialog({
  labelledBy,
  onClose,
  children,
  class: className = "",
}: {
  labelledBy: string;
  onClose(): void;
  children: ComponentChildren;
  class?: string;
}) {
  const dialog = useRef<HTMLDialogElement>(null);
  useEffect(() => {
    const opener = document.activeElement as HTMLElement | null;
    dialog.current?.showModal();
    return () => {
      // Give focus back to what opened the dialog; if that is gone (a deleted task's
      // button), to the page heading rather than nowhere.
      if (opener?.isConnected) opener.focus();
      else document.querySelector<HTMLElement>("[data-page-heading]")?.focus();
    };
  }, []);
  return (
    <dialog
      ref={dialog}
      class={`dialog ${className}`}
      aria-labelledby={labelledBy}
      onCancel={(event) => {
        event.preventDefault();
        onClose();
      }}
    >
      {children}
    </dialog>
  );
}

export function EditTaskDialog({
  task: initialTask,
  onSaved,
  onGone,
  onClose,
}: {
  task: Task;
  onSaved(task: Task): void;
  onGone(id: string): void;
  onClose(): void;
}) {
  const announce = useAnnounce();
  const [base, setBase] = useState(initialTask);
  const [fields, setFields] = useState(() => fieldsOf(initialTask));
  const [busy, setBusy] = useState(false);
  const [failure, setFailure] = useState<ErrorText | null>(null);
  const [conflict, setConflict] = useState("");
  const headingId = useId();
  const setField = (name: keyof TaskFields, value: string) => setFields((all) => ({ ...all, [name]: value }));

  const onSubmit = async (event: Event) => {
    event.preventDefault();
    if (busy) return;
    const original = fieldsOf(base);
    const changed = (Object.keys(fields) as (keyof TaskFields)[]).filter((name) =>
      name === "title" ? fields.title.trim() !== original.title : fields[name] !== original[name],
    );
    if (changed.length === 0) return onClose();
    if (!fields.title.trim()) {
      setFailure({ message: "", fields: { title: "Give the task a title." } });
      return;
    }
    setBusy(true);
    setFailure(null);
    setConflict("");
    try {
      const answer = await api.tasks.updateTask({
        task: create(TaskSchema, {
          id: base.id,
          etag: base.etag,
          title: fields.title.trim(),
          description: fields.description,
          priority: Number(fields.priority) as Priority,
          dueTime: inputValueToDue(fields.due_time),
        }),
        updateMask: create(FieldMaskSchema, { paths: changed }),
      });
      if (answer.task) onSaved(answer.task);
      announce(`Saved “${fields.title.trim()}”.`, "success");
      onClose();
    } catch (error) {
      const code = ConnectError.from(error).code;
      if (code === Code.Aborted) await reloadAfterConflict();
      else if (code === Code.NotFound) {
        onGone(base.id);
        announce("That task was deleted on another device.", "error");
        onClose();
      } else setFailure(explainError(error));
    } finally {
      setBusy(false);
    }
  };

  const reloadAfterConflict = async () => {
    try {
      const latest = (await api.tasks.getTask({ id: base.id })).task;
      if (!latest) throw new ConnectError("no task", Code.NotFound);
      setBase(latest);
      setFields(fieldsOf(latest));
      onSaved(latest);
      setConflict(
        "This task was changed on another device while you were editing. Its latest version is shown now: make your changes again and save.",
      );
    } catch (error) {
      if (ConnectError.from(error).code === Code.NotFound) {
        onGone(base.id);
        announce("That task was deleted on another device.", "error");
        onClose();
      } else setFailure(explainError(error));
    }
  };

  return (
    <Dialog labelledBy={headingId} onClose={onClose}>
      <form onSubmit={onSubmit} noValidate>
        <h2 id={headingId}>Edit task</h2>
        <FormMessage error={conflict || failure?.message || undefined} />
        <TextField
          label="Title"
          name="title"
          required
          maxLength={200}
          value={fields.title}
          error={failure?.fields.title}
          autoFocus
          onInput={(event) => setField("title", event.currentTarget.value)}
        />
        <TaskDetailsFields fields={fields} setField={setField} failure={failure} />
        <div class="dialog-actions">
          <button type="button" class="button" onClick={onClose}>
            Cancel
          </button>
          <SubmitButton busy={busy} busyLabel="Saving…">
            Save
          </SubmitButton>
        </div>
      </form>
    </Dialog>
  );
}

export function DeleteTaskDialog({
  task,
  onDeleted,
  onReloaded,
  onClose,
}: {
  task: Task;
  onDeleted(id: string): void;
  onReloaded(task: Task): void;
  onClose(): void;
}) {
  const announce = useAnnounce();
  const [busy, setBusy] = useState(false);
  const [message, setMessage] = useState("");
  const [current, setCurrent] = useState(task);
  const headingId = useId();

  const onSubmit = async (event: Event) => {
    event.preventDefault();
    if (busy) return;
    setBusy(true);
    setMessage("");
    try {
      await api.tasks.deleteTask({ id: current.id, etag: current.etag });
      onDeleted(current.id);
      announce(`Deleted “${current.title}”.`, "success");
      onClose();
    } catch (error) {
      const code = ConnectError.from(error).code;
      if (code === Code.NotFound) {
        onDeleted(current.id);
        onClose();
      } else if (code === Code.Aborted) {
        try {
          const latest = (await api.tasks.getTask({ id: current.id })).task;
          if (latest) {
            setCurrent(latest);
            onReloaded(latest);
          }
          setMessage("This task was changed on another device. Check it below, and delete it again if you still want to.");
        } catch (reloadError) {
          setMessage(explainError(reloadError).message);
        }
      } else setMessage(explainError(error).message);
    } finally {
      setBusy(false);
    }
  };

  return (
    <Dialog labelledBy={headingId} onClose={onClose} class="dialog-small">
      <form onSubmit={onSubmit}>
        <h2 id={headingId}>Delete this task?</h2>
        <FormMessage error={message || undefined} />
        <p>
          “<strong>{current.title}</strong>” will be deleted on all your devices. This cannot be undone.
        </p>
        <div class="dialog-actions">
          <button type="button" class="button" onClick={onClose} autoFocus>
            Keep it
          </button>
          <SubmitButton busy={busy} busyLabel="Deleting…" class="button button-danger">
            Delete
          </SubmitButton>
        </div>
      </form>
    </Dialog>
  );
}

/** A version 4 UUID from the browser's random source (randomUUID needs a secure context). */
function randomUuid(): string {
  if (typeof crypto.randomUUID === "function") return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6]! & 0x0f) | 0x40;
  bytes[8] = (bytes[8]! & 0x3f) | 0x80;
  const hex = [...bytes].map((byte) => byte.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}
