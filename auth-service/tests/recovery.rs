//! Password reset and email verification through mail that a real SMTP
//! server received (CONTRACT.md, "Account recovery, verification and
//! deletion"): the link in the mail resets the password and ends every
//! session, or verifies the address (in `User` and in the access token's
//! claim); a link that is not live (superseded, used, expired, of the
//! other kind, made up) answers `UNAUTHENTICATED`, always with the same
//! message; a password change voids reset links. What a request for a
//! link gives away, and how requests are throttled: recovery_throttling.rs.
//!
//! Every test runs on SQLite and PostgreSQL, with the service's manual
//! clock and an `aiosmtpd` server as the SMTP server ([`SmtpSink`]; the
//! tests are skipped with a notice without it, except on CI).

use std::time::Duration;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use test_harness::*;
use todo_proto::auth::v1::{self as pb, auth_service_client::AuthServiceClient};
use tonic::{Code, Status, transport::Channel};

const APP_URL: &str = "https://todo.example.test";
const NEW_PASSWORD: &str = "a brand new passphrase";

type Client = AuthServiceClient<Channel>;

async fn start(db: &TestDatabase, sink: &SmtpSink) -> AuthServer {
    AuthServer::start_with(auth_config_mailing(db, sink, APP_URL)).await
}

async fn reset(client: &mut Client, token: &str, new_password: &str) -> Result<(), Status> {
    client
        .reset_password(pb::ResetPasswordRequest {
            token: token.into(),
            new_password: new_password.into(),
        })
        .await
        .map(|_| ())
}

async fn ask_verification(client: &mut Client, access_token: &str) -> Result<(), Status> {
    client
        .request_email_verification(authorized(
            pb::RequestEmailVerificationRequest {},
            access_token,
        ))
        .await
        .map(|_| ())
}

async fn verify(client: &mut Client, token: &str) -> Result<pb::User, Status> {
    client
        .verify_email(pb::VerifyEmailRequest {
            token: token.into(),
        })
        .await
        .map(|response| response.into_inner().user.expect("a user"))
}

/// Asks for a reset of `email` and returns the token of the link in the
/// mail that arrives: the `nth` mail to that address (from 1).
async fn reset_token_by_mail(
    client: &mut Client,
    sink: &SmtpSink,
    email: &str,
    nth: usize,
) -> String {
    request_reset(client, email)
        .await
        .expect("RequestPasswordReset");
    sink.wait_for_mails_to(email, nth).await[nth - 1].token()
}

/// The `email_verified` claim of an access token (read, not verified:
/// tokens.rs proves the signature).
fn email_verified_claim(access_token: &str) -> bool {
    let payload = access_token.split('.').nth(1).expect("a JWT");
    let claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64url"))
            .expect("JSON claims");
    claims["email_verified"]
        .as_bool()
        .expect("an email_verified claim")
}

#[tokio::test]
async fn a_reset_link_from_the_mail_sets_the_new_password_and_ends_every_session() {
    if !SmtpSink::available() {
        return;
    }
    on_each_backend(|backend| async move {
        let db = backend.fresh().await;
        let sink = SmtpSink::start().await;
        let server = start(&db, &sink).await;
        let mut client = server.client().await;
        let email = unique_email();
        let registered = register(&mut client, &email).await;
        let elsewhere = login(&mut client, &email, PASSWORD).await.unwrap();

        let token = reset_token_by_mail(&mut client, &sink, &email, 1).await;
        reset(&mut client, &token, NEW_PASSWORD)
            .await
            .expect("the link from the mail resets the password");

        let old = login(&mut client, &email, PASSWORD).await;
        assert_eq!(code(old), Code::Unauthenticated, "the old password");
        let signed_in = login(&mut client, &email, NEW_PASSWORD)
            .await
            .expect("the new password signs in");
        for ended in [tokens(&registered.tokens), tokens(&elsewhere.tokens)] {
            let refreshed = refresh(&mut client, &ended.refresh_token).await;
            assert_eq!(code(refreshed), Code::Unauthenticated, "a session lives on");
            let called = current_user(&mut client, &ended.access_token).await;
            assert_eq!(
                code(called),
                Code::Unauthenticated,
                "an access token lives on"
            );
        }
        current_user(&mut client, &tokens(&signed_in.tokens).access_token)
            .await
            .expect("the new session works");
        let again = reset(&mut client, &token, "yet another passphrase").await;
        assert_eq!(code(again), Code::Unauthenticated, "a link works once");
        login(&mut client, &email, NEW_PASSWORD)
            .await
            .expect("the spent link changed nothing");
        assert_eq!(sink.mails().len(), 1);
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_verification_link_from_the_mail_marks_the_email_verified_in_the_user_and_the_token() {
    if !SmtpSink::available() {
        return;
    }
    on_each_backend(|backend| async move {
        let db = backend.fresh().await;
        let sink = SmtpSink::start().await;
        let server = start(&db, &sink).await;
        let mut client = server.client().await;
        let email = unique_email();
        let registered = register(&mut client, &email).await;
        let pair = tokens(&registered.tokens);
        assert!(!registered.user.as_ref().unwrap().email_verified);
        assert!(!email_verified_claim(&pair.access_token));

        ask_verification(&mut client, &pair.access_token)
            .await
            .expect("RequestEmailVerification");
        let mail = sink.wait_for_mails_to(&email, 1).await.remove(0);
        let prefix = format!("{APP_URL}/verify-email?token=");
        assert!(mail.link().starts_with(&prefix), "{}", mail.link());
        let verified = verify(&mut client, &mail.token())
            .await
            .expect("the link from the mail verifies the address");
        assert!(verified.email_verified);
        assert_eq!(
            Some(&verified.id),
            registered.user.as_ref().map(|user| &user.id)
        );

        let user = current_user(&mut client, &pair.access_token).await.unwrap();
        assert!(user.email_verified, "GetCurrentUser says verified");
        let refreshed = refresh(&mut client, &pair.refresh_token).await.unwrap();
        assert!(email_verified_claim(&refreshed.access_token), "refreshed");
        let signed_in = login(&mut client, &email, PASSWORD).await.unwrap();
        assert!(signed_in.user.unwrap().email_verified);
        assert!(email_verified_claim(
            &tokens(&signed_in.tokens).access_token
        ));

        let again = verify(&mut client, &mail.token()).await;
        assert_eq!(code(again), Code::Unauthenticated, "a link works once");
        // Verified already: asking again is answered and queues nothing
        // (the request queues before it answers).
        ask_verification(&mut client, &refreshed.access_token)
            .await
            .expect("asking again is no error");
        assert_eq!(outbox(&db.url).await.len(), 1, "nothing more was queued");
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn superseded_used_expired_foreign_and_made_up_links_are_unauthenticated_alike() {
    if !SmtpSink::available() {
        return;
    }
    on_each_backend(|backend| async move {
        let db = backend.fresh().await;
        let sink = SmtpSink::start().await;
        let server = start(&db, &sink).await;
        let mut client = server.client().await;
        let emails: Vec<String> = (0..4).map(|_| unique_email()).collect();
        let mut access = Vec::new();
        for email in &emails {
            access.push(
                tokens(&register(&mut client, email).await.tokens)
                    .access_token
                    .clone(),
            );
        }
        let mut refused: Vec<(&str, Status)> = Vec::new();

        // Each token is read after its mail arrived, so the order in which
        // they were made is known.
        let superseded = reset_token_by_mail(&mut client, &sink, &emails[0], 1).await;
        let live = reset_token_by_mail(&mut client, &sink, &emails[0], 2).await;
        let error = reset(&mut client, &superseded, NEW_PASSWORD)
            .await
            .unwrap_err();
        refused.push(("a superseded reset link", error));

        let reset_link = reset_token_by_mail(&mut client, &sink, &emails[1], 1).await;
        ask_verification(&mut client, &access[1]).await.unwrap();
        let verify_link = sink.wait_for_mails_to(&emails[1], 2).await[1].token();
        let error = reset(&mut client, &verify_link, NEW_PASSWORD)
            .await
            .unwrap_err();
        refused.push(("a verification link used to reset", error));
        let error = verify(&mut client, &reset_link).await.unwrap_err();
        refused.push(("a reset link used to verify", error));
        reset(&mut client, &reset_link, NEW_PASSWORD)
            .await
            .expect("the reset link itself was live");
        verify(&mut client, &verify_link)
            .await
            .expect("so was the verification link");

        let made_up = URL_SAFE_NO_PAD.encode([7u8; 32]);
        let error = reset(&mut client, &made_up, NEW_PASSWORD)
            .await
            .unwrap_err();
        refused.push(("a made-up reset link", error));
        let error = verify(&mut client, &made_up).await.unwrap_err();
        refused.push(("a made-up verification link", error));
        let error = reset(&mut client, "not-a-token", NEW_PASSWORD)
            .await
            .unwrap_err();
        refused.push(("a malformed reset link", error));
        let error = verify(&mut client, "").await.unwrap_err();
        refused.push(("an empty verification link", error));

        let expiring_reset = reset_token_by_mail(&mut client, &sink, &emails[2], 1).await;
        ask_verification(&mut client, &access[2]).await.unwrap();
        let lasting_verify = sink.wait_for_mails_to(&emails[2], 2).await[1].token();
        ask_verification(&mut client, &access[3]).await.unwrap();
        let expiring_verify = sink.wait_for_mails_to(&emails[3], 1).await[0].token();

        // A reset link lives 30 minutes.
        server.clock.advance(Duration::from_secs(30 * 60 - 1));
        reset(&mut client, &live, NEW_PASSWORD)
            .await
            .expect("a reset link works until it expires");
        let error = reset(&mut client, &live, "another passphrase")
            .await
            .unwrap_err();
        refused.push(("a used reset link", error));
        server.clock.advance(Duration::from_secs(2));
        let error = reset(&mut client, &expiring_reset, NEW_PASSWORD)
            .await
            .unwrap_err();
        refused.push(("an expired reset link", error));
        login(&mut client, &emails[2], PASSWORD)
            .await
            .expect("the expired link changed nothing");

        // A verification link lives 24 hours.
        server
            .clock
            .advance(Duration::from_secs(24 * 3600 - 30 * 60 - 2));
        verify(&mut client, &lasting_verify)
            .await
            .expect("a verification link works until it expires");
        server.clock.advance(Duration::from_secs(2));
        let error = verify(&mut client, &expiring_verify).await.unwrap_err();
        refused.push(("an expired verification link", error));
        let user = login(&mut client, &emails[3], PASSWORD).await.unwrap().user;
        assert!(
            !user.unwrap().email_verified,
            "the expired link verified nothing"
        );

        let message = refused[0].1.message().to_owned();
        for (what, status) in &refused {
            assert_eq!(status.code(), Code::Unauthenticated, "{what}: {status:?}");
            assert_eq!(status.message(), message, "{what} says something else");
        }
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_password_change_voids_outstanding_reset_links() {
    if !SmtpSink::available() {
        return;
    }
    on_each_backend(|backend| async move {
        let db = backend.fresh().await;
        let sink = SmtpSink::start().await;
        let server = start(&db, &sink).await;
        let mut client = server.client().await;
        let email = unique_email();
        let registered = register(&mut client, &email).await;
        let token = reset_token_by_mail(&mut client, &sink, &email, 1).await;

        client
            .change_password(authorized(
                pb::ChangePasswordRequest {
                    current_password: PASSWORD.into(),
                    new_password: "the changed passphrase".into(),
                },
                &tokens(&registered.tokens).access_token,
            ))
            .await
            .expect("ChangePassword");
        let stale = reset(&mut client, &token, NEW_PASSWORD).await;
        assert_eq!(
            code(stale),
            Code::Unauthenticated,
            "the change voided the link"
        );
        login(&mut client, &email, "the changed passphrase")
            .await
            .expect("the changed password stays");
        let reset_one = login(&mut client, &email, NEW_PASSWORD).await;
        assert_eq!(code(reset_one), Code::Unauthenticated);
        server.stop().await;
    })
    .await;
}
