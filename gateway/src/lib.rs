//! The gRPC-Web gateway: how browsers (and anything else that speaks
//! gRPC-Web or gRPC) reach the auth-service and the task-service through
//! one port.
//!
//! Browsers cannot speak gRPC: they cannot read HTTP/2 trailers nor force
//! HTTP/2. gRPC-Web carries the same messages with the trailers moved into
//! the body, over HTTP/1.1 or HTTP/2, as binary or base64 text. The gateway
//! translates that to gRPC (tonic-web), answers the browser's CORS
//! questions, and forwards every call, body streamed and undecoded, to the
//! service that owns it. It holds no business logic: a method a service
//! adds is reachable at once.
//!
//! Reading order: [`stack`] shows every layer a request passes; then
//! [`server`] (connections, limits, shutdown), [`cors`], [`router`],
//! [`upstream`] (forwarding), [`headers`] (what changes in metadata),
//! [`limits`], [`health`] and [`jwks`].

mod config;
pub mod connect;
pub mod cors;
pub mod drain;
pub mod headers;
pub mod health;
pub mod jwks;
pub mod limits;
pub mod router;
mod server;
pub mod stack;
pub mod tls;
pub mod upstream;
pub mod web;

pub use config::Config;
pub use server::serve;

/// What can be wrong with a gateway's configuration.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "invalid allowed origin {0:?}: expected scheme://host[:port], such as https://app.example.com"
    )]
    InvalidOrigin(String),
    #[error("invalid upstream URL {0:?}: expected http://host:port or https://host:port")]
    InvalidUpstream(String),
    #[error("the upstream {0:?} is https: give --upstream-ca (the CA that signed its certificate)")]
    MissingUpstreamCa(String),
    #[error("cannot use the TLS file {0}")]
    InvalidTlsFile(String),
}
