//! What every process serves besides its API: health that follows the
//! database, reflection, and clean failure while the database is away.

use std::time::{Duration, Instant};

use test_harness::*;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
};

async fn health(server: &AuthServer, service: &str) -> ServingStatus {
    server.health(service).await.expect("health answers")
}

#[tokio::test]
async fn health_and_reflection_are_served() {
    on_each_backend(|backend| async move {
        let db = backend.fresh().await;
        let server = AuthServer::start(&db).await;
        assert_eq!(health(&server, "").await, ServingStatus::Serving);
        assert_eq!(
            health(&server, "auth.v1.AuthService").await,
            ServingStatus::Serving
        );

        let mut reflection = ServerReflectionClient::new(server.channel().await);
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut responses = reflection
            .server_reflection_info(tokio_stream::iter([request]))
            .await
            .unwrap()
            .into_inner();
        let Some(MessageResponse::ListServicesResponse(list)) =
            responses.message().await.unwrap().unwrap().message_response
        else {
            panic!("not a service list");
        };
        let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
        assert!(names.contains(&"auth.v1.AuthService"), "{names:?}");
        assert!(names.contains(&"grpc.health.v1.Health"), "{names:?}");
        assert!(
            !names.contains(&"tasks.v1.TaskService"),
            "lists only what it serves: {names:?}"
        );
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn reflection_can_be_switched_off() {
    let db = TestDatabase::sqlite();
    let mut config = auth_config(&db);
    config.disable_reflection = true;
    let server = AuthServer::start_with(config).await;
    let mut reflection = ServerReflectionClient::new(server.channel().await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let status = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented);
    server.stop().await;
}

#[tokio::test]
async fn a_database_outage_is_unavailable_and_not_serving_then_recovers_by_itself() {
    let Some(db) = TestDatabase::postgres().await else {
        eprintln!("SKIPPED: set TEST_POSTGRES_URL to run the PostgreSQL outage test");
        return;
    };
    let proxy = TcpProxy::start(database_address(&db.url)).await;
    let mut config = auth_config(&db);
    config.database_url = url_via(&db.url, proxy.addr()).into();
    let server = AuthServer::start_with(config).await;
    let mut client = server.client().await;
    let email = unique_email();
    register(&mut client, &email).await;

    proxy.cut();
    let started = Instant::now();
    let status = login(&mut client, &email, PASSWORD).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "answered within a deadline"
    );
    for leak in ["SELECT", "sqlx", "postgres", "127.0.0.1", "users"] {
        assert!(
            !status.message().contains(leak),
            "message leaks {leak}: {}",
            status.message()
        );
    }
    eventually(Duration::from_secs(15), "health is NOT_SERVING", || async {
        health(&server, "").await == ServingStatus::NotServing
    })
    .await;

    proxy.restore();
    eventually(
        Duration::from_secs(15),
        "health is SERVING again",
        || async { health(&server, "auth.v1.AuthService").await == ServingStatus::Serving },
    )
    .await;
    login(&mut client, &email, PASSWORD)
        .await
        .expect("recovered without a restart");
    server.stop().await;
}

#[tokio::test]
async fn a_message_over_the_limit_is_resource_exhausted_and_changes_nothing() {
    let db = TestDatabase::sqlite();
    let mut config = auth_config(&db);
    config.transport.max_message_bytes = 4 * 1024;
    let server = AuthServer::start_with(config).await;
    let mut client = server.client().await;
    let status = client
        .register(todo_proto::auth::v1::RegisterRequest {
            email: "big@example.com".into(),
            password: PASSWORD.into(),
            display_name: "x".repeat(10_000),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    register(&mut client, "big@example.com").await;
    server.stop().await;
}

#[tokio::test]
async fn a_compressed_message_is_limited_by_its_inflated_size() {
    use tonic::codec::CompressionEncoding;
    let db = TestDatabase::sqlite();
    let mut config = auth_config(&db);
    config.transport.max_message_bytes = 4 * 1024;
    let server = AuthServer::start_with(config).await;
    let mut client = server
        .client()
        .await
        .send_compressed(CompressionEncoding::Gzip);
    // 10 kB of one letter gzips to a few dozen bytes, far under the limit.
    let status = client
        .register(todo_proto::auth::v1::RegisterRequest {
            email: "zip@example.com".into(),
            password: PASSWORD.into(),
            display_name: "x".repeat(10_000),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    register(&mut client, "zip@example.com").await;
    server.stop().await;
}
