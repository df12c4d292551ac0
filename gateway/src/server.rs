//! Accepting connections: HTTP/1.1 and HTTP/2 on one port, with limits and
//! a bounded graceful shutdown.
//!
//! Why hyper-util's `auto` connection builder rather than tonic's `Server`:
//! browsers speak gRPC-Web over HTTP/1.1 (and HTTP/2 when TLS is in front),
//! gRPC clients speak HTTP/2 with prior knowledge, and one port must serve
//! both. tonic's server can accept HTTP/1.1 too, but it wants
//! `NamedService`s and its own router, while the gateway is a single tower
//! stack that routes by path itself (see stack.rs). Building connections
//! directly keeps that stack whole and puts every transport limit in view:
//!
//! - HTTP/2: max concurrent streams per connection, max header list size,
//!   max locally reset streams and pending-accept resets (the "Rapid
//!   Reset"/"MadeYouReset" floods), keepalive pings that drop dead peers;
//! - HTTP/1.1: a deadline for reading request headers (slowloris);
//! - at most `--max-connections` client connections: at the limit the
//!   listener is not read until one closes (new connections wait in the
//!   kernel's backlog), so idle connections cannot exhaust descriptors;
//! - each connection records its peer address in the request's
//!   extensions, the only source of `x-forwarded-for` (see headers.rs).
//!
//! Shutdown: when the token fires the listener closes, every connection is
//! asked to finish (HTTP/2 GOAWAY, HTTP/1.1 close after the current
//! response), health flips to `NOT_SERVING`, and open calls get
//! `--shutdown-grace` to end. Calls still open then (an open `WatchTasks`
//! never ends by itself) are ended with `UNAVAILABLE` (see drain.rs), the
//! connections get [`FINAL_STATUS_DELIVERY`] to deliver that status, and
//! the server returns: a rollout waits at most the grace and a second.

use std::{sync::Arc, time::Duration};

use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
    service::TowerToHyperService,
};
use serving::{CancellationToken, health::ServingStatus};
use tokio::{net::TcpListener, sync::Semaphore};
use tonic::body::Body;
use tower::ServiceBuilder;

use crate::{Config, health, router::PeerAddr, stack::Gateway};

/// HTTP/2 header list limit: generous for a bearer token, small enough that
/// header floods are cheap to refuse.
const MAX_HEADER_LIST_BYTES: u32 = 16 * 1024;
/// Streams a peer may make us reset before its connection is closed.
const MAX_LOCAL_ERROR_RESET_STREAMS: usize = 256;
const MAX_PENDING_ACCEPT_RESET_STREAMS: usize = 64;
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time an HTTP/1.1 client gets to send its request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Time the connections get to deliver the `UNAVAILABLE` that ends calls
/// still open after the shutdown grace.
const FINAL_STATUS_DELIVERY: Duration = Duration::from_secs(1);
/// Smallest gap between two "connection limit reached" warnings.
const LIMIT_LOG_INTERVAL: Duration = Duration::from_secs(60);
/// Pause after a failed `accept` (for example, out of file descriptors).
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// Serves the gateway on `listener` until `shutdown`, then drains.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let gateway = Gateway::build(&config)?;
    serving::metrics::serve_if(config.metrics_listen, shutdown.clone()).await?;
    serving::metrics::metrics().declare_refusals(
        "gateway",
        &[
            "connections",
            "calls",
            "calls_per_address",
            "anonymous_streams",
            "anonymous_streams_per_address",
        ],
    );
    // Not serving until the first probe has seen both upstreams answer.
    serving::health::set_all(
        &gateway.health_reporter,
        &health::SERVICES,
        ServingStatus::NotServing,
    )
    .await;
    let health = tokio::spawn(health::track(
        gateway.health_reporter.clone(),
        gateway.readiness.clone(),
        gateway.auth.clone(),
        gateway.tasks.clone(),
        shutdown.clone(),
    ));
    let address = listener.local_addr()?;
    tracing::info!(%address, auth = %config.auth_url, tasks = %config.tasks_url, tls = config.tls_cert.is_some(), "gateway listening");

    let builder = connection_builder(&config);
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => Some(crate::tls::acceptor(
            crate::tls::Files {
                cert: cert.clone(),
                key: key.clone(),
            },
            shutdown.clone(),
        )?),
        (None, None) => None,
        _ => anyhow::bail!("--tls-cert and --tls-key go together"),
    };
    let graceful = GracefulShutdown::new();
    // Every connection's task, so the ones still open after the grace are
    // ended, not left running behind a server that has returned.
    let mut connections = tokio::task::JoinSet::new();
    let connection_permits = Arc::new(Semaphore::new(config.max_connections.max(1)));
    let mut limit_logged: Option<std::time::Instant> = None;
    loop {
        // At the connection limit, stop accepting until one closes.
        let permit = match connection_permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                // Once a minute at most: under a flood this is hit for
                // every connection that closes.
                serving::metrics::metrics().refused("gateway", "connections");
                if limit_logged.is_none_or(|at| at.elapsed() >= LIMIT_LOG_INTERVAL) {
                    limit_logged = Some(std::time::Instant::now());
                    tracing::warn!(
                        max_connections = config.max_connections,
                        "connection limit reached; waiting for connections to close"
                    );
                }
                tokio::select! {
                    permit = connection_permits.clone().acquire_owned() => {
                        permit.expect("the semaphore is never closed")
                    }
                    () = shutdown.cancelled() => break,
                }
            }
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
        let service = ServiceBuilder::new()
            .map_request(move |request: http::Request<Incoming>| {
                let mut request = request.map(Body::new);
                request.extensions_mut().insert(PeerAddr(peer));
                request
            })
            .service(gateway.service.clone());
        let (builder, watcher, tls) = (builder.clone(), graceful.watcher(), tls.clone());
        connections.spawn(async move {
            let _permit = permit;
            // A client must start talking within the header timeout: the
            // auto builder waits for the first bytes (to tell HTTP/1.1 from
            // HTTP/2) with no timer of its own, so a silent connection
            // would otherwise hold its task and file descriptor forever.
            let mut first = [0u8; 1];
            match tokio::time::timeout(HEADER_READ_TIMEOUT, stream.peek(&mut first)).await {
                Ok(Ok(read)) if read > 0 => {}
                _ => {
                    tracing::debug!(%peer, "closed a connection that sent nothing");
                    return;
                }
            }
            let service = TowerToHyperService::new(service);
            let served = match tls {
                None => {
                    let connection = builder.serve_connection(TokioIo::new(stream), service);
                    watcher.watch(connection.into_owned()).await
                }
                Some(tls) => {
                    let stream =
                        match tokio::time::timeout(HEADER_READ_TIMEOUT, tls.accept(stream)).await {
                            Ok(Ok(stream)) => stream,
                            Ok(Err(error)) => {
                                tracing::debug!(%peer, %error, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(%peer, "TLS handshake timed out");
                                return;
                            }
                        };
                    let connection = builder.serve_connection(TokioIo::new(stream), service);
                    watcher.watch(connection.into_owned()).await
                }
            };
            if let Err(error) = served {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
        });
        // Reap finished connections so the set holds only open ones.
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    gateway.readiness.shutting_down();

    tracing::info!(open_connections = graceful.count(), "gateway draining");
    let drained = graceful.shutdown();
    tokio::pin!(drained);
    tokio::select! {
        () = &mut drained => tracing::info!("gateway drained"),
        () = tokio::time::sleep(config.shutdown_grace) => {
            tracing::warn!(
                grace = ?config.shutdown_grace,
                "drain time exceeded; ending open calls with UNAVAILABLE"
            );
            gateway.closing.cancel();
            tokio::select! {
                () = &mut drained => tracing::info!("gateway drained"),
                () = tokio::time::sleep(FINAL_STATUS_DELIVERY) => {
                    tracing::warn!("connections still open; closing them");
                }
            }
        }
    }
    connections.shutdown().await;
    let _ = health.await;
    Ok(())
}

/// HTTP/1.1 and HTTP/2 on one port, each with its limits.
fn connection_builder(config: &Config) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(config.max_concurrent_streams)
        .max_header_list_size(MAX_HEADER_LIST_BYTES)
        .max_local_error_reset_streams(MAX_LOCAL_ERROR_RESET_STREAMS)
        .max_pending_accept_reset_streams(MAX_PENDING_ACCEPT_RESET_STREAMS)
        .keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT);
    builder
}
