/**
 * The app's one connection to the API: the session and the AuthService and TaskService
 * clients, talking to the gateway on the page's own origin.
 *
 * Decision a reader must know: the only way to point the app at another origin is a
 * global that a test harness defines before the page loads (`window.__TODO_TEST__`,
 * set by web/test/journey.mjs through an init script). A query parameter would let any
 * link send a victim's refresh token to a server of the link author's choosing.
 */

import { createTodoApi } from "@todo/client";

/** What the journey test sets up before the app loads, and the hooks the app adds. */
export interface TestHooks {
  /** Where the API lives, when not on the page's origin (development only). */
  apiBaseUrl?: string;
  /** Spends the refresh token now, as an expiring access token would. */
  forceRefresh?: () => Promise<boolean>;
  /** The app's clients, to set up data quickly (e.g. enough tasks to page). */
  api?: typeof api;
}

declare global {
  interface Window {
    __TODO_TEST__?: TestHooks;
  }
}

export const testHooks: TestHooks | undefined = window.__TODO_TEST__;

export const api = createTodoApi({ baseUrl: testHooks?.apiBaseUrl ?? window.location.origin });

if (testHooks) {
  testHooks.forceRefresh = () => api.session.forceRefresh().then(() => true);
  testHooks.api = api;
}
