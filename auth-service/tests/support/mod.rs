//! The auth-service test harness: boots the real service on port 0 over a
//! fresh database and hands out real tonic clients.

#![allow(dead_code)]

use std::net::SocketAddr;

use auth_service::Config;
use serving::{CancellationToken, clock::Clock};
use test_harness::{Backend, TestDatabase};
use todo_proto::auth::v1::{self as pb, auth_service_client::AuthServiceClient};
use tokio::task::JoinHandle;
use tonic::{Request, transport::Channel};

pub const PASSWORD: &str = "correct horse battery staple";

pub struct AuthServer {
    pub addr: SocketAddr,
    pub clock: Clock,
    pub database_url: String,
    shutdown: CancellationToken,
    handle: JoinHandle<anyhow::Result<()>>,
}

/// The configuration tests start from: the real defaults, a manual clock,
/// and per-address limits high enough that ordinary tests never hit them.
pub fn test_config(database: &TestDatabase) -> Config {
    Config {
        database_url: database.url.clone(),
        clock: Clock::manual(),
        address_rate_per_minute: 1_000_000,
        address_burst: 1_000_000,
        ..Config::default()
    }
}

impl AuthServer {
    pub async fn start(database: &TestDatabase) -> Self {
        Self::start_with(test_config(database)).await
    }

    pub async fn start_with(config: Config) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind port 0");
        let addr = listener.local_addr().expect("local address");
        let shutdown = CancellationToken::new();
        let clock = config.clock.clone();
        let database_url = config.database_url.clone();
        let handle = tokio::spawn(auth_service::serve(config, listener, shutdown.clone()));
        Self {
            addr,
            clock,
            database_url,
            shutdown,
            handle,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn client(&self) -> AuthServiceClient<Channel> {
        AuthServiceClient::connect(self.url())
            .await
            .expect("connect to the auth-service")
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(self.url())
            .unwrap()
            .connect()
            .await
            .expect("connect to the auth-service")
    }

    /// Stops the server and waits for it to drain; panics if it failed.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.handle
            .await
            .expect("server task")
            .expect("server exited cleanly");
    }
}

/// Runs `test` once per backend (SQLite always, PostgreSQL when configured).
pub async fn on_each_backend<F, Fut>(test: F)
where
    F: Fn(TestDatabase) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for backend in Backend::all() {
        eprintln!("-- on {backend}");
        test(backend.fresh().await).await;
    }
}

pub fn unique_email() -> String {
    format!("user-{}@example.com", uuid::Uuid::new_v4().simple())
}

pub async fn register(
    client: &mut AuthServiceClient<Channel>,
    email: &str,
) -> pb::RegisterResponse {
    client
        .register(pb::RegisterRequest {
            email: email.into(),
            password: PASSWORD.into(),
            display_name: "Test User".into(),
        })
        .await
        .expect("register")
        .into_inner()
}

pub async fn login(
    client: &mut AuthServiceClient<Channel>,
    email: &str,
    password: &str,
) -> Result<pb::LoginResponse, tonic::Status> {
    client
        .login(pb::LoginRequest {
            email: email.into(),
            password: password.into(),
        })
        .await
        .map(tonic::Response::into_inner)
}

pub fn tokens(pair: &Option<pb::TokenPair>) -> &pb::TokenPair {
    pair.as_ref().expect("a token pair")
}

/// A request carrying `authorization: Bearer <access_token>`.
pub fn authorized<T>(message: T, access_token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {access_token}").parse().unwrap(),
    );
    request
}

pub async fn refresh(
    client: &mut AuthServiceClient<Channel>,
    refresh_token: &str,
) -> Result<pb::TokenPair, tonic::Status> {
    client
        .refresh(pb::RefreshRequest {
            refresh_token: refresh_token.into(),
        })
        .await
        .map(|response| response.into_inner().tokens.expect("tokens"))
}

pub async fn current_user(
    client: &mut AuthServiceClient<Channel>,
    access_token: &str,
) -> Result<pb::User, tonic::Status> {
    client
        .get_current_user(authorized(pb::GetCurrentUserRequest {}, access_token))
        .await
        .map(|response| response.into_inner().user.expect("user"))
}

/// The fields named by a status's `BadRequest` detail.
pub fn violated_fields(status: &tonic::Status) -> Vec<String> {
    use tonic_types::StatusExt;
    status
        .get_error_details()
        .bad_request()
        .map(|bad| {
            bad.field_violations
                .iter()
                .map(|v| v.field.clone())
                .collect()
        })
        .unwrap_or_default()
}

/// The status code of a call that must fail; panics if it succeeded.
pub fn code<T: std::fmt::Debug>(result: Result<T, tonic::Status>) -> tonic::Code {
    result.expect_err("the call should have failed").code()
}
