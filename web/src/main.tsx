/**
 * The entry point: mounts the app into #app. The stylesheet is imported here so that
 * esbuild emits it as the one CSS file (app.css) next to the one script (app.js).
 */

import "./styles.css";

import { render } from "preact";

import { App } from "./app.js";

const root = document.getElementById("app");
if (root) {
  root.textContent = "";
  render(<App />, root);
}
