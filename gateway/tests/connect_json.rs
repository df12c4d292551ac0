//! Plain JSON through the gateway, spoken by `curl`: the Connect protocol's
//! unary JSON form, which needs no client library. Calls of both services,
//! HTTP statuses from the gRPC codes, JSON error bodies with their details,
//! and `415` for a content type the gateway does not speak, all changing
//! nothing.

use serde_json::{Value, json};
use test_harness::{GatewayStack, PASSWORD, on_each_backend, unique_email};
use tokio::process::Command;

/// `curl` with a JSON body; answers the HTTP status and the body.
async fn curl(url: &str, content_type: &str, token: Option<&str>, body: &str) -> (u16, String) {
    let mut command = Command::new("curl");
    command.args(["-sS", "-w", "\n%{http_code}", "-H"]);
    command.arg(format!("content-type: {content_type}"));
    if let Some(token) = token {
        command.args(["-H", &format!("authorization: Bearer {token}")]);
    }
    let output = command
        .args(["--data-binary", body, url])
        .output()
        .await
        .expect("curl runs");
    let output = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, status) = output.rsplit_once('\n').expect("a status line");
    (status.parse().expect("an HTTP status"), body.to_owned())
}

#[tokio::test]
async fn curl_with_json_calls_the_api_and_reads_connect_errors() {
    on_each_backend(|backend| async move {
        let stack = GatewayStack::start(backend).await;
        let url = |method: &str| format!("{}/{method}", stack.url());
        let auth = |method: &str| format!("auth.v1.AuthService/{method}");
        let tasks = |method: &str| format!("tasks.v1.TaskService/{method}");
        let text = |value: &Value, pointer: &str| {
            value
                .pointer(pointer)
                .and_then(Value::as_str)
                .unwrap_or_else(|| panic!("{pointer} in {value}"))
                .to_owned()
        };
        let email = unique_email();
        let body = json!({"email": email, "password": PASSWORD, "display_name": "Ada"});
        let (status, registered) = curl(
            &url(&auth("Register")),
            "application/json",
            None,
            &body.to_string(),
        )
        .await;
        assert_eq!(status, 200, "{registered}");
        let registered: Value = serde_json::from_str(&registered).expect("JSON");
        let token = text(&registered, "/tokens/accessToken");

        let (status, created) = curl(
            &url(&tasks("CreateTask")),
            "application/json",
            Some(&token),
            r#"{"title":"Write the report","dueTime":"2030-01-02T03:04:05Z"}"#,
        )
        .await;
        assert_eq!(status, 200, "{created}");
        let created: Value = serde_json::from_str(&created).expect("JSON");
        assert_eq!(text(&created, "/task/dueTime"), "2030-01-02T03:04:05Z");

        // Errors: HTTP status from the code, a JSON body with details.
        let (status, missing) = curl(
            &url(&tasks("GetTask")),
            "application/json",
            Some(&token),
            r#"{"id":"01a230c2-b69e-7763-b842-d83d70563c0c"}"#,
        )
        .await;
        assert_eq!(status, 404, "{missing}");
        let missing: Value = serde_json::from_str(&missing).expect("JSON");
        assert_eq!(missing["code"], "not_found");
        let (status, invalid) = curl(
            &url(&tasks("CreateTask")),
            "application/json",
            Some(&token),
            r#"{"title":""}"#,
        )
        .await;
        assert_eq!(status, 400, "{invalid}");
        let invalid: Value = serde_json::from_str(&invalid).expect("JSON");
        assert_eq!(invalid["code"], "invalid_argument");
        assert_eq!(
            invalid.pointer("/details/0/type").and_then(Value::as_str),
            Some("google.rpc.BadRequest"),
            "{invalid}"
        );
        let (status, broken) = curl(
            &url(&tasks("CreateTask")),
            "application/json",
            Some(&token),
            r#"{"title": "unclosed"#,
        )
        .await;
        assert_eq!(status, 400, "{broken}");
        let (status, anonymous) =
            curl(&url(&tasks("ListTasks")), "application/json", None, "{}").await;
        assert_eq!(status, 401, "{anonymous}");

        // What the gateway does not speak is refused before any service.
        let (status, body) =
            curl(&url(&tasks("ListTasks")), "text/plain", Some(&token), "{}").await;
        assert_eq!(status, 415, "{body}");
        let (status, _) = curl(
            &url(&tasks("ListTasks")),
            "application/xml",
            Some(&token),
            "<ListTasksRequest/>",
        )
        .await;
        assert_eq!(status, 415);

        // Nothing above changed anything: the one task is there.
        let (status, listed) = curl(
            &url(&tasks("ListTasks")),
            "application/json",
            Some(&token),
            "{}",
        )
        .await;
        assert_eq!(status, 200, "{listed}");
        let listed: Value = serde_json::from_str(&listed).expect("JSON");
        assert_eq!(
            listed["tasks"].as_array().map(Vec::len),
            Some(1),
            "{listed}"
        );
        stack.stop();
    })
    .await;
}
