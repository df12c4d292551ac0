#!/usr/bin/env node
// A tiny static server for web/dist, standing in for the gateway's static serving while
// developing: files by path, and index.html for any other GET (client-side routes such
// as /verify-email), the way the gateway will answer.
//
//   node test/serve.mjs [DIR] [--port 8090] [--host 127.0.0.1]
//
// DIR defaults to web/dist. The API is NOT served here: build with
// `npm run build:grpc-web` (or use dist once the gateway speaks Connect) and give the
// journey `--api http://127.0.0.1:18080` so the app calls the dev stack cross-origin.

import { readFile, stat } from "node:fs/promises";
import http from "node:http";
import path from "node:path";
import { fileURLToPath } from "node:url";

const CONTENT_TYPES = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".ico": "image/x-icon",
  ".json": "application/json",
};

function parseArgs(argv) {
  const options = { dir: fileURLToPath(new URL("../dist", import.meta.url)), port: 8090, host: "127.0.0.1" };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--port") options.port = Number(argv[++i]);
    else if (argv[i] === "--host") options.host = argv[++i];
    else options.dir = path.resolve(argv[i]);
  }
  return options;
}

async function fileIfExists(file) {
  try {
    return (await stat(file)).isFile() ? await readFile(file) : null;
  } catch {
    return null;
  }
}

const { dir, port, host } = parseArgs(process.argv.slice(2));
const server = http.createServer(async (request, response) => {
  if (request.method !== "GET" && request.method !== "HEAD") {
    response.writeHead(405, { allow: "GET, HEAD" }).end();
    return;
  }
  const pathname = decodeURIComponent(new URL(request.url, "http://static").pathname);
  const file = path.join(dir, path.normalize(pathname).replace(/^(\.\.[/\\])+/, ""));
  let body = file.startsWith(dir) ? await fileIfExists(file) : null;
  let type = CONTENT_TYPES[path.extname(file)] ?? "application/octet-stream";
  if (body === null || pathname === "/") {
    body = await readFile(path.join(dir, "index.html"));
    type = CONTENT_TYPES[".html"];
  }
  response.writeHead(200, { "content-type": type, "cache-control": "no-cache", "x-content-type-options": "nosniff" });
  response.end(request.method === "HEAD" ? undefined : body);
});
server.listen(port, host, () => console.log(`serving ${dir} at http://${host}:${server.address().port}/`));
