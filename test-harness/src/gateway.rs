//! The real system behind the gateway: an auth-service and a task-service
//! on fresh databases of one backend, and a gateway in front of them, all
//! in process on port 0. A call through the gateway reaches the real
//! services.
//!
//! The services run as the gateway finds them in production: the
//! auth-service with its real per-address limits, believing the
//! `x-forwarded-for` of the gateway on loopback; the task-service with its
//! real defaults. The task-service's port can be reserved before it starts
//! ([`GatewayStack::start_without_tasks`]), so tests see an upstream that
//! accepts connections but never answers, and then one that comes up; and
//! the gateway can be stopped alone, to watch it drain.

use std::net::SocketAddr;

use http::Uri;
use todo_proto::{
    auth::v1::auth_service_client::AuthServiceClient,
    tasks::v1::task_service_client::TaskServiceClient,
};
use tokio::net::TcpListener;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::{
    AuthServer, Backend, GrpcWeb, STEP, Server, TaskServer, TestDatabase, auth_defaults, bind,
    grpc_web, origin, registration,
};

/// The auth-service as it runs behind the gateway: the real defaults (and
/// so the real per-address limits), believing the gateway's
/// `x-forwarded-for` because it comes from loopback.
pub fn auth_behind_the_gateway(
    database: &TestDatabase,
    listen: SocketAddr,
) -> auth_service::Config {
    auth_service::Config {
        listen,
        trusted_proxies: vec![
            "127.0.0.1/32".parse().expect("a CIDR"),
            "::1/128".parse().expect("a CIDR"),
        ],
        ..auth_defaults(database)
    }
}

pub struct GatewayStack {
    pub gateway: SocketAddr,
    pub auth: SocketAddr,
    pub tasks: SocketAddr,
    gateway_server: Option<Server>,
    auth_server: AuthServer,
    tasks_server: Option<TaskServer>,
    /// The task-service's listener while it is not started yet.
    tasks_listener: Option<TcpListener>,
    tasks_database: TestDatabase,
    _auth_database: TestDatabase,
}

impl GatewayStack {
    /// All three, the gateway with its default settings.
    pub async fn start(backend: Backend) -> Self {
        Self::start_with(backend, |_| {}).await
    }

    /// All three, the gateway's settings changed by `configure`; returns
    /// once the gateway reports SERVING.
    pub async fn start_with(
        backend: Backend,
        configure: impl FnOnce(&mut gateway::Config),
    ) -> Self {
        let mut stack = Self::start_without_tasks(backend, configure).await;
        stack.start_tasks().await;
        stack.wait_for_gateway_health(ServingStatus::Serving).await;
        stack
    }

    /// The auth-service and the gateway; the task-service's port is
    /// reserved but nothing answers on it until [`GatewayStack::start_tasks`].
    pub async fn start_without_tasks(
        backend: Backend,
        configure: impl FnOnce(&mut gateway::Config),
    ) -> Self {
        Self::start_auth_and_gateway(backend, |_| {}, configure).await
    }

    /// All three, the auth-service's settings changed by `configure_auth`
    /// (from [`auth_behind_the_gateway`]) and the gateway's by
    /// `configure_gateway`; returns once the gateway reports SERVING.
    pub async fn start_configured(
        backend: Backend,
        configure_auth: impl FnOnce(&mut auth_service::Config),
        configure_gateway: impl FnOnce(&mut gateway::Config),
    ) -> Self {
        let mut stack =
            Self::start_auth_and_gateway(backend, configure_auth, configure_gateway).await;
        stack.start_tasks().await;
        stack.wait_for_gateway_health(ServingStatus::Serving).await;
        stack
    }

    async fn start_auth_and_gateway(
        backend: Backend,
        configure_auth: impl FnOnce(&mut auth_service::Config),
        configure: impl FnOnce(&mut gateway::Config),
    ) -> Self {
        init_logs();
        let auth_database = backend.fresh().await;
        let tasks_database = backend.fresh().await;

        let auth_listener = bind().await;
        let auth = auth_listener.local_addr().expect("bound");
        let mut auth_config = auth_behind_the_gateway(&auth_database, auth);
        configure_auth(&mut auth_config);
        let auth_server = AuthServer::start_on(auth_listener, auth_config);

        let tasks_listener = bind().await;
        let tasks = tasks_listener.local_addr().expect("bound");

        let gateway_listener = bind().await;
        let gateway = gateway_listener.local_addr().expect("bound");
        let mut config = gateway::Config {
            listen: gateway,
            auth_url: origin(auth),
            tasks_url: origin(tasks),
            ..gateway::Config::default()
        };
        configure(&mut config);
        let gateway_server = Server::spawn(gateway_listener, |listener, shutdown| {
            gateway::serve(config, listener, shutdown)
        });

        Self {
            gateway,
            auth,
            tasks,
            gateway_server: Some(gateway_server),
            auth_server,
            tasks_server: None,
            tasks_listener: Some(tasks_listener),
            tasks_database,
            _auth_database: auth_database,
        }
    }

    /// Starts the task-service on its reserved port.
    pub async fn start_tasks(&mut self) {
        self.start_tasks_with(|_| {}).await;
    }

    /// Starts the task-service on its reserved port, its settings changed
    /// by `configure`.
    pub async fn start_tasks_with(&mut self, configure: impl FnOnce(&mut task_service::Config)) {
        let listener = self
            .tasks_listener
            .take()
            .expect("the task-service is started once");
        let mut config = task_service::Config {
            listen: self.tasks,
            database_url: self.tasks_database.url.clone().into(),
            auth_url: format!("http://{}", self.auth),
            ..task_service::Config::default()
        };
        configure(&mut config);
        self.tasks_server = Some(TaskServer::start_on(listener, config));
    }

    /// `http://127.0.0.1:<port>` of the gateway.
    pub fn url(&self) -> String {
        format!("http://{}", self.gateway)
    }

    pub fn uri(&self) -> Uri {
        origin(self.gateway)
    }

    /// Stops all three without waiting (also done on drop).
    pub fn stop(&self) {
        if let Some(gateway) = &self.gateway_server {
            gateway.shut_down();
        }
        if let Some(tasks) = &self.tasks_server {
            tasks.shut_down();
        }
        self.auth_server.shut_down();
    }

    /// Stops the gateway alone and waits until its `serve` has returned.
    pub async fn stop_gateway(&mut self) {
        if let Some(gateway) = self.gateway_server.take() {
            gateway.stop().await.expect("the gateway stops cleanly");
        }
    }

    /// The gateway's own health, asked over plain gRPC.
    pub async fn gateway_health(&self) -> Option<ServingStatus> {
        crate::health(&self.url(), "").await
    }

    /// Waits (up to [`STEP`]) until the gateway reports `status`.
    pub async fn wait_for_gateway_health(&self, status: ServingStatus) {
        crate::wait_for_health(&self.url(), "", status, STEP).await;
    }

    /// An AuthService client speaking gRPC-Web to the gateway.
    pub fn auth_web(&self, http2: bool) -> AuthServiceClient<GrpcWeb> {
        AuthServiceClient::with_origin(grpc_web(http2), self.uri())
    }

    /// A TaskService client speaking gRPC-Web to the gateway.
    pub fn tasks_web(&self, http2: bool) -> TaskServiceClient<GrpcWeb> {
        TaskServiceClient::with_origin(grpc_web(http2), self.uri())
    }

    /// Registers a fresh user through the gateway; returns its access token.
    pub async fn register(&self, email: &str) -> String {
        let response = self
            .auth_web(false)
            .register(registration(email))
            .await
            .expect("registration through the gateway succeeds");
        response
            .into_inner()
            .tokens
            .expect("a token pair")
            .access_token
    }
}

/// Logs of all three services at `warn` (or `RUST_LOG`), shown with a
/// failing test's output.
fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}
