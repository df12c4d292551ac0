//! Every setting of the auth-service, as command-line flags with
//! environment-variable fallbacks. Defaults run on a laptop with no setup.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use ipnet::IpNet;
use serving::{clock::Clock, config::SecretString, transport::TransportArgs};

#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Address to serve gRPC on.
    #[arg(long, env = "AUTH_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,

    /// `sqlite://PATH` (created if missing) or
    /// `postgres://USER:PASSWORD@HOST/DB` (kept secret: never printed).
    #[arg(
        long,
        env = "AUTH_DATABASE_URL",
        default_value = "sqlite://data/auth.db",
        hide_env_values = true,
        value_parser = serving::config::secret
    )]
    pub database_url: SecretString,

    /// Largest number of pooled database connections.
    #[arg(long, env = "AUTH_DATABASE_MAX_CONNECTIONS", default_value_t = 10)]
    pub database_max_connections: u32,

    /// Longest time one database statement may run before it is stopped
    /// (the call then answers `DEADLINE_EXCEEDED`).
    #[arg(long, env = "AUTH_STATEMENT_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub statement_timeout: Duration,

    /// `iss` of issued access tokens; verifiers must expect the same.
    #[arg(long, env = "AUTH_ISSUER", default_value = "todo-auth")]
    pub issuer: String,

    /// `aud` of issued access tokens; verifiers must expect the same.
    #[arg(long, env = "AUTH_AUDIENCE", default_value = "todo-api")]
    pub audience: String,

    /// Lifetime of an access token.
    #[arg(long, env = "AUTH_ACCESS_TOKEN_TTL", default_value = "15m", value_parser = humantime::parse_duration)]
    pub access_token_ttl: Duration,

    /// Lifetime of a refresh token: a session unused this long ends (idle timeout).
    #[arg(long, env = "AUTH_REFRESH_TOKEN_TTL", default_value = "30days", value_parser = humantime::parse_duration)]
    pub refresh_token_ttl: Duration,

    /// How long after a refresh the token it spent may be presented again
    /// and answered with the same successor (two tabs refreshing at once);
    /// later, or for any older token, it is reuse and ends the session. At
    /// most 60s; 0s turns the grace off.
    #[arg(long, env = "AUTH_REFRESH_REUSE_GRACE", default_value = "10s", value_parser = parse_grace)]
    pub refresh_reuse_grace: Duration,

    /// A separate address to serve the internal session-event stream on
    /// (auth.internal.v1), so that a network policy can let only the
    /// task-service reach it. Without it the stream is served on `--listen`
    /// beside the public API (the gateway never routes it).
    #[arg(long, env = "AUTH_INTERNAL_LISTEN")]
    pub internal_listen: Option<SocketAddr>,

    /// Absolute lifetime of a session, however often it is refreshed.
    #[arg(long, env = "AUTH_SESSION_MAX_LIFETIME", default_value = "90days", value_parser = humantime::parse_duration)]
    pub session_max_lifetime: Duration,

    /// The key-encryption key that seals every secret the database holds
    /// (signing keys, queued mails): 32 random bytes, base64
    /// (`openssl rand -base64 32`). Created here if missing on SQLite (the
    /// `cargo run` default); on PostgreSQL it must exist (a mounted
    /// secret, the same on every replica).
    #[arg(
        long,
        env = "AUTH_KEY_ENCRYPTION_KEY_FILE",
        default_value = "data/key-encryption-key"
    )]
    pub key_encryption_key_file: PathBuf,

    /// The key-encryption key being rotated away from: it still opens what
    /// it sealed, until `auth-service rotate-kek` has sealed everything
    /// again with `--key-encryption-key-file`.
    #[arg(long, env = "AUTH_PREVIOUS_KEY_ENCRYPTION_KEY_FILE")]
    pub previous_key_encryption_key_file: Option<PathBuf>,

    /// PEM file holding an Ed25519 PKCS#8 private key to sign with (used
    /// from the file, never copied into the database). Without it, a key
    /// is generated on first start and kept in the database, sealed.
    #[arg(long, env = "AUTH_SIGNING_KEY_FILE")]
    pub signing_key_file: Option<PathBuf>,

    /// Sign-in attempts allowed per window on one account from one client
    /// address (an IPv4 address or an IPv6 /64) before that address is
    /// throttled for that account; a success resets it.
    #[arg(long, env = "AUTH_LOGIN_MAX_FAILURES", default_value_t = 5)]
    pub login_max_failures: u32,

    /// Sign-in attempts allowed per window on one account from all
    /// addresses together. Past it, only addresses that signed in to the
    /// account lately may still try, so guessing from many addresses gains
    /// nothing while the owner's usual places are never kept out.
    #[arg(
        long,
        env = "AUTH_LOGIN_MAX_FAILURES_PER_ACCOUNT",
        default_value_t = 50
    )]
    pub login_max_failures_per_account: u32,

    /// How long an address that signed in to an account successfully stays
    /// exempt from the per-account ceiling.
    #[arg(long, env = "AUTH_KNOWN_ADDRESS_TTL", default_value = "90days", value_parser = humantime::parse_duration)]
    pub known_address_ttl: Duration,

    /// Length of the failed-login windows; a throttled address opens again
    /// when its window ends, so an owner is never locked out for good.
    #[arg(long, env = "AUTH_LOGIN_FAILURE_WINDOW", default_value = "15m", value_parser = humantime::parse_duration)]
    pub login_failure_window: Duration,

    /// Register, Login and Refresh calls allowed per client address per
    /// minute (sustained).
    #[arg(long, env = "AUTH_ADDRESS_RATE_PER_MINUTE", default_value_t = 300)]
    pub address_rate_per_minute: u32,

    /// Burst of Register, Login and Refresh calls allowed per client address.
    #[arg(long, env = "AUTH_ADDRESS_BURST", default_value_t = 30)]
    pub address_burst: u32,

    /// Peers (IP or CIDR, repeatable) whose `x-forwarded-for` is believed,
    /// typically the gateway. Other peers are throttled by their own address.
    #[arg(
        long = "trusted-proxy",
        env = "AUTH_TRUSTED_PROXIES",
        value_delimiter = ',',
        value_parser = parse_ip_or_cidr
    )]
    pub trusted_proxies: Vec<IpNet>,

    /// argon2id memory cost in KiB (OWASP minimum 19456).
    #[arg(long, env = "AUTH_HASH_MEMORY_KIB", default_value_t = 19_456)]
    pub hash_memory_kib: u32,

    /// argon2id iterations (OWASP minimum 2 at 19 MiB).
    #[arg(long, env = "AUTH_HASH_ITERATIONS", default_value_t = 2)]
    pub hash_iterations: u32,

    /// Password hashes computed at once; more wait. Default: the number of
    /// cores. Where latency-sensitive services share the cores, leave one
    /// free (cores - 1): a saturated hasher on every core put GetTask's p99
    /// at 2.8x idle on 2 cores, one core left free kept it under 2x.
    #[arg(long, env = "AUTH_HASH_CONCURRENCY")]
    pub hash_concurrency: Option<usize>,

    /// Where mail goes: `smtp://user:password@host:587` (STARTTLS when the
    /// server offers it) or `smtps://...:465` (TLS). Without it each mail
    /// is written as an `.eml` file into `--mail-dir`.
    #[arg(long, env = "AUTH_SMTP_URL", hide_env_values = true, value_parser = serving::config::secret)]
    pub smtp_url: Option<SecretString>,

    /// The sender of verification and reset mails.
    #[arg(
        long,
        env = "AUTH_MAIL_FROM",
        default_value = "Todo <no-reply@localhost>"
    )]
    pub mail_from: String,

    /// Where mails are written when there is no `--smtp-url`.
    #[arg(long, env = "AUTH_MAIL_DIR", default_value = "data/mail")]
    pub mail_dir: PathBuf,

    /// The web app's address; links in mails are
    /// `{app-url}/verify-email?token=...` and `{app-url}/reset-password?token=...`.
    #[arg(long, env = "AUTH_APP_URL", default_value = "http://localhost:8080")]
    pub app_url: String,

    /// Serve gRPC over TLS with this PEM certificate chain (needs
    /// `--tls-key`); without it, plain-text HTTP/2.
    #[arg(long, env = "AUTH_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The PEM private key of `--tls-cert`.
    #[arg(long, env = "AUTH_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Require clients to present a certificate signed by this PEM CA
    /// (mutual TLS), with `--tls-cert`.
    #[arg(long, env = "AUTH_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,

    /// Serve Prometheus metrics at `GET /metrics` on this address (off
    /// without it).
    #[arg(long, env = "AUTH_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// Do not serve grpc.reflection (for production setups that do not
    /// publish their schema).
    #[arg(long, env = "AUTH_DISABLE_REFLECTION")]
    pub disable_reflection: bool,

    #[command(flatten)]
    pub transport: TransportArgs,

    /// Time source; tests inject a manual clock.
    #[arg(skip)]
    pub clock: Clock,
}

/// A duration of at most 60 s (checklist R5).
fn parse_grace(value: &str) -> Result<Duration, String> {
    let grace = humantime::parse_duration(value).map_err(|error| error.to_string())?;
    if grace > Duration::from_secs(60) {
        return Err("the grace is at most 60s".into());
    }
    Ok(grace)
}

/// `10.0.0.0/8`, or a bare address such as `127.0.0.1` (that one address).
fn parse_ip_or_cidr(value: &str) -> Result<IpNet, String> {
    value
        .parse::<IpNet>()
        .or_else(|_| value.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{value:?} is neither an IP address nor a CIDR block"))
}

impl Default for Config {
    /// The documented default of every flag (the environment is not read).
    fn default() -> Self {
        serving::config::defaults()
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        config: Config,
    }

    #[test]
    fn a_trusted_proxy_is_an_address_or_a_block() {
        let config = Cli::try_parse_from([
            "auth-service",
            "--trusted-proxy",
            "127.0.0.1",
            "--trusted-proxy",
            "10.1.0.0/16,::1",
        ])
        .expect("addresses and blocks parse")
        .config;
        let expected: Vec<IpNet> = ["127.0.0.1/32", "10.1.0.0/16", "::1/128"]
            .iter()
            .map(|net| net.parse().unwrap())
            .collect();
        assert_eq!(config.trusted_proxies, expected);
        assert!(Cli::try_parse_from(["auth-service", "--trusted-proxy", "gateway"]).is_err());
    }
}
