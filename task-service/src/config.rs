//! Every setting of the task-service, as command-line flags with
//! environment-variable fallbacks (`TASK_*`). The defaults run on a laptop
//! next to an auth-service started with its own defaults.
//!
//! The defaults are constants used both by clap and by [`Config::default`],
//! so tests and the all-in-one stack get exactly what `--help` documents
//! without the process environment leaking into them.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use serving::{clock::Clock, transport::TransportArgs};

const DEFAULT_LISTEN: &str = "127.0.0.1:50052";
const DEFAULT_DATABASE_URL: &str = "sqlite://data/tasks.db";
const DEFAULT_DATABASE_MAX_CONNECTIONS: u32 = 10;
const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_AUTH_URL: &str = "http://127.0.0.1:50051";
const DEFAULT_ISSUER: &str = "todo-auth";
const DEFAULT_AUDIENCE: &str = "todo-api";
const DEFAULT_JWKS_REFRESH: Duration = Duration::from_secs(5 * 60);
const DEFAULT_TOKEN_LEEWAY_SECS: u64 = 30;
const DEFAULT_WATCH_HEARTBEAT: Duration = Duration::from_secs(30);
const DEFAULT_WATCH_BUFFER: usize = 256;
const DEFAULT_MAX_TASKS_PER_USER: u32 = 10_000;
const DEFAULT_MAX_CALLS_IN_FLIGHT_PER_USER: u32 = 4;
const DEFAULT_MAX_WRITES_PER_USER_PER_MINUTE: u32 = 600;

#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Address to serve gRPC on.
    #[arg(long, env = "TASK_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,

    /// `sqlite://PATH` (created if missing) or `postgres://USER@HOST/DB`.
    #[arg(long, env = "TASK_DATABASE_URL", default_value = DEFAULT_DATABASE_URL)]
    pub database_url: String,

    /// Largest number of pooled database connections.
    #[arg(long, env = "TASK_DATABASE_MAX_CONNECTIONS", default_value_t = DEFAULT_DATABASE_MAX_CONNECTIONS)]
    pub database_max_connections: u32,

    /// Longest time one database statement may run before it is stopped
    /// (the call then answers `DEADLINE_EXCEEDED`).
    #[arg(long, env = "TASK_STATEMENT_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub statement_timeout: Duration,

    /// The auth-service whose `GetJwks` publishes the token-signing keys.
    /// Ignored when `--jwks-file` is given.
    #[arg(long, env = "TASK_AUTH_URL", default_value = DEFAULT_AUTH_URL)]
    pub auth_url: String,

    /// Where the auth-service streams its session events (ended sessions,
    /// deleted accounts), when not at `--auth-url` (the auth-service's
    /// `--internal-listen`).
    #[arg(long, env = "TASK_AUTH_EVENTS_URL")]
    pub auth_events_url: Option<String>,

    /// Read the signing keys from this JWK Set file instead of calling the
    /// auth-service (re-read on the same schedule).
    #[arg(long, env = "TASK_JWKS_FILE")]
    pub jwks_file: Option<PathBuf>,

    /// How often the key set is refreshed in the background.
    #[arg(long, env = "TASK_JWKS_REFRESH", default_value = "5m", value_parser = humantime::parse_duration)]
    pub jwks_refresh: Duration,

    /// Expected `iss` of access tokens.
    #[arg(long, env = "TASK_ISSUER", default_value = DEFAULT_ISSUER)]
    pub issuer: String,

    /// Expected `aud` of access tokens.
    #[arg(long, env = "TASK_AUDIENCE", default_value = DEFAULT_AUDIENCE)]
    pub audience: String,

    /// Clock skew tolerated on `exp`/`nbf`, in seconds (capped at 60).
    #[arg(long, env = "TASK_TOKEN_LEEWAY_SECS", default_value_t = DEFAULT_TOKEN_LEEWAY_SECS)]
    pub token_leeway_secs: u64,

    /// Events a WatchTasks stream may have queued before it is ended with
    /// RESOURCE_EXHAUSTED (the client is too far behind).
    #[arg(long, env = "TASK_WATCH_BUFFER", default_value_t = DEFAULT_WATCH_BUFFER)]
    pub watch_buffer: usize,

    /// After this long without a change, a WatchTasks stream sends a
    /// heartbeat (`TASK_EVENT_TYPE_UNSPECIFIED`, no task), so proxies with
    /// idle timeouts (commonly 60 s) keep the stream open.
    #[arg(long, env = "TASK_WATCH_HEARTBEAT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub watch_heartbeat: Duration,

    /// Most tasks one user may have; `CreateTask` past it answers
    /// `RESOURCE_EXHAUSTED` with a `QuotaFailure`.
    #[arg(long, env = "TASK_MAX_TASKS_PER_USER", default_value_t = DEFAULT_MAX_TASKS_PER_USER)]
    pub max_tasks_per_user: u32,

    /// Calls one user may have in flight on this replica; more wait a
    /// little, then answer `RESOURCE_EXHAUSTED`. Keep it below
    /// `--database-max-connections`, so one user cannot hold every
    /// connection.
    #[arg(long, env = "TASK_MAX_CALLS_IN_FLIGHT_PER_USER", default_value_t = DEFAULT_MAX_CALLS_IN_FLIGHT_PER_USER)]
    pub max_calls_in_flight_per_user: u32,

    /// Creates, updates, completions and deletes one user may make per
    /// minute on this replica (bursts of a tenth of it, at least 10); more
    /// answer `RESOURCE_EXHAUSTED` with a `RetryInfo`.
    #[arg(long, env = "TASK_MAX_WRITES_PER_USER_PER_MINUTE", default_value_t = DEFAULT_MAX_WRITES_PER_USER_PER_MINUTE)]
    pub max_writes_per_user_per_minute: u32,

    /// Serve gRPC over TLS with this PEM certificate chain (needs
    /// `--tls-key`); without it, plain-text HTTP/2.
    #[arg(long, env = "TASK_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The PEM private key of `--tls-cert`.
    #[arg(long, env = "TASK_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Require clients to present a certificate signed by this PEM CA
    /// (mutual TLS), with `--tls-cert`.
    #[arg(long, env = "TASK_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,

    /// Trust this PEM CA for an `https://` `--auth-url` (and
    /// `--auth-events-url`); the task-service presents its own
    /// `--tls-cert` to the auth-service when it has one.
    #[arg(long, env = "TASK_AUTH_CA")]
    pub auth_ca: Option<PathBuf>,

    /// Serve Prometheus metrics at `GET /metrics` on this address (off
    /// without it).
    #[arg(long, env = "TASK_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// Do not serve grpc.reflection (for production setups that do not
    /// publish their schema).
    #[arg(long, env = "TASK_DISABLE_REFLECTION")]
    pub disable_reflection: bool,

    #[command(flatten)]
    pub transport: TransportArgs,

    /// Time source; tests inject a manual clock.
    #[arg(skip)]
    pub clock: Clock,
}

impl Default for Config {
    /// The documented default of every flag (the environment is not read).
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN
                .parse()
                .expect("the default listen address is valid"),
            database_url: DEFAULT_DATABASE_URL.into(),
            database_max_connections: DEFAULT_DATABASE_MAX_CONNECTIONS,
            statement_timeout: DEFAULT_STATEMENT_TIMEOUT,
            auth_url: DEFAULT_AUTH_URL.into(),
            jwks_file: None,
            auth_events_url: None,
            jwks_refresh: DEFAULT_JWKS_REFRESH,
            issuer: DEFAULT_ISSUER.into(),
            audience: DEFAULT_AUDIENCE.into(),
            token_leeway_secs: DEFAULT_TOKEN_LEEWAY_SECS,
            watch_buffer: DEFAULT_WATCH_BUFFER,
            watch_heartbeat: DEFAULT_WATCH_HEARTBEAT,
            max_tasks_per_user: DEFAULT_MAX_TASKS_PER_USER,
            max_calls_in_flight_per_user: DEFAULT_MAX_CALLS_IN_FLIGHT_PER_USER,
            max_writes_per_user_per_minute: DEFAULT_MAX_WRITES_PER_USER_PER_MINUTE,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            auth_ca: None,
            metrics_listen: None,
            disable_reflection: false,
            transport: TransportArgs::default(),
            clock: Clock::default(),
        }
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
    fn default_matches_an_empty_command_line() {
        let parsed = Cli::parse_from(["task-service"]).config;
        let default = Config::default();
        assert_eq!(parsed.listen, default.listen);
        assert_eq!(parsed.database_url, default.database_url);
        assert_eq!(parsed.auth_url, default.auth_url);
        assert_eq!(parsed.jwks_refresh, default.jwks_refresh);
        assert_eq!(parsed.issuer, default.issuer);
        assert_eq!(parsed.audience, default.audience);
        assert_eq!(parsed.watch_buffer, default.watch_buffer);
        assert_eq!(parsed.watch_heartbeat, default.watch_heartbeat);
    }
}
