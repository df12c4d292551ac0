//! Requests for a password reset give nothing away and cannot be used to
//! flood anyone's mailbox (CONTRACT.md, "Account recovery, verification
//! and deletion"): an unknown email is answered exactly like a known one
//! and gets no mail; requests are throttled per email, alike for known and
//! unknown ones, and per client address, with `RetryInfo`.
//!
//! Every test runs on SQLite and PostgreSQL, with the service's manual
//! clock and an `aiosmtpd` server as the SMTP server ([`SmtpSink`]; the
//! tests are skipped with a notice without it, except on CI). The links
//! themselves are tested in recovery.rs.

use std::time::Duration;

use test_harness::*;
use todo_proto::auth::v1::{self as pb, auth_service_client::AuthServiceClient};
use tonic::{
    Request,
    metadata::{KeyRef, MetadataMap},
    transport::Channel,
};

const APP_URL: &str = "https://todo.example.test";

/// The names of a response's metadata, sorted.
fn keys(metadata: &MetadataMap) -> Vec<String> {
    let mut keys: Vec<String> = metadata
        .keys()
        .map(|key| match key {
            KeyRef::Ascii(key) => key.as_str().to_owned(),
            KeyRef::Binary(key) => key.as_str().to_owned(),
        })
        .collect();
    keys.sort();
    keys
}

/// A server mailing to `sink`, a client of it, a registered email and one
/// nobody registered.
async fn known_and_unknown(
    db: &TestDatabase,
    sink: &SmtpSink,
) -> (AuthServer, AuthServiceClient<Channel>, String, String) {
    let server = AuthServer::start_with(auth_config_mailing(db, sink, APP_URL)).await;
    let mut client = server.client().await;
    let known = unique_email();
    register(&mut client, &known).await;
    (server, client, known, unique_email())
}

#[tokio::test]
async fn an_unknown_email_is_answered_exactly_like_a_known_one_and_gets_no_mail() {
    if !SmtpSink::available() {
        return;
    }
    on_each_backend(|backend| async move {
        let db = backend.fresh().await;
        let sink = SmtpSink::start().await;
        let (server, mut client, known, unknown) = known_and_unknown(&db, &sink).await;

        let for_unknown = request_reset(&mut client, &unknown)
            .await
            .expect("an unknown email is answered OK");
        let for_known = request_reset(&mut client, &known).await.expect("OK");
        assert_eq!(keys(for_unknown.metadata()), keys(for_known.metadata()));
        assert_eq!(for_unknown.into_inner(), for_known.into_inner());

        // The known address's mail arrives; the unknown one, asked for
        // first, got no outbox row and no mail.
        sink.wait_for_mails_to(&known, 1).await;
        let rows = outbox(&db.url).await;
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!(rows[0].recipient, known);
        assert!(sink.mails_to(&unknown).is_empty());
        assert_eq!(sink.mails().len(), 1);
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn reset_requests_are_throttled_per_email_alike_for_known_and_unknown_emails() {
    if !SmtpSink::available() {
        return;
    }
    on_each_backend(|backend| async move {
        let db = backend.fresh().await;
        let sink = SmtpSink::start().await;
        let (server, mut client, known, unknown) = known_and_unknown(&db, &sink).await;

        for email in [&known, &unknown] {
            for _ in 0..3 {
                request_reset(&mut client, email)
                    .await
                    .expect("three per window");
            }
        }
        let refused_known = request_reset(&mut client, &known).await.unwrap_err();
        let refused_unknown = request_reset(&mut client, &unknown).await.unwrap_err();
        let delay = retry_delay(&refused_known);
        assert_eq!(retry_delay(&refused_unknown), delay);
        assert!(delay > Duration::ZERO && delay <= Duration::from_secs(15 * 60));
        assert_eq!(refused_known.message(), refused_unknown.message());
        assert_eq!(
            keys(refused_known.metadata()),
            keys(refused_unknown.metadata())
        );
        request_reset(&mut client, &unique_email())
            .await
            .expect("other emails are not throttled");

        server.clock.advance(delay);
        request_reset(&mut client, &known)
            .await
            .expect("after the RetryInfo delay");
        request_reset(&mut client, &unknown)
            .await
            .expect("after the RetryInfo delay");

        // Four mails went to the known address, none anywhere else.
        sink.wait_for_mails_to(&known, 4).await;
        eventually(PATIENCE, "every queued mail is sent", || async {
            outbox(&db.url).await.iter().all(|row| row.sent)
        })
        .await;
        let rows = outbox(&db.url).await;
        assert_eq!(rows.len(), 4, "{rows:?}");
        assert!(rows.iter().all(|row| row.recipient == known));
        assert_eq!(sink.mails().len(), 4);
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn reset_requests_are_throttled_per_client_address() {
    if !SmtpSink::available() {
        return;
    }
    on_each_backend(|backend| async move {
        let db = backend.fresh().await;
        let sink = SmtpSink::start().await;
        let server = AuthServer::start_with(auth_service::Config {
            // The test's loopback peer is the proxy; addresses come from
            // `x-forwarded-for`.
            trusted_proxies: vec!["127.0.0.1/32".parse().unwrap()],
            address_burst: 3,
            address_rate_per_minute: 1,
            ..auth_config_mailing(&db, &sink, APP_URL)
        })
        .await;
        let mut client = server.client().await;
        let known = unique_email();
        client
            .register(from_address(registration(&known), "198.51.100.9"))
            .await
            .expect("register from elsewhere");

        for _ in 0..3 {
            client
                .request_password_reset(reset_from(&unique_email(), "203.0.113.7"))
                .await
                .expect("within the address's burst");
        }
        let for_unknown = client
            .request_password_reset(reset_from(&unique_email(), "203.0.113.7"))
            .await
            .unwrap_err();
        let for_known = client
            .request_password_reset(reset_from(&known, "203.0.113.7"))
            .await
            .unwrap_err();
        retry_delay(&for_unknown);
        retry_delay(&for_known);
        assert_eq!(for_unknown.message(), for_known.message());
        client
            .request_password_reset(reset_from(&known, "203.0.113.8"))
            .await
            .expect("another address is served");
        sink.wait_for_mails_to(&known, 1).await;
        assert_eq!(outbox(&db.url).await.len(), 1, "only the served request");
        server.stop().await;
    })
    .await;
}

fn reset_from(email: &str, address: &str) -> Request<pb::RequestPasswordResetRequest> {
    from_address(
        pb::RequestPasswordResetRequest {
            email: email.into(),
        },
        address,
    )
}
