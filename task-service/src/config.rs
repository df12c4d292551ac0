//! Every setting of the task-service, as command-line flags with
//! environment-variable fallbacks (`TASK_*`). The defaults run on a laptop
//! next to an auth-service started with its own defaults.
//!
//! [`Config::default`] is what `--help` documents, read from the flags
//! themselves with the environment ignored ([`serving::config::defaults`]),
//! so tests and the all-in-one stack start from it.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use serving::{clock::Clock, config::SecretString, transport::TransportArgs};

#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Address to serve gRPC on.
    #[arg(long, env = "TASK_LISTEN", default_value = "127.0.0.1:50052")]
    pub listen: SocketAddr,

    /// `sqlite://PATH` (created if missing) or
    /// `postgres://USER:PASSWORD@HOST/DB` (kept secret: never printed).
    #[arg(
        long,
        env = "TASK_DATABASE_URL",
        default_value = "sqlite://data/tasks.db",
        hide_env_values = true,
        value_parser = serving::config::secret
    )]
    pub database_url: SecretString,

    /// Largest number of pooled database connections.
    #[arg(long, env = "TASK_DATABASE_MAX_CONNECTIONS", default_value_t = 10)]
    pub database_max_connections: u32,

    /// Longest time one database statement may run before it is stopped
    /// (the call then answers `DEADLINE_EXCEEDED`).
    #[arg(long, env = "TASK_STATEMENT_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub statement_timeout: Duration,

    /// The auth-service whose `GetJwks` publishes the token-signing keys.
    /// Ignored when `--jwks-file` is given.
    #[arg(long, env = "TASK_AUTH_URL", default_value = "http://127.0.0.1:50051")]
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
    #[arg(long, env = "TASK_ISSUER", default_value = "todo-auth")]
    pub issuer: String,

    /// Expected `aud` of access tokens.
    #[arg(long, env = "TASK_AUDIENCE", default_value = "todo-api")]
    pub audience: String,

    /// Clock skew tolerated on `exp`/`nbf`, in seconds (capped at 60).
    #[arg(long, env = "TASK_TOKEN_LEEWAY_SECS", default_value_t = 30)]
    pub token_leeway_secs: u64,

    /// Events a WatchTasks stream may have queued before it is ended with
    /// RESOURCE_EXHAUSTED (the client is too far behind).
    #[arg(long, env = "TASK_WATCH_BUFFER", default_value_t = 256)]
    pub watch_buffer: usize,

    /// After this long without a change, a WatchTasks stream sends a
    /// heartbeat (`TASK_EVENT_TYPE_UNSPECIFIED`, no task), so proxies with
    /// idle timeouts (commonly 60 s) keep the stream open.
    #[arg(long, env = "TASK_WATCH_HEARTBEAT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub watch_heartbeat: Duration,

    /// Most tasks one user may have; `CreateTask` past it answers
    /// `RESOURCE_EXHAUSTED` with a `QuotaFailure`.
    #[arg(long, env = "TASK_MAX_TASKS_PER_USER", default_value_t = 10_000)]
    pub max_tasks_per_user: u32,

    /// Calls to the task API this replica takes at once, from all users
    /// together; more are refused at once with `RESOURCE_EXHAUSTED` and a
    /// `RetryInfo` (health checks are never refused). The default matches
    /// the gateway's per-address bound: at ~10k calls/s a replica drains
    /// 256 queued calls in ~25 ms, and 512 would double that wait.
    #[arg(long, env = "TASK_MAX_CALLS_IN_FLIGHT", default_value_t = 256)]
    pub max_calls_in_flight: usize,

    /// Calls one user may have in flight on this replica; more wait a
    /// little, then answer `RESOURCE_EXHAUSTED`. Keep it below
    /// `--database-max-connections`, so one user cannot hold every
    /// connection.
    #[arg(long, env = "TASK_MAX_CALLS_IN_FLIGHT_PER_USER", default_value_t = 4)]
    pub max_calls_in_flight_per_user: u32,

    /// `ListTasks` calls with a `query` one user may have running at once
    /// on this replica, within their calls in flight (a search examines up
    /// to 1,000 tasks); more wait a little, then answer
    /// `RESOURCE_EXHAUSTED`.
    #[arg(
        long,
        env = "TASK_MAX_SEARCHES_IN_FLIGHT_PER_USER",
        default_value_t = 1
    )]
    pub max_searches_in_flight_per_user: u32,

    /// Creates, updates, completions and deletes one user may make per
    /// minute on this replica (bursts of a tenth of it, at least 10); more
    /// answer `RESOURCE_EXHAUSTED` with a `RetryInfo`.
    #[arg(
        long,
        env = "TASK_MAX_WRITES_PER_USER_PER_MINUTE",
        default_value_t = 600
    )]
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
        serving::config::defaults()
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use serving::config::ExposeSecret;

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
        assert_eq!(
            parsed.database_url.expose_secret(),
            default.database_url.expose_secret()
        );
        assert_eq!(parsed.auth_url, default.auth_url);
        assert_eq!(parsed.jwks_refresh, default.jwks_refresh);
        assert_eq!(parsed.issuer, default.issuer);
        assert_eq!(parsed.audience, default.audience);
        assert_eq!(parsed.watch_buffer, default.watch_buffer);
        assert_eq!(parsed.watch_heartbeat, default.watch_heartbeat);
    }
}
