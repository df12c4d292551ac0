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
// --mail-dir    where the auth-service writes its mails (.eml files; todo-stack:
//               <data-dir>/mail): the journey follows the links of the newest
//               verification and reset mails. Without it those two links are skipped.
//
// Prints one line per step (ok / skip / FAIL) and exits 0 only if no step failed; an
// RPC the app needs answering UNIMPLEMENTED is a failure.
// The CORS step serves a page of its own from http://127.0.0.2:<port> (an origin that
// neither the gateway's default list, localhost and 127.0.0.1 on any port, nor an
// --allowed-origin list of the app's origin admits), whose script calls the API; the
// browser must refuse the call, and the server must never see it.

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

/** Which tab or device each page is, for the failure screenshots. */
const pageLabels = new WeakMap();

function watchPage(page, label) {
  pageLabels.set(page, label);
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

/** Which of several texts shows first. */
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

/** Waits for `success`, failing at once with a clear message if the page says the RPC is UNIMPLEMENTED. */
async function expectImplemented(page, success, rpc) {
  const shown = await firstOf(page, [success, UNIMPLEMENTED_TEXT]);
  if (shown === UNIMPLEMENTED_TEXT) throw new Error(`${rpc} answered UNIMPLEMENTED ("${UNIMPLEMENTED_TEXT}")`);
}

/** Waits until the page's live WatchTasks stream is open ("Live"). */
async function waitForLive(page) {
  await page
    .locator(".live-live")
    .waitFor({ timeout: STEP_TIMEOUT_MS })
    .catch(async () => {
      throw new Error(`the live stream did not open; the indicator reads ${JSON.stringify(await page.locator(".live").textContent().catch(() => null))}`);
    });
}

/** The stored token pair of the page's origin (null when signed out). */
function storedSession(page) {
  return page.evaluate(() => JSON.parse(localStorage.getItem("todo.session") ?? "null"));
}

/** Calls the API from Node with the Connect protocol in JSON: `{ status, body }`. */
async function callApi(method, body, headers = {}) {
  const response = await fetch(`${apiOrigin}/${method}`, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: JSON.stringify(body),
  });
  return { status: response.status, body: await response.json().catch(() => null), headers: response.headers };
}

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

/**
 * The link to `route` in the newest .eml of the mail dir addressed to this run's account:
 * `{ url, note }`. The link is opened as written when it points at the app's origin, else
 * its path and query are opened on the app's origin (and the note says so).
 */
async function linkFromMail(route) {
  const deadline = Date.now() + 10_000;
  let newest = null;
  while (Date.now() < deadline) {
    const names = (await readdir(options.mailDir).catch(() => [])).filter((name) => name.endsWith(".eml"));
    const mails = await Promise.all(
      names.map(async (name) => {
        const file = path.join(options.mailDir, name);
        return { name, text: await readFile(file, "utf8"), time: (await stat(file)).mtimeMs };
      }),
    );
    // Newest first: modification time, then the name (the files are named by UUIDv7, in time order).
    newest = mails.filter((mail) => /^To: (.*)$/m.exec(mail.text)?.[1].includes(account.email)).sort((a, b) => b.time - a.time || b.name.localeCompare(a.name))[0];
    const unfolded = newest ? newest.text.replace(/=\r?\n/g, "").replace(/=3D/gi, "=") : "";
    const match = unfolded.match(new RegExp(`https?://[^\\s"'<>]*${route}\\?token=[A-Za-z0-9_\\-.~%]+`));
    if (match) {
      const link = new URL(match[0]);
      if (link.origin === appOrigin) return { url: link.toString(), note: `link from ${newest.name}` };
      return { url: appPath(`${link.pathname}${link.search}`), note: `link from ${newest.name} points at ${link.origin}, opened on ${appOrigin}` };
    }
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  throw new Error(`the newest mail for ${account.email} in ${options.mailDir} (${newest?.name ?? "none"}) has no ${route} link`);
}

/**
 * Serves, on another origin, a page whose script calls the API (Register, JSON: a
 * non-simple request, so the browser asks the gateway's CORS preflight first) and writes
 * "answered HTTP <status>" or "refused: <error>" into #result. The origin is
 * http://127.0.0.2:<port>, which the gateway's default list (localhost and 127.0.0.1 on
 * any port) does not admit either; where 127.0.0.2 cannot be bound, another 127.0.0.1 port.
 */
async function serveForeignPage({ api, email }) {
  const script = `
    const result = document.getElementById("result");
    fetch(${JSON.stringify(`${api}/auth.v1.AuthService/Register`)}, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ email: ${JSON.stringify(email)}, password: "a long enough password", displayName: "Not me" }),
    })
      .then((response) => "answered HTTP " + response.status, (error) => "refused: " + error)
      .then((text) => {
        result.textContent = text;
        document.body.dataset.done = "true";
      });`;
  const html = `<!doctype html><html lang="en"><meta charset="utf-8"><title>Another site</title>
<body style="font-family: sans-serif; margin: 2rem"><h1>Another site</h1>
<p>This page tries to call the todo API at ${api} from its own origin.</p>
<p>Result: <strong id="result">pending</strong></p><script src="/probe.js"></script></body></html>`;
  const server = http.createServer((request, response) => {
    if (request.url === "/probe.js") response.writeHead(200, { "content-type": "text/javascript" }).end(script);
    else response.writeHead(200, { "content-type": "text/html; charset=utf-8" }).end(html);
  });
  for (const host of ["127.0.0.2", "127.0.0.1"]) {
    try {
      await new Promise((resolve, reject) => {
        server.once("error", reject);
        server.listen(0, host, resolve);
      });
      return { server, origin: `http://${host}:${server.address().port}` };
    } catch (error) {
      if (host === "127.0.0.1") throw error;
    }
  }
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

  await step("ask for the verification email (banner)", async () => {
    await tabA.getByRole("button", { name: "Send verification email" }).click();
    await expectImplemented(tabA, "Sent! Open the link", "RequestEmailVerification");
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
    await screenshot(tabA, "03-edit-dialog.png", { fullPage: false });
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
    await screenshot(tabA, "04-task-list-ordered.png");
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
    await screenshot(tabB, "05-second-tab-live.png");
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

  await step("the access token runs out in both tabs at once (no hook); one Refresh, nobody signed out", async () => {
    // The stored pair is made to look expired (the server still accepts it): tab B learns it
    // from the `storage` event and its refresh timer fires at once, while tab A's next call
    // (switching the filter) finds the token stale. Both want to refresh at the same moment.
    const before = await storedSession(tabA);
    const callsBefore = refreshCalls;
    await tabA.evaluate(() => {
      const pair = JSON.parse(localStorage.getItem("todo.session"));
      localStorage.setItem("todo.session", JSON.stringify({ ...pair, accessExpiresAt: Date.now() - 1_000 }));
      document.querySelector("input[name=completion][value=open]").click(); // ListTasks with the stale token
    });
    await tabA.waitForFunction((old) => JSON.parse(localStorage.getItem("todo.session") ?? "null")?.refreshToken !== old, before.refreshToken, {
      timeout: STEP_TIMEOUT_MS,
    });
    await tabB.waitForFunction((old) => JSON.parse(localStorage.getItem("todo.session") ?? "null")?.refreshToken !== old, before.refreshToken, {
      timeout: STEP_TIMEOUT_MS,
    });
    await tabA.waitForTimeout(500); // a second, late Refresh would show up by now
    const [afterA, afterB] = [await storedSession(tabA), await storedSession(tabB)];
    if (!afterA || !afterB) throw new Error("a tab lost its token pair");
    if (afterA.refreshToken !== afterB.refreshToken) throw new Error("the two tabs hold different pairs");
    if (afterA.accessExpiresAt <= Date.now() + 60_000) throw new Error("the new access token is not fresh");
    if (refreshCalls - callsBefore !== 1) throw new Error(`${refreshCalls - callsBefore} Refresh calls, expected 1`);
    await tabA.getByRole("radio", { name: "All" }).check();
    await addTask(tabA, { title: "After the expiry race" });
    await tabB.locator(".task-list .task-title", { hasText: "After the expiry race" }).waitFor({ timeout: STEP_TIMEOUT_MS });
    for (const tab of [tabA, tabB]) await expectHeading(tab, `${account.name}’s tasks`, 1_000);
    return "1 Refresh call for 2 tabs";
  });

  const otherDevice = await newContext(browser, { colorScheme: "dark", label: "device 2" });
  const device2 = await otherDevice.newPage();
  const thirdDevice = await newContext(browser, { label: "device 3" });
  const device3 = await thirdDevice.newPage();
  await step("sign in on two more devices; the account page lists all three sessions, this one marked", async () => {
    await signIn(device2, account.password);
    await waitForLive(device2);
    await screenshot(device2, "06-task-list-dark.png");
    await signIn(device3, account.password);
    await waitForLive(device3);
    await device2.getByRole("link", { name: "Account" }).click();
    await expectHeading(device2, "Account");
    await device2.locator(".session").nth(2).waitFor({ timeout: STEP_TIMEOUT_MS });
    const sessions = await device2.$$eval(".session", (items) => items.map((item) => item.dataset.current === "true"));
    if (sessions.length !== 3 || sessions.filter(Boolean).length !== 1) throw new Error(`sessions shown: ${JSON.stringify(sessions)}`);
    const current = await device2.$eval(".session[data-current='true']", (item) => item.dataset.sessionId);
    if (current !== (await storedSession(device2)).sessionId) throw new Error("the session marked “This device” is not this device's");
    await waitForText(device2, "This device");
    await expectLabelledControls(device2);
    await screenshot(device2, "07-account-sessions.png");
  });

  await step("revoke one other session (device 3) from the list; its tab ends on the sign-in page", async () => {
    const revoked = (await storedSession(device3)).sessionId;
    await device2.locator(`.session[data-session-id="${revoked}"]`).getByRole("button", { name: /^Sign out / }).click();
    await waitForText(device2, "That device is signed out.");
    await device2.locator(`.session[data-session-id="${revoked}"]`).waitFor({ state: "detached", timeout: STEP_TIMEOUT_MS });
    if ((await device2.locator(".session").count()) !== 2) throw new Error("the list does not show the two remaining sessions");
    let how = "its live stream ended UNAUTHENTICATED and the refresh was refused";
    try {
      await expectHeading(device3, "Sign in", 6_000);
    } catch {
      // The stream stayed open: the tab's next call (a click on a filter) is refused instead.
      how = "its next call was refused (the stream stayed open)";
      await device3.getByRole("radio", { name: "Done" }).check();
      await expectHeading(device3, "Sign in");
    }
    await waitForText(device3, "Your session has ended");
    if ((await storedSession(device3)) !== null) throw new Error("device 3 still stores a token pair");
    await screenshot(device3, "08-revoked-device-sign-in.png");
    // Device 1 was not touched: its tabs still work.
    for (const tab of [tabA, tabB]) await expectHeading(tab, `${account.name}’s tasks`, 1_000);
    await addTask(tabB, { title: "Device 1 still signed in" });
    await tabA.locator(".task-list .task-title", { hasText: "Device 1 still signed in" }).waitFor({ timeout: STEP_TIMEOUT_MS });
    return how;
  });

  await step("the account page in light mode", async () => {
    await tabA.getByRole("link", { name: "Account" }).click();
    await expectHeading(tabA, "Account");
    await tabA.locator(".session").nth(1).waitFor({ timeout: STEP_TIMEOUT_MS });
    await screenshot(tabA, "09-account-light.png");
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
    await screenshot(tabA, "10-signed-out-everywhere-else.png");
    return how;
  });

  await step("change the password on device 2 (the fresh pair is kept)", async () => {
    await device2.getByLabel("Current password").fill(account.password);
    await device2.getByLabel("New password", { exact: true }).fill(account.newPassword);
    await device2.getByLabel("Repeat the new password").fill(account.newPassword);
    await device2.getByRole("button", { name: "Change password" }).click();
    await waitForText(device2, "Password changed. Every other device was signed out.");
    await screenshot(device2, "11-password-changed-dark.png");
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
    await waitForLive(device2);
    await screenshot(device2, "12-task-list-phone-dark.png");
    await device2.setViewportSize({ width: 1000, height: 760 });
  });

  await step("page through 60 more tasks with Load more, newest first and by title", async () => {
    await expectHeading(device2, `${account.name}’s tasks`);
    const countText = await device2.locator(".count").textContent();
    const before = Number(/^(\d+) tasks?$/.exec(countText)?.[1]);
    if (!Number.isInteger(before)) throw new Error(`the count reads ${JSON.stringify(countText)}`);
    const total = before + 60;
    await device2.evaluate(async () => {
      const { tasks } = window.__TODO_TEST__.api;
      for (let i = 1; i <= 60; i++) await tasks.createTask({ title: `Bulk task ${String(i).padStart(2, "0")}` });
    });
    await device2.reload();
    await expectHeading(device2, `${account.name}’s tasks`);
    await expectCount(device2, `${total} tasks`);
    const firstPage = (await taskTitles(device2)).length;
    if (firstPage !== 50) throw new Error(`the first page shows ${firstPage} tasks, expected 50`);
    await device2.getByRole("button", { name: "Load more" }).scrollIntoViewIfNeeded();
    await screenshot(device2, "13-paged-list-load-more.png", { fullPage: false });
    await device2.getByRole("button", { name: "Load more" }).click();
    await device2.waitForFunction((n) => document.querySelectorAll(".task-list .task").length === n, total, { timeout: STEP_TIMEOUT_MS });
    if (await device2.getByRole("button", { name: "Load more" }).count()) throw new Error("Load more is still offered");
    await device2.locator(".task-list .task").last().scrollIntoViewIfNeeded();
    await screenshot(device2, "14-paged-list-end.png", { fullPage: false });
    const titles = await taskTitles(device2);
    if (new Set(titles).size !== total || titles[0] !== "Bulk task 60" || titles[total - 1] !== "Buy milk") {
      throw new Error(`unexpected list after paging: first ${titles[0]}, last ${titles[total - 1]}, ${new Set(titles).size} distinct of ${total}`);
    }
    // The second page continues the order of the first.
    await device2.getByLabel("Sort by").selectOption({ label: "Title" });
    await device2.waitForFunction(
      () => !document.querySelector(".task-list[aria-busy='true']") && document.querySelectorAll(".task-list .task").length === 50,
      null,
      { timeout: STEP_TIMEOUT_MS },
    );
    await device2.getByRole("button", { name: "Load more" }).click();
    await device2.waitForFunction((n) => document.querySelectorAll(".task-list .task").length === n, total, { timeout: STEP_TIMEOUT_MS });
    const byTitle = await taskTitles(device2);
    const sorted = [...byTitle].sort((a, b) => a.localeCompare(b, "en"));
    if (byTitle.join("\n") !== sorted.join("\n")) throw new Error(`not in title order across pages: ${JSON.stringify(byTitle.slice(45, 55))}`);
    await device2.getByLabel("Sort by").selectOption({ label: "Newest first" });
    await expectCount(device2, `${total} tasks`);
    return `${total} tasks in pages of 50`;
  });

  await step("verify the email address from the newest mail's link", async () => {
    if (!options.mailDir) return "skip: no --mail-dir to read the link from";
    const link = await linkFromMail("/verify-email");
    // The race that once left the banner up: the page's account load (GetCurrentUser) is
    // answered by the server before the verification, but reaches the app just after it. The
    // older answer ("not verified") must not replace the newer one.
    let accountServed, releaseAccount;
    const accountAnswered = new Promise((resolve) => (accountServed = resolve));
    const accountReleased = new Promise((resolve) => (releaseAccount = resolve));
    const accountRoute = "**/auth.v1.AuthService/GetCurrentUser";
    const verifyRoute = "**/auth.v1.AuthService/VerifyEmail";
    await device2.route(accountRoute, async (route) => {
      const response = await route.fetch();
      accountServed();
      await accountReleased;
      await route.fulfill({ response });
    });
    await device2.route(verifyRoute, async (route) => {
      await accountAnswered;
      const response = await route.fetch();
      await route.fulfill({ response });
      releaseAccount();
    });
    try {
      await device2.goto(link.url);
      await waitForText(device2, "Your email address is verified.");
    } finally {
      releaseAccount();
      await device2.unroute(accountRoute);
      await device2.unroute(verifyRoute);
    }
    if (new URL(device2.url()).search.includes("token")) throw new Error("the token stayed in the address bar");
    await screenshot(device2, "15-email-verified.png");
    await device2.getByRole("link", { name: "Go to your tasks" }).click();
    await expectHeading(device2, `${account.name}’s tasks`);
    await waitForLive(device2);
    if (await device2.getByText("Please verify your email address").isVisible()) throw new Error("the banner still shows");
    await device2.getByRole("link", { name: "Account" }).click();
    await device2.locator(".badge", { hasText: "Verified" }).waitFor({ timeout: STEP_TIMEOUT_MS });
    await device2.getByRole("link", { name: "Tasks" }).click();
    await expectHeading(device2, `${account.name}’s tasks`);
    return link.note;
  });

  await step("forgot password, then reset it from the newest mail's link; every session ends", async () => {
    const visitor = await (await newContext(browser, { label: "visitor" })).newPage();
    await visitor.goto(appPath("/sign-in"));
    await visitor.getByRole("link", { name: "Forgot your password?" }).click();
    await expectHeading(visitor, "Reset your password");
    await visitor.getByLabel("Email").fill(account.email);
    await visitor.getByRole("button", { name: "Send reset link" }).click();
    await expectImplemented(visitor, "a link is on its way", "RequestPasswordReset");
    await screenshot(visitor, "16-forgot-password-sent.png");
    if (!options.mailDir) return "requested; skip the link: no --mail-dir";
    const link = await linkFromMail("/reset-password");
    await visitor.goto(link.url);
    await expectHeading(visitor, "Choose a new password");
    if (new URL(visitor.url()).search.includes("token")) throw new Error("the token stayed in the address bar");
    account.password = "journey third password";
    await visitor.getByLabel("New password", { exact: true }).fill(account.password);
    await visitor.getByLabel("Repeat the new password").fill(account.password);
    await screenshot(visitor, "17-reset-password.png");
    await visitor.getByRole("button", { name: "Set new password" }).click();
    await expectImplemented(visitor, "Your password is changed", "ResetPassword");
    // The old password no longer works; the new one does.
    const old = await callApi("auth.v1.AuthService/Login", { email: account.email, password: account.newPassword });
    if (old.status === 200) throw new Error("the password from before the reset still signs in");
    await signIn(visitor, account.password);
    account.newPassword = account.password;
    // ResetPassword ended every session, device 2's too.
    let how = "device 2's live stream ended and its refresh was refused";
    try {
      await expectHeading(device2, "Sign in", 6_000);
    } catch {
      how = "device 2's next call was refused (its stream stayed open)";
      await device2.getByRole("radio", { name: "Done" }).check();
      await expectHeading(device2, "Sign in");
    }
    await waitForText(device2, "Your session has ended");
    await signIn(device2, account.password);
    return `${how}; ${link.note}`;
  });

  await step("delete the account", async () => {
    await device2.getByRole("link", { name: "Account" }).click();
    await device2.getByRole("button", { name: "Delete my account…" }).click();
    await device2.getByLabel("Your password, to confirm").fill(account.newPassword);
    await device2.getByRole("button", { name: "Delete my account and tasks" }).click();
    await expectImplemented(device2, "Your account and all its tasks were deleted", "DeleteAccount");
    await expectHeading(device2, "Sign in");
    const login = await callApi("auth.v1.AuthService/Login", { email: account.email, password: account.newPassword });
    if (login.status === 200) throw new Error("the deleted account still signs in");
  });

  await step("a page from a disallowed origin cannot call the API (CORS)", async () => {
    // The page's own script tries to register an account; the browser must stop it at the
    // preflight, so the server never sees the call and the address stays free.
    const victim = `cors-${run}@example.com`;
    const foreign = await serveForeignPage({ api: apiOrigin, email: victim });
    try {
      const context = await newContext(browser, { label: "foreign" });
      const page = await context.newPage();
      const consoleLines = [];
      page.on("console", (message) => consoleLines.push(message.text()));
      await page.goto(`${foreign.origin}/`);
      await page.waitForFunction(() => document.body.dataset.done === "true", null, { timeout: STEP_TIMEOUT_MS });
      const result = await page.locator("#result").textContent();
      await screenshot(page, "18-foreign-origin-refused.png");
      await context.close();
      if (!result.startsWith("refused")) throw new Error(`${foreign.origin} → ${apiOrigin}: ${result}; the gateway must not allow this origin`);
      if (!consoleLines.some((line) => line.includes("blocked by CORS policy"))) {
        throw new Error(`the call failed, but Chromium did not blame CORS: ${JSON.stringify(consoleLines)}`);
      }
      // What the browser saw: the gateway's preflight answer names no origin for the foreign
      // page, and the app's own origin for the app (the control: CORS itself works).
      const preflight = async (origin) => {
        const response = await fetch(`${apiOrigin}/auth.v1.AuthService/Register`, {
          method: "OPTIONS",
          headers: { origin, "access-control-request-method": "POST", "access-control-request-headers": "content-type" },
        });
        return response.headers.get("access-control-allow-origin");
      };
      const foreignAllowed = await preflight(foreign.origin);
      if (foreignAllowed !== null) throw new Error(`the preflight allows ${foreign.origin}: access-control-allow-origin ${foreignAllowed}`);
      const appAllowed = await preflight(appOrigin);
      if (appAllowed !== appOrigin && appAllowed !== "*") throw new Error(`the preflight does not allow the app's origin ${appOrigin}: ${appAllowed}`);
      // The call never reached the server: the address is still free.
      const again = await callApi("auth.v1.AuthService/Register", { email: victim, password: "a long enough password" });
      if (again.status !== 200) throw new Error(`registering ${victim} afterwards answered ${again.status} ${JSON.stringify(again.body)}: the foreign page's call reached the server`);
      return `${foreign.origin}: ${result}`;
    } finally {
      foreign.server.close();
    }
  });
}

async function main() {
  console.log(`journey against ${options.appUrl}${options.api ? ` with the API at ${options.api}` : ""}; screenshots in ${options.artifacts}`);
  let browser;
  try {
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
  } catch (error) {
    console.log(`FAIL journey: cannot start Chromium at ${CHROMIUM} (set CHROMIUM to another binary): ${error.message}`);
    process.exit(1);
  }
  try {
    await journey(browser);
  } catch (error) {
    failed = true;
    if (!(error instanceof StopJourney)) console.log(`FAIL ${error.stack ?? error}`);
    const pages = browser.contexts().flatMap((context) => context.pages());
    for (const [index, page] of pages.entries()) {
      const label = (pageLabels.get(page) ?? "page").replace(/[^a-z0-9]+/gi, "-");
      await page.screenshot({ path: path.join(options.artifacts, `failure-${index + 1}-${label}.png`), fullPage: true }).catch(() => undefined);
    }
    console.log(`  failure screenshots of every open page: ${options.artifacts}/failure-*.png`);
    for (const line of browserLog.slice(-30)) console.log(`  ${line}`);
  } finally {
    await browser.close();
  }
  console.log(failed ? "FAIL journey" : `PASS journey (${stepNumber} steps)`);
  process.exit(failed ? 1 : 0);
}

main();
