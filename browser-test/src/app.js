// The page under test: a plain web app on its own origin that uses the
// gateway the way a real front end would, through a published gRPC-Web
// client (Connect's gRPC-Web transport) and code generated from the
// project's .proto files. Every step writes what it saw into the page, so
// the test asserts on what a user would see.

import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { AuthService } from "./gen/auth/v1/auth_pb.js";
import { TaskEventType, TaskService } from "./gen/tasks/v1/tasks_pb.js";

const gateway = new URLSearchParams(location.search).get("gateway") ?? "http://127.0.0.1:8080";
const transport = createGrpcWebTransport({ baseUrl: gateway });
const auth = createClient(AuthService, transport);
const tasks = createClient(TaskService, transport);

function show(id, text) {
  document.getElementById(id).textContent = text;
}

/** Adds a task to the list once (a task can arrive listed and streamed). */
function showTask(task) {
  const list = document.getElementById("tasks");
  if ([...list.children].some((item) => item.dataset.id === task.id)) return;
  const item = document.createElement("li");
  item.dataset.id = task.id;
  item.textContent = task.title;
  list.append(item);
}

async function main() {
  const email = `page-${Date.now()}-${Math.random().toString(36).slice(2)}@example.com`;
  const registered = await auth.register({
    email,
    password: "correct horse battery staple",
    displayName: "Browser",
  });
  show("user", registered.user.email);
  const token = registered.tokens.accessToken;
  const headers = { authorization: `Bearer ${token}` };

  const created = await tasks.createTask({ title: "Written in the browser" }, { headers });
  show("created", created.task.title);

  const listed = await tasks.listTasks({}, { headers });
  listed.tasks.forEach(showTask);
  show("listed", `${listed.tasks.length} task(s)`);

  try {
    await tasks.getTask({ id: "0190f3c2-0000-7000-8000-000000000000" }, { headers });
    show("not-found", "unexpectedly found");
  } catch (error) {
    const status = ConnectError.from(error);
    show("not-found", status.code === Code.NotFound ? "NOT_FOUND" : `unexpected ${Code[status.code]}: ${status.rawMessage}`);
  }

  // Live updates: the stream's headers mean the server is watching.
  window.todo = { token };
  const events = tasks.watchTasks({}, { headers, onHeader: () => show("status", "watching") });
  for await (const event of events) {
    // A heartbeat (no task) only keeps the stream open through proxies.
    if (event.eventType === TaskEventType.UNSPECIFIED) continue;
    const item = document.createElement("li");
    item.textContent = `${TaskEventType[event.eventType]} ${event.task?.title ?? ""}`;
    document.getElementById("events").append(item);
    if (event.eventType === TaskEventType.CREATED || event.eventType === TaskEventType.UPDATED) {
      showTask(event.task);
    }
  }
  show("status", "ended");
}

main().catch((error) => {
  const status = ConnectError.from(error);
  show("error", `${Code[status.code]}: ${status.rawMessage}`);
});
