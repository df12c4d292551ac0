//! The Connect protocol through the gateway, spoken by an outside client:
//! `buf curl --protocol connect` (over HTTP/1.1 and over HTTP/2, finding
//! every method by server reflection, itself a Connect bidirectional
//! stream). Every RPC of both services, errors with their Connect codes and
//! details, and `WatchTasks` streaming. Plain JSON with `curl` is in
//! `connect_json.rs`.
//!
//! `buf` comes from `browser-test/node_modules` (`npm ci --prefix
//! browser-test`); without it the buf tests are skipped with a notice,
//! except when `CI` is set, where that is a failure.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use serde_json::{Value, json};
use test_harness::{
    Backend, GatewayStack, PASSWORD, PATIENCE, mailed_token, on_each_backend, unique_email,
};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::Command,
};

fn buf() -> Option<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../browser-test/node_modules/.bin/buf");
    if path.exists() {
        return Some(path);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must run the buf curl tests, but {} is missing",
        path.display()
    );
    eprintln!("SKIPPED buf curl test: run npm ci --prefix browser-test");
    None
}

/// How `buf curl` reaches the gateway.
#[derive(Clone, Copy, Debug)]
enum Http {
    One,
    Two,
}

/// One `buf curl --protocol connect` call.
struct BufCurl<'a> {
    buf: &'a Path,
    url: String,
    http: Http,
}

/// What a call answered: the message (JSON) or the Connect error (JSON).
type Answer = Result<Value, Value>;

impl BufCurl<'_> {
    fn command(&self, method: &str, token: Option<&str>, body: &Value) -> Command {
        let mut command = Command::new(self.buf);
        command.args(["curl", "--protocol", "connect", "--emit-defaults"]);
        if let Http::Two = self.http {
            command.arg("--http2-prior-knowledge");
        }
        if let Some(token) = token {
            command.args(["-H", &format!("authorization: Bearer {token}")]);
        }
        command
            .args(["-d", &body.to_string()])
            .arg(format!("{}/{method}", self.url))
            .stdin(Stdio::null())
            .kill_on_drop(true);
        command
    }

    async fn call(&self, method: &str, token: Option<&str>, body: Value) -> Answer {
        let output = tokio::time::timeout(PATIENCE, self.command(method, token, &body).output())
            .await
            .unwrap_or_else(|_| panic!("buf curl {method} over {:?} answers in time", self.http))
            .expect("buf runs");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        if output.status.success() {
            Ok(serde_json::from_str(&stdout)
                .unwrap_or_else(|_| panic!("{method}: not JSON: {stdout}")))
        } else {
            // buf curl prints the Connect error as JSON on stderr.
            let start = stderr
                .find('{')
                .unwrap_or_else(|| panic!("{method}: {stderr}"));
            Err(serde_json::from_str(&stderr[start..])
                .unwrap_or_else(|_| panic!("{method}: not a JSON error: {stderr}")))
        }
    }

    async fn ok(&self, method: &str, token: Option<&str>, body: Value) -> Value {
        self.call(method, token, body)
            .await
            .unwrap_or_else(|error| panic!("{method} over {:?}: {error}", self.http))
    }

    async fn error(&self, method: &str, token: Option<&str>, body: Value) -> Value {
        match self.call(method, token, body).await {
            Ok(answer) => panic!("{method} over {:?} succeeded: {answer}", self.http),
            Err(error) => error,
        }
    }
}

fn auth(method: &str) -> String {
    format!("auth.v1.AuthService/{method}")
}

fn tasks(method: &str) -> String {
    format!("tasks.v1.TaskService/{method}")
}

fn text(value: &Value, pointer: &str) -> String {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{pointer} in {value}"))
        .to_owned()
}

async fn start(backend: Backend, mail: &Path) -> GatewayStack {
    let mail = mail.to_owned();
    GatewayStack::start_configured(
        backend,
        move |auth| {
            auth.mail_dir = mail;
        },
        |_| {},
    )
    .await
}

#[tokio::test]
async fn every_rpc_of_both_services_answers_buf_curl_over_connect_on_http1_and_http2() {
    let Some(buf) = buf() else { return };
    on_each_backend(|backend| {
        let buf = buf.clone();
        async move {
            let mail = tempfile::tempdir().expect("a folder");
            let stack = start(backend, mail.path()).await;
            for http in [Http::One, Http::Two] {
                let client = BufCurl {
                    buf: &buf,
                    url: stack.url(),
                    http,
                };
                every_rpc(&client, mail.path()).await;
            }
            stack.stop();
        }
    })
    .await;
}

async fn every_rpc(client: &BufCurl<'_>, mail: &Path) {
    // Reflection over Connect (a bidirectional stream) lists every method.
    let listed = client
        .command("", None, &json!({}))
        .arg("--list-methods")
        .output()
        .await
        .expect("buf runs");
    let listed = String::from_utf8_lossy(&listed.stdout);
    for method in [
        "auth.v1.AuthService/Register",
        "tasks.v1.TaskService/WatchTasks",
    ] {
        assert!(listed.contains(method), "{method} not listed: {listed}");
    }

    let email = unique_email();
    let registered = client
        .ok(
            &auth("Register"),
            None,
            json!({"email": email, "password": PASSWORD, "display_name": "Ada"}),
        )
        .await;
    let user_id = text(&registered, "/user/id");
    let logged_in = client
        .ok(
            &auth("Login"),
            None,
            json!({"email": email, "password": PASSWORD}),
        )
        .await;
    let access = text(&logged_in, "/tokens/accessToken");
    let refresh_token = text(&logged_in, "/tokens/refreshToken");
    let token = Some(access.as_str());

    let me = client.ok(&auth("GetCurrentUser"), token, json!({})).await;
    assert_eq!(text(&me, "/user/id"), user_id);
    let jwks = client.ok(&auth("GetJwks"), None, json!({})).await;
    assert!(jwks.to_string().contains("Ed25519"), "{jwks}");
    let refreshed = client
        .ok(
            &auth("Refresh"),
            None,
            json!({"refresh_token": refresh_token}),
        )
        .await;
    let access = text(&refreshed, "/tokens/accessToken");
    let token = Some(access.as_str());
    let sessions = client.ok(&auth("ListSessions"), token, json!({})).await;
    assert_eq!(
        sessions["sessions"].as_array().map(Vec::len),
        Some(2),
        "Register's and Login's sessions: {sessions}"
    );

    // Tasks: create, get, list, update, complete, delete.
    let created = client
        .ok(
            &tasks("CreateTask"),
            token,
            json!({"title": "Buy milk", "priority": "PRIORITY_HIGH"}),
        )
        .await;
    let id = text(&created, "/task/id");
    let got = client.ok(&tasks("GetTask"), token, json!({"id": id})).await;
    assert_eq!(text(&got, "/task/title"), "Buy milk");
    let listed = client.ok(&tasks("ListTasks"), token, json!({})).await;
    assert_eq!(
        listed["tasks"].as_array().map(Vec::len),
        Some(1),
        "{listed}"
    );
    let updated = client
        .ok(
            &tasks("UpdateTask"),
            token,
            json!({"task": {"id": id, "title": "Buy oat milk"}, "update_mask": "title"}),
        )
        .await;
    assert_eq!(text(&updated, "/task/title"), "Buy oat milk");
    let completed = client
        .ok(
            &tasks("SetTaskCompleted"),
            token,
            json!({"id": id, "completed": true}),
        )
        .await;
    assert_eq!(completed.pointer("/task/completed"), Some(&json!(true)));
    client
        .ok(&tasks("DeleteTask"), token, json!({"id": id}))
        .await;

    // Errors: their Connect codes, messages and details.
    let missing = client
        .error(&tasks("GetTask"), token, json!({"id": id}))
        .await;
    assert_eq!(missing["code"], "not_found", "{missing}");
    let invalid = client
        .error(&tasks("CreateTask"), token, json!({"title": ""}))
        .await;
    assert_eq!(invalid["code"], "invalid_argument", "{invalid}");
    assert!(
        invalid.to_string().contains("google.rpc.BadRequest")
            && invalid.to_string().contains("title"),
        "the BadRequest detail names the field: {invalid}"
    );
    let anonymous = client.error(&tasks("ListTasks"), None, json!({})).await;
    assert_eq!(anonymous["code"], "unauthenticated", "{anonymous}");
    let wrong = client
        .error(
            &auth("Login"),
            None,
            json!({"email": email, "password": "not the password"}),
        )
        .await;
    assert_eq!(wrong["code"], "unauthenticated", "{wrong}");

    // Recovery: the links' tokens come from the mails (each email is new
    // to this round, so each kind of mail to it is the one just asked for).
    client
        .ok(&auth("RequestEmailVerification"), token, json!({}))
        .await;
    let verify = mailed_token(mail, &email, "verify-email").await;
    client
        .ok(&auth("VerifyEmail"), None, json!({"token": verify}))
        .await;
    let me = client.ok(&auth("GetCurrentUser"), token, json!({})).await;
    assert_eq!(
        me.pointer("/user/emailVerified"),
        Some(&json!(true)),
        "{me}"
    );
    client
        .ok(&auth("RequestPasswordReset"), None, json!({"email": email}))
        .await;
    let reset = mailed_token(mail, &email, "reset-password").await;
    let new_password = format!("{PASSWORD} again");
    client
        .ok(
            &auth("ResetPassword"),
            None,
            json!({"token": reset, "new_password": new_password}),
        )
        .await;
    let logged_in = client
        .ok(
            &auth("Login"),
            None,
            json!({"email": email, "password": new_password}),
        )
        .await;
    let access = text(&logged_in, "/tokens/accessToken");
    let token = Some(access.as_str());
    let newer_password = format!("{PASSWORD} once more");
    let changed = client
        .ok(
            &auth("ChangePassword"),
            token,
            json!({"current_password": new_password, "new_password": newer_password}),
        )
        .await;
    let access = text(&changed, "/tokens/accessToken");
    let token = Some(access.as_str());

    // Sessions: a second sign-in, revoked from the first; a third, logged
    // out; then the account deleted.
    let sign_in = |password: String| {
        let email = email.clone();
        async move {
            client
                .ok(
                    &auth("Login"),
                    None,
                    json!({"email": email, "password": password}),
                )
                .await
        }
    };
    sign_in(newer_password.clone()).await;
    let sessions = client.ok(&auth("ListSessions"), token, json!({})).await;
    let other = sessions["sessions"]
        .as_array()
        .expect("sessions")
        .iter()
        .find(|session| session["current"] != json!(true))
        .map(|session| text(session, "/id"))
        .unwrap_or_else(|| panic!("the second session is listed: {sessions}"));
    client
        .ok(&auth("RevokeSession"), token, json!({"session_id": other}))
        .await;
    let sessions = client.ok(&auth("ListSessions"), token, json!({})).await;
    assert!(!sessions.to_string().contains(&other), "{sessions}");
    let third = sign_in(newer_password.clone()).await;
    client
        .ok(
            &auth("Logout"),
            None,
            json!({"refresh_token": text(&third, "/tokens/refreshToken")}),
        )
        .await;
    client
        .ok(
            &auth("DeleteAccount"),
            token,
            json!({"password": newer_password}),
        )
        .await;
    let gone = client
        .error(
            &auth("Login"),
            None,
            json!({"email": email, "password": newer_password}),
        )
        .await;
    assert_eq!(gone["code"], "unauthenticated", "{gone}");
}

#[tokio::test]
async fn watch_tasks_streams_over_connect_to_buf_curl_on_http1_and_http2() {
    let Some(buf) = buf() else { return };
    on_each_backend(|backend| {
        let buf = buf.clone();
        async move {
            let mail = tempfile::tempdir().expect("a folder");
            let stack = start(backend, mail.path()).await;
            let token = stack.register(&unique_email()).await;
            for http in [Http::One, Http::Two] {
                let client = BufCurl {
                    buf: &buf,
                    url: stack.url(),
                    http,
                };
                let mut watching = client
                    .command(&tasks("WatchTasks"), Some(&token), &json!({}))
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("buf runs");
                let mut lines = BufReader::new(watching.stdout.take().expect("stdout")).lines();
                // The stream is open once its first event (or the headers)
                // came; make changes until one shows on it.
                let title = format!("seen live over {http:?}");
                let created = client
                    .ok(&tasks("CreateTask"), Some(&token), json!({"title": title}))
                    .await;
                let id = text(&created, "/task/id");
                // A change made before the stream was open is not
                // replayed: flip the task until a change shows.
                let seen = tokio::time::timeout(PATIENCE, async {
                    let mut output = String::new();
                    let mut completed = false;
                    loop {
                        tokio::select! {
                            line = lines.next_line() => {
                                let line = line.expect("read").expect("the stream stays open");
                                output.push_str(&line);
                                if output.contains(&id) {
                                    return output;
                                }
                            }
                            () = tokio::time::sleep(Duration::from_millis(300)) => {
                                completed = !completed;
                                client
                                    .ok(
                                        &tasks("SetTaskCompleted"),
                                        Some(&token),
                                        json!({"id": id, "completed": completed}),
                                    )
                                    .await;
                            }
                        }
                    }
                })
                .await
                .unwrap_or_else(|_| panic!("no event for {id} over {http:?}"));
                assert!(seen.contains(&id), "{seen}");
                watching.kill().await.expect("buf stops");
            }
            stack.stop();
        }
    })
    .await;
}
