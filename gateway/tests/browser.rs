//! The browser test: Debian's Chromium, driven headless by playwright-core
//! (`browser-test/run.mjs`), loads a page from another origin than the
//! gateway; the page registers, creates, lists, sees `NOT_FOUND` and
//! watches its tasks with Connect's gRPC-Web client, and a task created by
//! another client appears on it without a reload.
//!
//! The web app's journey (`web/test/journey.mjs`): sign-up to account
//! deletion in the real app as the gateway serves it, two tabs of one user,
//! a refresh racing in both, a revoked session, the mailed links, and a
//! page of a disallowed origin refused; screenshots of the main screens are
//! kept in `target/web-journey/`.
//!
//! This file boots the real stack in process (the gateway allowing exactly
//! the page's origin) and runs the script as a child process. Without
//! `browser-test/node_modules` or `/usr/bin/chromium` the test is skipped
//! with a notice, except when `CI` is set: CI installs both, so there a
//! missing prerequisite is a failure.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use test_harness::{Backend, GatewayStack, closed_port};

const CHROMIUM: &str = "/usr/bin/chromium";
const TIMEOUT: Duration = Duration::from_secs(180);

fn browser_test_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../browser-test")
}

/// Whether the prerequisites are present; skips (or fails on CI) if not.
fn prerequisites_present() -> bool {
    let node_modules = browser_test_dir().join("node_modules");
    let node = Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success());
    if node_modules.is_dir() && Path::new(CHROMIUM).exists() && node {
        return true;
    }
    let missing = format!(
        "node_modules present: {}, {CHROMIUM} present: {}, node present: {node}",
        node_modules.is_dir(),
        Path::new(CHROMIUM).exists()
    );
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must run the browser test, but its prerequisites are missing ({missing})"
    );
    eprintln!(
        "SKIPPED browser test: run npm ci --prefix browser-test and apt-get install chromium ({missing})"
    );
    false
}

#[tokio::test]
async fn a_page_on_another_origin_uses_the_gateway_and_sees_live_updates_in_chromium() {
    if !prerequisites_present() {
        return;
    }
    // The page's port is chosen here so the gateway can allow exactly its origin.
    let page_port = closed_port().await.port();
    let page_origin = format!("http://127.0.0.1:{page_port}");
    let stack = GatewayStack::start_with(Backend::Sqlite, |config| {
        config.allowed_origins = vec![page_origin.clone()];
    })
    .await;

    let mut command = Command::new("node");
    command
        .arg(browser_test_dir().join("run.mjs"))
        .arg(stack.url())
        .args(["--page-port", &page_port.to_string()])
        .current_dir(browser_test_dir());
    let stdout = run_node(command, "the browser test").await;
    assert!(stdout.contains("PASS browser test"), "{stdout}");
}

fn web_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../web")
}

#[tokio::test]
async fn the_web_app_journey_passes_in_chromium() {
    if !prerequisites_present() {
        return;
    }
    let web_node_modules = web_dir().join("node_modules");
    if !web_node_modules.is_dir() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the web journey, but web/node_modules is missing"
        );
        eprintln!("SKIPPED web journey: run npm ci --prefix web");
        return;
    }
    let mail = tempfile::tempdir().expect("a folder");
    let mail_dir = mail.path().to_owned();
    let stack = GatewayStack::start_configured(
        Backend::Sqlite,
        move |auth| auth.mail_dir = mail_dir,
        |gateway| gateway.web_root = Some(web_dir().join("dist")),
    )
    .await;
    let artifacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/web-journey");

    let mut command = Command::new("node");
    command
        .arg(web_dir().join("test/journey.mjs"))
        .arg(format!("{}/", stack.url()))
        .arg("--artifacts")
        .arg(&artifacts)
        .arg("--mail-dir")
        .arg(mail.path())
        .current_dir(web_dir());
    let stdout = run_node(command, "the web journey").await;
    assert!(!stdout.contains("FAIL"), "{stdout}");
    stack.stop();
}

/// Runs a node script to its end (within [`TIMEOUT`]), shows its output,
/// and asserts it succeeded; returns its standard output.
async fn run_node(mut command: Command, what: &'static str) -> String {
    let run = tokio::task::spawn_blocking(move || command.output());
    let output = tokio::time::timeout(TIMEOUT, run)
        .await
        .unwrap_or_else(|_| panic!("{what} finishes in time"))
        .expect("the blocking task runs")
        .expect("node starts");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    stdout
}
