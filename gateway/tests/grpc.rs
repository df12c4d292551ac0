//! Plain gRPC (HTTP/2) through the gateway: what `grpcurl`, `buf curl` and
//! other services use. Reflection lists both APIs, health folds in both
//! upstreams, and a call to a method nobody serves is `UNIMPLEMENTED`.

use std::time::Duration;

use test_harness::{Backend, GatewayStack, STEP, authorized, on_each_backend};
use todo_proto::{
    auth::v1::{LoginRequest, RegisterRequest, auth_service_client::AuthServiceClient},
    tasks::v1::{CreateTaskRequest, ListTasksRequest, task_service_client::TaskServiceClient},
};
use tokio::time::timeout;
use tonic::{Code, transport::Channel};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
};

async fn channel(stack: &GatewayStack) -> Channel {
    tonic::transport::Endpoint::from(stack.uri())
        .connect()
        .await
        .expect("the gateway accepts HTTP/2")
}

#[tokio::test]
async fn plain_grpc_reaches_both_services_through_the_gateway() {
    on_each_backend(|backend| async move {
        let stack = GatewayStack::start(backend).await;
        let channel = channel(&stack).await;
        let mut auth = AuthServiceClient::new(channel.clone());
        auth.register(RegisterRequest {
            email: "grpc@example.com".into(),
            password: "correct horse battery staple".into(),
            display_name: String::new(),
        })
        .await
        .expect("Register succeeds");
        let token = auth
            .login(LoginRequest {
                email: "grpc@example.com".into(),
                password: "correct horse battery staple".into(),
            })
            .await
            .expect("Login succeeds")
            .into_inner()
            .tokens
            .expect("tokens")
            .access_token;
        let mut tasks = TaskServiceClient::new(channel);
        tasks
            .create_task(authorized(
                CreateTaskRequest {
                    title: "Over gRPC".into(),
                    ..Default::default()
                },
                &token,
            ))
            .await
            .expect("CreateTask succeeds");
        let listed = tasks
            .list_tasks(authorized(ListTasksRequest::default(), &token))
            .await
            .expect("ListTasks")
            .into_inner();
        assert_eq!(
            listed
                .tasks
                .iter()
                .map(|t| t.title.as_str())
                .collect::<Vec<_>>(),
            ["Over gRPC"]
        );
    })
    .await;
}

#[tokio::test]
async fn reflection_lists_both_services() {
    let stack = GatewayStack::start(Backend::Sqlite).await;
    let mut reflection = ServerReflectionClient::new(channel(&stack).await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection answers")
        .into_inner();
    let response = timeout(STEP, responses.message())
        .await
        .expect("no hang")
        .expect("ok")
        .expect("one answer");
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection answer {response:?}");
    };
    let names: Vec<_> = list
        .service
        .into_iter()
        .map(|service| service.name)
        .collect();
    for expected in [
        "auth.v1.AuthService",
        "tasks.v1.TaskService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|name| name == expected),
            "{expected} missing from {names:?}"
        );
    }
}

#[tokio::test]
async fn reflection_can_be_switched_off() {
    let stack =
        GatewayStack::start_with(Backend::Sqlite, |config| config.disable_reflection = true).await;
    let mut reflection = ServerReflectionClient::new(channel(&stack).await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let status = match reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
    {
        Err(status) => status,
        Ok(response) => response
            .into_inner()
            .message()
            .await
            .expect_err("no reflection"),
    };
    assert_eq!(status.code(), Code::Unimplemented);
}

#[tokio::test]
async fn health_is_serving_only_while_both_upstreams_are() {
    let mut stack = GatewayStack::start_without_tasks(Backend::Sqlite, |_| {}).await;
    // The task-service's port accepts connections, but nothing answers.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        stack.gateway_health().await,
        Some(ServingStatus::NotServing)
    );
    stack.start_tasks().await;
    stack.wait_for_gateway_health(ServingStatus::Serving).await;
}

#[tokio::test]
async fn an_unknown_method_is_unimplemented() {
    let stack = GatewayStack::start(Backend::Sqlite).await;
    let channel = channel(&stack).await;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let path = http::uri::PathAndQuery::from_static("/nope.v1.NopeService/Nothing");
    let status = grpc
        .unary::<(), (), _>(
            tonic::Request::new(()),
            path,
            tonic_prost::ProstCodec::default(),
        )
        .await
        .expect_err("no such method");
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
}
