#!/usr/bin/env node
// The end-to-end journey: a real headless Chromium (Debian's /usr/bin/chromium, driven
// by playwright-core) uses the built app the way a person would, and every step
// asserts on what the page shows.
//
//   node test/journey.mjs <app-url> [--artifacts DIR] [--api URL] [--mail-dir DIR]
//
// <app-url>     where the app is served (the gateway, e.g. http://localhost:8080/).
// --artifacts   where to save PNG screenshots (default: web/test/artifacts).
// --api         development only: the API's origin when it is not the app's (the dev
//               stack beside a static server). The app learns it from a global that an
//               init script sets; the page's CSP is bypassed for that cross-origin API.
// --mail-dir    the auth-service's --mail-dir: lets the journey follow the links of the
//               verification and reset mails (.eml files), once those RPCs exist.
//
// Prints one line per step (ok / skip / FAIL) and exits 0 only if no step failed.
// The CORS step needs the gateway to allow the app's origin only (--allowed-origin):
// the journey serves a page of its own on another 127.0.0.1 port and expects the
// browser to refuse that page's call to the API.

import { mkdir, readdir, readFile, stat } from "node:fs/promises";
import http from "node:http";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { chromium } from "playwright-core";

const STEP_TIMEOUT_MS = 15_000;
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

function parseArgs(argv) {
  const options = {
    appUrl: "",
    artifacts: fileURLToPath(new URL("./artifacts", import.meta.url)),
    api: undefined,
    mailDir: undefined,
  };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--artifacts") options.artifacts = path.resolve(argv[++i]);
    else if (argv[i] === "--api") options.api = argv[++i].replace(/\/$/, "");
    else if (argv[i] === "--mail-dir") options.mailDir = path.resolve(argv[++i]);
    else if (!options.appUrl) options.appUrl = argv[i];
    else throw new Error(`unknown argument ${argv[i]}`);
  }
  if (!options.appUrl) {
    console.error("usage: node test/journey.mjs <app-url> [--artifacts DIR] [--api URL] [--mail-dir DIR]");
    process.exit(2);
  }
  options.appUrl = new URL(options.appUrl).toString();
  return options;
}

const options = parseArgs(process.argv.slice(2));
const appOrigin = new URL(options.appUrl).origin;
const apiOrigin = options.api ?? appOrigin;
const appPath = (route) => new URL(route, options.appUrl).toString();

const run = `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`;
const account = {
  name: "Journey",
  email: `journey-${run}@example.com`,
  password: "journey correct horse battery",
  newPassword: "journey second staple",
};

// ---- reporting ------------------------------------------------------------------

let stepNumber = 0;
let failed = false;
const browserLog = [];

async function step(title, body) {
  stepNumber++;
  try {
    const note = await body();
    const skipped = typeof note === "string" && note.startsWith("skip:");
    console.log(`${skipped ? "skip" : "ok  "} ${String(stepNumber).padStart(2)} ${title}${note ? ` (${skipped ? note.slice(5).trim() : note})` : ""}`);
  } catch (error) {
    failed = true;
    console.log(`FAIL ${String(stepNumber).padStart(2)} ${title}: ${error.message}`);
    throw new StopJourney();
  }
}

class StopJourney extends Error {}

/** A PNG of the whole page; `fullPage: false` for a modal dialog, whose backdrop covers only the viewport. */
async function screenshot(page, name, { fullPage = true } = {}) {
  await page.screenshot({ path: path.join(options.artifacts, name), fullPage });
}

function watchPage(page, label) {
  page.on("console", (message) => {
    if (message.type() === "error" || message.type() === "warning") browserLog.push(`[${label}] console.${message.type()}: ${message.text()}`);
  });
  page.on("pageerror", (error) => browserLog.push(`[${label}] page error: ${error.message}`));
  page.on("requestfailed", (request) => {
    const reason = request.failure()?.errorText ?? "";
    if (!reason.includes("ERR_ABORTED")) browserLog.push(`[${label}] request failed: ${request.url()} ${reason}`);
  });
  return page;
}

// ---- page helpers ----------------------------------------------------------------

async function newContext(browser, { colorScheme = "light", label }) {
  const context = await browser.newContext({
    viewport: { width: 1000, height: 760 },
    colorScheme,
    reducedMotion: "reduce",
    bypassCSP: options.api !== undefined,
  });
  await context.addInitScript((apiBaseUrl) => {
    window.__TODO_TEST__ = apiBaseUrl ? { apiBaseUrl } : {};
  }, options.api ?? null);
  context.on("page", (page) => watchPage(page, label));
  return context;
}

const heading = (page, name) => page.getByRole("heading", { level: 1, name });

async function expectHeading(page, name, timeout = STEP_TIMEOUT_MS) {
  await heading(page, name).waitFor({ state: "visible", timeout });
}

async function taskTitles(page) {
  return page.$$eval(".task-list .task-title", (labels) => labels.map((label) => label.textContent));
}

/** Waits until the list shows exactly `expected`, in order. */
async function expectTitles(page, expected, what) {
  try {
    await page.waitForFunction(
      (titles) => {
        const shown = [...document.querySelectorAll(".task-list .task-title")].map((label) => label.textContent);
        const busy = document.querySelector(".task-list[aria-busy='true']");
        return !busy && shown.length === titles.length && shown.every((title, i) => title === titles[i]);
      },
      expected,
      { timeout: STEP_TIMEOUT_MS },
    );
  } catch {
    throw new Error(`${what}: expected ${JSON.stringify(expected)}, the list shows ${JSON.stringify(await taskTitles(page))}`);
  }
}

async function expectCount(page, text) {
  const count = page.locator(".count");
  try {
    await page.waitForFunction((wanted) => document.querySelector(".count")?.textContent === wanted, text, { timeout: STEP_TIMEOUT_MS });
  } catch {
    throw new Error(`the count reads ${JSON.stringify(await count.textContent())}, expected ${JSON.stringify(text)}`);
  }
}

async function waitForText(page, text, timeout = STEP_TIMEOUT_MS) {
  await page.getByText(text).first().waitFor({ state: "visible", timeout });
}

/** Which of several texts shows first (for RPCs that may still be UNIMPLEMENTED). */
async function firstOf(page, texts, timeout = STEP_TIMEOUT_MS) {
  const deadline = Date.now() + timeout;
  while (Date.now() < deadline) {
    for (const text of texts) {
      if (await page.getByText(text).first().isVisible().catch(() => false)) return text;
    }
    await page.waitForTimeout(100);
  }
  throw new Error(`none of ${JSON.stringify(texts)} appeared`);
}

const UNIMPLEMENTED_TEXT = "This server does not offer that yet.";

async function addTask(page, { title, description, priority, dueInDays, keyboardOnly = false }) {
  const titleInput = page.getByLabel("New task", { exact: true });
  if (description || priority || dueInDays !== undefined) {
    const details = page.getByRole("button", { name: "Details" });
    if ((await details.count()) > 0) await details.click();
    if (description) await page.locator(".new-task").getByLabel("Notes").fill(description);
    if (priority) await page.locator(".new-task").getByLabel("Priority").selectOption({ label: priority });
    if (dueInDays !== undefined) await page.locator(".new-task").getByLabel("Due date").fill(isoDate(dueInDays));
  }
  if (keyboardOnly) {
    await titleInput.focus();
    await page.keyboard.type(title);
    await page.keyboard.press("Enter");
  } else {
    await titleInput.fill(title);
    await page.getByRole("button", { name: "Add task" }).click();
  }
  await page.locator(".task-list .task-title", { hasText: title }).first().waitFor({ timeout: STEP_TIMEOUT_MS });
  if (await page.getByRole("button", { name: "Fewer details" }).count()) await page.getByRole("button", { name: "Fewer details" }).click();
}

function isoDate(daysFromToday) {
  const date = new Date();
  date.setDate(date.getDate() + daysFromToday);
  const pad = (n) => String(n).padStart(2, "0");
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}`;
}

async function signIn(page, password) {
  await page.goto(appPath("/sign-in"));
  await expectHeading(page, "Sign in");
  await page.getByLabel("Email").fill(account.email);
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Sign in" }).click();
  await expectHeading(page, `${account.name}’s tasks`);
}

/** Every visible form control has an accessible name from a <label> or aria-label. */
async function expectLabelledControls(page) {
  const unlabelled = await page.$$eval("input:not([type=hidden]):not([hidden]), select, textarea", (controls) =>
    controls
      .filter((control) => control.offsetParent !== null && control.labels?.length === 0 && !control.getAttribute("aria-label"))
      .map((control) => control.outerHTML.slice(0, 80)),
  );
  if (unlabelled.length) throw new Error(`controls without a label: ${unlabelled.join(", ")}`);
}

/** The newest .eml in the mail dir that mentions `email` and a link with `route`, as a path + query. */
async function linkFromMail(route) {
  if (!options.mailDir) return null;
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    const names = (await readdir(options.mailDir).catch(() => [])).filter((name) => name.endsWith(".eml"));
    const mails = await Promise.all(
      names.map(async (name) => {
        const file = path.join(options.mailDir, name);
        return { text: await readFile(file, "utf8"), time: (await stat(file)).mtimeMs };
      }),
    );
    const unfolded = (text) => text.replace(/=\r?\n/g, "").replace(/=3D/gi, "=");
    const match = mails
      .filter((mail) => mail.text.includes(account.email))
      .sort((a, b) => b.time - a.time)
      .map((mail) => unfolded(mail.text).match(new RegExp(`https?://[^\\s"'<>]*${route}\\?token=[A-Za-z0-9_\\-.~%]+`)))
      .find(Boolean);
    if (match) {
      const url = new URL(match[0]);
      return `${url.pathname}${url.search}`;
    }
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  throw new Error(`no mail with a ${route} link for ${account.email} in ${options.mailDir}`);
}

/** Serves a page on another 127.0.0.1 port: the origin the gateway must not allow. */
async function serveForeignPage() {
  const server = http.createServer((_request, response) => {
    response.writeHead(200, { "content-type": "text/html; charset=utf-8" }).end("<!doctype html><title>Another site</title><p>Another site</p>");
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { server, origin: `http://127.0.0.1:${server.address().port}` };
}

/**
 * A JSON POST to the API from inside `page` (a non-simple request, so the browser asks
 * the gateway's CORS preflight first): "answered HTTP <status>" or "refused: <error>".
 */
function probeApiFrom(page) {
  return page.evaluate(async (apiOrigin) => {
    try {
      const response = await fetch(`${apiOrigin}/auth.v1.AuthService/Login`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ email: "nobody@example.com", password: "not a real password" }),
      });
      return `answered HTTP ${response.status}`;
    } catch (error) {
      return `refused: ${error}`;
    }
  }, apiOrigin);
}

// ---- the journey -----------------------------------------------------------------

async function journey(browser) {
  await mkdir(options.artifacts, { recursive: true });
  const home = await newContext(browser, { label: "tab A" });
  let refreshCalls = 0;
  home.on("request", (request) => {
    if (request.url().endsWith("/auth.v1.AuthService/Refresh")) refreshCalls++;
  });
  const tabA = await home.newPage();

  await step("the sign-in page shows for a visitor", async () => {
    await tabA.goto(options.appUrl);
    await expectHeading(tabA, "Sign in");
    await expectLabelledControls(tabA);
    await screenshot(tabA, "01-sign-in.png");
  });

  await step("sign up", async () => {
    await tabA.getByRole("link", { name: "Create an account" }).click();
    await expectHeading(tabA, "Create your account");
    await tabA.getByLabel("Name").fill(account.name);
    await tabA.getByLabel("Email").fill(account.email);
    await tabA.getByLabel("Password").fill("short");
    await tabA.getByRole("button", { name: "Create account" }).click();
    // The server's BadRequest field violation shows next to its field, which gets focus.
    await tabA.locator(".field-error", { hasText: "Must be at least 8 characters" }).waitFor({ timeout: STEP_TIMEOUT_MS });
    await tabA
      .waitForFunction(() => document.activeElement?.getAttribute("aria-invalid") === "true", null, { timeout: 2_000 })
      .catch(() => {
        throw new Error("focus did not move to the invalid field");
      });
    await screenshot(tabA, "02-sign-up-field-error.png");
    await tabA.getByLabel("Password").fill(account.password);
    await tabA.getByRole("button", { name: "Create account" }).click();
    await expectHeading(tabA, `${account.name}’s tasks`);
    await expectCount(tabA, "0 tasks");
    await waitForText(tabA, "Please verify your email address");
    return account.email;
  });

  let verificationRequested = false;
  await step("ask for the verification email (banner)", async () => {
    await tabA.getByRole("button", { name: "Send verification email" }).click();
    const shown = await firstOf(tabA, ["Sent! Open the link", UNIMPLEMENTED_TEXT]);
    if (shown === UNIMPLEMENTED_TEXT) return "skip: RequestEmailVerification is UNIMPLEMENTED on this server";
    verificationRequested = true;
  });

  await step("create four tasks (one by keyboard only)", async () => {
    await addTask(tabA, { title: "Buy milk", description: "Oat milk, two cartons", priority: "High", dueInDays: 1 });
    await addTask(tabA, { title: "Write report", priority: "Medium", dueInDays: 3 });
    await addTask(tabA, { title: "Call the plumber", priority: "Low" });
    await addTask(tabA, { title: "Water the plants", keyboardOnly: true });
    await expectTitles(tabA, ["Water the plants", "Call the plumber", "Write report", "Buy milk"], "newest first");
    await expectCount(tabA, "4 tasks");
    await expectLabelledControls(tabA);
  });

  await step("edit a task in the dialog (UpdateTask with mask and etag)", async () => {
    await tabA.getByRole("button", { name: "Edit “Call the plumber”" }).click();
    const dialog = tabA.getByRole("dialog", { name: "Edit task" });
    await dialog.waitFor();
    await dialog.getByLabel("Title").fill("Call the plumber about the leak");
    await dialog.getByLabel("Notes").fill("Kitchen sink, mornings only");
    await screenshot(tabA, "04-edit-dialog.png", { fullPage: false });
    await dialog.getByRole("button", { name: "Save" }).click();
    await dialog.waitFor({ state: "detached" });
    await expectTitles(tabA, ["Water the plants", "Call the plumber about the leak", "Write report", "Buy milk"], "after the edit");
    await waitForText(tabA, "Kitchen sink, mornings only");
  });

  await step("an edit that lost a race is reloaded, not written (ABORTED)", async () => {
    await tabA.getByRole("button", { name: "Edit “Write report”" }).click();
    const dialog = tabA.getByRole("dialog", { name: "Edit task" });
    await dialog.waitFor();
    // Meanwhile another tab of the same user saves a change to the same task.
    const otherTab = await home.newPage();
    await otherTab.goto(options.appUrl);
    await expectHeading(otherTab, `${account.name}’s tasks`);
    await otherTab.getByRole("button", { name: "Edit “Write report”" }).click();
    const otherDialog = otherTab.getByRole("dialog", { name: "Edit task" });
    await otherDialog.getByLabel("Title").fill("Write the quarterly report");
    await otherDialog.getByRole("button", { name: "Save" }).click();
    await otherDialog.waitFor({ state: "detached" });
    await otherTab.close();
    await dialog.getByLabel("Title").fill("Write report today");
    await dialog.getByRole("button", { name: "Save" }).click();
    await waitForText(tabA, "This task was changed on another device while you were editing");
    const reloadedTitle = await dialog.getByLabel("Title").inputValue();
    if (reloadedTitle !== "Write the quarterly report") throw new Error(`the dialog shows ${JSON.stringify(reloadedTitle)} after the conflict`);
    await dialog.getByRole("button", { name: "Cancel" }).click();
    await dialog.waitFor({ state: "detached" });
    await expectTitles(tabA, ["Water the plants", "Call the plumber about the leak", "Write the quarterly report", "Buy milk"], "after the conflict");
  });

  await step("complete a task (keyboard: Space on its checkbox)", async () => {
    const checkbox = tabA.getByRole("checkbox", { name: "Buy milk" });
    await checkbox.focus();
    await tabA.keyboard.press("Space");
    await tabA.waitForFunction(() => {
      const label = [...document.querySelectorAll(".task-title")].find((element) => element.textContent === "Buy milk");
      return label?.closest(".task")?.classList.contains("task-done");
    });
    if (!(await checkbox.isChecked())) throw new Error("the checkbox is not checked");
    await waitForText(tabA, "Marked “Buy milk” as done.");
  });

  await step("filter: done, open, all", async () => {
    await tabA.getByRole("radio", { name: "Done" }).check();
    await expectTitles(tabA, ["Buy milk"], "done");
    await expectCount(tabA, "1 task matches");
    await tabA.getByRole("radio", { name: "Open" }).check();
    await expectTitles(tabA, ["Water the plants", "Call the plumber about the leak", "Write the quarterly report"], "open");
    await expectCount(tabA, "3 tasks match");
    await tabA.getByRole("radio", { name: "All" }).check();
    await expectCount(tabA, "4 tasks");
  });

  await step("search titles and notes (debounced)", async () => {
    const search = tabA.getByLabel("Search");
    await search.fill("plumb");
    await expectTitles(tabA, ["Call the plumber about the leak"], "search 'plumb'");
    await expectCount(tabA, "1 task matches");
    await search.fill("OAT MILK");
    await expectTitles(tabA, ["Buy milk"], "search in the notes, any case");
    await search.fill("nothing like this");
    await waitForText(tabA, "No tasks match.");
    await search.fill("");
    await expectCount(tabA, "4 tasks");
  });

  await step("order by title, priority, due date, newest", async () => {
    const order = tabA.getByLabel("Sort by");
    await order.selectOption({ label: "Title" });
    await expectTitles(tabA, ["Buy milk", "Call the plumber about the leak", "Water the plants", "Write the quarterly report"], "by title");
    await order.selectOption({ label: "Priority" });
    await expectTitles(tabA, ["Buy milk", "Write the quarterly report", "Call the plumber about the leak", "Water the plants"], "by priority");
    await order.selectOption({ label: "Due date" });
    await expectTitles(tabA, ["Buy milk", "Write the quarterly report", "Call the plumber about the leak", "Water the plants"], "by due date");
    await order.selectOption({ label: "Newest first" });
    await expectTitles(tabA, ["Water the plants", "Call the plumber about the leak", "Write the quarterly report", "Buy milk"], "newest first");
    await screenshot(tabA, "03-task-list.png");
  });

  await step("delete a task (with its etag)", async () => {
    await tabA.getByRole("button", { name: "Delete “Water the plants”" }).click();
    const dialog = tabA.getByRole("dialog", { name: "Delete this task?" });
    await dialog.getByRole("button", { name: "Delete" }).click();
    await dialog.waitFor({ state: "detached" });
    await expectTitles(tabA, ["Call the plumber about the leak", "Write the quarterly report", "Buy milk"], "after the delete");
    await expectCount(tabA, "3 tasks");
  });

  const tabB = await home.newPage();
  await step("a second tab is signed in and sees tasks made in the first, live", async () => {
    await tabB.goto(options.appUrl);
    await expectHeading(tabB, `${account.name}’s tasks`);
    await expectTitles(tabB, ["Call the plumber about the leak", "Write the quarterly report", "Buy milk"], "tab B's list");
    for (const tab of [tabA, tabB]) await tab.locator(".live-live").waitFor({ timeout: STEP_TIMEOUT_MS });
    await tabB.evaluate(() => (window.notReloaded = true));
    await addTask(tabA, { title: "Made in tab A" });
    await tabB.locator(".task-list .task-title", { hasText: "Made in tab A" }).waitFor({ timeout: STEP_TIMEOUT_MS });
    await expectCount(tabB, "4 tasks");
    await addTask(tabB, { title: "Made in tab B" });
    await tabA.locator(".task-list .task-title", { hasText: "Made in tab B" }).waitFor({ timeout: STEP_TIMEOUT_MS });
    await tabB.getByRole("checkbox", { name: "Made in tab A" }).check();
    await tabA.waitForFunction(() =>
      [...document.querySelectorAll(".task-done .task-title")].some((label) => label.textContent === "Made in tab A"),
    );
    if (!(await tabB.evaluate(() => window.notReloaded === true))) throw new Error("tab B was reloaded");
  });

  await step("both tabs refresh at the same moment; one Refresh, nobody signed out", async () => {
    const before = await tabA.evaluate(() => JSON.parse(localStorage.getItem("todo.session")).refreshToken);
    const callsBefore = refreshCalls;
    const at = Date.now() + 400;
    const race = (page) =>
      page.evaluate(
        (when) => new Promise((resolve, reject) => setTimeout(() => window.__TODO_TEST__.forceRefresh().then(resolve, (error) => reject(new Error(String(error)))), when - Date.now())),
        at,
      );
    await Promise.all([race(tabA), race(tabB)]);
    const after = await tabB.evaluate(() => JSON.parse(localStorage.getItem("todo.session")).refreshToken);
    if (after === before) throw new Error("the pair was not rotated");
    if (refreshCalls - callsBefore !== 1) throw new Error(`${refreshCalls - callsBefore} Refresh calls, expected 1`);
    // Still signed in, with a working pair: a write in one tab shows in the other.
    await addTask(tabB, { title: "After the refresh race" });
    await tabA.locator(".task-list .task-title", { hasText: "After the refresh race" }).waitFor({ timeout: STEP_TIMEOUT_MS });
    for (const tab of [tabA, tabB]) await expectHeading(tab, `${account.name}’s tasks`, 1_000);
    return "1 Refresh call for 2 tabs";
  });

  const otherDevice = await newContext(browser, { colorScheme: "dark", label: "device 2" });
  const device2 = await otherDevice.newPage();
  await step("the account page lists both devices' sessions, this one marked", async () => {
    await signIn(device2, account.password);
    await screenshot(device2, "05-task-list-dark.png");
    await device2.getByRole("link", { name: "Account" }).click();
    await expectHeading(device2, "Account");
    await device2.locator(".session").nth(1).waitFor({ timeout: STEP_TIMEOUT_MS });
    const sessions = await device2.$$eval(".session", (items) => items.map((item) => item.dataset.current === "true"));
    if (sessions.length !== 2 || sessions.filter(Boolean).length !== 1) throw new Error(`sessions shown: ${JSON.stringify(sessions)}`);
    await waitForText(device2, "This device");
    await expectLabelledControls(device2);
    await screenshot(device2, "06-account-sessions.png");
    await tabA.getByRole("link", { name: "Account" }).click();
    await expectHeading(tabA, "Account");
    await tabA.locator(".session").nth(1).waitFor({ timeout: STEP_TIMEOUT_MS });
    await screenshot(tabA, "07-account-light.png");
    await tabA.getByRole("link", { name: "Tasks" }).click();
    await expectHeading(tabA, `${account.name}’s tasks`);
  });

  await step("device 2 signs out everywhere else; both tabs of device 1 end on the sign-in page", async () => {
    await device2.getByRole("button", { name: "Sign out everywhere else" }).click();
    await waitForText(device2, "No other devices are signed in.");
    let how = "the live stream ended UNAUTHENTICATED and the refresh was refused";
    try {
      await expectHeading(tabA, "Sign in", 6_000);
    } catch {
      // The server did not end the stream: the next refresh (the access token's expiry,
      // forced here) is refused instead.
      how = "the next refresh was refused (forced; the stream stayed open)";
      await tabA.evaluate(() => window.__TODO_TEST__.forceRefresh().catch(() => undefined));
    }
    for (const tab of [tabA, tabB]) {
      await expectHeading(tab, "Sign in");
      await waitForText(tab, "Your session has ended");
    }
    if (await tabA.evaluate(() => localStorage.getItem("todo.session") !== null)) throw new Error("the token pair is still stored");
    await screenshot(tabA, "08-signed-out-by-revocation.png");
    return how;
  });

  await step("change the password on device 2 (the fresh pair is kept)", async () => {
    await device2.getByLabel("Current password").fill(account.password);
    await device2.getByLabel("New password", { exact: true }).fill(account.newPassword);
    await device2.getByLabel("Repeat the new password").fill(account.newPassword);
    await device2.getByRole("button", { name: "Change password" }).click();
    await waitForText(device2, "Password changed. Every other device was signed out.");
    await device2.reload();
    await expectHeading(device2, "Account");
    await device2.getByRole("link", { name: "Tasks" }).click();
    await addTask(device2, { title: "After the password change" });
  });

  await step("sign out (Logout), then sign in with the new password", async () => {
    await device2.getByRole("button", { name: "Sign out" }).click();
    await expectHeading(device2, "Sign in");
    await waitForText(device2, "You are signed out.");
    await signIn(device2, account.newPassword);
    await device2.locator(".task-list .task-title", { hasText: "After the password change" }).waitFor();
    await device2.setViewportSize({ width: 390, height: 844 });
    await screenshot(device2, "09-task-list-phone-dark.png");
    await device2.setViewportSize({ width: 1000, height: 760 });
  });

  await step("page through 60 more tasks with Load more", async () => {
    await device2.evaluate(async () => {
      const { tasks } = window.__TODO_TEST__.api;
      for (let i = 1; i <= 60; i++) await tasks.createTask({ title: `Bulk task ${String(i).padStart(2, "0")}` });
    });
    await device2.reload();
    await expectHeading(device2, `${account.name}’s tasks`);
    await expectCount(device2, "67 tasks");
    const firstPage = (await taskTitles(device2)).length;
    if (firstPage !== 50) throw new Error(`the first page shows ${firstPage} tasks, expected 50`);
    await device2.getByRole("button", { name: "Load more" }).click();
    await device2.waitForFunction(() => document.querySelectorAll(".task-list .task").length === 67);
    if (await device2.getByRole("button", { name: "Load more" }).count()) throw new Error("Load more is still offered");
    const titles = await taskTitles(device2);
    if (new Set(titles).size !== 67 || titles[0] !== "Bulk task 60" || titles[66] !== "Buy milk") {
      throw new Error(`unexpected list after paging: first ${titles[0]}, last ${titles[66]}, ${new Set(titles).size} distinct`);
    }
  });

  await step("verify the email address from the mail's link", async () => {
    if (!verificationRequested) return "skip: RequestEmailVerification is UNIMPLEMENTED on this server";
    if (!options.mailDir) return "skip: no --mail-dir to read the link from";
    const link = await linkFromMail("/verify-email");
    await device2.goto(appPath(link));
    await waitForText(device2, "Your email address is verified.");
    if (new URL(device2.url()).search.includes("token")) throw new Error("the token stayed in the address bar");
    await device2.getByRole("link", { name: "Go to your tasks" }).click();
    await expectHeading(device2, `${account.name}’s tasks`);
    if (await device2.getByText("Please verify your email address").isVisible()) throw new Error("the banner still shows");
  });

  await step("forgot password, then reset it from the mail's link", async () => {
    const visitor = await (await newContext(browser, { label: "visitor" })).newPage();
    await visitor.goto(appPath("/sign-in"));
    await visitor.getByRole("link", { name: "Forgot your password?" }).click();
    await expectHeading(visitor, "Reset your password");
    await visitor.getByLabel("Email").fill(account.email);
    await visitor.getByRole("button", { name: "Send reset link" }).click();
    const shown = await firstOf(visitor, ["a link is on its way", UNIMPLEMENTED_TEXT]);
    if (shown === UNIMPLEMENTED_TEXT) return "skip: RequestPasswordReset is UNIMPLEMENTED on this server";
    if (!options.mailDir) return "requested; skip the link: no --mail-dir";
    const link = await linkFromMail("/reset-password");
    await visitor.goto(appPath(link));
    await expectHeading(visitor, "Choose a new password");
    account.password = "journey third password";
    await visitor.getByLabel("New password", { exact: true }).fill(account.password);
    await visitor.getByLabel("Repeat the new password").fill(account.password);
    await visitor.getByRole("button", { name: "Set new password" }).click();
    await waitForText(visitor, "Your password is changed");
    await signIn(visitor, account.password);
    account.newPassword = account.password;
    // ResetPassword ended every session, device 2's too: its next call signs it out.
    await device2.evaluate(() => window.__TODO_TEST__.forceRefresh().catch(() => undefined));
    await expectHeading(device2, "Sign in");
    await signIn(device2, account.password);
  });

  await step("delete the account", async () => {
    await device2.getByRole("link", { name: "Account" }).click();
    await device2.getByRole("button", { name: "Delete my account…" }).click();
    await device2.getByLabel("Your password, to confirm").fill(account.newPassword);
    await device2.getByRole("button", { name: "Delete my account and tasks" }).click();
    const shown = await firstOf(device2, ["Your account and all its tasks were deleted", UNIMPLEMENTED_TEXT]);
    if (shown === UNIMPLEMENTED_TEXT) return "skip: DeleteAccount is UNIMPLEMENTED on this server";
    await expectHeading(device2, "Sign in");
  });

  await step("a page from a disallowed origin cannot call the API (CORS)", async () => {
    const foreign = await serveForeignPage();
    try {
      const page = await (await newContext(browser, { label: "foreign" })).newPage();
      await page.goto(foreign.origin);
      const refused = await probeApiFrom(page);
      if (!refused.startsWith("refused")) {
        throw new Error(`${foreign.origin} → ${apiOrigin}: ${refused}; run the gateway with --allowed-origin ${appOrigin} only`);
      }
      // The control: the same call from the app's own origin gets through.
      const allowed = await probeApiFrom(device2);
      if (!allowed.startsWith("answered")) throw new Error(`the app's own origin was refused too: ${allowed}`);
      return `${foreign.origin}: ${refused}; ${appOrigin}: ${allowed}`;
    } finally {
      foreign.server.close();
    }
  });
}

async function main() {
  console.log(`journey against ${options.appUrl}${options.api ? ` with the API at ${options.api}` : ""}; screenshots in ${options.artifacts}`);
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
  try {
    await journey(browser);
  } catch (error) {
    failed = true;
    if (!(error instanceof StopJourney)) console.log(`FAIL ${error.stack ?? error}`);
    const pages = browser.contexts().flatMap((context) => context.pages());
    for (const [index, page] of pages.entries()) {
      await page.screenshot({ path: path.join(options.artifacts, `failure-${index + 1}.png`), fullPage: true }).catch(() => undefined);
    }
    for (const line of browserLog.slice(-30)) console.log(`  ${line}`);
  } finally {
    await browser.close();
  }
  console.log(failed ? "FAIL journey" : `PASS journey (${stepNumber} steps)`);
  process.exit(failed ? 1 : 0);
}

main();
