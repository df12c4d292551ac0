//! The two APIs through the gateway with a Rust gRPC-Web client (tonic-web's
//! client layer), as a browser would call them: accounts, tasks, the live
//! `WatchTasks` stream, and errors that arrive with their details intact.

use std::time::Duration;

use test_harness::{Backend, GatewayStack, STEP, authorized, on_each_backend};
use todo_proto::{
    auth::v1::{LoginRequest, RegisterRequest},
    tasks::v1::{
        CreateTaskRequest, GetTaskRequest, ListTasksRequest, TaskEventType, WatchTasksRequest,
    },
};
use tokio::time::timeout;
use tonic::Code;
use tonic_types::StatusExt;

async fn register_login_create_and_list(backend: Backend, http2: bool) {
    let stack = GatewayStack::start(backend).await;
    let mut auth = stack.auth_web(http2);
    let email = format!("web-{http2}@example.com");
    let registered = timeout(
        STEP,
        auth.register(RegisterRequest {
            email: email.clone(),
            password: "correct horse battery staple".into(),
            display_name: "Ada".into(),
        }),
    )
    .await
    .expect("no hang")
    .expect("Register succeeds")
    .into_inner();
    assert_eq!(registered.user.expect("a user").email, email);

    let login = timeout(
        STEP,
        auth.login(LoginRequest {
            email: email.clone(),
            password: "correct horse battery staple".into(),
        }),
    )
    .await
    .expect("no hang")
    .expect("Login succeeds")
    .into_inner();
    let token = login.tokens.expect("a token pair").access_token;

    let mut tasks = stack.tasks_web(http2);
    let created = timeout(
        STEP,
        tasks.create_task(authorized(
            CreateTaskRequest {
                title: "Buy milk".into(),
                ..Default::default()
            },
            &token,
        )),
    )
    .await
    .expect("no hang")
    .expect("CreateTask succeeds")
    .into_inner()
    .task
    .expect("a task");
    assert_eq!(created.title, "Buy milk");

    let listed = timeout(
        STEP,
        tasks.list_tasks(authorized(ListTasksRequest::default(), &token)),
    )
    .await
    .expect("no hang")
    .expect("ListTasks succeeds")
    .into_inner();
    assert_eq!(listed.tasks.len(), 1);
    assert_eq!(listed.tasks[0].id, created.id);
    assert_eq!(listed.total_size, 1);
}

#[tokio::test]
async fn register_login_create_and_list_over_grpc_web_http1() {
    on_each_backend(|backend| register_login_create_and_list(backend, false)).await;
}

#[tokio::test]
async fn register_login_create_and_list_over_grpc_web_http2() {
    on_each_backend(|backend| register_login_create_and_list(backend, true)).await;
}

#[tokio::test]
async fn watch_tasks_streams_a_task_created_by_another_client() {
    on_each_backend(|backend| async move {
        let stack = GatewayStack::start(backend).await;
        let token = stack.register("watcher@example.com").await;

        // The watcher: a gRPC-Web server stream over HTTP/1.1, as in a browser.
        let mut stream = timeout(
            STEP,
            stack
                .tasks_web(false)
                .watch_tasks(authorized(WatchTasksRequest {}, &token)),
        )
        .await
        .expect("no hang")
        .expect("WatchTasks opens")
        .into_inner();

        // Another client of the same user, on its own connection.
        let created = stack
            .tasks_web(true)
            .create_task(authorized(
                CreateTaskRequest {
                    title: "From the phone".into(),
                    ..Default::default()
                },
                &token,
            ))
            .await
            .expect("CreateTask succeeds")
            .into_inner()
            .task
            .expect("a task");

        let event = timeout(STEP, stream.message())
            .await
            .expect("the event arrives while the stream is open")
            .expect("the stream is healthy")
            .expect("the stream has not ended");
        assert_eq!(event.event_type(), TaskEventType::Created);
        let task = event.task.expect("the created task");
        assert_eq!(task.id, created.id);
        assert_eq!(task.title, "From the phone");
    })
    .await;
}

#[tokio::test]
async fn a_watch_stream_outlives_the_request_timeout() {
    on_each_backend(|backend| async move {
        let stack = GatewayStack::start_with(backend, |config| {
            config.request_timeout = Duration::from_millis(500);
        })
        .await;
        let token = stack.register("patient@example.com").await;
        let mut stream = stack
            .tasks_web(false)
            .watch_tasks(authorized(WatchTasksRequest {}, &token))
            .await
            .expect("WatchTasks opens")
            .into_inner();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        stack
            .tasks_web(false)
            .create_task(authorized(
                CreateTaskRequest {
                    title: "Later".into(),
                    ..Default::default()
                },
                &token,
            ))
            .await
            .expect("CreateTask succeeds");
        let event = timeout(STEP, stream.message())
            .await
            .expect("no hang")
            .expect("the stream was not cut by the unary timeout")
            .expect("the stream has not ended");
        assert_eq!(event.task.expect("a task").title, "Later");
    })
    .await;
}

#[tokio::test]
async fn an_invalid_argument_arrives_with_its_bad_request_details() {
    let stack = GatewayStack::start(Backend::Sqlite).await;
    for http2 in [false, true] {
        let status = timeout(
            STEP,
            stack.auth_web(http2).register(RegisterRequest {
                email: "short@example.com".into(),
                password: "short".into(),
                display_name: String::new(),
            }),
        )
        .await
        .expect("no hang")
        .expect_err("a 5-character password is refused");
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        let details = status.get_error_details();
        let fields: Vec<_> = details
            .bad_request()
            .expect("a BadRequest detail from grpc-status-details-bin")
            .field_violations
            .iter()
            .map(|violation| violation.field.clone())
            .collect();
        assert_eq!(fields, ["password"]);
    }
}

#[tokio::test]
async fn a_made_up_task_id_is_not_found_and_no_token_is_unauthenticated() {
    on_each_backend(|backend| async move {
        let stack = GatewayStack::start(backend).await;
        let token = stack.register("finder@example.com").await;
        let mut tasks = stack.tasks_web(false);
        let status = tasks
            .get_task(authorized(
                GetTaskRequest {
                    id: "0190f3c2-0000-7000-8000-000000000000".into(),
                },
                &token,
            ))
            .await
            .expect_err("no such task");
        assert_eq!(status.code(), Code::NotFound, "{status:?}");

        let status = tasks
            .list_tasks(ListTasksRequest::default())
            .await
            .expect_err("no token");
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    })
    .await;
}
