//! Every setting of the gateway, as command-line flags with environment
//! variable fallbacks (`GATEWAY_*`). The defaults run on a laptop next to
//! the two services on their default ports, and let a page served from any
//! `http://localhost:*` or `http://127.0.0.1:*` origin call it.

use std::{net::SocketAddr, time::Duration};

use http::Uri;

#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Address to serve gRPC-Web (HTTP/1.1 and HTTP/2) and gRPC on.
    #[arg(long, env = "GATEWAY_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Where `auth.v1.AuthService` runs (plain-text HTTP/2). A host name is
    /// re-resolved every 10 s and calls are spread over its addresses that
    /// report `SERVING`.
    #[arg(
        long,
        env = "GATEWAY_AUTH_URL",
        default_value = "http://127.0.0.1:50051"
    )]
    pub auth_url: Uri,

    /// Where `tasks.v1.TaskService` runs (plain-text HTTP/2); a host name
    /// is balanced over like `--auth-url`'s.
    #[arg(
        long,
        env = "GATEWAY_TASKS_URL",
        default_value = "http://127.0.0.1:50052"
    )]
    pub tasks_url: Uri,

    /// A browser origin allowed to call the gateway, such as
    /// `https://app.example.com` (repeatable, or comma-separated in the
    /// environment). Without any, only `http://localhost:*` and
    /// `http://127.0.0.1:*` (any port) are allowed, for development.
    #[arg(
        long = "allowed-origin",
        env = "GATEWAY_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    pub allowed_origins: Vec<String>,

    /// Largest request body accepted, in bytes (gRPC framing included);
    /// larger ones are refused with `RESOURCE_EXHAUSTED`.
    #[arg(long, env = "GATEWAY_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Longest time an upstream may take to answer a call before the
    /// gateway answers `DEADLINE_EXCEEDED`. A server stream (`WatchTasks`)
    /// answers as soon as it opens, so this never cuts a stream short.
    #[arg(long, env = "GATEWAY_REQUEST_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,

    /// Longest time to open a connection to an upstream; past it the call
    /// answers `UNAVAILABLE`.
    #[arg(long, env = "GATEWAY_CONNECT_TIMEOUT", default_value = "2s", value_parser = humantime::parse_duration)]
    pub connect_timeout: Duration,

    /// Calls (open streams included) in flight at once across all
    /// connections; more are refused at once with `RESOURCE_EXHAUSTED`.
    #[arg(long, env = "GATEWAY_MAX_CONCURRENT_REQUESTS", default_value_t = 1024)]
    pub max_concurrent_requests: usize,

    /// Calls (open streams included) in flight at once from one client
    /// address (an IPv4 address or an IPv6 /64), the connection's peer;
    /// more are refused at once with
    /// `RESOURCE_EXHAUSTED`. Keeps one client from taking every
    /// `--max-concurrent-requests` permit. Behind a proxy or load balancer
    /// every client arrives from the proxy's address: raise this to
    /// `--max-concurrent-requests` there.
    #[arg(
        long,
        env = "GATEWAY_MAX_CONCURRENT_REQUESTS_PER_ADDRESS",
        default_value_t = 256
    )]
    pub max_concurrent_requests_per_address: usize,

    /// Health `Watch` and reflection streams (which anybody may open
    /// without an account, and keep open) at once across all clients; they
    /// draw on this budget, never on `--max-concurrent-requests`.
    #[arg(long, env = "GATEWAY_MAX_ANONYMOUS_STREAMS", default_value_t = 64)]
    pub max_anonymous_streams: usize,

    /// Health `Watch` and reflection streams at once from one client address
    /// (an IPv4 address or an IPv6 /64).
    #[arg(
        long,
        env = "GATEWAY_MAX_ANONYMOUS_STREAMS_PER_ADDRESS",
        default_value_t = 4
    )]
    pub max_anonymous_streams_per_address: usize,

    /// Client connections open at once. At the limit the gateway stops
    /// accepting (new connections wait in the kernel's backlog) until one
    /// closes, so a flood of idle connections cannot exhaust its file
    /// descriptors. Keep it below the process's open-file limit.
    #[arg(long, env = "GATEWAY_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,

    /// HTTP/2 concurrent streams allowed per client connection.
    #[arg(long, env = "GATEWAY_MAX_CONCURRENT_STREAMS", default_value_t = 200)]
    pub max_concurrent_streams: u32,

    /// A folder holding the web app (its `index.html` and assets), served
    /// to GET requests on the same origin as the API; unknown paths get
    /// `index.html` (the app's own routes). Without it, only the API.
    #[arg(long, env = "GATEWAY_WEB_ROOT")]
    pub web_root: Option<std::path::PathBuf>,

    /// How long the JWK Set served at `/.well-known/jwks.json` is cached.
    #[arg(long, env = "GATEWAY_JWKS_CACHE_TTL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub jwks_cache_ttl: Duration,

    /// Serve HTTPS (HTTP/2 and HTTP/1.1 by ALPN) with this PEM certificate
    /// chain; needs `--tls-key`. Both files are re-read when they change,
    /// so a renewed certificate is served without a restart.
    #[arg(long, env = "GATEWAY_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,

    /// The PEM private key of `--tls-cert`.
    #[arg(long, env = "GATEWAY_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,

    /// Trust this PEM CA for `https://` upstreams (`--auth-url`,
    /// `--tasks-url`): service-to-service TLS.
    #[arg(long, env = "GATEWAY_UPSTREAM_CA")]
    pub upstream_ca: Option<std::path::PathBuf>,

    /// A PEM certificate to present to upstreams that require one (mutual
    /// TLS); needs `--upstream-client-key` and `--upstream-ca`.
    #[arg(long, env = "GATEWAY_UPSTREAM_CLIENT_CERT", requires_all = ["upstream_client_key", "upstream_ca"])]
    pub upstream_client_cert: Option<std::path::PathBuf>,

    /// The PEM private key of `--upstream-client-cert`.
    #[arg(
        long,
        env = "GATEWAY_UPSTREAM_CLIENT_KEY",
        requires = "upstream_client_cert"
    )]
    pub upstream_client_key: Option<std::path::PathBuf>,

    /// Serve Prometheus metrics at `GET /metrics` on this address (off
    /// without it).
    #[arg(long, env = "GATEWAY_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// Do not serve grpc.reflection (for production setups that do not
    /// publish their schema).
    #[arg(long, env = "GATEWAY_DISABLE_REFLECTION")]
    pub disable_reflection: bool,

    /// How long in-flight calls get to finish after SIGTERM; calls still
    /// open then (watch streams) end with `UNAVAILABLE`.
    #[arg(long, env = "GATEWAY_SHUTDOWN_GRACE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
}

impl Default for Config {
    /// The documented default of every flag (the environment is not read).
    fn default() -> Self {
        serving::config::defaults()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        config: Config,
    }

    #[test]
    fn default_matches_the_flag_defaults() {
        let parsed = <Cli as clap::Parser>::try_parse_from(["gateway"])
            .expect("no flags parse")
            .config;
        let default = Config::default();
        assert_eq!(format!("{parsed:?}"), format!("{default:?}"));
    }

    #[test]
    fn allowed_origin_repeats() {
        let parsed = <Cli as clap::Parser>::try_parse_from([
            "gateway",
            "--allowed-origin",
            "https://a.example",
            "--allowed-origin",
            "https://b.example",
        ])
        .expect("flags parse")
        .config;
        assert_eq!(
            parsed.allowed_origins,
            ["https://a.example", "https://b.example"]
        );
    }
}
