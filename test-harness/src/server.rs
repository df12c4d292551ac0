//! A service running in this process. Every service's library exposes
//! `serve(config, listener, shutdown)`; [`Server::spawn`] runs it on a
//! listener bound to port 0, exactly as the binaries run it on theirs, so a
//! test reaches the real thing over a real socket.
//!
//! Stopping cancels the shutdown token and waits for `serve` to return,
//! which it does once in-flight calls have drained: a test that stops a
//! server also checks that it shuts down cleanly. Dropping a server only
//! cancels the token, so a failing test never leaves one serving.

use std::{future::Future, net::SocketAddr, time::Duration};

use http::Uri;
use serving::CancellationToken;
use tokio::{net::TcpListener, task::JoinHandle, time::Instant};
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::PATIENCE;

/// A service's `serve` running on a listener of its own.
pub struct Server {
    pub addr: SocketAddr,
    shutdown: CancellationToken,
    serving: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Server {
    /// Runs `serve(listener, shutdown)` in the background.
    pub fn spawn<F, Fut>(listener: TcpListener, serve: F) -> Self
    where
        F: FnOnce(TcpListener, CancellationToken) -> Fut,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        let shutdown = CancellationToken::new();
        let serving = tokio::spawn(serve(listener, shutdown.clone()));
        Self {
            addr,
            shutdown,
            serving: Some(serving),
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn uri(&self) -> Uri {
        origin(self.addr)
    }

    /// A new connection to the server.
    pub async fn channel(&self) -> Channel {
        connect(&self.url()).await
    }

    /// The health status of `service` ("" for the whole process), or `None`
    /// when health does not answer.
    pub async fn health(&self, service: &str) -> Option<ServingStatus> {
        health(&self.url(), service).await
    }

    /// Waits until health reports `status` for `service`, or panics after
    /// `within`.
    pub async fn wait_for_health(&self, service: &str, status: ServingStatus, within: Duration) {
        wait_for_health(&self.url(), service, status, within).await;
    }

    /// Starts the shutdown and returns at once.
    pub fn shut_down(&self) {
        self.shutdown.cancel();
    }

    /// Shuts down and waits (up to [`PATIENCE`]) for `serve` to return;
    /// its result says whether it stopped cleanly.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        let serving = self.serving.take().expect("a server is stopped once");
        tokio::time::timeout(PATIENCE, serving)
            .await
            .expect("the server drains in time")
            .expect("the server did not panic")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A free port on loopback, bound.
pub async fn bind() -> TcpListener {
    TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a free port on loopback")
}

/// A port on loopback where nothing listens.
pub async fn closed_port() -> SocketAddr {
    bind().await.local_addr().expect("bound")
}

/// `http://<address>` as a URI.
pub fn origin(address: SocketAddr) -> Uri {
    format!("http://{address}")
        .parse()
        .expect("an address makes a URI")
}

/// A connection to `url`, retried for up to [`PATIENCE`] while nothing
/// listens there yet (a process that is still starting).
pub async fn connect(url: &str) -> Channel {
    let endpoint = Endpoint::from_shared(url.to_owned()).expect("a valid URL");
    let deadline = Instant::now() + PATIENCE;
    loop {
        match endpoint.connect().await {
            Ok(channel) => return channel,
            Err(error) if Instant::now() > deadline => panic!("{url} is unreachable: {error}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// The `grpc.health.v1` status of `service` at `url` ("" for the whole
/// process), or `None` when nothing answers.
pub async fn health(url: &str, service: &str) -> Option<ServingStatus> {
    let channel = Endpoint::from_shared(url.to_owned())
        .ok()?
        .connect()
        .await
        .ok()?;
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .ok()?;
    ServingStatus::try_from(response.into_inner().status).ok()
}

/// Waits until [`health`] reports `status`, or panics after `within`.
pub async fn wait_for_health(url: &str, service: &str, status: ServingStatus, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let current = health(url, service).await;
        if current == Some(status) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{url}: health of {service:?} stayed {current:?}, expected {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
