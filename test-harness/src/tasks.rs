//! The task-service as tests start it, and the calls tests make of its API.
//!
//! [`task_config`] is the real defaults with per-user budgets no ordinary
//! test meets and a short drain (tests of the budgets set their own).
//! [`TaskStack`] is what most task tests need: an auth-service issuing real
//! tokens (always on SQLite: it is only the issuer) and a ready
//! task-service on a fresh database of the backend under test.

use std::{net::SocketAddr, time::Duration};

use prost_types::FieldMask;
use serving::clock::Clock;
use todo_proto::tasks::v1::{self as pb, task_service_client::TaskServiceClient};
use tokio::net::TcpListener;
use tonic::{service::interceptor::InterceptedService, transport::Channel};
use tonic_health::pb::health_check_response::ServingStatus;

use crate::{
    AuthServer, Backend, Bearer, HeldCall, PATIENCE, Server, TestDatabase, User, auth_config, bind,
    hold_grpc_call,
};

/// The task-service configuration tests start from.
pub fn task_config(database_url: &str, auth_url: &str, clock: Clock) -> task_service::Config {
    // The real defaults, but budgets no ordinary test meets (tests of the
    // budgets set their own).
    let mut config = task_service::Config {
        database_url: database_url.into(),
        auth_url: auth_url.into(),
        clock,
        max_calls_in_flight: 100_000,
        max_calls_in_flight_per_user: 64,
        max_searches_in_flight_per_user: 64,
        max_writes_per_user_per_minute: 1_000_000,
        ..task_service::Config::default()
    };
    config.transport.shutdown_grace = Duration::from_secs(5);
    config
}

/// A TaskService client that sends a bearer token with every call.
pub type TaskClient = TaskServiceClient<InterceptedService<Channel, Bearer>>;

/// A running task-service.
pub struct TaskServer {
    pub addr: SocketAddr,
    server: Server,
}

impl TaskServer {
    /// Starts a task-service on a free port; does not wait for it to be
    /// ready.
    pub async fn start(config: task_service::Config) -> Self {
        Self::start_on(bind().await, config)
    }

    /// Starts on an already bound listener.
    pub fn start_on(listener: TcpListener, config: task_service::Config) -> Self {
        let server = Server::spawn(listener, |listener, shutdown| {
            task_service::serve(config, listener, shutdown)
        });
        Self {
            addr: server.addr,
            server,
        }
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    pub async fn channel(&self) -> Channel {
        self.server.channel().await
    }

    /// The health status of `service` ("" for the whole process).
    pub async fn health(&self, service: &str) -> Option<ServingStatus> {
        self.server.health(service).await
    }

    /// Waits until health says SERVING, or panics after [`PATIENCE`].
    pub async fn wait_serving(&self) {
        self.server
            .wait_for_health(task_service::SERVICE_NAME, ServingStatus::Serving, PATIENCE)
            .await;
    }

    /// A client sending `token` as its bearer token.
    pub async fn client(&self, token: &str) -> TaskClient {
        TaskServiceClient::with_interceptor(self.channel().await, Bearer::new(token))
    }

    /// A client sending exactly these `authorization` values.
    pub async fn client_with_authorization(&self, values: &[&str]) -> TaskClient {
        TaskServiceClient::with_interceptor(self.channel().await, Bearer::values(values))
    }

    /// Opens a `GetTask` call with `token` whose request body never ends,
    /// so the service holds it in flight until the [`HeldCall`] is dropped.
    pub fn hold_call(&self, token: &str) -> HeldCall {
        let authorization = format!("Bearer {token}");
        hold_grpc_call(
            self.addr,
            "/tasks.v1.TaskService/GetTask",
            &[("authorization", &authorization)],
        )
    }

    /// Starts the shutdown and returns at once.
    pub fn shut_down(&self) {
        self.server.shut_down();
    }

    /// Shuts down and waits for `serve` to return.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.server.stop().await
    }
}

/// The whole system a task test needs: an auth-service issuing tokens and a
/// ready task-service on a fresh database of `backend`.
pub struct TaskStack {
    pub auth: AuthServer,
    pub tasks: TaskServer,
    pub database: TestDatabase,
    pub clock: Clock,
    _auth_database: TestDatabase,
}

impl TaskStack {
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
        let auth_database = TestDatabase::sqlite();
        let auth = AuthServer::start_with(auth_service::Config {
            clock: clock.clone(),
            ..auth_config(&auth_database)
        })
        .await;
        let mut config = task_config(&database.url, &auth.url(), clock.clone());
        adjust(&mut config);
        let tasks = TaskServer::start(config).await;
        tasks.wait_serving().await;
        Self {
            auth,
            tasks,
            database,
            clock,
            _auth_database: auth_database,
        }
    }

    /// A newly registered user and a client acting as them.
    pub async fn user(&self, name: &str) -> (User, TaskClient) {
        let user = self.auth.new_user(name).await;
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

/// An update mask of `paths`.
pub fn mask(paths: &[&str]) -> Option<FieldMask> {
    Some(FieldMask {
        paths: paths.iter().map(std::string::ToString::to_string).collect(),
    })
}

/// Creates a task and returns it.
pub async fn create(client: &mut TaskClient, request: pb::CreateTaskRequest) -> pb::Task {
    client
        .create_task(request)
        .await
        .expect("CreateTask")
        .into_inner()
        .task
        .expect("a task")
}

/// Every task of a list, walking all pages.
pub async fn list_all(client: &mut TaskClient, request: pb::ListTasksRequest) -> Vec<pb::Task> {
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
