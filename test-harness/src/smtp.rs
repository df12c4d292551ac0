//! Mail as a recipient sees it: [`SmtpSink`], a real SMTP server (Python's
//! `aiosmtpd`, storing each message it accepts in a Maildir) that a test
//! starts, stops and starts again on the same port; [`ReceivedMail`], a
//! received message taken apart (headers, text and HTML parts, the link and
//! its token); and [`outbox`], the auth-service's outbox rows read straight
//! from the database, to know when a mail was sent, retried or given up.
//!
//! The sink needs `python3` with `aiosmtpd` (`pip install aiosmtpd`; CI
//! installs it). [`SmtpSink::available`] says whether it is here: a test
//! without it is skipped with a notice, except when `CI` is set, where a
//! missing prerequisite is a failure.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use tokio::{io::AsyncReadExt, net::TcpStream, time::Instant};

use crate::{PATIENCE, TestDatabase, auth_config, closed_port, eventually};

/// [`auth_config`] sending mail to `sink`, with links built on `app_url`.
pub fn auth_config_mailing(
    database: &TestDatabase,
    sink: &SmtpSink,
    app_url: &str,
) -> auth_service::Config {
    auth_service::Config {
        smtp_url: Some(sink.url().into()),
        app_url: app_url.to_owned(),
        ..auth_config(database)
    }
}

/// A real SMTP server on loopback that keeps what it accepts.
pub struct SmtpSink {
    port: u16,
    /// Holds the Maildir, which the sink creates on its first start (an
    /// existing folder without `cur`, `new` and `tmp` is not one).
    folder: tempfile::TempDir,
    process: Option<Child>,
}

impl SmtpSink {
    /// Whether `python3` with `aiosmtpd` is installed. Prints a `SKIPPED`
    /// notice when it is not; panics instead when `CI` is set.
    pub fn available() -> bool {
        let present = Command::new("python3")
            .args(["-c", "import aiosmtpd"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        if present {
            return true;
        }
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the mail tests, but python3 with aiosmtpd is missing"
        );
        eprintln!("SKIPPED mail test: python3 with aiosmtpd is missing (pip install aiosmtpd)");
        false
    }

    /// A sink on a free port that does not listen yet: mail sent to it
    /// fails as it does to an SMTP server that is down.
    pub async fn stopped() -> Self {
        Self {
            port: closed_port().await.port(),
            folder: tempfile::tempdir().expect("a temporary folder"),
            process: None,
        }
    }

    /// A sink that listens, ready to accept mail.
    pub async fn start() -> Self {
        let mut sink = Self::stopped().await;
        sink.resume().await;
        sink
    }

    /// Starts listening on the sink's port (again), and waits until it
    /// greets. What it received before is kept.
    pub async fn resume(&mut self) {
        assert!(self.process.is_none(), "the sink is already listening");
        let mut process = Command::new("python3")
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{}", self.port))
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(self.maildir())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start python3 -m aiosmtpd");
        let deadline = Instant::now() + PATIENCE;
        while !greets(self.port).await {
            if let Some(exit) = process.try_wait().expect("the sink's status") {
                panic!("the SMTP sink on port {} exited: {exit}", self.port);
            }
            assert!(Instant::now() < deadline, "the SMTP sink never greeted");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.process = Some(process);
    }

    /// Stops listening at once (SIGKILL); the port stays the sink's.
    pub fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            let _ = process.kill();
            let _ = process.wait();
        }
    }

    fn maildir(&self) -> PathBuf {
        self.folder.path().join("maildir")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `smtp://127.0.0.1:<port>`, for `--smtp-url`.
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Every mail received so far, in the order it arrived.
    pub fn mails(&self) -> Vec<ReceivedMail> {
        let mut files = Vec::new();
        for folder in ["new", "cur"] {
            let Ok(entries) = std::fs::read_dir(self.maildir().join(folder)) else {
                continue;
            };
            for entry in entries {
                let path = entry.expect("a Maildir entry").path();
                files.push((arrival(&path), path));
            }
        }
        files.sort();
        files
            .iter()
            .map(|(_, path)| ReceivedMail::read(path))
            .collect()
    }

    /// The mails received for `recipient` (envelope recipient), in order.
    pub fn mails_to(&self, recipient: &str) -> Vec<ReceivedMail> {
        self.mails()
            .into_iter()
            .filter(|mail| mail.recipient() == recipient)
            .collect()
    }

    /// Waits until `count` mails for `recipient` arrived and returns them
    /// (all that arrived, in order: more than `count` if more came).
    pub async fn wait_for_mails_to(&self, recipient: &str, count: usize) -> Vec<ReceivedMail> {
        eventually(
            PATIENCE,
            &format!("{count} mail(s) reach {recipient}"),
            || {
                let arrived = self.mails_to(recipient).len();
                async move { arrived >= count }
            },
        )
        .await;
        self.mails_to(recipient)
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether an SMTP server on `port` answers with its `220` greeting.
async fn greets(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    let mut greeting = [0u8; 3];
    matches!(
        tokio::time::timeout(Duration::from_secs(2), stream.read_exact(&mut greeting)).await,
        Ok(Ok(_)) if &greeting == b"220"
    )
}

/// When a Maildir file arrived, from its name (`<secs>.M<micros>P<pid>Q<n>.<host>`).
fn arrival(path: &Path) -> (u64, u64, u64) {
    let name = path
        .file_name()
        .and_then(|name| name.to_str())
        .unwrap_or("");
    let number_after = |marker: char| -> u64 {
        name.split_once(marker)
            .map(|(_, rest)| {
                rest.chars()
                    .take_while(char::is_ascii_digit)
                    .collect::<String>()
            })
            .and_then(|digits| digits.parse().ok())
            .unwrap_or(0)
    };
    let seconds = name
        .split('.')
        .next()
        .and_then(|seconds| seconds.parse().ok())
        .unwrap_or(0);
    (seconds, number_after('M'), number_after('Q'))
}

/// A mail taken apart: its headers and the bodies of its text and HTML
/// parts (a `multipart/alternative` of 8-bit parts, as the service sends).
#[derive(Debug, Clone)]
pub struct ReceivedMail {
    /// The whole message, line ends as stored.
    pub raw: String,
    pub headers: Vec<(String, String)>,
    pub text: Option<String>,
    pub html: Option<String>,
}

impl ReceivedMail {
    /// Reads and parses a stored message (a Maildir file or an `.eml`).
    pub fn read(path: &Path) -> Self {
        let bytes = std::fs::read(path).expect("read a stored mail");
        Self::parse(&String::from_utf8(bytes).expect("a UTF-8 mail"))
    }

    pub fn parse(raw: &str) -> Self {
        let normalised = raw.replace("\r\n", "\n");
        let (headers, body) = split_head(&normalised);
        let mut mail = Self {
            raw: raw.to_owned(),
            headers,
            text: None,
            html: None,
        };
        let content_type = mail.header("content-type").unwrap_or("").to_owned();
        match boundary(&content_type) {
            Some(boundary) => {
                for part in body.split(&format!("--{boundary}")).skip(1) {
                    if part.starts_with("--") {
                        break;
                    }
                    let (headers, body) = split_head(part.trim_start_matches('\n'));
                    let kind = headers
                        .iter()
                        .find(|(name, _)| name.eq_ignore_ascii_case("content-type"))
                        .map(|(_, value)| value.to_ascii_lowercase())
                        .unwrap_or_default();
                    let body = body.strip_suffix('\n').unwrap_or(body).to_owned();
                    if kind.starts_with("text/plain") {
                        mail.text = Some(body);
                    } else if kind.starts_with("text/html") {
                        mail.html = Some(body);
                    }
                }
            }
            None if content_type.to_ascii_lowercase().starts_with("text/html") => {
                mail.html = Some(body.to_owned());
            }
            None => mail.text = Some(body.to_owned()),
        }
        mail
    }

    /// The first header called `name` (case-insensitive), unfolded.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(header, _)| header.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// Who the mail was delivered to: the envelope recipient the sink
    /// recorded (`X-RcptTo`), or else the `To` header.
    pub fn recipient(&self) -> &str {
        self.header("x-rcptto")
            .or_else(|| self.header("to"))
            .unwrap_or("")
    }

    /// The envelope sender the sink recorded (`X-MailFrom`).
    pub fn envelope_sender(&self) -> &str {
        self.header("x-mailfrom").unwrap_or("")
    }

    /// The plain-text part; panics if there is none.
    pub fn text(&self) -> &str {
        self.text
            .as_deref()
            .expect("the mail has a text/plain part")
    }

    /// The HTML part; panics if there is none.
    pub fn html(&self) -> &str {
        self.html.as_deref().expect("the mail has a text/html part")
    }

    /// The link of the text part (its first `http://` or `https://` word).
    pub fn link(&self) -> &str {
        self.text()
            .split_whitespace()
            .find(|word| word.starts_with("http://") || word.starts_with("https://"))
            .expect("the text part holds a link")
    }

    /// The `token` query parameter of [`ReceivedMail::link`].
    pub fn token(&self) -> String {
        let (_, query) = self.link().split_once('?').expect("the link has a query");
        query
            .split('&')
            .find_map(|pair| pair.strip_prefix("token="))
            .expect("the link has a token")
            .to_owned()
    }
}

/// Splits a message or part into unfolded headers and the body.
fn split_head(text: &str) -> (Vec<(String, String)>, &str) {
    let (head, body) = text.split_once("\n\n").unwrap_or((text, ""));
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in head.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = headers.last_mut() {
                value.push(' ');
                value.push_str(line.trim());
            }
        } else if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_owned(), value.trim().to_owned()));
        }
    }
    (headers, body)
}

/// The `boundary` parameter of a multipart `Content-Type`.
fn boundary(content_type: &str) -> Option<String> {
    if !content_type.to_ascii_lowercase().starts_with("multipart/") {
        return None;
    }
    content_type.split(';').find_map(|parameter| {
        let (name, value) = parameter.trim().split_once('=')?;
        name.eq_ignore_ascii_case("boundary")
            .then(|| value.trim_matches('"').to_owned())
    })
}

/// The `.eml` files in `folder` (mails written without `--smtp-url`).
pub fn mail_files(folder: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(folder) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("a folder entry").path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "eml"))
        .collect();
    files.sort();
    files
}

/// One row of the auth-service's mail outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    pub id: String,
    pub recipient: String,
    /// Send attempts that failed (or, once sent, the failures before).
    pub attempts: i64,
    pub sent: bool,
    /// Given up for good.
    pub failed: bool,
    /// Bytes of the sealed message still stored (erased once settled).
    pub body_bytes: i64,
}

/// Every row of the outbox of the auth-service on `database_url`, oldest
/// first (tests only: read straight from the database).
pub async fn outbox(database_url: &str) -> Vec<OutboxRow> {
    const QUERY: &str = "SELECT CAST(id AS TEXT), recipient, attempts, \
        CAST(CASE WHEN sent_time IS NULL THEN 0 ELSE 1 END AS BIGINT), \
        CAST(CASE WHEN failed_time IS NULL THEN 0 ELSE 1 END AS BIGINT), \
        CAST(length(body) AS BIGINT) FROM outbox ORDER BY create_time, id";
    type Row = (String, String, i64, i64, i64, i64);
    let rows: Vec<Row> = if database_url.starts_with("sqlite:") {
        let pool = sqlx::SqlitePool::connect(database_url)
            .await
            .expect("open the SQLite database");
        let rows = sqlx::query_as(QUERY).fetch_all(&pool).await;
        pool.close().await;
        rows.expect("read the outbox")
    } else {
        let pool = sqlx::PgPool::connect(database_url)
            .await
            .expect("connect to PostgreSQL");
        let rows = sqlx::query_as(QUERY).fetch_all(&pool).await;
        pool.close().await;
        rows.expect("read the outbox")
    };
    rows.into_iter()
        .map(
            |(id, recipient, attempts, sent, failed, body_bytes)| OutboxRow {
                id,
                recipient,
                attempts,
                sent: sent != 0,
                failed: failed != 0,
                body_bytes,
            },
        )
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_multipart_mail_is_taken_apart() {
        let raw = "From: Todo <no-reply@localhost>\r\nTo: ada@example.com\r\n\
            Subject: Reset your password\r\nMIME-Version: 1.0\r\n\
            Content-Type: multipart/alternative;\r\n boundary=\"b1\"\r\n\
            X-RcptTo: ada@example.com\r\n\r\n--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\
            Content-Transfer-Encoding: 8bit\r\n\r\nHello,\r\n\r\n\
            https://app.example/reset-password?token=abc_-123\r\n\r\nBye\r\n\
            --b1\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>Hi</p>\r\n--b1--\r\n";
        let mail = ReceivedMail::parse(raw);
        assert_eq!(mail.recipient(), "ada@example.com");
        assert_eq!(mail.header("subject"), Some("Reset your password"));
        assert_eq!(
            mail.link(),
            "https://app.example/reset-password?token=abc_-123"
        );
        assert_eq!(mail.token(), "abc_-123");
        assert_eq!(mail.html(), "<p>Hi</p>");
        assert!(mail.text().ends_with("Bye"));
    }

    #[test]
    fn maildir_names_sort_by_arrival() {
        let early = arrival(Path::new("/m/new/1700000000.M999999P1Q9.host"));
        let late = arrival(Path::new("/m/new/1700000001.M5P1Q10.host"));
        assert!(early < late);
        assert!(
            arrival(Path::new("1700000000.M99P1Q1.h"))
                < arrival(Path::new("1700000000.M100P1Q2.h"))
        );
    }
}
