/**
 * The app shell: who is signed in, which page shows, the header and the landmarks.
 *
 * Decisions a reader must know:
 * - The session (clients/web) is the truth about being signed in. The shell listens to
 *   it, so a sign-out anywhere (this tab, another tab, or a refresh the server refused
 *   because the session was revoked) lands every tab on the sign-in page, with a note.
 * - On every page change, focus moves to the page's <h1> (tabindex -1), so keyboard and
 *   screen-reader users start at the top of the new page, as after a full load.
 */

import { Code, ConnectError, type SignOutReason, type User } from "@todo/client";
import { useCallback, useEffect, useRef, useState } from "preact/hooks";

import { AccountPage } from "./account-page.js";
import { AnnouncerProvider } from "./announcer.js";
import { api } from "./api.js";
import { ForgotPasswordPage, ResetPasswordPage, SignInPage, SignUpPage, VerifyEmailPage } from "./auth-pages.js";
import { explainError } from "./error-text.js";
import { Link, navigate, type RoutePath, useLocation } from "./router.js";
import { TasksPage } from "./tasks-page.js";

const SIGN_OUT_NOTICES: Record<SignOutReason, string> = {
  local: "You are signed out.",
  revoked: "Your session has ended: it was signed out from another device, or it expired. Please sign in again.",
  "other-tab": "You were signed out in another tab.",
};

const PUBLIC_ONLY: RoutePath[] = ["/sign-in", "/sign-up", "/forgot-password"];
const SIGNED_IN_ONLY: RoutePath[] = ["/", "/account"];

export function App() {
  return (
    <AnnouncerProvider>
      <Shell />
    </AnnouncerProvider>
  );
}

function Shell() {
  const url = useLocation();
  const path = url.pathname as RoutePath;
  const [signedIn, setSignedIn] = useState(api.session.signedIn);
  const [user, setUserState] = useState<User | null>(null);
  /**
   * Bumped with every change of `user`, so an account load started before the change cannot
   * undo it when it answers. (An effect's cleanup is not enough: Preact runs it after the next
   * paint, and an answer arriving before that would overwrite, say, the verified account that
   * VerifyEmail just set with the unverified one read a moment earlier.)
   */
  const userVersion = useRef(0);
  const setUser = useCallback((next: User | null) => {
    userVersion.current++;
    setUserState(next);
  }, []);
  const [userError, setUserError] = useState("");
  const [signInNotice, setSignInNotice] = useState<string>();
  /** A notice to show instead of the usual one for the next sign-out (e.g. "account deleted"). */
  const nextSignOutNotice = useRef<string>();

  useEffect(
    () =>
      api.session.subscribe((change) => {
        if (change.type === "signed-out") {
          setSignedIn(false);
          setUser(null);
          setSignInNotice(nextSignOutNotice.current ?? SIGN_OUT_NOTICES[change.reason]);
          nextSignOutNotice.current = undefined;
          const here = location.pathname as RoutePath;
          if (SIGNED_IN_ONLY.includes(here)) navigate("/sign-in", { replace: true });
        } else if (change.type === "signed-in") {
          setSignedIn(true);
          setUser(null); // possibly another account: load it again
          setSignInNotice(undefined);
        }
      }),
    [],
  );

  // Load the account of the session (after a reload, or a sign-in in another tab).
  useEffect(() => {
    if (!signedIn || user) return;
    const version = userVersion.current;
    setUserError("");
    api.auth
      .getCurrentUser({})
      .then((answer) => {
        if (userVersion.current === version && answer.user) setUser(answer.user);
      })
      .catch((error: unknown) => {
        if (userVersion.current !== version) return;
        // A refused session signs out through the listener above; anything else is shown.
        if (ConnectError.from(error).code !== Code.Unauthenticated) setUserError(explainError(error).message);
      });
  }, [signedIn, user, setUser]);

  // Keep people on pages that fit their state.
  useEffect(() => {
    if (!signedIn && SIGNED_IN_ONLY.includes(path)) navigate("/sign-in", { replace: true });
    if (signedIn && PUBLIC_ONLY.includes(path)) navigate("/", { replace: true });
  }, [signedIn, path]);

  // Move focus to the new page's heading.
  const firstRender = useRef(true);
  useEffect(() => {
    if (firstRender.current) {
      firstRender.current = false;
      return;
    }
    requestAnimationFrame(() => document.querySelector<HTMLElement>("[data-page-heading]")?.focus());
  }, [path]);

  const onSignedIn = useCallback((signedInUser: User) => {
    setUser(signedInUser);
    setSignInNotice(undefined);
    navigate("/");
  }, []);

  const endSession = useCallback(async (notice: string, { tellServer }: { tellServer: boolean }) => {
    nextSignOutNotice.current = notice;
    if (tellServer) await api.session.signOut();
    else api.session.forget("local");
  }, []);

  let page;
  if (path === "/reset-password") page = <ResetPasswordPage />;
  else if (path === "/verify-email") page = <VerifyEmailPage user={user} onUserChanged={setUser} />;
  else if (!signedIn) {
    if (path === "/sign-up") page = <SignUpPage onSignedIn={onSignedIn} />;
    else if (path === "/forgot-password") page = <ForgotPasswordPage />;
    else page = <SignInPage notice={signInNotice} onSignedIn={onSignedIn} />;
  } else if (!user) {
    page = userError ? (
      <div class="centered" role="alert">
        <p>{userError}</p>
        <button type="button" class="button" onClick={() => location.reload()}>
          Try again
        </button>
      </div>
    ) : (
      <p class="centered loading" role="status">
        Loading your tasks…
      </p>
    );
  } else if (path === "/account") page = <AccountPage user={user} endSession={endSession} />;
  else page = <TasksPage user={user} onUserChanged={setUser} />;

  return (
    <>
      <a class="skip-link" href="#main">
        Skip to content
      </a>
      <header class="site-header">
        <div class="site-header-inner">
          <Link href="/" class="brand">
            <span class="brand-mark" aria-hidden="true">
              ✓
            </span>
            Todo
          </Link>
          {signedIn && user && (
            <nav aria-label="Main">
              <ul class="nav-list">
                <li>
                  <Link href="/" aria-current={path === "/" ? "page" : undefined}>
                    Tasks
                  </Link>
                </li>
                <li>
                  <Link href="/account" aria-current={path === "/account" ? "page" : undefined}>
                    Account
                  </Link>
                </li>
                <li>
                  <button
                    type="button"
                    class="link-button"
                    onClick={() => void endSession(SIGN_OUT_NOTICES.local, { tellServer: true })}
                  >
                    Sign out
                  </button>
                </li>
              </ul>
            </nav>
          )}
        </div>
      </header>
      <main id="main" tabIndex={-1}>
        {page}
      </main>
      <footer class="site-footer">
        <p>Changes appear on all your devices as they happen.</p>
      </footer>
    </>
  );
}
