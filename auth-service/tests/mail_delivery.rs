//! The outbox and its delivery worker, against a real SMTP server
//! ([`SmtpSink`], `aiosmtpd`): a mail accepted while the SMTP server is
//! down arrives once it is back; a `kill -9` of the binary between the
//! commit and the send loses nothing and sends nothing twice; replicas on
//! one PostgreSQL database drain one outbox sending each mail once; a mail
//! that keeps failing is marked failed and never tried again.
//!
//! Every test runs on SQLite and PostgreSQL. On SQLite the replica test
//! runs one process (the design: an embedded database has one writer
//! process); on PostgreSQL it runs two. Time moves by the service's
//! manual clock, except for the binary, which runs on the system clock (its
//! first retry comes a second after the failure). The tests are skipped
//! with a notice without `aiosmtpd`, except on CI.

use std::{collections::BTreeMap, time::Duration};

use test_harness::*;
use todo_proto::auth::v1::{self as pb, auth_service_client::AuthServiceClient};
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;

const APP_URL: &str = "https://todo.example.test";
const BINARY: &str = env!("CARGO_BIN_EXE_auth-service");

type Client = AuthServiceClient<Channel>;

async fn ask_reset(client: &mut Client, email: &str) {
    request_reset(client, email)
        .await
        .expect("RequestPasswordReset is accepted");
}

async fn reset(client: &mut Client, token: &str) -> Result<(), tonic::Status> {
    client
        .reset_password(pb::ResetPasswordRequest {
            token: token.into(),
            new_password: "a brand new passphrase".into(),
        })
        .await
        .map(|_| ())
}

/// Waits until the outbox holds `count` rows and `settled` holds for each.
async fn wait_for_outbox(
    db: &TestDatabase,
    count: usize,
    what: &str,
    settled: fn(&OutboxRow) -> bool,
) {
    eventually(PATIENCE, what, || async {
        let rows = outbox(&db.url).await;
        rows.len() == count && rows.iter().all(settled)
    })
    .await;
}

#[tokio::test]
async fn a_mail_accepted_while_the_smtp_server_is_down_arrives_once_it_is_back() {
    if !SmtpSink::available() {
        return;
    }
    on_each_backend(|backend| async move {
        let db = backend.fresh().await;
        let mut sink = SmtpSink::stopped().await;
        let server = AuthServer::start_with(auth_config_mailing(&db, &sink, APP_URL)).await;
        let mut client = server.client().await;
        let email = unique_email();
        register(&mut client, &email).await;

        ask_reset(&mut client, &email).await;
        wait_for_outbox(&db, 1, "a send fails while SMTP is down", |row| {
            row.attempts >= 1 && !row.sent && !row.failed
        })
        .await;
        assert!(sink.mails().is_empty());

        sink.resume().await;
        // Past the longest retry delay, well within the link's 30 minutes.
        server.clock.advance(Duration::from_secs(16 * 60));
        let mail = sink.wait_for_mails_to(&email, 1).await.remove(0);
        wait_for_outbox(&db, 1, "the mail is recorded as sent", |row| row.sent).await;
        assert_eq!(sink.mails().len(), 1, "sent once");
        reset(&mut client, &mail.token())
            .await
            .expect("the late mail's link works");
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_kill_9_between_commit_and_send_still_delivers_the_mail_exactly_once() {
    if !SmtpSink::available() {
        return;
    }
    on_each_backend(|backend| async move {
        let db = backend.fresh().await;
        let mut sink = SmtpSink::stopped().await;
        let args = ["--smtp-url".to_owned(), sink.url()];
        let first = AuthProcess::start(BINARY, &db, &args, "info").await;
        let mut client = first.client().await;
        let email = unique_email();
        register(&mut client, &email).await;
        ask_reset(&mut client, &email).await;
        // Committed, and tried once against nothing; the next try is a
        // second away when the process dies.
        wait_for_outbox(&db, 1, "the mail is queued and a send failed", |row| {
            row.attempts >= 1
        })
        .await;
        first.kill();
        let rows = outbox(&db.url).await;
        assert!(!rows[0].sent && !rows[0].failed, "{rows:?}");

        sink.resume().await;
        let second = AuthProcess::start(BINARY, &db, &args, "info").await;
        let mail = sink.wait_for_mails_to(&email, 1).await.remove(0);
        wait_for_outbox(&db, 1, "the mail is recorded as sent", |row| row.sent).await;
        assert_eq!(sink.mails().len(), 1, "the mail arrived once");
        reset(&mut second.client().await, &mail.token())
            .await
            .expect("its link works");
        second.kill();
    })
    .await;
}

#[tokio::test]
async fn replicas_on_one_database_drain_one_outbox_sending_each_mail_once() {
    if !SmtpSink::available() {
        return;
    }
    const USERS: usize = 20;
    const MAILS_EACH: usize = 3;
    on_each_backend(|backend| async move {
        let db = backend.fresh().await;
        let mut sink = SmtpSink::stopped().await;
        // One clock for both, so that either may claim what the other queued.
        let clock = serving::clock::Clock::manual();
        let replicas = match backend {
            Backend::Sqlite => vec!["replica-a"],
            Backend::Postgres => vec!["replica-a", "replica-b"],
        };
        let (mut servers, mut clients) = (Vec::new(), Vec::new());
        for name in &replicas {
            let server = AuthServer::start_with(auth_service::Config {
                clock: clock.clone(),
                mail_from: format!("Todo <{name}@example.test>"),
                ..auth_config_mailing(&db, &sink, APP_URL)
            })
            .await;
            // Serving (migrated, keys made) before the next one starts.
            wait_for_health(&server.url(), "", ServingStatus::Serving, PATIENCE).await;
            clients.push(server.client().await);
            servers.push(server);
        }

        // Queued through every replica while SMTP is down, so each worker
        // has tried, and all are due together when it comes back.
        let emails: Vec<String> = (0..USERS).map(|_| unique_email()).collect();
        for (n, email) in emails.iter().enumerate() {
            let replicas = clients.len();
            register(&mut clients[n % replicas], email).await;
        }
        for round in 0..MAILS_EACH {
            for (n, email) in emails.iter().enumerate() {
                let replicas = clients.len();
                ask_reset(&mut clients[(n + round) % replicas], email).await;
            }
        }
        let total = USERS * MAILS_EACH;
        wait_for_outbox(&db, total, "every mail is queued and was tried", |row| {
            row.attempts >= 1
        })
        .await;

        sink.resume().await;
        clock.advance(Duration::from_secs(60));
        eventually(PATIENCE, "every mail is sent", || async {
            outbox(&db.url).await.iter().all(|row| row.sent)
        })
        .await;

        let mails = sink.mails();
        let mut ids: Vec<&str> = mails
            .iter()
            .map(|mail| mail.header("message-id").expect("a Message-ID"))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), total, "distinct mails");
        assert_eq!(mails.len(), total, "each mail arrived once");
        for email in &emails {
            assert_eq!(sink.mails_to(email).len(), MAILS_EACH, "{email}");
        }
        let mut senders = BTreeMap::new();
        for mail in &mails {
            *senders
                .entry(mail.envelope_sender().to_owned())
                .or_insert(0) += 1;
        }
        eprintln!("mails sent per replica: {senders:?}");
        for server in servers {
            server.stop().await;
        }
    })
    .await;
}

#[tokio::test]
async fn a_mail_that_keeps_failing_is_marked_failed_and_never_tried_again() {
    if !SmtpSink::available() {
        return;
    }
    on_each_backend(|backend| async move {
        let db = backend.fresh().await;
        let mut sink = SmtpSink::stopped().await;
        let server = AuthServer::start_with(auth_config_mailing(&db, &sink, APP_URL)).await;
        let mut client = server.client().await;
        let email = unique_email();
        register(&mut client, &email).await;
        ask_reset(&mut client, &email).await;

        // Each retry comes due when the clock passes the longest delay.
        for attempt in 1..=auth_service::mail::MAX_ATTEMPTS {
            eventually(PATIENCE, &format!("attempt {attempt} fails"), || async {
                // The mail is queued after the call answers (so its timing
                // says nothing about the account): wait for the row too.
                outbox(&db.url)
                    .await
                    .first()
                    .is_some_and(|row| row.attempts >= attempt)
            })
            .await;
            server.clock.advance(Duration::from_secs(16 * 60));
        }
        wait_for_outbox(&db, 1, "the mail is marked failed", |row| row.failed).await;
        let given_up = outbox(&db.url).await.remove(0);
        assert_eq!(given_up.attempts, auth_service::mail::MAX_ATTEMPTS);
        assert!(!given_up.sent);
        assert_eq!(given_up.body_bytes, 0, "a failed mail keeps no body");

        // SMTP is back and a new mail goes out; the failed one stays failed.
        sink.resume().await;
        server.clock.advance(Duration::from_secs(24 * 3600));
        ask_reset(&mut client, &email).await;
        let arrived = sink.wait_for_mails_to(&email, 1).await;
        wait_for_outbox(&db, 2, "the new mail is settled", |row| {
            row.sent || row.failed
        })
        .await;
        let rows = outbox(&db.url).await;
        assert_eq!(
            rows.iter().find(|row| row.id == given_up.id),
            Some(&given_up)
        );
        assert_eq!(arrived.len(), 1);
        assert_eq!(sink.mails().len(), 1, "only the new mail was sent");
        server.stop().await;
    })
    .await;
}
