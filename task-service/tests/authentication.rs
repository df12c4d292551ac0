//! The authentication layer: tokens issued by the real auth-service are
//! accepted; anything forged, expired, meant for another audience or
//! malformed is `UNAUTHENTICATED`; and the start order of the two services
//! does not matter.

use std::time::Duration;

use access_token::{AccessClaims, SigningKey};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serving::clock::Clock;
use test_harness::*;
use todo_proto::tasks::v1 as pb;
use tonic::Code;

fn parts(token: &str) -> (String, String, String) {
    let mut parts = token.split('.').map(str::to_owned);
    (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    )
}

fn kid_of(token: &str) -> String {
    let header: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts(token).0).unwrap()).unwrap();
    header["kid"].as_str().expect("a kid").to_owned()
}

fn claims_of(token: &str) -> AccessClaims {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts(token).1).unwrap()).unwrap()
}

fn header(alg: Algorithm, kid: &str) -> Header {
    let mut header = Header::new(alg);
    header.typ = Some("at+jwt".into());
    header.kid = Some(kid.into());
    header
}

#[tokio::test]
async fn forged_tokens_are_unauthenticated() {
    on_each_backend(|backend| async move {
        let stack = TaskStack::start(backend).await;
        let (alice, mut alice_client) = stack.user("alice").await;
        let (bob, _) = stack.user("bob").await;
        create(&mut alice_client, titled("alice's")).await;

        let kid = kid_of(&alice.token);
        let claims = claims_of(&alice.token);
        let (head, payload, signature) = parts(&alice.token);
        let (_, bob_payload, _) = parts(&bob.token);

        let jwks: serde_json::Value = serde_json::from_str(&stack.auth.jwks_json().await).unwrap();
        let public_key = URL_SAFE_NO_PAD
            .decode(jwks["keys"][0]["x"].as_str().unwrap())
            .unwrap();

        let foreign = SigningKey::generate().unwrap();
        let none_header = |alg: &str| {
            URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"{alg}","typ":"at+jwt","kid":"{kid}"}}"#))
        };
        let forged = [
            ("alg none", format!("{}.{payload}.", none_header("none"))),
            ("alg None", format!("{}.{payload}.", none_header("None"))),
            (
                "a foreign key with a valid kid",
                jsonwebtoken::encode(
                    &header(Algorithm::EdDSA, &kid),
                    &claims,
                    &EncodingKey::from_ed_der(foreign.pkcs8_der()),
                )
                .unwrap(),
            ),
            (
                "HS256 keyed with the public key",
                jsonwebtoken::encode(
                    &header(Algorithm::HS256, &kid),
                    &claims,
                    &EncodingKey::from_secret(&public_key),
                )
                .unwrap(),
            ),
            (
                "bob's payload under alice's signature",
                format!("{head}.{bob_payload}.{signature}"),
            ),
            ("an empty signature", format!("{head}.{payload}.")),
            (
                "a truncated signature",
                format!("{head}.{payload}.{}", &signature[..signature.len() / 2]),
            ),
            ("an unknown kid", foreign.sign(&claims).unwrap()),
            ("garbage", "not.a.jwt".into()),
        ];
        for (what, token) in forged {
            let mut client = stack.tasks.client(&token).await;
            let status = client
                .list_tasks(pb::ListTasksRequest::default())
                .await
                .unwrap_err();
            assert_eq!(status.code(), Code::Unauthenticated, "{what}: {status:?}");
            let status = client.create_task(titled("forged")).await.unwrap_err();
            assert_eq!(status.code(), Code::Unauthenticated, "{what}");
        }
        assert_eq!(
            list_all(&mut alice_client, Default::default()).await.len(),
            1,
            "nothing was written"
        );
        stack.stop().await;
    })
    .await;
}

#[tokio::test]
async fn malformed_authorization_metadata_is_unauthenticated() {
    on_each_backend(|backend| async move {
        let stack = TaskStack::start(backend).await;
        let (alice, _) = stack.user("alice").await;
        let basic = "Basic YWxpY2U6cGFzc3dvcmQ=".to_string();
        let bare = alice.token.clone();
        let empty = "Bearer ".to_string();
        let bearer = format!("Bearer {}", alice.token);
        let cases: [(&str, Vec<&str>); 5] = [
            ("missing", vec![]),
            ("Basic", vec![&basic]),
            ("no scheme", vec![&bare]),
            ("empty Bearer", vec![&empty]),
            ("two entries", vec![&bearer, &bearer]),
        ];
        for (what, values) in cases {
            let mut client = stack.tasks.client_with_authorization(&values).await;
            let status = client
                .list_tasks(pb::ListTasksRequest::default())
                .await
                .unwrap_err();
            assert_eq!(status.code(), Code::Unauthenticated, "{what}");
        }
        let lower = format!("bearer {}", alice.token);
        let mut client = stack.tasks.client_with_authorization(&[&lower]).await;
        client
            .list_tasks(pb::ListTasksRequest::default())
            .await
            .expect("the scheme is case-insensitive");
        stack.stop().await;
    })
    .await;
}

#[tokio::test]
async fn an_expired_token_is_unauthenticated_even_after_it_was_cached() {
    on_each_backend(|backend| async move {
        let clock = Clock::manual();
        let stack = TaskStack::start_with(backend, clock.clone(), |_| {}).await;
        let (_, mut alice) = stack.user("alice").await;
        alice
            .list_tasks(pb::ListTasksRequest::default())
            .await
            .expect("a fresh token works");
        // The default lifetime is 15 minutes; the leeway at most 60 s.
        clock.advance(Duration::from_secs(15 * 60 + 61));
        let status = alice
            .list_tasks(pb::ListTasksRequest::default())
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
        stack.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_token_for_another_audience_is_unauthenticated() {
    on_each_backend(|backend| async move {
        let stack = TaskStack::start_with(backend, Clock::default(), |config| {
            config.audience = "another-api".into();
        })
        .await;
        let (_, mut alice) = stack.user("alice").await;
        let status = alice
            .list_tasks(pb::ListTasksRequest::default())
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
        stack.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_task_service_started_before_the_auth_service_serves_once_it_is_up() {
    on_each_backend(|backend| async move {
        // Reserve an address for the auth-service, then leave it closed.
        let probe = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let auth_addr = probe.local_addr().unwrap();
        drop(probe);

        let database = backend.fresh().await;
        let config = task_config(
            &database.url,
            &format!("http://{auth_addr}"),
            Clock::default(),
        );
        let tasks = TaskServer::start(config).await;

        // Without keys: health NOT_SERVING and every call UNAVAILABLE.
        let deadline = tokio::time::Instant::now() + PATIENCE;
        let status = loop {
            if let Some(status) = tasks.health(task_service::SERVICE_NAME).await {
                break status;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "health never answered"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        };
        assert_eq!(
            status,
            tonic_health::pb::health_check_response::ServingStatus::NotServing
        );
        let mut anonymous = tasks.client("whatever").await;
        assert_eq!(
            code(anonymous.list_tasks(pb::ListTasksRequest::default()).await),
            Code::Unavailable
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            tasks.health("").await,
            Some(tonic_health::pb::health_check_response::ServingStatus::NotServing),
            "still not serving while the auth-service is down"
        );

        // The auth-service comes up: the task-service becomes ready by itself.
        let listener = tokio::net::TcpListener::bind(auth_addr)
            .await
            .expect("the reserved address is free again");
        let auth_database = TestDatabase::sqlite();
        let auth = AuthServer::start_on(
            listener,
            auth_service::Config {
                clock: Clock::default(),
                ..auth_config(&auth_database)
            },
        );
        tasks.wait_serving().await;
        let user = auth.new_user("late").await;
        let mut client = tasks.client(&user.token).await;
        create(&mut client, titled("works")).await;

        tasks.stop().await.unwrap();
        auth.stop().await;
    })
    .await;
}

#[tokio::test]
async fn health_and_reflection_are_public_and_reflection_can_be_switched_off() {
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    async fn services(tasks: &TaskServer) -> Result<Vec<String>, tonic::Status> {
        let mut client = ServerReflectionClient::new(tasks.channel().await);
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut stream = client
            .server_reflection_info(tokio_stream::once(request))
            .await?
            .into_inner();
        let response = stream.message().await?.expect("a reflection answer");
        match response.message_response {
            Some(MessageResponse::ListServicesResponse(list)) => {
                Ok(list.service.into_iter().map(|s| s.name).collect())
            }
            other => panic!("unexpected reflection answer {other:?}"),
        }
    }
    on_each_backend(|backend| async move {
        let stack = TaskStack::start(backend).await;
        assert!(
            services(&stack.tasks)
                .await
                .unwrap()
                .contains(&"tasks.v1.TaskService".to_string())
        );
        assert_eq!(
            stack.tasks.health("").await,
            Some(tonic_health::pb::health_check_response::ServingStatus::Serving)
        );
        stack.stop().await;
        let stack = TaskStack::start_with(backend, Clock::default(), |config| {
            config.disable_reflection = true;
        })
        .await;
        assert_eq!(
            services(&stack.tasks).await.unwrap_err().code(),
            Code::Unimplemented
        );
        stack.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_jwks_file_is_a_key_source_and_claims_are_checked() {
    on_each_backend(|backend| async move {
        let key = SigningKey::generate().unwrap();
        let folder = tempfile::tempdir().unwrap();
        let jwks_file = folder.path().join("jwks.json");
        std::fs::write(&jwks_file, access_token::Jwks::of([&key]).to_json()).unwrap();
        let database = backend.fresh().await;
        let mut config = task_config(&database.url, "http://127.0.0.1:1", Clock::default());
        config.jwks_file = Some(jwks_file);
        let tasks = TaskServer::start(config).await;
        tasks.wait_serving().await;

        let now = chrono::Utc::now().timestamp();
        let claims = AccessClaims {
            iss: "todo-auth".into(),
            aud: "todo-api".into(),
            sub: uuid::Uuid::now_v7(),
            sid: uuid::Uuid::now_v7(),
            iat: now,
            exp: now + 300,
            nbf: None,
            jti: uuid::Uuid::new_v4(),
        };
        let mut client = tasks.client(&key.sign(&claims).unwrap()).await;
        create(&mut client, titled("minted")).await;

        let refused = [
            (
                "wrong iss",
                AccessClaims {
                    iss: "evil".into(),
                    ..claims.clone()
                },
            ),
            (
                "wrong aud",
                AccessClaims {
                    aud: "other-api".into(),
                    ..claims.clone()
                },
            ),
            (
                "expired past the leeway",
                AccessClaims {
                    exp: now - 61,
                    ..claims.clone()
                },
            ),
            (
                "not valid yet",
                AccessClaims {
                    nbf: Some(now + 600),
                    ..claims.clone()
                },
            ),
        ];
        for (what, claims) in refused {
            let mut client = tasks.client(&key.sign(&claims).unwrap()).await;
            let status = client
                .list_tasks(pb::ListTasksRequest::default())
                .await
                .unwrap_err();
            assert_eq!(status.code(), Code::Unauthenticated, "{what}");
        }
        // Signed by the right key, but not an access token (`typ: JWT`).
        let mut jwt_header = header(Algorithm::EdDSA, key.kid());
        jwt_header.typ = Some("JWT".into());
        let id_token = jsonwebtoken::encode(
            &jwt_header,
            &claims,
            &EncodingKey::from_ed_der(key.pkcs8_der()),
        )
        .unwrap();
        let mut client = tasks.client(&id_token).await;
        assert_eq!(
            code(client.list_tasks(pb::ListTasksRequest::default()).await),
            Code::Unauthenticated
        );
        tasks.stop().await.unwrap();
    })
    .await;
}
