//! What the binary promises as a process: an acknowledged write survives
//! `kill -9`, and SIGTERM drains and exits 0.

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use test_harness::*;
use todo_proto::auth::v1::auth_service_client::AuthServiceClient;
use tonic::transport::Channel;

fn start_binary(db: &TestDatabase, port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_auth-service"))
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--database-url",
            &db.url,
        ])
        .args(auth_file_args(db))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the auth-service binary")
}

/// A client of the binary on `port`, once it listens.
async fn connect(port: u16) -> AuthServiceClient<Channel> {
    AuthServiceClient::new(test_harness::connect(&format!("http://127.0.0.1:{port}")).await)
}

#[tokio::test]
async fn an_acknowledged_registration_survives_kill_9_and_sigterm_exits_0() {
    on_each_backend(|backend| async move {
        let db = backend.fresh().await;
        let port = closed_port().await.port();
        let mut child = start_binary(&db, port);
        let mut client = connect(port).await;
        let email = unique_email();
        let registered = register(&mut client, &email).await;
        child.kill().expect("SIGKILL");
        child.wait().unwrap();

        let port = closed_port().await.port();
        let mut child = start_binary(&db, port);
        let mut client = connect(port).await;
        login(&mut client, &email, PASSWORD)
            .await
            .expect("the account survived kill -9");
        refresh(&mut client, &tokens(&registered.tokens).refresh_token)
            .await
            .expect("so did the session");

        let pid = child.id().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(15);
        let exit = loop {
            if let Some(exit) = child.try_wait().unwrap() {
                break exit;
            }
            assert!(
                Instant::now() < deadline,
                "SIGTERM did not stop the process"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(exit.success(), "exit status after SIGTERM: {exit:?}");
    })
    .await;
}
