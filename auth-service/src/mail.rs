//! Mail: verification and reset messages, and the worker that delivers
//! the outbox.
//!
//! A request never sends mail itself. It writes the message into the
//! `outbox` table in the transaction that makes the token (see
//! `AuthStore::issue_mail_token`), so an accepted request's mail can be
//! lost neither by a crash nor by an SMTP server that is down. [`deliver`]
//! then claims due mails (on PostgreSQL with `FOR UPDATE SKIP LOCKED` and a
//! lease, so several replicas drain one outbox and, in normal operation,
//! send each mail once), sends them, and retries failures with exponential
//! backoff; a mail that still fails after [`MAX_ATTEMPTS`] is marked failed
//! and logged, never retried for ever. A crash between sending and marking
//! sent means the mail goes again when its lease runs out: at least once.
//!
//! Where mail goes: an SMTP server (`--smtp-url`, `smtp://` with STARTTLS
//! when offered, or `smtps://`, credentials in the URL), or, without one,
//! `.eml` files in `--mail-dir` (the `cargo run` default, so a newcomer can
//! open the link), readable by the service's user only.
//!
//! Messages have a plain-text and an HTML part, from templates kept as
//! files in this crate; the link is built from `--app-url`. The token is in
//! the message and nowhere else: no log line names it.

use std::{
    io::Write,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use chrono::TimeDelta;
use lettre::{
    AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
    address::Envelope,
    message::{
        Body, Mailbox, MultiPart, SinglePart,
        header::{ContentTransferEncoding, ContentType},
    },
};
use serving::{
    CancellationToken,
    clock::Clock,
    config::{ExposeSecret, SecretString},
};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::{
    key_encryption::{self, KeyEncryption},
    store::{AuthStore, MailTokenKind, NewMail, OutgoingMail, SecretSlot},
};

/// Attempts before a mail is given up.
pub const MAX_ATTEMPTS: i64 = 12;
/// The first retry's delay; each later one doubles, up to [`MAX_RETRY_DELAY`].
const FIRST_RETRY_DELAY: Duration = Duration::from_secs(1);
const MAX_RETRY_DELAY: Duration = Duration::from_secs(15 * 60);
/// How long a claimed mail is left to its worker before another may take it.
const LEASE: TimeDelta = TimeDelta::seconds(60);
/// How often an idle worker looks for due mail (it is also woken when a
/// mail is queued in this process).
const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Mails claimed at once.
const BATCH: i64 = 10;

const VERIFY_TEXT: &str = include_str!("../templates/verify-email.txt");
const VERIFY_HTML: &str = include_str!("../templates/verify-email.html");
const RESET_TEXT: &str = include_str!("../templates/reset-password.txt");
const RESET_HTML: &str = include_str!("../templates/reset-password.html");

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("invalid --smtp-url: {0}")]
    SmtpUrl(String),
    #[error("invalid --mail-from or recipient address: {0}")]
    Address(#[from] lettre::address::AddressError),
    #[error("cannot build the message: {0}")]
    Build(#[from] lettre::error::Error),
    #[error("SMTP: {0}")]
    Smtp(#[from] lettre::transport::smtp::Error),
    #[error("cannot write the mail file: {0}")]
    File(#[from] std::io::Error),
    #[error("the mail cannot be sealed or opened with the key-encryption key")]
    Seal,
    #[error("a line of the message is longer than 998 octets")]
    Encoding,
}

/// Where mail goes.
#[derive(Clone)]
enum Transport {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    Folder(PathBuf),
}

/// Composes and sends the service's mail.
#[derive(Clone)]
pub struct Mailer {
    transport: Transport,
    from: Mailbox,
    app_url: String,
}

impl Mailer {
    /// A mailer sending through `smtp_url`, or into `folder` without one.
    pub fn new(
        smtp_url: Option<&SecretString>,
        folder: &Path,
        from: &str,
        app_url: &str,
    ) -> Result<Self, MailError> {
        let transport = match smtp_url {
            Some(url) => Transport::Smtp(
                AsyncSmtpTransport::<Tokio1Executor>::from_url(url.expose_secret())
                    // Never echo the URL: it may hold credentials.
                    .map_err(|error| MailError::SmtpUrl(error.to_string()))?
                    .timeout(Some(Duration::from_secs(20)))
                    .build(),
            ),
            None => Transport::Folder(folder.to_owned()),
        };
        Ok(Self {
            transport,
            from: from.parse()?,
            app_url: app_url.trim_end_matches('/').to_owned(),
        })
    }

    /// Where mails go, for the start-up log (no credentials).
    pub fn destination(&self) -> String {
        match &self.transport {
            Transport::Smtp(_) => "SMTP".to_owned(),
            Transport::Folder(folder) => format!("files in {}", folder.display()),
        }
    }

    /// The mail carrying the link of a `kind` token to `to`.
    pub fn compose(
        &self,
        kind: MailTokenKind,
        to: &str,
        name: &str,
        token: &str,
        keks: &dyn KeyEncryption,
    ) -> Result<NewMail, MailError> {
        let (subject, path, text, html) = match kind {
            MailTokenKind::VerifyEmail => (
                "Confirm your email address",
                "verify-email",
                VERIFY_TEXT,
                VERIFY_HTML,
            ),
            MailTokenKind::ResetPassword => (
                "Reset your password",
                "reset-password",
                RESET_TEXT,
                RESET_HTML,
            ),
        };
        let link = format!("{}/{path}?token={token}", self.app_url);
        let name = if name.is_empty() { to } else { name };
        let fill = |template: &str, escape: fn(&str) -> String| {
            template
                .replace("{name}", &escape(name))
                .replace("{link}", &escape(&link))
        };
        let id = Uuid::now_v7();
        let message = Message::builder()
            .from(self.from.clone())
            .to(to.parse()?)
            .subject(subject)
            .message_id(Some(format!("<{id}@todo>")))
            .multipart(
                MultiPart::alternative()
                    .singlepart(part(ContentType::TEXT_PLAIN, &fill(text, str::to_owned))?)
                    .singlepart(part(ContentType::TEXT_HTML, &fill(html, escape_html))?),
            )?;
        let message = keks
            .seal(&message.formatted(), &SecretSlot::Mail(id).purpose())
            .map_err(|_| MailError::Seal)?;
        Ok(NewMail {
            id,
            recipient: to.to_owned(),
            message,
        })
    }

    /// Sends one queued mail.
    async fn send(&self, mail: &OutgoingMail, keks: &dyn KeyEncryption) -> Result<(), MailError> {
        let message = key_encryption::open_stored(keks, &mail.message, &SecretSlot::Mail(mail.id))
            .map_err(|_| MailError::Seal)?;
        let message = secrecy::ExposeSecret::expose_secret(&message);
        match &self.transport {
            Transport::Smtp(smtp) => {
                let envelope =
                    Envelope::new(Some(self.from.email.clone()), vec![mail.recipient.parse()?])?;
                smtp.send_raw(&envelope, message).await?;
            }
            Transport::Folder(folder) => {
                let path = folder.join(format!("{}.eml", mail.id));
                write_private(folder, &path, message)?;
                tracing::info!(path = %path.display(), "mail written (no --smtp-url)");
            }
        }
        Ok(())
    }
}

/// Longest line RFC 5322 allows, without its CRLF.
const MAX_LINE_OCTETS: usize = 998;

/// A body part sent as it is (8bit, CRLF line ends): a link in it stays
/// one string that any reader of the raw `.eml` can find and open, with no
/// quoted-printable soft line breaks or `=3D` in it. (lettre would choose
/// quoted-printable for any line of 76 characters or more, which a link
/// with its token is; 8bit allows up to 998.)
fn part(content_type: ContentType, body: &str) -> Result<SinglePart, MailError> {
    if body.lines().any(|line| line.len() > MAX_LINE_OCTETS) || body.contains('\0') {
        return Err(MailError::Encoding);
    }
    let crlf = body.replace("\r\n", "\n").replace('\n', "\r\n");
    let body = Body::dangerous_pre_encoded(crlf.into_bytes(), ContentTransferEncoding::EightBit);
    Ok(SinglePart::builder().header(content_type).body(body))
}

/// Writes `bytes` to `path` (in `folder`, created if needed), readable by
/// this user only: the mail holds a live token.
fn write_private(folder: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(folder)?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

fn escape_html(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}

fn count_mail(outcome: &'static str) {
    serving::metrics::metrics()
        .mail
        .get_or_create(&serving::metrics::OutcomeLabels {
            component: "auth-service",
            outcome,
        })
        .inc();
}

/// The delay before attempt `attempts + 1`.
fn retry_delay(attempts: i64) -> Duration {
    let doublings = u32::try_from(attempts.clamp(0, 20)).unwrap_or(20);
    FIRST_RETRY_DELAY
        .saturating_mul(2u32.saturating_pow(doublings))
        .min(MAX_RETRY_DELAY)
}

/// Delivers the outbox until `shutdown`: claims due mails, sends them,
/// records the outcome. Woken by `queued` when this process queues a mail,
/// and otherwise every [`POLL_INTERVAL`] (mails other replicas queued,
/// retries coming due).
pub async fn deliver(
    store: Arc<dyn AuthStore>,
    keks: Arc<dyn KeyEncryption>,
    mailer: Mailer,
    clock: Clock,
    queued: Arc<Notify>,
    shutdown: CancellationToken,
) {
    loop {
        let claimed = match store.claim_mail(clock.now(), LEASE, BATCH).await {
            Ok(claimed) => claimed,
            Err(error) => {
                tracing::warn!(%error, "cannot read the mail outbox");
                Vec::new()
            }
        };
        for mail in &claimed {
            let outcome = tokio::select! {
                outcome = mailer.send(mail, keks.as_ref()) => outcome,
                () = shutdown.cancelled() => return,
            };
            let recorded = match outcome {
                Ok(()) => {
                    count_mail("sent");
                    tracing::info!(mail = %mail.id, to = %mail.recipient, "mail sent");
                    store.mail_sent(mail.id, clock.now()).await
                }
                Err(error) if mail.attempts + 1 >= MAX_ATTEMPTS => {
                    count_mail("failed");
                    tracing::error!(mail = %mail.id, to = %mail.recipient, %error, attempts = mail.attempts + 1, "mail failed for good");
                    store.mail_failed(mail.id, clock.now(), None).await
                }
                Err(error) => {
                    count_mail("retried");
                    let delay = retry_delay(mail.attempts);
                    tracing::warn!(mail = %mail.id, %error, retry_in = ?delay, "mail not sent; will retry");
                    let retry_at = clock.now() + TimeDelta::from_std(delay).unwrap_or(LEASE);
                    store
                        .mail_failed(mail.id, clock.now(), Some(retry_at))
                        .await
                }
            };
            if let Err(error) = recorded {
                // The lease runs out and the mail is tried again.
                tracing::warn!(mail = %mail.id, %error, "cannot record a mail's outcome");
            }
        }
        if i64::try_from(claimed.len()) == Ok(BATCH) {
            continue;
        }
        tokio::select! {
            () = queued.notified() => {}
            () = tokio::time::sleep(POLL_INTERVAL) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mailer() -> Mailer {
        Mailer::new(
            None,
            Path::new("/nonexistent"),
            "Todo <no-reply@example.com>",
            "https://app.example/",
        )
        .unwrap()
    }

    #[test]
    fn a_mail_has_a_text_and_an_html_part_with_the_link_and_is_sealed() {
        let folder = tempfile::tempdir().unwrap();
        let keks = key_encryption::LocalKeks::load(&folder.path().join("kek"), None, true).unwrap();
        let mail = mailer()
            .compose(
                MailTokenKind::ResetPassword,
                "ada@example.com",
                "Ada <script>",
                "TOKEN123",
                &keks,
            )
            .unwrap();
        assert!(
            !String::from_utf8_lossy(&mail.message.ciphertext).contains("TOKEN123"),
            "queued sealed"
        );
        let opened = keks
            .open(&mail.message, &SecretSlot::Mail(mail.id).purpose())
            .unwrap();
        let text =
            String::from_utf8(secrecy::ExposeSecret::expose_secret(&opened).to_vec()).unwrap();
        assert!(text.contains("multipart/alternative"));
        assert!(text.contains("text/plain"));
        assert!(text.contains("text/html"));
        assert!(text.contains("https://app.example/reset-password?token=TOKEN123"));
        assert!(
            text.contains("Ada &lt;script&gt;"),
            "the name is escaped in HTML"
        );
        assert_eq!(mail.recipient, "ada@example.com");
    }

    #[test]
    fn retries_back_off_and_stay_bounded() {
        assert_eq!(retry_delay(0), Duration::from_secs(1));
        assert_eq!(retry_delay(3), Duration::from_secs(8));
        assert_eq!(retry_delay(40), MAX_RETRY_DELAY);
    }
}
