//! `tasks.v1.TaskService`: request messages in, domain values through the
//! store, task messages out.
//!
//! Each handler does three things: takes the caller from the request's
//! extensions (put there by [`crate::authn`]; never from the message),
//! parses every field into a domain value (collecting all violations into
//! one `INVALID_ARGUMENT`), and calls one store operation. Ownership,
//! etags and idempotency are the store's, in SQL.
//!
//! `WatchTasks` is a stream over the caller's [`Subscription`] that also
//! ends by itself: with `UNAUTHENTICATED` when the token that opened it
//! expires (by the injected clock), `RESOURCE_EXHAUSTED` when the watcher
//! fell too far behind, `UNAVAILABLE` when the change feed or the server
//! goes away. An idle stream sends a heartbeat (`TASK_EVENT_TYPE_UNSPECIFIED`
//! with no task) every `--watch-heartbeat`: HTTP/2 pings keep only the next
//! hop alive, and gRPC-Web over HTTP/1.1 has none, so without data a proxy
//! with an idle timeout would cut a quiet stream.

use std::{pin::Pin, sync::Arc, time::Duration};

use access_token::Identity;
use futures::Stream;
use serving::{
    CancellationToken,
    clock::Clock,
    status::{Invalid, Violation, Violations},
};
use todo_proto::tasks::v1::{self as proto, task_service_server::TaskService};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{
    budget::{Budgets, CallPlace},
    domain::{
        Description, ListQuery, NewTask, OrderBy, SearchText, TaskPatch, TaskTitle, UpdatableField,
        parse_etag, parse_id, parse_page_size, parse_priority, parse_request_id, parse_time,
        parse_update_mask,
    },
    error::Error,
    events::{End, Hub, Refused, Subscription},
    page_token::PageTokenKey,
    store::{Completion, TaskStore, Written},
};

pub struct TaskApi {
    store: Arc<dyn TaskStore>,
    budgets: Arc<Budgets>,
    hub: Arc<Hub>,
    page_tokens: PageTokenKey,
    clock: Clock,
    shutdown: CancellationToken,
    heartbeat: Duration,
}

impl TaskApi {
    pub fn new(
        store: Arc<dyn TaskStore>,
        budgets: Arc<Budgets>,
        hub: Arc<Hub>,
        page_tokens: PageTokenKey,
        clock: Clock,
        shutdown: CancellationToken,
        heartbeat: Duration,
    ) -> Self {
        Self {
            store,
            budgets,
            hub,
            page_tokens,
            clock,
            shutdown,
            heartbeat,
        }
    }
}

impl TaskApi {
    /// The caller, and their place among their calls in flight (held until
    /// the handler returns; see [`crate::budget`]).
    async fn admit<T>(&self, request: &Request<T>) -> Result<(Uuid, CallPlace), Status> {
        let owner = caller(request)?.user_id;
        Ok((owner, self.budgets.call(owner).await?))
    }
}

/// Runs a write to its end even if the call is cancelled (the client left,
/// or a deadline fired). On SQLite a change reaches watchers from the store
/// right after its commit; cancelling between the two would leave a
/// committed change that no watcher ever hears of.
async fn detached<T: Send + 'static>(
    write: impl std::future::Future<Output = Result<T, Error>> + Send + 'static,
) -> Result<T, Error> {
    tokio::spawn(write)
        .await
        .map_err(|error| Error::Internal(format!("the write task failed: {error}")))?
}

/// The caller proven by the authentication layer. Its absence is a wiring
/// bug, answered as unauthenticated rather than trusted.
fn caller<T>(request: &Request<T>) -> Result<Identity, Status> {
    request
        .extensions()
        .get::<Identity>()
        .copied()
        .ok_or_else(|| {
            tracing::error!("a task RPC ran without an authenticated identity");
            Status::unauthenticated("missing or invalid access token")
        })
}

/// `NOT_FOUND`, identical for unknown and foreign ids. It is logged as a
/// security event: a run of them from one user is someone probing ids.
/// (Both values are parsed UUIDs, so nothing a client typed reaches the log.)
fn not_found(owner: Uuid, id: Uuid) -> Status {
    tracing::info!(user = %owner, task = %id, "task not found for this user");
    Error::NotFound.into()
}

fn parse_one<T>(result: Result<T, Violation>) -> Result<T, Status> {
    result.map_err(|violation| Status::from(Invalid::from(violation)))
}

/// The task a call names in `field`: a missing id is `INVALID_ARGUMENT`;
/// one that is not a UUID names no task and answers `NOT_FOUND` like any
/// unknown id.
fn task_id(field: &'static str, value: &str) -> Result<Uuid, Status> {
    parse_one(parse_id(field, value))?.ok_or_else(|| Error::NotFound.into())
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<proto::WatchTasksResponse, Status>> + Send>>;

#[tonic::async_trait]
impl TaskService for TaskApi {
    async fn create_task(
        &self,
        request: Request<proto::CreateTaskRequest>,
    ) -> Result<Response<proto::CreateTaskResponse>, Status> {
        let (owner, _place) = self.admit(&request).await?;
        self.budgets.write(owner)?;
        let message = request.into_inner();
        let mut violations = Violations::default();
        let title = violations.check(TaskTitle::parse("title", &message.title));
        let description = violations.check(Description::parse("description", &message.description));
        let priority = violations.check(parse_priority("priority", message.priority));
        let due_time = violations.check(
            message
                .due_time
                .as_ref()
                .map(|due| parse_time("due_time", due))
                .transpose(),
        );
        let request_id = violations.check(parse_request_id("request_id", &message.request_id));
        violations.finish()?;
        let (Some(title), Some(description), Some(priority), Some(due_time), Some(request_id)) =
            (title, description, priority, due_time, request_id)
        else {
            return Err(Error::Internal("validated fields missing".into()).into());
        };
        let task = NewTask {
            title,
            description,
            priority,
            due_time,
            request_id,
        };
        let (store, now) = (self.store.clone(), self.clock.now());
        let created = detached(async move { store.create(owner, task, now).await }).await?;
        Ok(Response::new(proto::CreateTaskResponse {
            task: Some((&created.task).into()),
        }))
    }

    async fn get_task(
        &self,
        request: Request<proto::GetTaskRequest>,
    ) -> Result<Response<proto::GetTaskResponse>, Status> {
        let (owner, _place) = self.admit(&request).await?;
        let id = task_id("id", &request.get_ref().id)?;
        let Some(task) = self.store.get(owner, id).await? else {
            return Err(not_found(owner, id));
        };
        Ok(Response::new(proto::GetTaskResponse {
            task: Some((&task).into()),
        }))
    }

    async fn list_tasks(
        &self,
        request: Request<proto::ListTasksRequest>,
    ) -> Result<Response<proto::ListTasksResponse>, Status> {
        let (owner, _place) = self.admit(&request).await?;
        let message = request.into_inner();
        let mut violations = Violations::default();
        let page_size = violations.check(parse_page_size("page_size", message.page_size));
        let order = violations.check(OrderBy::parse("order_by", &message.order_by));
        let search = violations.check(SearchText::parse("query", &message.query));
        violations.finish()?;
        let (Some(page_size), Some(order), Some(search)) = (page_size, order, search) else {
            return Err(Error::Internal("validated fields missing".into()).into());
        };
        let query = ListQuery {
            completed: message.completed,
            search,
            order,
        };
        let after = if message.page_token.is_empty() {
            None
        } else {
            Some(parse_one(self.page_tokens.open(
                &message.page_token,
                owner,
                &query,
            ))?)
        };
        let _search = match query.search {
            Some(_) => Some(self.budgets.search(owner).await?),
            None => None,
        };
        let page = self
            .store
            .list(owner, &query, after.as_ref(), page_size)
            .await?;
        let next_page_token = page
            .next
            .map(|next| self.page_tokens.issue(owner, &query, &next))
            .unwrap_or_default();
        Ok(Response::new(proto::ListTasksResponse {
            tasks: page.tasks.into_iter().map(Into::into).collect(),
            next_page_token,
            total_size: i32::try_from(page.total).unwrap_or(i32::MAX),
        }))
    }

    async fn update_task(
        &self,
        request: Request<proto::UpdateTaskRequest>,
    ) -> Result<Response<proto::UpdateTaskResponse>, Status> {
        let (owner, _place) = self.admit(&request).await?;
        self.budgets.write(owner)?;
        let message = request.into_inner();
        let Some(task) = message.task else {
            return Err(Invalid::from(Violation::new("task", "is required")).into());
        };
        let paths = message
            .update_mask
            .map(|mask| mask.paths)
            .unwrap_or_default();
        let mut violations = Violations::default();
        let id = violations.check(parse_id("task.id", &task.id));
        let fields = violations
            .check(parse_update_mask("update_mask", &paths))
            .unwrap_or_default();
        let mut patch = TaskPatch::default();
        for field in fields {
            match field {
                UpdatableField::Title => {
                    patch.title = violations.check(TaskTitle::parse("task.title", &task.title));
                }
                UpdatableField::Description => {
                    patch.description =
                        violations.check(Description::parse("task.description", &task.description));
                }
                UpdatableField::Priority => {
                    patch.priority =
                        violations.check(parse_priority("task.priority", task.priority));
                }
                UpdatableField::DueTime => {
                    patch.due_time = violations.check(
                        task.due_time
                            .as_ref()
                            .map(|due| parse_time("task.due_time", due))
                            .transpose(),
                    );
                }
                UpdatableField::Completed => patch.completed = Some(task.completed),
            }
        }
        violations.finish()?;
        // A missing id was a violation above; one that is not a UUID names
        // no task.
        let Some(Some(id)) = id else {
            return Err(Error::NotFound.into());
        };
        let etag = parse_etag(&task.etag);
        let (store, now) = (self.store.clone(), self.clock.now());
        match detached(async move { store.update(owner, id, &patch, etag, now).await }).await? {
            Written::Done(task) => Ok(Response::new(proto::UpdateTaskResponse {
                task: Some((&task).into()),
            })),
            Written::NotFound => Err(not_found(owner, id)),
            Written::EtagMismatch => Err(Error::EtagMismatch.into()),
        }
    }

    async fn delete_task(
        &self,
        request: Request<proto::DeleteTaskRequest>,
    ) -> Result<Response<proto::DeleteTaskResponse>, Status> {
        let (owner, _place) = self.admit(&request).await?;
        self.budgets.write(owner)?;
        let message = request.into_inner();
        let id = task_id("id", &message.id)?;
        let (store, now, etag) = (
            self.store.clone(),
            self.clock.now(),
            parse_etag(&message.etag),
        );
        match detached(async move { store.delete(owner, id, etag, now).await }).await? {
            Written::Done(()) => Ok(Response::new(proto::DeleteTaskResponse {})),
            Written::NotFound => Err(not_found(owner, id)),
            Written::EtagMismatch => Err(Error::EtagMismatch.into()),
        }
    }

    async fn set_task_completed(
        &self,
        request: Request<proto::SetTaskCompletedRequest>,
    ) -> Result<Response<proto::SetTaskCompletedResponse>, Status> {
        let (owner, _place) = self.admit(&request).await?;
        self.budgets.write(owner)?;
        let message = request.into_inner();
        let id = task_id("id", &message.id)?;
        let (store, now, completed) = (self.store.clone(), self.clock.now(), message.completed);
        match detached(async move { store.set_completed(owner, id, completed, now).await }).await? {
            Completion::Changed(task) | Completion::Unchanged(task) => {
                Ok(Response::new(proto::SetTaskCompletedResponse {
                    task: Some((&task).into()),
                }))
            }
            Completion::NotFound => Err(not_found(owner, id)),
        }
    }

    type WatchTasksStream = WatchStream;

    async fn watch_tasks(
        &self,
        request: Request<proto::WatchTasksRequest>,
    ) -> Result<Response<Self::WatchTasksStream>, Status> {
        let identity = caller(&request)?;
        let _place = self.budgets.call(identity.user_id).await?;
        let subscription = match self.hub.subscribe(identity.user_id, identity.session_id) {
            Ok(subscription) => subscription,
            Err(Refused::FeedDown) => {
                return Err(Status::unavailable(
                    "live updates are temporarily unavailable; retry later",
                ));
            }
            Err(Refused::TooManyWatchers) => {
                serving::metrics::metrics().refused("task-service", "watchers_per_user");
                return Err(serving::status::resource_exhausted(
                    "too many open WatchTasks streams for this user; close one first",
                    Duration::from_secs(5),
                ));
            }
        };
        let watch = Watch {
            subscription,
            expires_at_micros: identity.expires_at.saturating_mul(1_000_000),
            clock: self.clock.clone(),
            shutdown: self.shutdown.clone(),
            heartbeat: self.heartbeat,
            ended: false,
        };
        tracing::debug!(user = %identity.user_id, "watcher connected");
        Ok(Response::new(Box::pin(futures::stream::unfold(
            watch,
            Watch::step,
        ))))
    }
}

/// The state of one `WatchTasks` stream.
struct Watch {
    subscription: Subscription,
    expires_at_micros: i64,
    clock: Clock,
    shutdown: CancellationToken,
    /// Idle time after which a heartbeat is sent.
    heartbeat: Duration,
    ended: bool,
}

impl Watch {
    async fn step(mut self) -> Option<(Result<proto::WatchTasksResponse, Status>, Self)> {
        if self.ended {
            return None;
        }
        let item = tokio::select! {
            biased;
            () = self.shutdown.cancelled() => {
                Err(Status::unavailable("the server is shutting down; reconnect"))
            }
            () = until(&self.clock, self.expires_at_micros) => {
                Err(Status::unauthenticated("the access token expired; reconnect with a fresh one"))
            }
            next = self.subscription.next() => next.map(|event| (*event).clone()).map_err(ended),
            // Restarted by every step, so it fires only after `heartbeat` of silence.
            () = tokio::time::sleep(self.heartbeat) => Ok(proto::WatchTasksResponse {
                event_type: proto::TaskEventType::Unspecified as i32,
                task: None,
                event_time: Some(crate::domain::timestamp(self.clock.now())),
            }),
        };
        self.ended = item.is_err();
        Some((item, self))
    }
}

/// The status ending a watcher that the hub let go.
fn ended(end: End) -> Status {
    match end {
        End::TooFarBehind => serving::status::overloaded(
            "this watcher fell too far behind; reconnect and re-read the list",
            Duration::from_secs(1),
        ),
        End::FeedLost => {
            Status::unavailable("live updates were interrupted; reconnect and re-read the list")
        }
        End::SessionEnded => Status::unauthenticated("the session of this access token has ended"),
    }
}

/// Resolves once `clock` reads `deadline_micros` or later. It sleeps in
/// steps of at most a second, so a manual clock moved by a test is noticed
/// within one step and the system clock within microseconds.
async fn until(clock: &Clock, deadline_micros: i64) {
    loop {
        let remaining = deadline_micros.saturating_sub(clock.now().timestamp_micros());
        if remaining <= 0 {
            return;
        }
        let step = Duration::from_micros(remaining.unsigned_abs()).min(Duration::from_secs(1));
        tokio::time::sleep(step).await;
    }
}
