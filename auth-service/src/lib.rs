//! The auth-service: accounts, sign-in, sessions, and the keys that let
//! every other service verify who is calling.
//!
//! A request passes, top to bottom (see [`serve`]): request id → trace span
//! → per-call timeout → the generated `AuthService` server (message size
//! bound) → [`service::AuthApi`], which checks the per-address rate and, for
//! protected RPCs, the access token and its session, then calls the
//! [`store::AuthStore`].
//!
//! - [`domain`]: `Email`, `Password`, `DisplayName`, parsed once at the edge.
//! - [`password`]: argon2id on bounded blocking threads.
//! - [`refresh_token`]: opaque 256-bit tokens, stored only as SHA-256.
//! - [`recovery`] and [`mail`]: email verification, password reset and
//!   account deletion; the outbox and its delivery worker.
//! - [`keyring`]: Ed25519 signing keys in the database, rotation, JWKS.
//! - [`key_encryption`]: the key-encryption key that seals every secret
//!   the database holds.
//! - [`throttle`]: per-address limits; the per-account window is in the store.
//! - [`session_events`]: the internal stream of ended sessions and deleted
//!   accounts that the task-service follows.
//! - [`store`]: one trait, SQLite and PostgreSQL implementations.

pub mod config;
pub mod domain;
pub mod error;
pub mod key_encryption;
pub mod keyring;
pub mod mail;
pub mod password;
pub mod recovery;
pub mod refresh_token;
pub mod service;
pub mod session_events;
pub mod store;
pub mod throttle;

use std::{sync::Arc, time::Duration};

use access_token::{SigningKey, Verifier};
pub use config::Config;
use serving::{
    CancellationToken,
    database::{Database, PoolOptions},
    health, transport,
};
use todo_proto::auth::{
    internal::v1::session_events_service_server::SessionEventsServiceServer,
    v1::auth_service_server::AuthServiceServer,
};
use tokio::{net::TcpListener, sync::Notify};
use tonic::codec::CompressionEncoding;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

use crate::{
    key_encryption::{KeyEncryption, LocalKeks},
    keyring::Keyring,
    mail::Mailer,
    password::Hasher,
    recovery::Mail,
    refresh_token::SuccessorKey,
    service::{AuthApi, Policy},
    session_events::SessionEventsApi,
    store::{AuthStore, Retention, SecretSlot},
    throttle::AddressLimiter,
};

/// The service name health reports under.
/// This process in metrics.
const COMPONENT: &str = "auth-service";

pub const SERVICE_NAME: &str = "auth.v1.AuthService";

/// The service secret that derives refresh-token successors.
const SUCCESSOR_KEY: &str = "refresh_successor";

/// How long an account-deleted event stays in the log: a task-service down
/// for longer than this when an account was deleted would not hear of it.
const DELETED_ACCOUNT_EVENT_RETENTION: chrono::TimeDelta = chrono::TimeDelta::days(30);

/// How often keys are re-read so rotations by other processes arrive.
const KEY_RELOAD_INTERVAL: Duration = Duration::from_secs(60);

/// Leeway for clock skew when verifying our own access tokens.
const TOKEN_LEEWAY_SECS: u64 = 30;

/// Serves the auth-service on `listener` until `shutdown` is cancelled and
/// in-flight calls have drained (bounded by `--shutdown-grace`).
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
    .await?;
    serving::metrics::serve_if(config.metrics_listen, shutdown.clone()).await?;
    serving::metrics::sample_pools(COMPONENT, &database);
    let metrics = serving::metrics::metrics();
    metrics.declare_refusals(
        COMPONENT,
        &[
            "address_rate",
            "mail_requests",
            "sign_in_window_address",
            "sign_in_window_account",
        ],
    );
    metrics.declare_mail(COMPONENT, &["sent", "retried", "failed"]);
    let store = store::open(&database, service::delta(config.access_token_ttl));
    let keks = key_encryption_keys(&config, &database)?;
    key_encryption::seal_and_check(store.as_ref(), keks.as_ref()).await?;
    let successors =
        SuccessorKey::new(open_service_secret(store.as_ref(), keks.as_ref(), SUCCESSOR_KEY).await?);
    let key_file = match &config.signing_key_file {
        Some(path) => {
            let pem = std::fs::read_to_string(path).map_err(|error| {
                anyhow::anyhow!("cannot read --signing-key-file {}: {error}", path.display())
            })?;
            Some(SigningKey::from_pkcs8_pem(&pem)?)
        }
        None => None,
    };
    let verifier = Verifier::new(&config.issuer, &config.audience, TOKEN_LEEWAY_SECS);
    let keyring = Arc::new(
        Keyring::load(
            store.clone(),
            keks.clone(),
            config.clock.clone(),
            verifier,
            config.access_token_ttl,
            key_file,
        )
        .await?,
    );
    // `available_parallelism` honours a cgroup CPU quota (a Kubernetes CPU
    // limit), rounded up; without a limit it is the node's core count, so
    // deploy/ sets the concurrency explicitly.
    let concurrency = config.hash_concurrency.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(usize::from)
            .unwrap_or(2)
    });
    let hasher = Hasher::start(config.hash_memory_kib, config.hash_iterations, concurrency).await?;
    tracing::info!(
        concurrency,
        memory_kib = config.hash_memory_kib,
        "password hashing: at most {} MiB at once",
        concurrency as u64 * u64::from(config.hash_memory_kib) / 1024
    );
    let limiter = AddressLimiter::new(
        config.address_rate_per_minute,
        config.address_burst,
        config.trusted_proxies.clone(),
    );

    let retention = Retention {
        login_window: service::delta(config.login_failure_window),
        known_address: service::delta(config.known_address_ttl),
        // Past this, no access token of an ended session is valid anywhere.
        ended_session: service::delta(config.access_token_ttl) + chrono::TimeDelta::minutes(2),
        deleted_account_event: DELETED_ACCOUNT_EVENT_RETENTION,
    };
    spawn_maintenance(
        Maintenance {
            keyring: keyring.clone(),
            limiter: limiter.clone(),
            store: store.clone(),
            clock: config.clock.clone(),
            retention,
        },
        shutdown.clone(),
    );

    let mailer = Mailer::new(
        config.smtp_url.as_ref(),
        &config.mail_dir,
        &config.mail_from,
        &config.app_url,
    )?;
    tracing::info!(to = %mailer.destination(), "mail delivery");
    let mail = Mail {
        mailer: mailer.clone(),
        queued: Arc::new(Notify::new()),
        keks: keks.clone(),
    };
    tokio::spawn(mail::deliver(
        store.clone(),
        keks.clone(),
        mailer,
        config.clock.clone(),
        mail.queued.clone(),
        shutdown.clone(),
    ));

    let session_events =
        SessionEventsServiceServer::new(SessionEventsApi::new(store.clone(), shutdown.clone()));
    let api = AuthApi {
        store,
        successors,
        mail,
        hasher,
        keyring,
        limiter,
        clock: config.clock.clone(),
        policy: Policy::from_config(&config),
    };

    let (reporter, health_service) = tonic_health::server::health_reporter();
    health::set_all(&reporter, &[SERVICE_NAME], health::ServingStatus::Serving).await;
    tokio::spawn(health::track(
        reporter,
        vec![SERVICE_NAME],
        shutdown.clone(),
        {
            let database = database.clone();
            move || {
                let database = database.clone();
                async move { database.ping().await }
            }
        },
    ));
    let (reflection_v1, reflection_v1alpha) = serving::reflection::services_for(&[SERVICE_NAME]);
    let reflection = !config.disable_reflection;

    let layers = tower::ServiceBuilder::new()
        .map_request(serving::telemetry::drop_unsafe_request_id)
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .layer(serving::telemetry::rpc_trace_layer())
        .layer(serving::metrics::RpcMetricsLayer::new(COMPONENT))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(transport::tidy_status_layer());

    // The internal event stream: on its own address when one is given (so
    // a network policy can keep everyone but the task-service away from
    // it), else beside the public API.
    let (internal_here, internal) = match config.internal_listen {
        Some(address) => (None, Some(transport::bind(address).await?)),
        None => (Some(session_events.clone()), None),
    };
    let tls = transport::server_tls(
        config.tls_cert.as_deref(),
        config.tls_key.as_deref(),
        config.tls_client_ca.as_deref(),
    )?;
    let server = || -> anyhow::Result<tonic::transport::Server> {
        let server = transport::server(&config.transport);
        Ok(match tls.clone() {
            Some(tls) => server.tls_config(tls)?,
            None => server,
        })
    };
    let internal_server = internal.map(|listener| {
        tracing::info!(address = ?listener.local_addr().ok(), "auth-service internal events listening");
        let serve = server()?
            .layer(layers.clone())
            .add_service(session_events)
            .serve_with_incoming_shutdown(
                transport::incoming(listener),
                shutdown.clone().cancelled_owned(),
            );
        Ok::<_, anyhow::Error>(tokio::spawn(transport::run_with_drain(
            serve,
            shutdown.clone(),
            config.transport.shutdown_grace,
        )))
    });
    let internal_server = internal_server.transpose()?;

    let local = listener.local_addr()?;
    tracing::info!(address = %local, "auth-service listening");
    let router = server()?
        .timeout(config.transport.request_timeout)
        .layer(layers)
        .add_optional_service(internal_here)
        .add_service(health_service)
        .add_optional_service(reflection.then_some(reflection_v1))
        .add_optional_service(reflection.then_some(reflection_v1alpha))
        .add_service(
            AuthServiceServer::new(api)
                .max_decoding_message_size(config.transport.max_message_bytes)
                // The size limit applies to the inflated message (G1).
                .accept_compressed(CompressionEncoding::Gzip)
                .send_compressed(CompressionEncoding::Gzip),
        );
    let serve = router.serve_with_incoming_shutdown(
        transport::incoming(listener),
        shutdown.clone().cancelled_owned(),
    );
    transport::run_with_drain(serve, shutdown, config.transport.shutdown_grace).await?;
    if let Some(internal) = internal_server {
        internal.await??;
    }
    database.close().await;
    tracing::info!("auth-service stopped");
    Ok(())
}

/// What periodic upkeep works on.
struct Maintenance {
    keyring: Arc<Keyring>,
    limiter: AddressLimiter,
    store: Arc<dyn AuthStore>,
    clock: serving::clock::Clock,
    retention: Retention,
}

/// Periodic upkeep: re-read signing keys, forget idle rate-limit buckets,
/// remove rows of what has ended (failed-login windows, old known
/// addresses, long-ended sessions).
fn spawn_maintenance(work: Maintenance, shutdown: CancellationToken) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(KEY_RELOAD_INTERVAL);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = shutdown.cancelled() => break,
            }
            if let Err(error) = work.keyring.reload(false).await {
                tracing::warn!(%error, "could not reload signing keys");
            }
            work.limiter.forget_idle();
            match work.store.prune(work.clock.now(), &work.retention).await {
                Ok(0) => {}
                Ok(removed) => tracing::debug!(removed, "pruned ended rows"),
                Err(error) => tracing::warn!(%error, "could not prune ended rows"),
            }
        }
    });
}

/// `auth-service rotate-key`: a new active signing key in the database.
pub async fn rotate_key(config: &Config) -> anyhow::Result<String> {
    let database = Database::open(
        &config.database_url,
        PoolOptions::new(1, config.statement_timeout),
        store::MIGRATIONS,
    )
    .await?;
    let store = store::open(&database, service::delta(config.access_token_ttl));
    let keks = key_encryption_keys(config, &database)?;
    let kid = keyring::rotate(store.as_ref(), keks.as_ref(), config.clock.now()).await?;
    database.close().await;
    Ok(kid)
}

/// `auth-service rotate-kek`: every secret the database holds sealed again
/// with `--key-encryption-key-file`, opened with it or with
/// `--previous-key-encryption-key-file`. Returns how many were re-sealed.
pub async fn rotate_kek(config: &Config) -> anyhow::Result<usize> {
    let database = Database::open(
        &config.database_url,
        PoolOptions::new(1, config.statement_timeout),
        store::MIGRATIONS,
    )
    .await?;
    let store = store::open(&database, service::delta(config.access_token_ttl));
    let keks = key_encryption_keys(config, &database)?;
    let resealed = key_encryption::rotate(store.as_ref(), keks.as_ref()).await?;
    database.close().await;
    Ok(resealed)
}

/// The key-encryption keys of `config`. For an embedded SQLite database
/// a missing key file is generated (the `cargo run` default); on
/// PostgreSQL it must be given: replicas must share it, and it must not
/// live beside the database.
fn key_encryption_keys(
    config: &Config,
    database: &Database,
) -> anyhow::Result<Arc<dyn KeyEncryption>> {
    let generate = matches!(database, Database::Sqlite { .. });
    let keks = LocalKeks::load(
        &config.key_encryption_key_file,
        config.previous_key_encryption_key_file.as_deref(),
        generate,
    )?;
    tracing::info!(
        kek = keks.current_id(),
        "secrets at rest sealed with key-encryption key"
    );
    Ok(Arc::new(keks))
}

/// The service secret `name`, created sealed on first use, opened.
async fn open_service_secret(
    store: &dyn AuthStore,
    keks: &dyn KeyEncryption,
    name: &str,
) -> anyhow::Result<secrecy::SecretBox<[u8]>> {
    let slot = SecretSlot::ServiceSecret(name.to_owned());
    let candidate: [u8; 32] = rand::random();
    let stored = store
        .service_secret(name, &keks.seal(&candidate, &slot.purpose())?)
        .await?;
    let opened = key_encryption::open_stored(keks, &stored, &slot)?;
    Ok(opened)
}
