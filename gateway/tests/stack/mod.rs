//! The real system, in process, for the gateway's tests: an auth-service
//! and a task-service on fresh SQLite databases and a gateway in front of
//! them, all on port 0, plus the clients a browser-like caller would use.
//! Nothing is faked: a call through the gateway reaches the real services.

#![allow(dead_code)] // each test file uses part of this

use std::{net::SocketAddr, time::Duration};

use http::Uri;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use serving::CancellationToken;
use test_harness::TestDatabase;
use todo_proto::{
    auth::v1::{RegisterRequest, auth_service_client::AuthServiceClient},
    tasks::v1::task_service_client::TaskServiceClient,
};
use tokio::net::TcpListener;
use tonic::body::Body;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tonic_web::{GrpcWebCall, GrpcWebClientLayer, GrpcWebClientService};
use tower::Layer;

/// Longest any single step of a test may take before it counts as a hang.
pub const STEP: Duration = Duration::from_secs(15);

/// A gRPC-Web client channel (tonic-web's client layer over hyper).
pub type GrpcWeb = GrpcWebClientService<Client<HttpConnector, GrpcWebCall<Body>>>;

pub struct Stack {
    pub gateway: SocketAddr,
    pub auth: SocketAddr,
    pub tasks: SocketAddr,
    shutdown: CancellationToken,
    /// Stops the gateway alone (a child of `shutdown`).
    gateway_shutdown: CancellationToken,
    /// Ends when the gateway's `serve` has returned.
    gateway_done: Option<tokio::task::JoinHandle<()>>,
    /// The task-service's listener while it is not started yet.
    tasks_listener: Option<TcpListener>,
    tasks_db: TestDatabase,
    _auth_db: TestDatabase,
}

impl Stack {
    /// All three, the gateway with its default settings.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// All three, the gateway's settings changed by `configure`.
    pub async fn start_with(configure: impl FnOnce(&mut gateway::Config)) -> Self {
        let mut stack = Self::start_without_tasks(configure).await;
        stack.start_tasks().await;
        stack.wait_for_gateway_health(ServingStatus::Serving).await;
        stack
    }

    /// The auth-service and the gateway; the task-service's port is
    /// reserved but nothing answers on it until [`Stack::start_tasks`].
    pub async fn start_without_tasks(configure: impl FnOnce(&mut gateway::Config)) -> Self {
        init_logs();
        let shutdown = CancellationToken::new();
        let auth_db = TestDatabase::sqlite();
        let tasks_db = TestDatabase::sqlite();

        let auth_listener = bind().await;
        let auth = auth_listener.local_addr().expect("bound");
        let auth_config = auth_service::Config {
            listen: auth,
            database_url: auth_db.url.clone(),
            // The gateway is on loopback; its x-forwarded-for is believed.
            trusted_proxies: vec![
                "127.0.0.1/32".parse().expect("a CIDR"),
                "::1/128".parse().expect("a CIDR"),
            ],
            ..auth_service::Config::default()
        };
        tokio::spawn(run(
            "auth-service",
            auth_service::serve(auth_config, auth_listener, shutdown.clone()),
        ));

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
        let gateway_shutdown = shutdown.child_token();
        let gateway_done = tokio::spawn(run(
            "gateway",
            gateway::serve(config, gateway_listener, gateway_shutdown.clone()),
        ));

        Self {
            gateway,
            auth,
            tasks,
            shutdown,
            gateway_shutdown,
            gateway_done: Some(gateway_done),
            tasks_listener: Some(tasks_listener),
            tasks_db,
            _auth_db: auth_db,
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
            database_url: self.tasks_db.url.clone(),
            auth_url: format!("http://{}", self.auth),
            ..task_service::Config::default()
        };
        configure(&mut config);
        tokio::spawn(run(
            "task-service",
            task_service::serve(config, listener, self.shutdown.clone()),
        ));
    }

    /// `http://127.0.0.1:<port>` of the gateway.
    pub fn url(&self) -> String {
        format!("http://{}", self.gateway)
    }

    pub fn uri(&self) -> Uri {
        origin(self.gateway)
    }

    /// Stops all three (also done on drop).
    pub fn stop(&self) {
        self.shutdown.cancel();
    }

    /// Stops the gateway alone and waits until its `serve` has returned.
    pub async fn stop_gateway(&mut self) {
        self.gateway_shutdown.cancel();
        if let Some(done) = self.gateway_done.take() {
            done.await.expect("the gateway did not panic");
        }
    }

    /// The gateway's own health, asked over plain gRPC.
    pub async fn gateway_health(&self) -> Option<ServingStatus> {
        let channel = tonic::transport::Endpoint::from(self.uri())
            .connect()
            .await
            .ok()?;
        let response = HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .ok()?;
        ServingStatus::try_from(response.into_inner().status).ok()
    }

    /// Waits (up to [`STEP`]) until the gateway reports `status`.
    pub async fn wait_for_gateway_health(&self, status: ServingStatus) {
        let deadline = tokio::time::Instant::now() + STEP;
        loop {
            let current = self.gateway_health().await;
            if current == Some(status) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "gateway health stayed {current:?}, expected {status:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
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
            .register(RegisterRequest {
                email: email.into(),
                password: "correct horse battery staple".into(),
                display_name: "Test User".into(),
            })
            .await
            .expect("registration through the gateway succeeds");
        response
            .into_inner()
            .tokens
            .expect("a token pair")
            .access_token
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A gRPC-Web channel over HTTP/1.1, or HTTP/2 with prior knowledge.
pub fn grpc_web(http2: bool) -> GrpcWeb {
    // As browsers do, send small requests at once (no Nagle delay).
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client = Client::builder(TokioExecutor::new())
        .http2_only(http2)
        .build(connector);
    GrpcWebClientLayer::new().layer(client)
}

/// `message` with `authorization: Bearer <token>`.
pub fn authorized<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}")
            .parse()
            .expect("a token is valid metadata"),
    );
    request
}

/// A raw HTTP client (HTTP/1.1, or HTTP/2 with prior knowledge).
pub fn raw_client(http2: bool) -> Client<HttpConnector, http_body_util::Full<bytes::Bytes>> {
    Client::builder(TokioExecutor::new())
        .http2_only(http2)
        .build_http()
}

pub fn origin(address: SocketAddr) -> Uri {
    format!("http://{address}")
        .parse()
        .expect("an address makes a URI")
}

/// A free port on loopback, bound.
pub async fn bind() -> TcpListener {
    TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a free port on loopback")
}

/// A port on loopback where nothing listens.
pub async fn closed_port() -> SocketAddr {
    let listener = bind().await;
    listener.local_addr().expect("bound")
}

async fn run(name: &str, serve: impl Future<Output = anyhow::Result<()>>) {
    if let Err(error) = serve.await {
        panic!("{name} failed: {error:#}");
    }
}

fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}
