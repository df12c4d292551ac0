/**
 * The account page: profile, signed-in sessions (revoke one, or all but this one),
 * change password, delete the account.
 *
 * Decisions a reader must know:
 * - ChangePassword ends every other session and answers with a fresh pair for this one;
 *   the pair goes straight into the session (every tab of this browser picks it up), or
 *   the next refresh would present a token the server already retired.
 * - "Sign out everywhere else" is RevokeSession for every session not marked `current`,
 *   all at once; the other devices notice at their next refresh, or sooner when their
 *   live stream ends.
 */

import { Code, errorCode, type Session as ApiSession, type User } from "@todo/client";
import { useCallback, useEffect, useState } from "preact/hooks";

import { api } from "./api.js";
import { useAnnounce } from "./announcer.js";
import { describeDevice, formatDate, formatDateTime, pluralize } from "./display-format.js";
import { type ErrorText, explainError } from "./error-text.js";
import { FormMessage, SubmitButton, TextField } from "./form.js";

type EndSession = (notice: string, options: { tellServer: boolean }) => Promise<void>;

export function AccountPage({ user, endSession }: { user: User; endSession: EndSession }) {
  useEffect(() => {
    document.title = "Account · Todo";
  }, []);
  return (
    <div class="account-page">
      <h1 tabIndex={-1} data-page-heading>
        Account
      </h1>
      <section class="card" aria-labelledby="profile-heading">
        <h2 id="profile-heading">Profile</h2>
        <dl class="profile">
          {user.displayName && (
            <>
              <dt>Name</dt>
              <dd>{user.displayName}</dd>
            </>
          )}
          <dt>Email</dt>
          <dd>
            {user.email}{" "}
            {user.emailVerified ? <span class="badge badge-ok">Verified</span> : <span class="badge badge-warn">Not verified</span>}
          </dd>
          <dt>Member since</dt>
          <dd>{formatDate(user.createTime)}</dd>
        </dl>
      </section>
      <SessionsSection />
      <ChangePasswordSection email={user.email} />
      <DeleteAccountSection endSession={endSession} />
    </div>
  );
}

function SessionsSection() {
  const announce = useAnnounce();
  const [sessions, setSessions] = useState<ApiSession[] | null>(null);
  const [error, setError] = useState("");
  const [busyIds, setBusyIds] = useState<Set<string>>(new Set());

  const load = useCallback(async () => {
    try {
      const answer = await api.auth.listSessions({});
      // This device first, then the most recently active.
      const sorted = [...answer.sessions].sort(
        (a, b) => Number(b.current) - Number(a.current) || Number(b.lastRefreshTime?.seconds ?? 0n) - Number(a.lastRefreshTime?.seconds ?? 0n),
      );
      setSessions(sorted);
      setError("");
    } catch (failure) {
      setError(explainError(failure).message);
    }
  }, []);

  useEffect(() => {
    void load();
    // Another tab may change the list (e.g. a password change); look again when shown.
    const onVisible = () => document.visibilityState === "visible" && void load();
    document.addEventListener("visibilitychange", onVisible);
    return () => document.removeEventListener("visibilitychange", onVisible);
  }, [load]);

  const revoke = async (targets: ApiSession[]) => {
    setBusyIds(new Set(targets.map((session) => session.id)));
    const results = await Promise.allSettled(targets.map((session) => api.auth.revokeSession({ sessionId: session.id })));
    // NOT_FOUND: that session ended meanwhile, which is what the user wanted anyway.
    const failed = results.filter((result) => result.status === "rejected" && errorCode(result.reason) !== Code.NotFound);
    setBusyIds(new Set());
    await load();
    if (failed.length > 0) {
      announce(explainError((failed[0] as PromiseRejectedResult).reason).message, "error");
    } else {
      announce(
        targets.length === 1 ? "That device is signed out." : `Signed out ${pluralize(targets.length, "other device", "other devices")}.`,
        "success",
      );
    }
  };

  const others = sessions?.filter((session) => !session.current) ?? [];
  return (
    <section class="card" aria-labelledby="sessions-heading">
      <div class="section-heading-row">
        <h2 id="sessions-heading">Where you are signed in</h2>
        {others.length > 0 && (
          <button
            type="button"
            class="button button-danger-quiet"
            onClick={() => void revoke(others)}
            aria-disabled={busyIds.size > 0 ? "true" : undefined}
          >
            Sign out everywhere else
          </button>
        )}
      </div>
      {error && (
        <p class="form-error" role="alert">
          {error}
        </p>
      )}
      {sessions === null && !error && <p role="status">Loading sessions…</p>}
      {sessions && (
        <ul class="session-list" aria-label="Sessions">
          {sessions.map((session) => (
            <li key={session.id} class="session" data-session-id={session.id} data-current={session.current ? "true" : undefined}>
              <div>
                <p class="session-device">
                  {describeDevice(session.userAgent)}
                  {session.current && <span class="badge badge-ok">This device</span>}
                </p>
                <p class="session-meta">
                  Signed in {formatDateTime(session.createTime)} · last active {formatDateTime(session.lastRefreshTime ?? session.createTime)}
                </p>
              </div>
              {!session.current && (
                <button
                  type="button"
                  class="button button-small"
                  onClick={() => void revoke([session])}
                  aria-disabled={busyIds.has(session.id) ? "true" : undefined}
                  aria-label={`Sign out ${describeDevice(session.userAgent)}, signed in ${formatDateTime(session.createTime)}`}
                >
                  {busyIds.has(session.id) ? "Signing out…" : "Sign out"}
                </button>
              )}
            </li>
          ))}
        </ul>
      )}
      {sessions && others.length === 0 && <p class="muted">No other devices are signed in.</p>}
    </section>
  );
}

function ChangePasswordSection({ email }: { email: string }) {
  const announce = useAnnounce();
  const [values, setValues] = useState({ current_password: "", new_password: "", confirm_password: "" });
  const [busy, setBusy] = useState(false);
  const [failure, setFailure] = useState<ErrorText | null>(null);
  const [success, setSuccess] = useState("");

  const bind = (name: keyof typeof values) => ({
    name,
    value: values[name],
    error: failure?.fields[name],
    onInput: (event: Event) => setValues((all) => ({ ...all, [name]: (event.currentTarget as HTMLInputElement).value })),
  });

  const onSubmit = async (event: Event) => {
    event.preventDefault();
    if (busy) return;
    setSuccess("");
    if (values.new_password !== values.confirm_password) {
      setFailure({ message: "Please correct the highlighted fields.", fields: { confirm_password: "The two new passwords differ." } });
      return;
    }
    setBusy(true);
    setFailure(null);
    try {
      const answer = await api.auth.changePassword({ currentPassword: values.current_password, newPassword: values.new_password });
      if (answer.tokens) api.session.replaceTokens(answer.tokens);
      setValues({ current_password: "", new_password: "", confirm_password: "" });
      setSuccess("Password changed. Every other device was signed out.");
      announce("Password changed.", "success");
    } catch (error) {
      // UNAUTHENTICATED here means the current password is wrong.
      const explained = explainError(error, { [Code.Unauthenticated]: "Please correct the highlighted fields." });
      if (errorCode(error) === Code.Unauthenticated) explained.fields.current_password = "This is not your current password.";
      setFailure(explained);
    } finally {
      setBusy(false);
    }
  };

  return (
    <section class="card" aria-labelledby="password-heading">
      <h2 id="password-heading">Change password</h2>
      <form onSubmit={onSubmit} noValidate>
        <FormMessage error={failure?.message} success={success || undefined} />
        {/* Lets password managers file the new password under the right account. */}
        <input type="email" name="username" autoComplete="username" value={email} readOnly hidden />
        <TextField label="Current password" type="password" autoComplete="current-password" required {...bind("current_password")} />
        <TextField
          label="New password"
          type="password"
          autoComplete="new-password"
          required
          hint="8 to 128 characters. Other devices will be signed out."
          {...bind("new_password")}
        />
        <TextField label="Repeat the new password" type="password" autoComplete="new-password" required {...bind("confirm_password")} />
        <div class="form-actions">
          <SubmitButton busy={busy} busyLabel="Changing…">
            Change password
          </SubmitButton>
        </div>
      </form>
    </section>
  );
}

function DeleteAccountSection({ endSession }: { endSession: EndSession }) {
  const [open, setOpen] = useState(false);
  const [password, setPassword] = useState("");
  const [busy, setBusy] = useState(false);
  const [failure, setFailure] = useState<ErrorText | null>(null);

  const onSubmit = async (event: Event) => {
    event.preventDefault();
    if (busy) return;
    setBusy(true);
    setFailure(null);
    try {
      await api.auth.deleteAccount({ password });
      await endSession("Your account and all its tasks were deleted. Goodbye!", { tellServer: false });
    } catch (error) {
      const explained = explainError(error, { [Code.Unauthenticated]: "Please correct the highlighted fields." });
      if (errorCode(error) === Code.Unauthenticated) explained.fields.password = "This is not your password.";
      setFailure(explained);
    } finally {
      setBusy(false);
    }
  };

  return (
    <section class="card danger-zone" aria-labelledby="delete-heading">
      <h2 id="delete-heading">Delete account</h2>
      <p>This deletes your account and all your tasks on every device, for good.</p>
      {!open ? (
        <button type="button" class="button button-danger-quiet" aria-expanded="false" onClick={() => setOpen(true)}>
          Delete my account…
        </button>
      ) : (
        <form onSubmit={onSubmit} noValidate>
          <FormMessage error={failure?.message} />
          <TextField
            label="Your password, to confirm"
            name="password"
            type="password"
            autoComplete="current-password"
            required
            value={password}
            error={failure?.fields.password}
            autoFocus
            onInput={(event) => setPassword(event.currentTarget.value)}
          />
          <div class="form-actions">
            <SubmitButton busy={busy} busyLabel="Deleting…" class="button button-danger">
              Delete my account and tasks
            </SubmitButton>
            <button type="button" class="button" onClick={() => setOpen(false)}>
              Cancel
            </button>
          </div>
        </form>
      )}
    </section>
  );
}
