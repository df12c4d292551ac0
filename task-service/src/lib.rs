//! The task-service: each signed-in user's task list, which no one else can
//! see, learn about or change, with live updates (`WatchTasks`).
//!
//! [`serve`] takes a bound listener and a shutdown token, so the binary,
//! the all-in-one stack and the tests all start the real thing the same
//! way. Reading top-down:
//!
//! - [`config`]: flags and their defaults;
//! - [`jwks`]: the auth-service's public keys, fetched and kept fresh;
//! - [`authn`]: the layer that turns a bearer token into an `Identity`;
//! - [`budget`]: what one user may take: calls and searches in flight, writes, tasks;
//! - [`capacity`]: how many calls the replica takes at once;
//! - [`domain`] and [`page_token`]: request values that can only be valid;
//! - [`store`]: one `TaskStore` trait, SQLite and PostgreSQL behind it;
//! - [`events`]: the fan-out of committed changes to watchers;
//! - [`session_events`]: ended sessions and deleted accounts, as the
//!   auth-service reports them;
//! - [`service`]: the gRPC handlers; [`error`]: the one error type.

pub mod authn;
pub mod budget;
pub mod capacity;
pub mod config;
pub mod domain;
pub mod error;
pub mod events;
pub mod jwks;
pub mod page_token;
pub mod service;
pub mod session_events;
pub mod store;

use std::{sync::Arc, time::Duration};

use access_token::Verifier;
use anyhow::Context;
use secrecy::ExposeSecret;
use serving::{
    CancellationToken,
    database::{Database, PoolOptions},
    health::ServingStatus,
    sql::Db,
};
use todo_proto::tasks::v1::task_service_server::TaskServiceServer;
use tokio::{net::TcpListener, sync::Notify};
use tonic::server::NamedService;
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

pub use config::Config;

use crate::{
    authn::RequireAuth,
    events::{Feed, Hub},
    jwks::KeySet,
    page_token::PageTokenKey,
    service::TaskApi,
    session_events::{Follower, Revocations},
    store::{Store, sql::SqlStore},
};

/// The name health reports the task service under.
/// This process in metrics.
const COMPONENT: &str = "task-service";

pub const SERVICE_NAME: &str = <TaskServiceServer<TaskApi> as NamedService>::NAME;

/// Serves `tasks.v1.TaskService`, health and reflection on `listener` until
/// `shutdown` is cancelled, then drains (bounded by the shutdown grace).
///
/// Start-up fails only when the tasks database cannot be opened or migrated,
/// or `--auth-url` is not a URL; an auth-service that is not up yet is
/// waited for in the background (health says `NOT_SERVING` meanwhile).
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let database = Database::open(
        &config.database_url,
        PoolOptions::new(config.database_max_connections, config.statement_timeout),
        store::MIGRATIONS,
    )
    .await
    .context("cannot open the tasks database")?;

    serving::metrics::serve_if(config.metrics_listen, shutdown.clone())
        .await
        .context("cannot serve the metrics")?;
    serving::metrics::sample_pools(COMPONENT, &database);
    serving::metrics::metrics().declare_refusals(
        COMPONENT,
        &[
            "calls_in_flight",
            "calls_in_flight_per_user",
            "writes_per_user",
            "tasks_per_user",
            "watchers_per_user",
        ],
    );

    // SQLite's hub is fed by the store itself, so it is live at once; a
    // PostgreSQL hub is live once its listener listens.
    let in_process = matches!(database, Database::Sqlite { .. });
    let hub = Hub::new(config.watch_buffer, in_process);
    let feed = if in_process {
        Feed::in_process(hub.clone())
    } else {
        Feed::Postgres
    };
    let store: Store = Arc::new(SqlStore::new(
        Db::new(database.clone()),
        feed,
        config.max_tasks_per_user,
    ));
    let page_tokens = PageTokenKey::new(
        store
            .page_token_secret()
            .await
            .context("cannot read the page-token key")?
            .expose_secret(),
    );

    // Everything started in the background stops with `background`, which
    // ends with `shutdown` or when `serve` returns early.
    let background = shutdown.child_token();
    let _stop_background = background.clone().drop_guard();

    if let Database::Postgres(pool) = &database {
        tokio::spawn(events::listen(
            pool.clone(),
            store.clone(),
            hub.clone(),
            background.clone(),
        ));
    }

    let verifier = Verifier::new(&config.issuer, &config.audience, config.token_leeway_secs);
    // The auth-service, over TLS for an https:// URL (presenting this
    // service's own certificate when it has one).
    let auth_endpoint = |url: &str| {
        let identity = config.tls_cert.as_deref().zip(config.tls_key.as_deref());
        serving::transport::endpoint(url, config.auth_ca.as_deref(), identity)
            .map_err(|error| anyhow::anyhow!("cannot reach the auth-service at {url:?}: {error}"))
    };
    let keys = Arc::new(KeySet::new(
        verifier,
        auth_endpoint(&config.auth_url)?,
        config.jwks_file.clone(),
    )?);
    {
        let (keys, background, interval) = (keys.clone(), background.clone(), config.jwks_refresh);
        tokio::spawn(async move { keys.run(interval, background).await });
    }

    // Health: NOT_SERVING until keys have arrived, and while the database
    // (or, on PostgreSQL, the change feed's connection to it) does not
    // answer. Probing starts the moment the first keys arrive.
    let (reporter, health_service) = tonic_health::server::health_reporter();
    serving::health::set_all(&reporter, &[SERVICE_NAME], ServingStatus::NotServing).await;

    // Ended sessions and deleted accounts, from the auth-service.
    let revocations = Arc::new(Revocations::default());
    let deletions = Arc::new(Notify::new());
    tokio::spawn(session_events::follow(
        auth_endpoint(
            config
                .auth_events_url
                .as_deref()
                .unwrap_or(&config.auth_url),
        )?,
        Follower {
            revocations: revocations.clone(),
            hub: hub.clone(),
            store: store.clone(),
            clock: config.clock.clone(),
            health: reporter.clone(),
            deletions: deletions.clone(),
        },
        background.clone(),
    ));
    tokio::spawn(session_events::delete_accounts(
        store.clone(),
        config.clock.clone(),
        deletions,
        background.clone(),
    ));
    {
        let (revocations, clock, background) = (
            revocations.clone(),
            config.clock.clone(),
            background.clone(),
        );
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tokio::select! {
                    _ = tick.tick() => revocations.forget_expired(clock.now().timestamp()),
                    () = background.cancelled() => break,
                }
            }
        });
    }
    {
        let (keys, store, hub, background) =
            (keys.clone(), store.clone(), hub.clone(), background.clone());
        tokio::spawn(async move {
            tokio::select! {
                () = keys.wait_ready() => {}
                () = background.cancelled() => return,
            }
            serving::health::track(reporter, vec![SERVICE_NAME], background, move || {
                let (keys, store, hub) = (keys.clone(), store.clone(), hub.clone());
                async move { keys.ready() && hub.available() && store.ping().await }
            })
            .await;
        });
    }

    let authenticator = Arc::new(authn::Authenticator::new(
        keys,
        revocations,
        config.clock.clone(),
        config.token_leeway_secs,
    ));
    let budgets = Arc::new(budget::Budgets::new(budget::Limits {
        calls_in_flight: config.max_calls_in_flight_per_user,
        searches_in_flight: config.max_searches_in_flight_per_user,
        writes_per_minute: config.max_writes_per_user_per_minute,
    }));
    {
        let (budgets, background) = (budgets.clone(), background.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tokio::select! {
                    _ = tick.tick() => budgets.forget_idle(),
                    () = background.cancelled() => break,
                }
            }
        });
    }
    let api = TaskApi::new(
        store,
        budgets,
        hub,
        page_tokens,
        config.clock.clone(),
        shutdown.clone(),
        config.watch_heartbeat,
    );
    // Only requests are bounded: a full ListTasks page (500 tasks of up to
    // 4,000 characters each) can legitimately exceed the request limit.
    // Requests may be gzip-compressed; the limit applies once inflated (G1).
    let tasks = TaskServiceServer::new(api)
        .max_decoding_message_size(config.transport.max_message_bytes)
        .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
        .send_compressed(tonic::codec::CompressionEncoding::Gzip);
    let (reflection_v1, reflection_v1alpha) = serving::reflection::services_for(&[SERVICE_NAME]);
    let reflection = !config.disable_reflection;

    // Every layer a request passes, outermost first. The per-call timeout
    // bounds the handler's future only: a WatchTasks stream outlives it.
    let tls = serving::transport::server_tls(
        config.tls_cert.as_deref(),
        config.tls_key.as_deref(),
        config.tls_client_ca.as_deref(),
    )?;
    let mut server = serving::transport::server(&config.transport);
    if let Some(tls) = tls {
        server = server.tls_config(tls)?;
    }
    let router = server
        .timeout(config.transport.request_timeout)
        .layer(
            ServiceBuilder::new()
                .map_request(serving::telemetry::drop_unsafe_request_id)
                .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                .layer(serving::telemetry::rpc_trace_layer())
                .layer(serving::metrics::RpcMetricsLayer::new(COMPONENT))
                .layer(PropagateRequestIdLayer::x_request_id())
                .layer(serving::transport::tidy_status_layer()),
        )
        .add_service(health_service)
        .add_optional_service(reflection.then_some(reflection_v1))
        .add_optional_service(reflection.then_some(reflection_v1alpha))
        .add_service(capacity::InFlightLimit::new(
            RequireAuth::new(tasks, authenticator),
            config.max_calls_in_flight,
        ));

    tracing::info!(address = ?listener.local_addr().ok(), "task-service listening");
    let served = router
        .serve_with_incoming_shutdown(serving::transport::incoming(listener), shutdown.cancelled());
    serving::transport::run_with_drain(served, shutdown.clone(), config.transport.shutdown_grace)
        .await
        .context("the gRPC server failed")?;
    background.cancel();
    // Calls abandoned by the drain may still hold connections; do not let
    // them hold up the exit.
    if tokio::time::timeout(Duration::from_secs(5), database.close())
        .await
        .is_err()
    {
        tracing::warn!("database connections still busy at exit; closing anyway");
    }
    tracing::info!("task-service stopped");
    Ok(())
}
