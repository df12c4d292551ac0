//! What a mail holds and where its token goes: a plain-text and an HTML
//! part carrying a link built from `--app-url` (with the name escaped in
//! HTML); without `--smtp-url` each mail is an `.eml` file in `--mail-dir`
//! that only the service's user can read, and the log says where; and a
//! whole recovery run of the binary at TRACE logs no mail token (in clear
//! or hashed), no password and no refresh token: the token is in the mail
//! only.
//!
//! Every test runs on SQLite and PostgreSQL; the mail tests use a real
//! SMTP server ([`SmtpSink`], `aiosmtpd`) and are skipped with a notice
//! without it, except on CI.

use std::os::unix::fs::PermissionsExt;

use base64::{
    Engine,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};
use sha2::{Digest, Sha256};
use test_harness::*;
use todo_proto::auth::v1::{self as pb, auth_service_client::AuthServiceClient};
use tonic::transport::Channel;

const BINARY: &str = env!("CARGO_BIN_EXE_auth-service");
const APP_URL: &str = "https://todo.example.test";
const NEW_PASSWORD: &str = "a brand new passphrase";

type Client = AuthServiceClient<Channel>;

async fn ask_reset(client: &mut Client, email: &str) {
    request_reset(client, email)
        .await
        .expect("RequestPasswordReset");
}

async fn ask_verification(client: &mut Client, access_token: &str) {
    client
        .request_email_verification(authorized(
            pb::RequestEmailVerificationRequest {},
            access_token,
        ))
        .await
        .expect("RequestEmailVerification");
}

async fn reset(client: &mut Client, token: &str) {
    client
        .reset_password(pb::ResetPasswordRequest {
            token: token.into(),
            new_password: NEW_PASSWORD.into(),
        })
        .await
        .expect("the link from the mail resets the password");
}

#[tokio::test]
async fn a_mail_has_a_text_and_an_html_part_with_the_link_built_from_the_app_url() {
    if !SmtpSink::available() {
        return;
    }
    on_each_backend(|backend| async move {
        let db = backend.fresh().await;
        let sink = SmtpSink::start().await;
        let server = AuthServer::start_with(auth_service::Config {
            mail_from: "Todo Test <todo@example.test>".into(),
            ..auth_config_mailing(&db, &sink, "https://app.example.test/todo/")
        })
        .await;
        let mut client = server.client().await;
        let email = unique_email();
        let registered = client
            .register(pb::RegisterRequest {
                email: email.clone(),
                password: PASSWORD.into(),
                display_name: "Ada & <Lovelace>".into(),
            })
            .await
            .unwrap()
            .into_inner();
        ask_reset(&mut client, &email).await;
        sink.wait_for_mails_to(&email, 1).await;
        ask_verification(&mut client, &tokens(&registered.tokens).access_token).await;
        let mails = sink.wait_for_mails_to(&email, 2).await;

        let kinds = [
            ("reset-password", "Reset your password"),
            ("verify-email", "Confirm your email address"),
        ];
        for (mail, (path, subject)) in mails.iter().zip(kinds) {
            assert_eq!(mail.header("subject"), Some(subject));
            assert!(mail.header("from").unwrap().contains("<todo@example.test>"));
            assert_eq!(mail.envelope_sender(), "todo@example.test");
            assert_eq!(mail.header("to"), Some(email.as_str()));
            assert_eq!(mail.recipient(), email);
            let content_type = mail.header("content-type").unwrap();
            assert!(
                content_type.starts_with("multipart/alternative"),
                "{content_type}"
            );

            let token = mail.token();
            assert_eq!(token.len(), 43, "256 bits, base64url");
            assert!(
                URL_SAFE_NO_PAD
                    .decode(&token)
                    .is_ok_and(|bits| bits.len() == 32)
            );
            let link = format!("https://app.example.test/todo/{path}?token={token}");
            assert_eq!(mail.link(), link, "the link is built from --app-url");
            assert!(
                mail.text().contains("Hello Ada & <Lovelace>,"),
                "{}",
                mail.text()
            );
            let html = mail.html();
            assert!(html.contains(&format!("href=\"{link}\"")), "{html}");
            assert!(
                html.contains("Ada &amp; &lt;Lovelace&gt;"),
                "escaped: {html}"
            );
            assert!(!html.contains("<Lovelace>"));
        }
        assert_ne!(mails[0].token(), mails[1].token());
        eventually(PATIENCE, "both mails are recorded as sent", || async {
            outbox(&db.url).await.iter().all(|row| row.sent)
        })
        .await;
        for row in outbox(&db.url).await {
            assert_eq!(row.body_bytes, 0, "a sent mail keeps no body");
        }
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn without_an_smtp_url_each_mail_is_a_private_eml_file_and_the_log_says_where() {
    on_each_backend(|backend| async move {
        let db = backend.fresh().await;
        let args = ["--app-url".to_owned(), APP_URL.to_owned()];
        let process = AuthProcess::start(BINARY, &db, &args, "info").await;
        let mut client = process.client().await;
        let email = unique_email();
        register(&mut client, &email).await;
        ask_reset(&mut client, &email).await;

        // Logged once the file is written and synced.
        eventually(PATIENCE, "the log says a mail was written", || {
            let written = process_log(&db).contains("mail written");
            async move { written }
        })
        .await;
        let folder = db.path("mail");
        let files = mail_files(&folder);
        assert_eq!(files.len(), 1, "{files:?}");
        let file = &files[0];
        let log = process_log(&db);
        assert!(
            log.contains(&file.display().to_string()),
            "the log names {file:?}"
        );
        let mode = |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode();
        assert_eq!(
            mode(file) & 0o777,
            0o600,
            "the mail file is the service's own"
        );
        assert_eq!(mode(&folder) & 0o777, 0o700, "so is the mail folder");

        let mail = ReceivedMail::read(file);
        assert_eq!(mail.header("to"), Some(email.as_str()));
        assert!(mail.html.is_some());
        let prefix = format!("{APP_URL}/reset-password?token=");
        assert!(mail.link().starts_with(&prefix), "{}", mail.link());
        reset(&mut client, &mail.token()).await;
        login(&mut client, &email, NEW_PASSWORD)
            .await
            .expect("the file's link set the password");
        process.kill();
    })
    .await;
}

/// The forms in which a mail token could leak: itself and its SHA-256
/// (what the database keeps) in hex and base64.
fn leak_forms(token: &str) -> Vec<String> {
    let hash = Sha256::digest(token.as_bytes());
    vec![
        token.to_owned(),
        hex::encode(hash),
        STANDARD.encode(hash),
        URL_SAFE_NO_PAD.encode(hash),
    ]
}

#[tokio::test]
async fn a_trace_level_run_of_the_binary_logs_no_mail_token_password_or_refresh_token() {
    if !SmtpSink::available() {
        return;
    }
    on_each_backend(|backend| async move {
        let db = backend.fresh().await;
        let sink = SmtpSink::start().await;
        let args = ["--smtp-url".to_owned(), sink.url()];
        let process = AuthProcess::start(BINARY, &db, &args, "trace").await;
        let mut client = process.client().await;
        let email = unique_email();
        let registered = register(&mut client, &email).await;
        let first = tokens(&registered.tokens).clone();

        ask_verification(&mut client, &first.access_token).await;
        let verify_token = sink.wait_for_mails_to(&email, 1).await[0].token();
        client
            .verify_email(pb::VerifyEmailRequest {
                token: verify_token.clone(),
            })
            .await
            .expect("VerifyEmail");
        ask_reset(&mut client, &email).await;
        let reset_token = sink.wait_for_mails_to(&email, 2).await[1].token();
        reset(&mut client, &reset_token).await;
        login(&mut client, &email, "a wrong passphrase")
            .await
            .unwrap_err();
        let signed_in = login(&mut client, &email, NEW_PASSWORD).await.unwrap();
        let second = tokens(&signed_in.tokens).clone();
        let third = refresh(&mut client, &second.refresh_token).await.unwrap();
        let exit = process.terminate().await;
        assert!(exit.success(), "{exit:?}");

        let log = process_log(&db);
        assert!(
            log.len() > 10_000,
            "TRACE output captured ({} bytes)",
            log.len()
        );
        assert!(log.contains("mail sent"), "the mail's delivery was logged");
        let mut secrets = vec![
            ("password", PASSWORD.to_owned()),
            ("new password", NEW_PASSWORD.to_owned()),
            ("wrong password", "a wrong passphrase".to_owned()),
            ("refresh token", first.refresh_token),
            ("second refresh token", second.refresh_token),
            ("rotated refresh token", third.refresh_token),
        ];
        for form in leak_forms(&verify_token) {
            secrets.push(("verification token", form));
        }
        for form in leak_forms(&reset_token) {
            secrets.push(("reset token", form));
        }
        for (name, secret) in secrets {
            assert!(!log.contains(&secret), "the log contains the {name}");
        }
    })
    .await;
}
