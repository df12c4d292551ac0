#!/usr/bin/env node
// Builds the app into dist/: index.html, app.js (one ES module bundle) and app.css,
// all referenced by relative URLs so the gateway can serve them from any origin root.
//
//   node build.mjs [--protocol grpc-web] [--outdir DIR]
//
// Decisions a reader must know:
// - The output is deterministic (CI rebuilds and runs `git diff --exit-code web/dist`):
//   no timestamps, no source maps with absolute paths, and every @bufbuild/@connectrpc
//   import resolves to web/node_modules, whether clients/web/node_modules exists or not,
//   so the bundle holds exactly one copy of each (and `instanceof ConnectError` works).
// - index.html references the assets as `app.js?v=<hash>`, so a cache can keep them
//   forever and a new build still reaches every browser.
// - `--protocol grpc-web` is for development against a gateway without the Connect
//   protocol (see clients/web/src/transport.ts); never commit a dist built with it.

import { createHash } from "node:crypto";
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";

import { build } from "esbuild";

const webDir = path.dirname(fileURLToPath(import.meta.url));

function parseArgs(argv) {
  const options = { protocol: undefined, outdir: "dist" };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--protocol") options.protocol = argv[++i];
    else if (argv[i] === "--outdir") options.outdir = argv[++i];
    else throw new Error(`unknown argument ${argv[i]}`);
  }
  if (options.protocol !== undefined && !["connect", "grpc-web"].includes(options.protocol)) {
    throw new Error(`--protocol must be connect or grpc-web, not ${options.protocol}`);
  }
  return options;
}

/** Resolves the shared runtime packages from web/node_modules only (one copy in the bundle). */
const oneCopyOfSharedPackages = {
  name: "one-copy-of-shared-packages",
  setup(builder) {
    builder.onResolve({ filter: /^(@bufbuild\/protobuf|@connectrpc\/connect|@connectrpc\/connect-web|preact)(\/|$)/ }, (args) => {
      if (args.pluginData === "resolving-from-web") return undefined;
      return builder.resolve(args.path, { kind: args.kind, resolveDir: webDir, pluginData: "resolving-from-web" });
    });
  },
};

const shortHash = (bytes) => createHash("sha256").update(bytes).digest("hex").slice(0, 12);

async function main() {
  const { protocol, outdir } = parseArgs(process.argv.slice(2));
  const outputDir = path.resolve(webDir, outdir);

  const result = await build({
    absWorkingDir: webDir,
    entryPoints: { app: "src/main.tsx" },
    outdir: outputDir,
    bundle: true,
    write: false,
    minify: true,
    format: "esm",
    target: ["es2022", "chrome109", "firefox115", "safari16"],
    jsx: "automatic",
    jsxImportSource: "preact",
    charset: "utf8",
    legalComments: "eof",
    define: { TODO_API_PROTOCOL: protocol === undefined ? "undefined" : JSON.stringify(protocol) },
    plugins: [oneCopyOfSharedPackages],
    // tsconfig.json maps package paths for tsc only; esbuild must resolve through package exports.
    tsconfigRaw: "{}",
    logLevel: "warning",
  });

  const outputs = new Map(result.outputFiles.map((file) => [path.basename(file.path), file.contents]));
  const script = outputs.get("app.js");
  const styles = outputs.get("app.css");
  if (!script || !styles || outputs.size !== 2) {
    throw new Error(`expected app.js and app.css, got ${[...outputs.keys()].join(", ")}`);
  }
  const html = (await readFile(path.join(webDir, "src/index.html"), "utf8"))
    .replace("{{app.css}}", `app.css?v=${shortHash(styles)}`)
    .replace("{{app.js}}", `app.js?v=${shortHash(script)}`);

  await rm(outputDir, { recursive: true, force: true });
  await mkdir(outputDir, { recursive: true });
  await writeFile(path.join(outputDir, "index.html"), html);
  await writeFile(path.join(outputDir, "app.js"), script);
  await writeFile(path.join(outputDir, "app.css"), styles);

  for (const [name, bytes] of [["index.html", Buffer.from(html)], ["app.js", script], ["app.css", styles]]) {
    const gzipped = gzipSync(bytes, { level: 9 }).length;
    console.log(`${path.relative(webDir, path.join(outputDir, name))}: ${bytes.length} bytes, ${gzipped} gzipped`);
  }
  if (protocol === "grpc-web") console.log("built for gRPC-Web (development only)");
}

main().catch((error) => {
  console.error(error.message ?? error);
  process.exit(1);
});
