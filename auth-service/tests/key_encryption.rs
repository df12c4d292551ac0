//! The key-encryption key (KEK) through a deployment's life (checklist
//! K1): with the right one the service starts again on its database and
//! every token issued before still works, at a task-service too; with a
//! wrong one, or none, the binary stops at start with a message that says
//! which flag to fix and shows no secret; and `auth-service rotate-kek`
//! seals everything again with a new KEK, after which the new one alone
//! starts the service, the old one no longer does, and nobody was signed
//! out.

use std::{
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    time::Duration,
};

use auth_service::{
    key_encryption::{self, LocalKeks},
    store::StoredSecret,
};
use serving::database::{Database, PoolOptions};
use test_harness::*;
use todo_proto::tasks::v1 as tasks_pb;

/// What one run of the auth-service binary printed, and how it ended.
struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Runs the auth-service binary on `db` with `kek` and `args` (a
/// subcommand, or nothing to serve) and waits for it to exit: a start that
/// should fail, or a one-off command. Panics if it is still running after
/// [`PATIENCE`] (it started serving).
async fn run_to_exit(db: &TestDatabase, kek: &Path, args: &[&str]) -> Run {
    let (stdout_path, stderr_path) = (db.path("run.out"), db.path("run.err"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_auth-service"))
        .args(["--listen", "127.0.0.1:0", "--database-url", &db.url])
        .arg("--mail-dir")
        .arg(db.path("mail"))
        .arg("--key-encryption-key-file")
        .arg(kek)
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_path).unwrap())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .expect("the auth-service binary starts");
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if tokio::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the auth-service is still running: {args:?} with {}",
                kek.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    Run {
        status,
        stdout: std::fs::read_to_string(stdout_path).unwrap(),
        stderr: std::fs::read_to_string(stderr_path).unwrap(),
    }
}

/// Asserts that a start was refused with a message about the KEK, and that
/// nothing it printed holds a key.
fn assert_refused_for_the_kek(run: &Run, keks: &[&PathBuf], says: &str) {
    assert!(!run.status.success(), "started: {}", run.stdout);
    assert!(
        run.stderr.contains(says) && run.stderr.contains("--key-encryption-key-file"),
        "the refusal says what is wrong and which flag fixes it: {}",
        run.stderr
    );
    for kek in keks {
        if let Ok(key) = std::fs::read_to_string(kek) {
            let key = key.trim();
            assert!(
                !run.stderr.contains(key) && !run.stdout.contains(key),
                "a KEK was printed"
            );
        }
    }
}

/// A fresh KEK file at `name` in the database's folder.
fn new_kek(db: &TestDatabase, name: &str) -> PathBuf {
    let path = db.path(name);
    key_encryption::generate(&path).expect("a new KEK");
    path
}

/// A task-service verifying the tokens of `auth`, fetching its keys anew.
async fn task_service(auth: &AuthServer, database: &TestDatabase) -> TaskServer {
    let tasks =
        TaskServer::start(task_config(&database.url, &auth.url(), auth.clock.clone())).await;
    tasks.wait_serving().await;
    tasks
}

/// The titles of the tasks `token` lists.
async fn titles(tasks: &TaskServer, token: &str) -> Vec<String> {
    list_all(
        &mut tasks.client(token).await,
        tasks_pb::ListTasksRequest::default(),
    )
    .await
    .into_iter()
    .map(|task| task.title)
    .collect()
}

#[tokio::test]
async fn the_right_kek_restarts_with_every_token_valid_and_a_wrong_or_missing_one_stops_the_start()
{
    on_each_backend(|backend| async move {
        let db = backend.fresh().await;
        let tasks_db = TestDatabase::sqlite();
        let server = AuthServer::start(&db).await;
        let pair = tokens(
            &register(&mut server.client().await, &unique_email())
                .await
                .tokens,
        )
        .clone();
        let tasks = task_service(&server, &tasks_db).await;
        create(
            &mut tasks.client(&pair.access_token).await,
            titled("before"),
        )
        .await;
        tasks.stop().await.unwrap();
        server.stop().await;

        let right = key_encryption_key_file(&db);
        let other = new_kek(&db, "another-kek");
        let run = run_to_exit(&db, &other, &[]).await;
        assert_refused_for_the_kek(&run, &[&right, &other], "key-encryption key");
        // No file: on SQLite one is made (the `cargo run` default), which is
        // then the wrong one; on PostgreSQL the key must be given.
        let missing = db.path("no-such-kek");
        let run = run_to_exit(&db, &missing, &[]).await;
        assert_refused_for_the_kek(&run, &[&right, &missing], "key-encryption key");
        if backend == Backend::Postgres {
            assert!(
                run.stderr.contains("cannot read the key-encryption key"),
                "{}",
                run.stderr
            );
        }

        // The right KEK: everything issued before the restarts still works.
        let server = AuthServer::start(&db).await;
        let tasks = task_service(&server, &tasks_db).await;
        assert_eq!(titles(&tasks, &pair.access_token).await, ["before"]);
        let mut client = server.client().await;
        current_user(&mut client, &pair.access_token)
            .await
            .expect("the old access token verifies");
        let next = refresh(&mut client, &pair.refresh_token)
            .await
            .expect("the old refresh token refreshes");
        assert_eq!(titles(&tasks, &next.access_token).await, ["before"]);
        tasks.stop().await.unwrap();
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn rotate_kek_reseals_every_secret_and_the_new_kek_alone_starts_with_nobody_signed_out() {
    on_each_backend(|backend| async move {
        let db = backend.fresh().await;
        let tasks_db = TestDatabase::sqlite();
        let server = AuthServer::start(&db).await;
        let mut client = server.client().await;
        let email = unique_email();
        let pair = tokens(&register(&mut client, &email).await.tokens).clone();
        let tasks = task_service(&server, &tasks_db).await;
        create(&mut tasks.client(&pair.access_token).await, titled("kept")).await;
        tasks.stop().await.unwrap();
        server.stop().await;

        let old = key_encryption_key_file(&db);
        let new = new_kek(&db, "new-kek");
        let previous = old.display().to_string();
        let rotate = [
            "--previous-key-encryption-key-file",
            &previous,
            "rotate-kek",
        ];
        let run = run_to_exit(&db, &new, &rotate).await;
        assert!(run.status.success(), "rotate-kek failed: {}", run.stderr);
        let resealed: usize = run
            .stdout
            .lines()
            .find_map(|line| line.strip_suffix(" secret(s) sealed with the new key-encryption key"))
            .and_then(|count| count.trim().parse().ok())
            .unwrap_or_else(|| panic!("rotate-kek says how many it sealed: {}", run.stdout));
        assert!(
            resealed >= 2,
            "the signing key and the successor key: {resealed}"
        );
        let again = run_to_exit(&db, &new, &rotate).await;
        assert!(
            again.stdout.contains("0 secret(s) sealed"),
            "nothing is left to reseal: {}",
            again.stdout
        );

        // Every secret is sealed with the new KEK now...
        let new_id = LocalKeks::load(&new, None, false)
            .unwrap()
            .current_id()
            .to_owned();
        let database = Database::open(
            &db.url.clone().into(),
            PoolOptions::new(1, Duration::from_secs(5)),
            auth_service::store::MIGRATIONS,
        )
        .await
        .unwrap();
        let store = auth_service::store::open(&database, chrono::TimeDelta::minutes(15));
        for (slot, stored) in store.stored_secrets().await.unwrap() {
            match stored {
                StoredSecret::Sealed(sealed) => assert_eq!(sealed.kek_id, new_id, "{slot:?}"),
                StoredSecret::Plain(_) => panic!("{slot:?} is stored unsealed"),
            }
        }
        database.close().await;
        // ...so the old one alone no longer starts the service...
        let run = run_to_exit(&db, &old, &[]).await;
        assert_refused_for_the_kek(&run, &[&old, &new], "key-encryption key");

        // ...and the new one alone does, with everyone still signed in.
        let server = AuthServer::start_with(auth_service::Config {
            key_encryption_key_file: new.clone(),
            ..auth_config(&db)
        })
        .await;
        let tasks = task_service(&server, &tasks_db).await;
        assert_eq!(titles(&tasks, &pair.access_token).await, ["kept"]);
        let mut client = server.client().await;
        let next = refresh(&mut client, &pair.refresh_token)
            .await
            .expect("the session outlived the rotation");
        current_user(&mut client, &next.access_token).await.unwrap();
        login(&mut client, &email, PASSWORD).await.unwrap();
        tasks.stop().await.unwrap();
        server.stop().await;
    })
    .await;
}
