//! Sessions that end everywhere at once: [`ReplicaStack`], one
//! auth-service and two task-service replicas following its session
//! events, on fresh databases of one backend, each of them stopped and
//! started again on its own address; and the checks those tests make
//! ([`refused_everywhere_within`], [`stream_end`], [`stored_tasks_of`]).
//!
//! Both services run on the backend under test: the auth-service's event
//! log is as much under test as the task-service that follows it. The
//! replicas share one tasks database, on SQLite too (one file in WAL mode,
//! which several processes on one host may use): replicas are copies of
//! one service over its one store (DESIGN.md, "Growing past one
//! machine"), and two files would be two services whose users see
//! different tasks. The replicas start one after the other, as a rollout
//! starts them, so only one of them runs the migrations of a new file.
//!
//! Both services share one manual clock, so "now" is the same on both and
//! only moves when a test moves it; the stream of session events and the
//! polling the tests do run on real time.

use std::{
    net::SocketAddr,
    path::PathBuf,
    time::{Duration, Instant},
};

use serving::clock::Clock;
use todo_proto::{auth::v1::auth_service_client::AuthServiceClient, tasks::v1 as pb};
use tokio::net::TcpListener;
use tonic::{Code, Status, Streaming, transport::Channel};
use tonic_health::pb::health_check_response::ServingStatus;
use uuid::Uuid;

use crate::{
    AuthServer, Backend, PATIENCE, TaskClient, TaskServer, TcpProxy, TestDatabase, auth_config,
    bind, task_config,
};

/// How many task-service replicas a [`ReplicaStack`] runs.
pub const REPLICAS: usize = 2;

/// The health name under which a task-service reports whether it follows
/// the auth-service's session events.
pub const FOLLOWING: &str = task_service::session_events::HEALTH_NAME;

/// One auth-service and [`REPLICAS`] task-service replicas that follow its
/// session events, each restartable on its own address.
pub struct ReplicaStack {
    pub clock: Clock,
    pub auth_database: TestDatabase,
    pub tasks_database: TestDatabase,
    auth_addr: SocketAddr,
    auth: Option<AuthServer>,
    replicas: Vec<(SocketAddr, Option<TaskServer>)>,
    /// Per replica, when asked for: a proxy its session events travel
    /// through, to cut one replica's stream while the others hear.
    event_proxies: Vec<TcpProxy>,
}

impl ReplicaStack {
    /// Starts everything on fresh databases of `backend`; returns once
    /// every replica serves and follows the session events.
    pub async fn start(backend: Backend) -> Self {
        Self::start_with(backend, false).await
    }

    /// Like [`ReplicaStack::start`], but each replica's session events
    /// travel through a proxy of its own (its `--auth-events-url`), which
    /// [`ReplicaStack::cut_events`] cuts.
    pub async fn start_with_event_proxies(backend: Backend) -> Self {
        Self::start_with(backend, true).await
    }

    async fn start_with(backend: Backend, event_proxies: bool) -> Self {
        let clock = Clock::manual();
        let auth_database = backend.fresh().await;
        let tasks_database = backend.fresh().await;
        let listener = bind().await;
        let auth_addr = listener.local_addr().expect("bound");
        let mut stack = Self {
            clock,
            auth_database,
            tasks_database,
            auth_addr,
            auth: None,
            replicas: Vec::new(),
            event_proxies: Vec::new(),
        };
        stack.auth = Some(AuthServer::start_on(listener, stack.auth_config()));
        if event_proxies {
            for _ in 0..REPLICAS {
                stack.event_proxies.push(TcpProxy::start(auth_addr).await);
            }
        }
        for _ in 0..REPLICAS {
            let listener = bind().await;
            let addr = listener.local_addr().expect("bound");
            stack.replicas.push((addr, None));
            let index = stack.replicas.len() - 1;
            stack.start_replica_on(index, listener).await;
        }
        stack
    }

    /// The auth-service's configuration: [`auth_config`] on the stack's
    /// auth database and clock, and on its address.
    pub fn auth_config(&self) -> auth_service::Config {
        auth_service::Config {
            clock: self.clock.clone(),
            listen: self.auth_addr,
            ..auth_config(&self.auth_database)
        }
    }

    /// The configuration of replica `index`: [`task_config`] on the
    /// shared tasks database, its keys and session events from the
    /// stack's auth-service (`--auth-events-url` left to its default, the
    /// auth URL, unless the events go through a proxy).
    pub fn replica_config(&self, index: usize) -> task_service::Config {
        let mut config = task_config(
            &self.tasks_database.url,
            &format!("http://{}", self.auth_addr),
            self.clock.clone(),
        );
        config.listen = self.replicas[index].0;
        config.auth_events_url = self
            .event_proxies
            .get(index)
            .map(|proxy| format!("http://{}", proxy.addr()));
        config
    }

    /// Cuts replica `index`'s session events (every open connection, and
    /// new ones until [`ReplicaStack::restore_events`]); needs
    /// [`ReplicaStack::start_with_event_proxies`].
    pub fn cut_events(&self, index: usize) {
        self.event_proxies[index].cut();
    }

    pub fn restore_events(&self, index: usize) {
        self.event_proxies[index].restore();
    }

    /// The running auth-service; panics while it is stopped.
    pub fn auth(&self) -> &AuthServer {
        self.auth.as_ref().expect("the auth-service is running")
    }

    pub async fn auth_client(&self) -> AuthServiceClient<Channel> {
        self.auth().client().await
    }

    /// Where the auth-service writes its mails (no SMTP configured).
    pub fn mail_dir(&self) -> PathBuf {
        self.auth_config().mail_dir
    }

    /// Stops the auth-service and waits for it to drain.
    pub async fn stop_auth(&mut self) {
        if let Some(auth) = self.auth.take() {
            auth.stop().await;
        }
    }

    /// Starts the auth-service again, on the same address and data.
    pub async fn restart_auth(&mut self) {
        assert!(self.auth.is_none(), "the auth-service is stopped first");
        let listener = rebind(self.auth_addr).await;
        self.auth = Some(AuthServer::start_on(listener, self.auth_config()));
    }

    /// Replica `index`; panics while it is stopped.
    pub fn replica(&self, index: usize) -> &TaskServer {
        self.replicas[index]
            .1
            .as_ref()
            .expect("the replica is running")
    }

    /// Every running replica.
    pub fn replicas(&self) -> impl Iterator<Item = &TaskServer> {
        self.replicas
            .iter()
            .filter_map(|(_, server)| server.as_ref())
    }

    /// A client of every running replica, each sending `token`.
    pub async fn clients(&self, token: &str) -> Vec<TaskClient> {
        let mut clients = Vec::new();
        for replica in self.replicas() {
            clients.push(replica.client(token).await);
        }
        clients
    }

    /// Stops replica `index` and waits for it to drain.
    pub async fn stop_replica(&mut self, index: usize) {
        if let Some(server) = self.replicas[index].1.take() {
            server.stop().await.expect("the replica stops cleanly");
        }
    }

    /// Starts replica `index` again on its address; returns once it serves
    /// and follows the session events.
    pub async fn start_replica(&mut self, index: usize) {
        assert!(self.replicas[index].1.is_none(), "stopped first");
        let listener = rebind(self.replicas[index].0).await;
        self.start_replica_on(index, listener).await;
    }

    async fn start_replica_on(&mut self, index: usize, listener: TcpListener) {
        let server = TaskServer::start_on(listener, self.replica_config(index));
        server.wait_serving().await;
        wait_following(&server, ServingStatus::Serving).await;
        self.replicas[index].1 = Some(server);
    }

    /// Stops everything, checking that each service drains cleanly.
    pub async fn stop(mut self) {
        for index in 0..self.replicas.len() {
            self.stop_replica(index).await;
        }
        self.stop_auth().await;
    }
}

/// Waits (up to [`PATIENCE`]) until `replica` reports `status` for
/// following the session events.
pub async fn wait_following(replica: &TaskServer, status: ServingStatus) {
    crate::wait_for_health(&replica.url(), FOLLOWING, status, PATIENCE).await;
}

/// A listener on `addr` again, retried briefly while the old one's socket
/// is still closing.
async fn rebind(addr: SocketAddr) -> TcpListener {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        match TcpListener::bind(addr).await {
            Ok(listener) => return listener,
            Err(error) if tokio::time::Instant::now() > deadline => {
                panic!("cannot listen on {addr} again: {error}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Whether `client`'s token is refused (`UNAUTHENTICATED`); any other
/// failure is a defect and panics.
pub async fn is_refused(client: &mut TaskClient) -> bool {
    match client.list_tasks(pb::ListTasksRequest::default()).await {
        Ok(_) => false,
        Err(status) if status.code() == Code::Unauthenticated => true,
        Err(status) => panic!("ListTasks failed otherwise: {status:?}"),
    }
}

/// Polls every replica in `clients` (each sending the same token) until
/// each refuses it, panicking at `deadline`. The bound is the contract's,
/// measured from when the call that ended the session returned.
pub async fn refused_everywhere_within(clients: &mut [TaskClient], deadline: Instant, what: &str) {
    for (replica, client) in clients.iter_mut().enumerate() {
        loop {
            if is_refused(client).await {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "replica {replica} still accepts the token of {what}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Opens `WatchTasks`, retrying while the replica's change feed is still
/// starting.
pub async fn open_watch(client: &mut TaskClient) -> Streaming<pb::WatchTasksResponse> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        match client.watch_tasks(pb::WatchTasksRequest {}).await {
            Ok(response) => return response.into_inner(),
            Err(status)
                if status.code() == Code::Unavailable && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(status) => panic!("WatchTasks refused: {status:?}"),
        }
    }
}

/// How `stream` ends, skipping whatever it still delivers first; panics if
/// it ends without a status or is still open at `deadline`.
pub async fn stream_end(
    stream: &mut Streaming<pb::WatchTasksResponse>,
    deadline: Instant,
) -> Status {
    let deadline = tokio::time::Instant::from_std(deadline);
    loop {
        match tokio::time::timeout_at(deadline, stream.message()).await {
            Err(_) => panic!("the stream is still open at the deadline"),
            Ok(Ok(Some(_))) => continue,
            Ok(Ok(None)) => panic!("the stream ended without a status"),
            Ok(Err(status)) => return status,
        }
    }
}

/// The next task event of `stream` (heartbeats skipped), within
/// [`PATIENCE`]; panics if the stream ends instead.
pub async fn next_task_event(stream: &mut Streaming<pb::WatchTasksResponse>) -> pb::Task {
    loop {
        let message = tokio::time::timeout(PATIENCE, stream.message())
            .await
            .expect("the stream answers in time")
            .expect("an event, not an error")
            .expect("an event, not the end");
        if let Some(task) = message.task {
            return task;
        }
    }
}

/// How many tasks of `owner` the tasks database holds, read straight from
/// it (a deleted account's tasks can be seen nowhere else).
pub async fn stored_tasks_of(database: &TestDatabase, owner: Uuid) -> i64 {
    use sqlx::Connection;
    match database.backend {
        Backend::Sqlite => {
            let mut connection = sqlx::SqliteConnection::connect(&database.url)
                .await
                .expect("open the tasks database");
            let (count,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM tasks WHERE owner = ?")
                .bind(owner.to_string())
                .fetch_one(&mut connection)
                .await
                .expect("count the tasks");
            connection.close().await.ok();
            count
        }
        Backend::Postgres => {
            let mut connection = sqlx::PgConnection::connect(&database.url)
                .await
                .expect("connect to the tasks database");
            let (count,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM tasks WHERE owner = $1")
                .bind(owner)
                .fetch_one(&mut connection)
                .await
                .expect("count the tasks");
            connection.close().await.ok();
            count
        }
    }
}

/// The token of the mail to `recipient` whose link opens `page`
/// (`reset-password`, `verify-email`), read from the `.eml` files the
/// auth-service writes into `mail_dir` without SMTP; waits up to
/// [`PATIENCE`] for the mail to be written.
pub async fn mailed_token(mail_dir: &std::path::Path, recipient: &str, page: &str) -> String {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let found = crate::mail_files(mail_dir)
            .iter()
            .map(|path| crate::ReceivedMail::read(path))
            // The HTML part follows the text part: with it, the text part
            // (and its link) is whole, not a file still being written.
            .find(|mail| {
                mail.html.is_some()
                    && mail.recipient().contains(recipient)
                    && mail
                        .text
                        .as_deref()
                        .is_some_and(|text| text.contains(&format!("/{page}?token=")))
            });
        if let Some(mail) = found {
            return mail.token();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {page} mail to {recipient} in {}",
            mail_dir.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
