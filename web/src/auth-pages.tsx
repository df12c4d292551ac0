/**
 * The pages of a visitor who is not (or not necessarily) signed in: sign in, sign up,
 * forgot password, and the two pages that mail links open, /reset-password?token=…
 * and /verify-email?token=….
 *
 * Decision a reader must know: a mail link's token is taken out of the address bar as
 * soon as the page reads it (history.replaceState), so it does not stay in the history
 * or travel on in a Referer header; the page keeps it in memory only.
 */

import type { User } from "@todo/client";
import { Code } from "@todo/client";
import type { ComponentChildren } from "preact";
import { useEffect, useRef, useState } from "preact/hooks";

import { api } from "./api.js";
import { type ErrorText, explainError } from "./error-text.js";
import { FormMessage, SubmitButton, TextField } from "./form.js";
import { Link } from "./router.js";

const PASSWORD_HINT = "8 to 128 characters. A few unrelated words make a strong one.";

function usePageTitle(title: string) {
  useEffect(() => {
    document.title = `${title} · Todo`;
  }, [title]);
}

/** Form state shared by every page here: values by field name, busy flag, errors. */
function useForm<Fields extends Record<string, string>>(initial: Fields) {
  const [values, setValues] = useState(initial);
  const [busy, setBusy] = useState(false);
  const [failure, setFailure] = useState<ErrorText | null>(null);
  const bind = (name: keyof Fields & string) => ({
    name,
    value: values[name],
    error: failure?.fields[name],
    onInput: (event: Event) => setValues((all) => ({ ...all, [name]: (event.currentTarget as HTMLInputElement).value })),
  });
  /** Runs `action` unless already busy; its failure is shown with `wording`. */
  const submit = (action: () => Promise<void>, wording?: Parameters<typeof explainError>[1]) => async (event: Event) => {
    event.preventDefault();
    const form = event.currentTarget as HTMLFormElement; // currentTarget is gone after the await
    if (busy) return;
    setBusy(true);
    setFailure(null);
    try {
      await action();
    } catch (error) {
      const explained = explainError(error, wording);
      setFailure(explained);
      focusFirstInvalid(form, explained);
    } finally {
      setBusy(false);
    }
  };
  return { values, setValues, busy, failure, setFailure, bind, submit };
}

/** Moves focus to the first field with an error (after Preact rendered it). */
function focusFirstInvalid(form: HTMLFormElement, explained: ErrorText) {
  const names = Object.keys(explained.fields);
  if (names.length === 0) return;
  requestAnimationFrame(() => {
    const field = [...form.elements].find(
      (element): element is HTMLInputElement => element instanceof HTMLInputElement && names.includes(element.name),
    );
    field?.focus();
  });
}

/** Reads `?token=` once and removes it from the address bar. */
function useLinkToken(): string {
  const [token] = useState(() => new URLSearchParams(location.search).get("token") ?? "");
  useEffect(() => {
    if (location.search) history.replaceState(history.state, "", location.pathname);
  }, []);
  return token;
}

function AuthCard({ title, intro, children }: { title: string; intro?: string; children: ComponentChildren }) {
  usePageTitle(title);
  return (
    <div class="auth-card">
      <h1 tabIndex={-1} data-page-heading>
        {title}
      </h1>
      {intro && <p class="lead">{intro}</p>}
      {children}
    </div>
  );
}

export function SignInPage({ notice, onSignedIn }: { notice?: string | undefined; onSignedIn(user: User): void }) {
  const form = useForm({ email: "", password: "" });
  const onSubmit = form.submit(
    async () => {
      const answer = await api.auth.login({ email: form.values.email, password: form.values.password });
      if (!answer.tokens || !answer.user) throw new Error("incomplete answer");
      api.session.signIn(answer.tokens);
      onSignedIn(answer.user);
    },
    { [Code.Unauthenticated]: "That email and password do not match an account." },
  );
  return (
    <AuthCard title="Sign in" intro="Welcome back. Your tasks are waiting.">
      {notice && (
        <p class="notice" role="status">
          {notice}
        </p>
      )}
      <form onSubmit={onSubmit} noValidate>
        <FormMessage error={form.failure?.message} />
        <TextField label="Email" type="email" autoComplete="username" required {...form.bind("email")} />
        <TextField label="Password" type="password" autoComplete="current-password" required {...form.bind("password")} />
        <div class="form-actions">
          <SubmitButton busy={form.busy} busyLabel="Signing in…">
            Sign in
          </SubmitButton>
          <Link href="/forgot-password">Forgot your password?</Link>
        </div>
      </form>
      <p class="switch">
        New here? <Link href="/sign-up">Create an account</Link>
      </p>
    </AuthCard>
  );
}

export function SignUpPage({ onSignedIn }: { onSignedIn(user: User): void }) {
  const form = useForm({ display_name: "", email: "", password: "" });
  const onSubmit = form.submit(
    async () => {
      const answer = await api.auth.register({
        displayName: form.values.display_name.trim(),
        email: form.values.email,
        password: form.values.password,
      });
      if (!answer.tokens || !answer.user) throw new Error("incomplete answer");
      api.session.signIn(answer.tokens);
      onSignedIn(answer.user);
    },
    { [Code.AlreadyExists]: "An account with this email already exists. Sign in instead?" },
  );
  return (
    <AuthCard title="Create your account" intro="One list for everything you need to do, on all your devices.">
      <form onSubmit={onSubmit} noValidate>
        <FormMessage error={form.failure?.message} />
        <TextField label="Name" optional autoComplete="name" maxLength={100} {...form.bind("display_name")} />
        <TextField label="Email" type="email" autoComplete="email" required {...form.bind("email")} />
        <TextField
          label="Password"
          type="password"
          autoComplete="new-password"
          required
          hint={PASSWORD_HINT}
          {...form.bind("password")}
        />
        <div class="form-actions">
          <SubmitButton busy={form.busy} busyLabel="Creating account…">
            Create account
          </SubmitButton>
        </div>
      </form>
      <p class="switch">
        Already have an account? <Link href="/sign-in">Sign in</Link>
      </p>
    </AuthCard>
  );
}

export function ForgotPasswordPage() {
  const form = useForm({ email: "" });
  const [sentTo, setSentTo] = useState("");
  const onSubmit = form.submit(async () => {
    await api.auth.requestPasswordReset({ email: form.values.email });
    setSentTo(form.values.email.trim());
  });
  return (
    <AuthCard title="Reset your password" intro="Enter your email and we will send you a link to choose a new password.">
      <form onSubmit={onSubmit} noValidate>
        <FormMessage
          error={form.failure?.message}
          success={
            sentTo
              ? `If an account exists for ${sentTo}, a link is on its way. It works for 30 minutes. Check your spam folder too.`
              : undefined
          }
        />
        <TextField label="Email" type="email" autoComplete="email" required {...form.bind("email")} />
        <div class="form-actions">
          <SubmitButton busy={form.busy} busyLabel="Sending…">
            Send reset link
          </SubmitButton>
          <Link href="/sign-in">Back to sign in</Link>
        </div>
      </form>
    </AuthCard>
  );
}

export function ResetPasswordPage() {
  const token = useLinkToken();
  const form = useForm({ new_password: "", confirm_password: "" });
  const [done, setDone] = useState(false);
  const onSubmit = form.submit(
    async () => {
      if (form.values.new_password !== form.values.confirm_password) {
        form.setFailure({ message: "Please correct the highlighted fields.", fields: { confirm_password: "The two passwords differ." } });
        return;
      }
      await api.auth.resetPassword({ token, newPassword: form.values.new_password });
      setDone(true);
    },
    { [Code.Unauthenticated]: "This reset link has expired or was already used. Ask for a new one." },
  );
  if (!token) {
    return (
      <AuthCard title="Choose a new password">
        <p>This link is incomplete. Open the link from the email again, or ask for a new one.</p>
        <p>
          <Link href="/forgot-password">Ask for a new link</Link>
        </p>
      </AuthCard>
    );
  }
  if (done) {
    return (
      <AuthCard title="Password changed">
        <p role="status">Your password is changed, and every device was signed out. Sign in with your new password.</p>
        <p>
          <Link href="/sign-in" class="button button-primary">
            Sign in
          </Link>
        </p>
      </AuthCard>
    );
  }
  return (
    <AuthCard title="Choose a new password">
      <form onSubmit={onSubmit} noValidate>
        <FormMessage error={form.failure?.message} />
        <TextField
          label="New password"
          type="password"
          autoComplete="new-password"
          required
          hint={PASSWORD_HINT}
          {...form.bind("new_password")}
        />
        <TextField label="Repeat the new password" type="password" autoComplete="new-password" required {...form.bind("confirm_password")} />
        <div class="form-actions">
          <SubmitButton busy={form.busy} busyLabel="Saving…">
            Set new password
          </SubmitButton>
        </div>
      </form>
      {form.failure && !form.failure.fields.new_password && !form.failure.fields.confirm_password && (
        <p>
          <Link href="/forgot-password">Ask for a new link</Link>
        </p>
      )}
    </AuthCard>
  );
}

export function VerifyEmailPage({ user, onUserChanged }: { user: User | null; onUserChanged(user: User): void }) {
  const token = useLinkToken();
  const [state, setState] = useState<"working" | "verified" | "failed">(token ? "working" : "failed");
  const [message, setMessage] = useState(token ? "" : "This link is incomplete. Open the link from the email again.");
  const started = useRef(false);
  useEffect(() => {
    if (!token || started.current) return;
    started.current = true;
    api.auth
      .verifyEmail({ token })
      .then((answer) => {
        setState("verified");
        // Not `user`: this callback keeps the value from when the page opened, usually null
        // (the account still loading), and the account loaded meanwhile would keep showing
        // "not verified". The session says whose tab this is.
        if (answer.user && answer.user.id === api.session.tokens?.userId) onUserChanged(answer.user);
      })
      .catch((error: unknown) => {
        setState("failed");
        setMessage(
          explainError(error, {
            [Code.Unauthenticated]:
              "This link has expired or was already used. Sign in and ask for a new one from the banner above your tasks.",
          }).message,
        );
      });
  }, [token]);
  return (
    <AuthCard title="Verify your email">
      <div role="status">
        {state === "working" && <p>Checking your link…</p>}
        {state === "verified" && <p class="form-success">Your email address is verified. Thank you!</p>}
      </div>
      <div role="alert">{state === "failed" && <p class="form-error">{message}</p>}</div>
      {state !== "working" && (
        <p>
          {user ? (
            <Link href="/" class="button button-primary">
              Go to your tasks
            </Link>
          ) : (
            <Link href="/sign-in" class="button button-primary">
              Sign in
            </Link>
          )}
        </p>
      )}
    </AuthCard>
  );
}
