#!/usr/bin/env node
// The browser test: a real headless Chromium loads a page from a different
// origin than the gateway, and the page registers, creates, lists, sees
// NOT_FOUND for a made-up id and watches its tasks through the gateway
// with a published gRPC-Web client. Then another client (this script,
// through the same gateway) creates a task, and the page must show it
// without a reload.
//
//   node run.mjs <gateway-url> [--page-port <port>]
//
// Exits 0 when every assertion on the page's text holds, 1 otherwise.
// The gateway must allow the page's origin (http://127.0.0.1:<page-port>;
// its default list allows any http://127.0.0.1 port).

import { readFile } from "node:fs/promises";
import http from "node:http";
import { fileURLToPath } from "node:url";

import { createClient } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-node";
import { build } from "esbuild";
import { chromium } from "playwright-core";

import { TaskService } from "./src/gen/tasks/v1/tasks_pb.js";

const STEP_TIMEOUT_MS = 30_000;
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
  const options = { gateway: "http://127.0.0.1:8080", pagePort: 0 };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--page-port") options.pagePort = Number(argv[++i]);
    else options.gateway = argv[i];
  }
  return options;
}

/** The page: index.html and the app bundled for the browser by esbuild. */
async function servePage(port) {
  const source = (path) => fileURLToPath(new URL(path, import.meta.url));
  const html = await readFile(source("./src/index.html"));
  const bundle = await build({
    entryPoints: [source("./src/app.js")],
    bundle: true,
    write: false,
    format: "esm",
    target: "chrome110",
    logLevel: "warning",
  });
  const script = bundle.outputFiles[0].contents;
  const server = http.createServer((request, response) => {
    const path = new URL(request.url, "http://page").pathname;
    if (path === "/" || path === "/index.html") {
      response.writeHead(200, { "content-type": "text/html; charset=utf-8" }).end(html);
    } else if (path === "/app.js") {
      response.writeHead(200, { "content-type": "text/javascript; charset=utf-8" }).end(script);
    } else {
      response.writeHead(404).end();
    }
  });
  await new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, "127.0.0.1", resolve);
  });
  return { server, origin: `http://127.0.0.1:${server.address().port}` };
}

/** Waits until `predicate(arg)` holds on the page, failing early if the page reported an error. */
async function waitFor(page, description, predicate, arg) {
  try {
    await page.waitForFunction(
      ([source, arg]) => {
        if (document.getElementById("error").textContent !== "") return true;
        return new Function("arg", `return (${source})(arg)`)(arg);
      },
      [predicate.toString(), arg],
      { timeout: STEP_TIMEOUT_MS },
    );
  } catch (error) {
    throw new Error(`timed out waiting for ${description}`, { cause: error });
  }
  const pageError = await page.textContent("#error");
  if (pageError !== "") throw new Error(`the page reported an error while waiting for ${description}: ${pageError}`);
}

async function expectText(page, selector, expected) {
  const actual = (await page.textContent(selector)) ?? "";
  if (!actual.includes(expected)) throw new Error(`${selector} shows ${JSON.stringify(actual)}, expected ${JSON.stringify(expected)}`);
  console.log(`ok: ${selector} shows ${JSON.stringify(actual)}`);
}

async function main() {
  const { gateway, pagePort } = parseArgs(process.argv.slice(2));
  const { server, origin } = await servePage(pagePort);
  if (origin === new URL(gateway).origin) throw new Error("the page must be served from another origin than the gateway");
  console.log(`page at ${origin}, gateway at ${gateway}`);

  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
  const browserLog = [];
  try {
    const page = await browser.newPage();
    page.on("console", (message) => browserLog.push(`console.${message.type()}: ${message.text()}`));
    page.on("pageerror", (error) => browserLog.push(`page error: ${error.message}`));
    page.on("requestfailed", (request) => browserLog.push(`request failed: ${request.url()} ${request.failure()?.errorText}`));

    await page.goto(`${origin}/?gateway=${encodeURIComponent(gateway)}`);
    await waitFor(page, "the watch stream to open", () => document.getElementById("status").textContent === "watching");
    await expectText(page, "#user", "@example.com");
    await expectText(page, "#created", "Written in the browser");
    await expectText(page, "#listed", "1 task(s)");
    await expectText(page, "#tasks", "Written in the browser");
    await expectText(page, "#not-found", "NOT_FOUND");

    // Another client of the same user creates a task; the page was not reloaded
    // if the marker set now is still there when the task shows.
    await page.evaluate(() => {
      window.notReloaded = true;
    });
    const token = await page.evaluate(() => window.todo.token);
    const other = createClient(TaskService, createGrpcWebTransport({ baseUrl: gateway, httpVersion: "1.1" }));
    const title = `Created by another client ${Date.now()}`;
    await other.createTask({ title }, { headers: { authorization: `Bearer ${token}` } });
    await waitFor(
      page,
      "the task created by another client to appear",
      (title) => [...document.querySelectorAll("#tasks li")].some((item) => item.textContent === title),
      title,
    );
    await expectText(page, "#events", `CREATED ${title}`);
    if (!(await page.evaluate(() => window.notReloaded === true))) throw new Error("the page was reloaded");
    console.log("ok: the task created by another client appeared without a reload");
    console.log("PASS browser test");
  } catch (error) {
    console.error(`FAIL browser test: ${error.message}`);
    for (const line of browserLog) console.error(`  ${line}`);
    try {
      const pages = browser.contexts().flatMap((context) => context.pages());
      if (pages[0]) console.error(`page text:\n${await pages[0].innerText("body")}`);
    } catch {
      // The page is gone; the error above is what matters.
    }
    process.exitCode = 1;
  } finally {
    await browser.close();
    server.close();
  }
}

main().catch((error) => {
  console.error(`FAIL browser test: ${error.stack ?? error}`);
  process.exit(1);
});
