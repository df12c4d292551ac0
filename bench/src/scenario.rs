//! The scenarios: what one call of each is, and what its answer must hold
//! to count as a success (status `OK`, and the message says what the call
//! promised: a `SERVING` health, a token pair, a full page, the asked-for
//! task).
//!
//! Calls are spread over the fixture's many users (each worker picks a
//! user at random per call), as honest traffic is; `list` and `list-deep`
//! read one user's long list, as the budget asks.

use std::sync::Arc;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use rand::{Rng, SeedableRng, rngs::StdRng};
use todo_proto::{
    auth::v1::{
        LoginRequest, LoginResponse, LogoutRequest, LogoutResponse, RefreshRequest, RefreshResponse,
    },
    tasks::v1::{
        CreateTaskRequest, CreateTaskResponse, DeleteTaskRequest, DeleteTaskResponse,
        GetTaskRequest, GetTaskResponse, ListTasksRequest, ListTasksResponse,
        SetTaskCompletedRequest, SetTaskCompletedResponse,
    },
};
use tonic::Code;
use tonic_health::pb::{
    HealthCheckRequest, HealthCheckResponse, health_check_response::ServingStatus,
};

use crate::{
    client::Client,
    fixture::{Fixture, User},
    load::Scenario,
};

pub const HEALTH_CHECK: &str = "/grpc.health.v1.Health/Check";
pub const LOGIN: &str = "/auth.v1.AuthService/Login";
pub const REFRESH: &str = "/auth.v1.AuthService/Refresh";
pub const LOGOUT: &str = "/auth.v1.AuthService/Logout";
pub const CREATE: &str = "/tasks.v1.TaskService/CreateTask";
pub const DELETE: &str = "/tasks.v1.TaskService/DeleteTask";
pub const GET: &str = "/tasks.v1.TaskService/GetTask";
pub const LIST: &str = "/tasks.v1.TaskService/ListTasks";
pub const SET_COMPLETED: &str = "/tasks.v1.TaskService/SetTaskCompleted";
pub const WATCH: &str = "/tasks.v1.TaskService/WatchTasks";

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    Health,
    Login,
    Refresh,
    Create,
    Get,
    /// ListTasks, a page of 50 of the list user's tasks.
    List,
    /// ListTasks, page `--page` of 100 tasks of the deep user's list.
    ListDeep,
    SetCompleted,
    /// A blend: GetTask 45%, ListTasks 25%, SetTaskCompleted 14%,
    /// CreateTask 5% and DeleteTask 5% (each worker deletes the task it
    /// created last, so the data stays the same size however long it
    /// runs), Refresh 5%, Login 1%.
    Mixed,
    /// Attack: ListTasks with a `query` that matches nothing, by the
    /// list user (each call scans a whole search window).
    Search,
    /// Attack: Logout with random well-formed refresh tokens.
    LogoutFlood,
    /// Attack: Login with unknown emails and wrong passwords.
    SignInStorm,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Health => "health",
            Kind::Login => "login",
            Kind::Refresh => "refresh",
            Kind::Create => "create",
            Kind::Get => "get",
            Kind::List => "list",
            Kind::ListDeep => "list-deep",
            Kind::SetCompleted => "set-completed",
            Kind::Mixed => "mixed",
            Kind::Search => "search",
            Kind::LogoutFlood => "logout-flood",
            Kind::SignInStorm => "sign-in-storm",
        }
    }

    /// The scenarios of the issue (the attacks are separate).
    pub const MAIN: [Kind; 9] = [
        Kind::Health,
        Kind::Login,
        Kind::Refresh,
        Kind::Create,
        Kind::Get,
        Kind::List,
        Kind::ListDeep,
        Kind::SetCompleted,
        Kind::Mixed,
    ];
}

/// A scenario over a fixture.
pub struct Standard {
    pub kind: Kind,
    fixture: Arc<Fixture>,
    /// The page token of the deep user's page `page` (none for page 1).
    deep_token: String,
    pub page_size: i32,
}

pub struct Worker {
    rng: StdRng,
    /// This worker's own session (Refresh, Mixed).
    refresh_token: Option<String>,
    user: usize,
    /// The task this worker created last and has not deleted yet (Mixed),
    /// with its owner.
    created: Option<(usize, String)>,
}

impl Standard {
    /// The scenario; for `ListDeep`, walks to page `page` first (over
    /// `client`) to get its token.
    pub async fn new(
        kind: Kind,
        fixture: Arc<Fixture>,
        page: u32,
        client: &Client,
    ) -> anyhow::Result<Self> {
        let mut deep_token = String::new();
        let page_size = if kind == Kind::ListDeep { 100 } else { 50 };
        if kind == Kind::ListDeep {
            for _ in 1..page.max(1) {
                let response: ListTasksResponse = client
                    .unary(
                        LIST,
                        ListTasksRequest {
                            page_size,
                            page_token: deep_token.clone(),
                            ..ListTasksRequest::default()
                        },
                        Some(&fixture.deep_user.access_token),
                    )
                    .await
                    .map_err(|code| anyhow::anyhow!("walking to page {page}: {code:?}"))?;
                anyhow::ensure!(
                    !response.next_page_token.is_empty(),
                    "the deep user's list has fewer than {page} pages of {page_size}"
                );
                deep_token = response.next_page_token;
            }
        }
        Ok(Self {
            kind,
            fixture,
            deep_token,
            page_size,
        })
    }

    /// A user at random, by index into the fixture's users.
    fn random_user(&self, worker: &mut Worker) -> usize {
        worker.rng.gen_range(0..self.fixture.users.len())
    }

    fn user(&self, worker: &mut Worker) -> &User {
        &self.fixture.users[self.random_user(worker)]
    }

    async fn login(
        &self,
        client: &Client,
        user: &User,
        password: &str,
    ) -> Result<LoginResponse, Code> {
        let response: LoginResponse = client
            .unary(
                LOGIN,
                LoginRequest {
                    email: user.email.clone(),
                    password: password.to_owned(),
                },
                None,
            )
            .await?;
        match &response.tokens {
            Some(tokens) if !tokens.access_token.is_empty() && !tokens.refresh_token.is_empty() => {
                Ok(response)
            }
            _ => Err(Code::Internal),
        }
    }

    async fn refresh(&self, client: &Client, worker: &mut Worker) -> Result<(), Code> {
        let Some(token) = worker.refresh_token.take() else {
            let user = &self.fixture.users[worker.user];
            let response = self.login(client, user, &self.fixture.password).await?;
            worker.refresh_token = response.tokens.map(|t| t.refresh_token);
            return Err(Code::Unauthenticated);
        };
        let response: RefreshResponse = client
            .unary(
                REFRESH,
                RefreshRequest {
                    refresh_token: token,
                },
                None,
            )
            .await?;
        match response.tokens {
            Some(tokens) if !tokens.refresh_token.is_empty() && !tokens.access_token.is_empty() => {
                worker.refresh_token = Some(tokens.refresh_token);
                Ok(())
            }
            _ => Err(Code::Internal),
        }
    }

    async fn get(&self, client: &Client, worker: &mut Worker) -> Result<(), Code> {
        let user = self.user(worker);
        let id = user.tasks[worker.rng.gen_range(0..user.tasks.len())].clone();
        let response: GetTaskResponse = client
            .unary(
                GET,
                GetTaskRequest { id: id.clone() },
                Some(&user.access_token),
            )
            .await?;
        match response.task {
            Some(task) if task.id == id => Ok(()),
            _ => Err(Code::Internal),
        }
    }

    async fn list(
        &self,
        client: &Client,
        user: &User,
        page_token: &str,
        query: &str,
    ) -> Result<usize, Code> {
        let response: ListTasksResponse = client
            .unary(
                LIST,
                ListTasksRequest {
                    page_size: self.page_size,
                    page_token: page_token.to_owned(),
                    query: query.to_owned(),
                    ..ListTasksRequest::default()
                },
                Some(&user.access_token),
            )
            .await?;
        Ok(response.tasks.len())
    }

    /// A full page of the list user's (or deep user's) list.
    async fn full_page(&self, client: &Client, user: &User, page_token: &str) -> Result<(), Code> {
        let tasks = self.list(client, user, page_token, "").await?;
        if usize::try_from(self.page_size) == Ok(tasks) {
            Ok(())
        } else {
            Err(Code::Internal)
        }
    }

    /// Creates a task for a random user; returns that user and the task's id.
    async fn create(&self, client: &Client, worker: &mut Worker) -> Result<(usize, String), Code> {
        let owner = self.random_user(worker);
        let response: CreateTaskResponse = client
            .unary(
                CREATE,
                CreateTaskRequest {
                    title: "Benchmark task".into(),
                    description: "written by the load generator".into(),
                    priority: 2,
                    ..CreateTaskRequest::default()
                },
                Some(&self.fixture.users[owner].access_token),
            )
            .await?;
        match response.task {
            Some(task) if !task.id.is_empty() => Ok((owner, task.id)),
            _ => Err(Code::Internal),
        }
    }

    /// Mixed's write: deletes the task this worker created last, or, when
    /// it holds none, creates one. Creates and deletes alternate, so the
    /// tasks table neither grows nor shrinks during a long run.
    async fn create_or_delete(&self, client: &Client, worker: &mut Worker) -> Result<(), Code> {
        let Some((owner, id)) = worker.created.take() else {
            worker.created = Some(self.create(client, worker).await?);
            return Ok(());
        };
        client
            .unary::<_, DeleteTaskResponse>(
                DELETE,
                DeleteTaskRequest {
                    id,
                    ..DeleteTaskRequest::default()
                },
                Some(&self.fixture.users[owner].access_token),
            )
            .await
            .map(|_| ())
    }

    async fn set_completed(&self, client: &Client, worker: &mut Worker) -> Result<(), Code> {
        let user = self.user(worker);
        let id = user.tasks[worker.rng.gen_range(0..user.tasks.len())].clone();
        let completed = worker.rng.r#gen::<bool>();
        let response: SetTaskCompletedResponse = client
            .unary(
                SET_COMPLETED,
                SetTaskCompletedRequest {
                    id: id.clone(),
                    completed,
                },
                Some(&user.access_token),
            )
            .await?;
        match response.task {
            Some(task) if task.id == id && task.completed == completed => Ok(()),
            _ => Err(Code::Internal),
        }
    }
}

impl Scenario for Standard {
    type Worker = Worker;

    async fn worker(&self, index: usize, client: &Client) -> anyhow::Result<Worker> {
        let user = index % self.fixture.users.len();
        let mut worker = Worker {
            rng: StdRng::seed_from_u64(index as u64 ^ 0x5eed),
            refresh_token: None,
            user,
            created: None,
        };
        if matches!(self.kind, Kind::Refresh | Kind::Mixed) {
            // A session of its own, so rotations never race each other.
            let response = self
                .login(client, &self.fixture.users[user], &self.fixture.password)
                .await
                .map_err(|code| anyhow::anyhow!("login for a worker's session: {code:?}"))?;
            worker.refresh_token = response.tokens.map(|t| t.refresh_token);
        }
        Ok(worker)
    }

    async fn call(&self, client: &Client, worker: &mut Worker) -> Result<(), Code> {
        match self.kind {
            Kind::Health => {
                let response: HealthCheckResponse = client
                    .unary(
                        HEALTH_CHECK,
                        HealthCheckRequest {
                            service: String::new(),
                        },
                        None,
                    )
                    .await?;
                if response.status == ServingStatus::Serving as i32 {
                    Ok(())
                } else {
                    Err(Code::Unavailable)
                }
            }
            Kind::Login => {
                let user = self.user(worker).clone();
                self.login(client, &user, &self.fixture.password)
                    .await
                    .map(|_| ())
            }
            Kind::Refresh => self.refresh(client, worker).await,
            Kind::Create => self.create(client, worker).await.map(|_| ()),
            Kind::Get => self.get(client, worker).await,
            Kind::List => self.full_page(client, &self.fixture.list_user, "").await,
            Kind::ListDeep => {
                self.full_page(client, &self.fixture.deep_user, &self.deep_token)
                    .await
            }
            Kind::SetCompleted => self.set_completed(client, worker).await,
            Kind::Mixed => {
                let roll = worker.rng.gen_range(0..1000);
                match roll {
                    0..450 => self.get(client, worker).await,
                    450..700 => {
                        let user = self.user(worker).clone();
                        let tasks = self.list(client, &user, "", "").await?;
                        if tasks > 0 {
                            Ok(())
                        } else {
                            Err(Code::Internal)
                        }
                    }
                    700..840 => self.set_completed(client, worker).await,
                    840..940 => self.create_or_delete(client, worker).await,
                    940..990 => self.refresh(client, worker).await,
                    _ => {
                        let user = self.user(worker).clone();
                        self.login(client, &user, &self.fixture.password)
                            .await
                            .map(|_| ())
                    }
                }
            }
            Kind::Search => self
                .list(client, &self.fixture.list_user, "", "zq no such words qz")
                .await
                .map(|_| ()),
            Kind::LogoutFlood => {
                let bytes: [u8; 32] = worker.rng.r#gen();
                // URL-safe base64 without padding: a refresh token's shape.
                let token = URL_SAFE_NO_PAD.encode(bytes);
                client
                    .unary::<_, LogoutResponse>(
                        LOGOUT,
                        LogoutRequest {
                            refresh_token: token,
                        },
                        None,
                    )
                    .await
                    .map(|_| ())
            }
            Kind::SignInStorm => {
                // Unknown emails: each costs the dummy hash (as a wrong
                // password does) without locking a real account out.
                let stranger = User {
                    email: format!(
                        "storm-{}@example.com",
                        worker.rng.gen_range(0..1_000_000u32)
                    ),
                    ..self.fixture.users[0].clone()
                };
                self.login(client, &stranger, "a wrong password, guessed")
                    .await
                    .map(|_| ())
            }
        }
    }
}
