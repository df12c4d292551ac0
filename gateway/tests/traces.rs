//! Following one call across the processes. The gateway, the auth-service
//! and the task-service run as three processes, each exporting its spans
//! over OTLP (`--otlp-endpoint`) to a real OTLP receiver started here
//! (the collector's `TraceService`, served by tonic):
//!
//! - a call through the gateway is one trace: the gateway's server span,
//!   its span of the upstream call (the child), and the answering
//!   service's server span (the grandchild, its parent received over the
//!   wire), each exported by its own process;
//! - a trace the client started (`traceparent`) is kept: the gateway's span
//!   is the child of the client's;
//! - every log line of a call, in the gateway and in the service, carries
//!   the call's trace id, with span export off as it is by default.
//!
//! On SQLite and PostgreSQL. `main` is test_harness's: the services are
//! this test binary started again (see `test_harness::service_process`).

use std::process::ExitCode;

use serde_json::Value;
use test_harness::{
    Backend, ExportedSpan, OtlpReceiver, PATIENCE, Process, ProcessOptions, ProcessStack, code,
    connect, eventually, on_each_backend, otlp::Kind, registration, service_process, unique_email,
};
use todo_proto::{
    auth::v1::auth_service_client::AuthServiceClient,
    tasks::v1::{GetTaskRequest, ListTasksRequest, task_service_client::TaskServiceClient},
};
use tonic::{Code, transport::Channel};

fn main() -> ExitCode {
    service_process::main(vec![
        service_process::test(
            "a_call_through_the_gateway_is_one_trace_from_the_gateway_to_the_service",
            || on_each_backend(one_trace_per_call),
        ),
        service_process::test(
            "a_clients_traceparent_is_kept_and_the_gateways_span_is_its_child",
            || on_each_backend(client_traceparent),
        ),
        service_process::test(
            "every_log_line_of_a_call_carries_its_trace_id_in_the_gateway_and_the_service",
            || on_each_backend(log_lines),
        ),
    ])
}

async fn start(backend: Backend, options: ProcessOptions) -> ProcessStack {
    ProcessStack::start(backend, env!("CARGO_BIN_EXE_gateway"), options).await
}

/// Starts the system exporting its spans to `receiver`.
async fn exporting_to(backend: Backend, receiver: &OtlpReceiver) -> ProcessStack {
    let options = ProcessOptions {
        otlp_endpoint: Some(receiver.endpoint()),
        ..ProcessOptions::default()
    };
    start(backend, options).await
}

/// A registered user's access token, and a TaskService client for them.
async fn user(channel: &Channel) -> (String, TaskServiceClient<Channel>) {
    let token = AuthServiceClient::new(channel.clone())
        .register(registration(&unique_email()))
        .await
        .expect("Register")
        .into_inner()
        .tokens
        .expect("tokens")
        .access_token;
    (token, TaskServiceClient::new(channel.clone()))
}

/// `message` with `authorization` and the other `metadata` given.
fn request<T>(message: T, token: &str, metadata: &[(&'static str, &str)]) -> tonic::Request<T> {
    let mut request = test_harness::authorized(message, token);
    for (name, value) in metadata {
        request
            .metadata_mut()
            .insert(*name, value.parse().expect("ASCII metadata"));
    }
    request
}

/// The spans of one call of `method` answered by `service`: the
/// gateway's server span, its client span of the upstream call, and the
/// service's server span, each the parent of the next.
struct Chain {
    gateway: ExportedSpan,
    upstream: ExportedSpan,
    service: ExportedSpan,
}

fn chain(spans: &[ExportedSpan], method: &str, service: &str) -> Option<Chain> {
    let gateway = spans.iter().find(|span| {
        span.service == "gateway" && span.kind() == Kind::Server && span.name() == method
    })?;
    let upstream = spans.iter().find(|span| {
        span.service == "gateway"
            && span.kind() == Kind::Client
            && span.parent_span_id() == gateway.span_id()
    })?;
    let answer = spans.iter().find(|span| {
        span.service == service
            && span.kind() == Kind::Server
            && span.parent_span_id() == upstream.span_id()
    })?;
    Some(Chain {
        gateway: gateway.clone(),
        upstream: upstream.clone(),
        service: answer.clone(),
    })
}

/// The trace of the one call of `method` the gateway served, once its
/// three spans have arrived.
async fn trace_of(receiver: &OtlpReceiver, method: &str, service: &str) -> Chain {
    let started = || {
        receiver.spans().into_iter().find(|span| {
            span.service == "gateway" && span.kind() == Kind::Server && span.name() == method
        })
    };
    eventually(PATIENCE, &format!("the gateway's span of {method}"), || {
        let found = started().is_some();
        async move { found }
    })
    .await;
    let trace_id = started().expect("found").trace_id();
    let spans = receiver
        .trace(&trace_id, |spans| chain(spans, method, service).is_some())
        .await;
    chain(&spans, method, service).expect("complete")
}

/// What every chain shows, whoever started the trace.
fn assert_linked(chain: &Chain, method: &str, upstream: &str) {
    let Chain {
        gateway,
        upstream: call,
        service,
    } = chain;
    assert_eq!(service.service, upstream);
    assert_eq!(service.name(), method);
    assert!(
        service.parent_is_remote(),
        "{upstream}'s span has its parent from the traceparent it received"
    );
    assert_eq!(call.attribute("upstream").as_deref(), Some(upstream));
    assert!(
        !call.parent_is_remote(),
        "the upstream call is the gateway's own"
    );
    for span in [gateway, call, service] {
        assert_eq!(span.trace_id(), gateway.trace_id());
        assert_eq!(span.span.trace_id.len(), 16);
        assert_ne!(span.trace_id(), "0".repeat(32));
    }
}

async fn one_trace_per_call(backend: Backend) {
    let receiver = OtlpReceiver::start().await;
    let stack = exporting_to(backend, &receiver).await;
    let channel = connect(&stack.url()).await;
    let (token, mut tasks) = user(&channel).await;
    tasks
        .list_tasks(request(ListTasksRequest::default(), &token, &[]))
        .await
        .expect("ListTasks");

    let register = "/auth.v1.AuthService/Register";
    let signing_up = trace_of(&receiver, register, "auth-service").await;
    assert_linked(&signing_up, register, "auth-service");
    let list = "/tasks.v1.TaskService/ListTasks";
    let listing = trace_of(&receiver, list, "task-service").await;
    assert_linked(&listing, list, "task-service");

    // The client sent no traceparent: each call's trace starts at the
    // gateway, whose span is its root.
    for chain in [&signing_up, &listing] {
        assert_eq!(
            chain.gateway.parent_span_id(),
            "",
            "the gateway's span starts the trace: {:?}",
            chain.gateway.span
        );
    }
    assert_ne!(signing_up.gateway.trace_id(), listing.gateway.trace_id());
}

/// A new, valid W3C trace id and span id.
fn ids() -> (String, String) {
    let trace_id = uuid::Uuid::new_v4().simple().to_string();
    let span_id = trace_id[..16].to_owned();
    (trace_id, span_id)
}

async fn client_traceparent(backend: Backend) {
    let receiver = OtlpReceiver::start().await;
    let stack = exporting_to(backend, &receiver).await;
    let channel = connect(&stack.url()).await;
    let (token, mut tasks) = user(&channel).await;
    let (trace_id, client_span) = ids();
    let traceparent = format!("00-{trace_id}-{client_span}-01");
    tasks
        .list_tasks(request(
            ListTasksRequest::default(),
            &token,
            &[("traceparent", &traceparent)],
        ))
        .await
        .expect("ListTasks");

    let list = "/tasks.v1.TaskService/ListTasks";
    let spans = receiver
        .trace(&trace_id, |spans| {
            chain(spans, list, "task-service").is_some()
        })
        .await;
    let listing = chain(&spans, list, "task-service").expect("complete");
    assert_linked(&listing, list, "task-service");
    assert_eq!(listing.gateway.trace_id(), trace_id);
    assert_eq!(listing.gateway.parent_span_id(), client_span);
    assert!(listing.gateway.parent_is_remote());
}

/// The lines `process` logged within the call whose request id is `id`,
/// and the `trace_id` of the call's span on each.
fn lines_of_call(process: &Process, id: &str) -> Vec<(Value, Option<String>)> {
    process
        .logs()
        .into_iter()
        .filter_map(|line| {
            let spans: Vec<Value> = line["spans"].as_array().cloned().unwrap_or_default();
            let call = spans
                .iter()
                .chain(std::iter::once(&line["span"]))
                .find(|span| span["request_id"] == id)?
                .clone();
            let trace_id = call["trace_id"].as_str().map(str::to_owned);
            Some((line, trace_id))
        })
        .collect()
}

/// Waits until both processes logged lines of the call `id`; returns the
/// one trace id they all carry.
async fn trace_id_logged(stack: &ProcessStack, id: &str) -> String {
    eventually(PATIENCE, &format!("both log the call {id}"), || {
        let logged = !lines_of_call(&stack.gateway, id).is_empty()
            && !lines_of_call(&stack.tasks, id).is_empty();
        async move { logged }
    })
    .await;
    let mut lines = lines_of_call(&stack.gateway, id);
    lines.extend(lines_of_call(&stack.tasks, id));
    let first = lines[0].1.clone().expect("the call's span has a trace id");
    for (line, trace_id) in &lines {
        assert_eq!(trace_id.as_deref(), Some(first.as_str()), "{line}");
    }
    first
}

async fn log_lines(backend: Backend) {
    let options = ProcessOptions {
        // The services log a call's start and end at DEBUG.
        rust_log: Some("info,tower_http=debug".into()),
        ..ProcessOptions::default()
    };
    let stack = start(backend, options).await;
    let channel = connect(&stack.url()).await;
    let (token, mut tasks) = user(&channel).await;
    let missing = || GetTaskRequest {
        id: uuid::Uuid::new_v4().to_string(),
    };

    let (trace_id, client_span) = ids();
    let traceparent = format!("00-{trace_id}-{client_span}-01");
    let given = format!("logs-{}", uuid::Uuid::new_v4().simple());
    let answer = tasks
        .get_task(request(
            missing(),
            &token,
            &[("x-request-id", &given), ("traceparent", &traceparent)],
        ))
        .await;
    assert_eq!(code(answer), Code::NotFound);
    assert_eq!(trace_id_logged(&stack, &given).await, trace_id);

    // Without a traceparent the gateway starts a trace, and the service
    // logs the same id.
    let started = format!("logs-{}", uuid::Uuid::new_v4().simple());
    let answer = tasks
        .get_task(request(missing(), &token, &[("x-request-id", &started)]))
        .await;
    assert_eq!(code(answer), Code::NotFound);
    let new_trace = trace_id_logged(&stack, &started).await;
    assert_eq!(new_trace.len(), 32);
    assert!(new_trace.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_ne!(new_trace, "0".repeat(32));
    assert_ne!(new_trace, trace_id);
}
