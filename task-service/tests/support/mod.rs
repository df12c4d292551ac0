//! The task-service test harness: boots the real auth-service and the real
//! task-service in process on port 0, each over a fresh database, and hands
//! out real tonic clients holding tokens the auth-service issued.
//!
//! The auth-service always runs on SQLite here: it is only the token issuer,
//! and the backend under test is the task-service's (`Backend::all()`).

#![allow(dead_code)]

use std::{future::Future, net::SocketAddr, time::Duration};

use serving::{CancellationToken, clock::Clock};
use test_harness::{Backend, TestDatabase};
use todo_proto::{
    auth::v1::{self as auth_pb, auth_service_client::AuthServiceClient},
    tasks::v1::{self as pb, task_service_client::TaskServiceClient},
};
use tokio::task::JoinHandle;
use tonic::{
    Code, Request, Status,
    metadata::{Ascii, MetadataValue},
    service::{Interceptor, interceptor::InterceptedService},
    transport::Channel,
};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use uuid::Uuid;

/// How long anything in a test may take to become true.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// Runs `test` once per backend (SQLite always, PostgreSQL when configured).
pub async fn on_each_backend<F, Fut>(test: F)
where
    F: Fn(Backend) -> Fut,
    Fut: Future<Output = ()>,
{
    for backend in Backend::all() {
        eprintln!("-- on {backend}");
        test(backend).await;
    }
}

/// A running auth-service.
pub struct AuthServer {
    pub addr: SocketAddr,
    _database: TestDatabase,
    shutdown: CancellationToken,
    handle: JoinHandle<anyhow::Result<()>>,
}

impl AuthServer {
    pub async fn start(clock: Clock) -> Self {
        let database = TestDatabase::sqlite();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind port 0");
        Self::start_on(listener, database, clock)
    }

    /// Starts on an already bound listener (to start it after a
    /// task-service that was told its address).
    pub fn start_on(
        listener: tokio::net::TcpListener,
        database: TestDatabase,
        clock: Clock,
    ) -> Self {
        let addr = listener.local_addr().expect("local address");
        let config = auth_service::Config {
            database_url: database.url.clone(),
            clock,
            address_rate_per_minute: 1_000_000,
            address_burst: 1_000_000,
            ..auth_service::Config::default()
        };
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(auth_service::serve(config, listener, shutdown.clone()));
        Self {
            addr,
            _database: database,
            shutdown,
            handle,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    async fn client(&self) -> AuthServiceClient<Channel> {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            match AuthServiceClient::connect(self.url()).await {
                Ok(client) => return client,
                Err(error) if tokio::time::Instant::now() > deadline => {
                    panic!("auth-service unreachable: {error}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// Registers a new user and returns them with their access token.
    pub async fn register(&self, name: &str) -> User {
        let mut client = self.client().await;
        let response = client
            .register(auth_pb::RegisterRequest {
                email: format!("{name}-{}@example.com", Uuid::new_v4().simple()),
                password: "correct horse battery staple".into(),
                display_name: name.into(),
            })
            .await
            .expect("register")
            .into_inner();
        let user = response.user.expect("a user");
        let tokens = response.tokens.expect("tokens");
        User {
            id: user.id.parse().expect("a UUID user id"),
            token: tokens.access_token,
        }
    }

    /// The JWK Set the auth-service publishes.
    pub async fn jwks_json(&self) -> String {
        self.client()
            .await
            .get_jwks(auth_pb::GetJwksRequest {})
            .await
            .expect("GetJwks")
            .into_inner()
            .jwks_json
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.handle.await;
    }
}

/// A signed-in user of the tests.
#[derive(Debug, Clone)]
pub struct User {
    pub id: Uuid,
    pub token: String,
}

/// A running task-service.
pub struct TaskServer {
    pub addr: SocketAddr,
    shutdown: CancellationToken,
    handle: JoinHandle<anyhow::Result<()>>,
}

/// The task-service configuration tests start from.
pub fn task_config(database_url: &str, auth_url: &str, clock: Clock) -> task_service::Config {
    // The real defaults, but per-user budgets no ordinary test meets
    // (tests of the budgets set their own).
    let mut config = task_service::Config {
        database_url: database_url.into(),
        auth_url: auth_url.into(),
        clock,
        max_calls_in_flight_per_user: 64,
        max_writes_per_user_per_minute: 1_000_000,
        ..task_service::Config::default()
    };
    config.transport.shutdown_grace = Duration::from_secs(5);
    config
}

impl TaskServer {
    /// Starts a task-service; does not wait for it to be ready.
    pub async fn start(config: task_service::Config) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind port 0");
        let addr = listener.local_addr().expect("local address");
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(task_service::serve(config, listener, shutdown.clone()));
        Self {
            addr,
            shutdown,
            handle,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(self.url())
            .expect("a valid URL")
            .connect()
            .await
            .expect("connect to the task-service")
    }

    /// The health status of `service` ("" for the whole process).
    pub async fn health(&self, service: &str) -> Option<ServingStatus> {
        let mut client = HealthClient::new(self.channel().await);
        let response = client
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .ok()?;
        ServingStatus::try_from(response.into_inner().status).ok()
    }

    /// Waits until health says SERVING, or panics after [`PATIENCE`].
    pub async fn wait_serving(&self) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while self.health(task_service::SERVICE_NAME).await != Some(ServingStatus::Serving) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the task-service never became SERVING"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// A client sending `token` as its bearer token.
    pub async fn client(&self, token: &str) -> Client {
        TaskServiceClient::with_interceptor(self.channel().await, Bearer::new(token))
    }

    /// A client sending exactly these `authorization` values.
    pub async fn client_with_authorization(&self, values: &[&str]) -> Client {
        let values = values
            .iter()
            .map(|value| value.parse().expect("ASCII metadata"))
            .collect();
        TaskServiceClient::with_interceptor(self.channel().await, Bearer(values))
    }

    /// Cancels the shutdown token and waits for `serve` to return.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        tokio::time::timeout(PATIENCE, self.handle)
            .await
            .expect("the task-service drains in time")
            .expect("serve task")
    }
}

pub type Client = TaskServiceClient<InterceptedService<Channel, Bearer>>;

/// Adds `authorization` entries to every call.
#[derive(Clone)]
pub struct Bearer(Vec<MetadataValue<Ascii>>);

impl Bearer {
    pub fn new(token: &str) -> Self {
        Self(vec![
            format!("Bearer {token}").parse().expect("a token is ASCII"),
        ])
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        for value in &self.0 {
            request
                .metadata_mut()
                .append("authorization", value.clone());
        }
        Ok(request)
    }
}

/// The whole system a task test needs: an auth-service issuing tokens and a
/// ready task-service on a fresh database of `backend`.
pub struct Stack {
    pub auth: AuthServer,
    pub tasks: TaskServer,
    pub database: TestDatabase,
    pub clock: Clock,
}

impl Stack {
    pub async fn start(backend: Backend) -> Self {
        Self::start_with(backend, Clock::default(), |_| {}).await
    }

    /// Starts with `clock` shared by both services and the task-service
    /// configuration adjusted by `adjust`.
    pub async fn start_with(
        backend: Backend,
        clock: Clock,
        adjust: impl FnOnce(&mut task_service::Config),
    ) -> Self {
        let database = backend.fresh().await;
        let auth = AuthServer::start(clock.clone()).await;
        let mut config = task_config(&database.url, &auth.url(), clock.clone());
        adjust(&mut config);
        let tasks = TaskServer::start(config).await;
        tasks.wait_serving().await;
        Self {
            auth,
            tasks,
            database,
            clock,
        }
    }

    /// A newly registered user and a client acting as them.
    pub async fn user(&self, name: &str) -> (User, Client) {
        let user = self.auth.register(name).await;
        let client = self.tasks.client(&user.token).await;
        (user, client)
    }

    pub async fn stop(self) {
        self.tasks
            .stop()
            .await
            .expect("the task-service stops cleanly");
        self.auth.stop().await;
    }
}

/// A `CreateTask` request with just a title.
pub fn titled(title: &str) -> pb::CreateTaskRequest {
    pb::CreateTaskRequest {
        title: title.into(),
        ..pb::CreateTaskRequest::default()
    }
}

/// Creates a task and returns it.
pub async fn create(client: &mut Client, request: pb::CreateTaskRequest) -> pb::Task {
    client
        .create_task(request)
        .await
        .expect("CreateTask")
        .into_inner()
        .task
        .expect("a task")
}

/// Every task of a list, walking all pages.
pub async fn list_all(client: &mut Client, request: pb::ListTasksRequest) -> Vec<pb::Task> {
    let mut tasks = Vec::new();
    let mut request = request;
    loop {
        let page = client
            .list_tasks(request.clone())
            .await
            .expect("ListTasks")
            .into_inner();
        tasks.extend(page.tasks);
        if page.next_page_token.is_empty() {
            return tasks;
        }
        request.page_token = page.next_page_token;
    }
}

/// The status code of a failed call, with its message.
pub fn code<T: std::fmt::Debug>(result: Result<T, Status>) -> Code {
    result.expect_err("the call should have failed").code()
}

/// The field names of an `INVALID_ARGUMENT`'s `BadRequest` detail.
pub fn bad_fields(status: &Status) -> Vec<String> {
    use tonic_types::StatusExt;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    status
        .get_error_details()
        .bad_request()
        .expect("a BadRequest detail")
        .field_violations
        .iter()
        .map(|violation| violation.field.clone())
        .collect()
}
