/**
 * Accessible form controls: every input has a real <label>, its hint and its error are
 * tied to it with aria-describedby, and an error sets aria-invalid. A FormMessage at the
 * top of a form carries the form-level error (role="alert", so it is announced).
 *
 * Decision a reader must know: `name` is the proto field name (see error-text.ts), so a
 * server's field violation finds its input by name.
 */

import type { ComponentChildren, InputHTMLAttributes, SelectHTMLAttributes, TextareaHTMLAttributes } from "preact";
import { useId } from "preact/hooks";

interface FieldProps {
  label: string;
  name: string;
  error?: string | undefined;
  hint?: ComponentChildren;
  optional?: boolean;
}

function describedBy(id: string, hint: unknown, error: unknown): string | undefined {
  const ids = [hint ? `${id}-hint` : "", error ? `${id}-error` : ""].filter(Boolean);
  return ids.length ? ids.join(" ") : undefined;
}

function FieldFrame({
  id,
  label,
  hint,
  error,
  optional,
  children,
}: { id: string; label: string; hint?: ComponentChildren; error?: string | undefined; optional?: boolean; children: ComponentChildren }) {
  return (
    <div class={`field${error ? " field-invalid" : ""}`}>
      <label for={id}>
        {label}
        {optional && <span class="optional"> (optional)</span>}
      </label>
      {children}
      {hint && (
        <p id={`${id}-hint`} class="field-hint">
          {hint}
        </p>
      )}
      {error && (
        <p id={`${id}-error`} class="field-error">
          {error}
        </p>
      )}
    </div>
  );
}

type InputProps = FieldProps & Omit<InputHTMLAttributes<HTMLInputElement>, "name" | "label" | "id">;

export function TextField({ label, name, error, hint, optional, ...input }: InputProps) {
  const id = useId();
  return (
    <FieldFrame id={id} label={label} hint={hint} error={error} optional={optional}>
      <input
        id={id}
        name={name}
        aria-invalid={error ? "true" : undefined}
        aria-describedby={describedBy(id, hint, error)}
        {...input}
      />
    </FieldFrame>
  );
}

type TextAreaProps = FieldProps & Omit<TextareaHTMLAttributes<HTMLTextAreaElement>, "name" | "label" | "id">;

export function TextAreaField({ label, name, error, hint, optional, ...textarea }: TextAreaProps) {
  const id = useId();
  return (
    <FieldFrame id={id} label={label} hint={hint} error={error} optional={optional}>
      <textarea
        id={id}
        name={name}
        aria-invalid={error ? "true" : undefined}
        aria-describedby={describedBy(id, hint, error)}
        {...textarea}
      />
    </FieldFrame>
  );
}

type SelectProps = FieldProps &
  Omit<SelectHTMLAttributes<HTMLSelectElement>, "name" | "label" | "id"> & { children: ComponentChildren };

export function SelectField({ label, name, error, hint, optional, children, ...select }: SelectProps) {
  const id = useId();
  return (
    <FieldFrame id={id} label={label} hint={hint} error={error} optional={optional}>
      <select
        id={id}
        name={name}
        aria-invalid={error ? "true" : undefined}
        aria-describedby={describedBy(id, hint, error)}
        {...select}
      >
        {children}
      </select>
    </FieldFrame>
  );
}

/** The form-level message: an error (announced at once) or a success note. */
export function FormMessage({ error, success }: { error?: string | undefined; success?: string | undefined }) {
  return (
    <>
      <div role="alert" class="form-alert-region">
        {error && <p class="form-error">{error}</p>}
      </div>
      <div role="status" class="form-status-region">
        {success && <p class="form-success">{success}</p>}
      </div>
    </>
  );
}

/**
 * A submit button that says what it is doing while busy. It stays focusable (aria-disabled,
 * not disabled, so focus is not lost); the form's handler ignores a submit while busy.
 */
export function SubmitButton({
  busy,
  busyLabel,
  children,
  class: className = "button button-primary",
}: {
  busy: boolean;
  busyLabel: string;
  children: ComponentChildren;
  class?: string;
}) {
  return (
    <button type="submit" class={className} aria-disabled={busy ? "true" : undefined}>
      {busy ? busyLabel : children}
    </button>
  );
}
