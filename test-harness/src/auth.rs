//! The auth-service as tests start it, and the calls tests make of its API.
//!
//! [`auth_config`] is the real defaults with a manual clock (tests move
//! time instead of sleeping) and per-address limits so high that ordinary
//! tests never meet them. [`AuthServer`] borrows its database rather than
//! owning it, so a test can stop a server and start another on the same
//! data.

use std::{net::SocketAddr, path::PathBuf};

use serving::{clock::Clock, config::ExposeSecret};
use todo_proto::auth::v1::{self as pb, auth_service_client::AuthServiceClient};
use tokio::net::TcpListener;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use uuid::Uuid;

use crate::{Server, TestDatabase, authorized, bind};

/// The password every test user registers with.
pub const PASSWORD: &str = "correct horse battery staple";

/// The configuration tests start from: the real defaults, a manual clock,
/// and per-address limits high enough that ordinary tests never hit them.
pub fn auth_config(database: &TestDatabase) -> auth_service::Config {
    auth_service::Config {
        clock: Clock::manual(),
        address_rate_per_minute: 1_000_000,
        address_burst: 1_000_000,
        ..auth_defaults(database)
    }
}

/// The real defaults on `database`, with the key-encryption key and the
/// mail folder in the database's private folder rather than in `data/`
/// under the test's working directory.
pub fn auth_defaults(database: &TestDatabase) -> auth_service::Config {
    auth_service::Config {
        database_url: database.url.clone().into(),
        key_encryption_key_file: key_encryption_key_file(database),
        mail_dir: database.path("mail"),
        ..auth_service::Config::default()
    }
}

/// The key-encryption key of the auth-service on `database`, created on
/// first use (on PostgreSQL too, where the service itself never creates
/// one).
pub fn key_encryption_key_file(database: &TestDatabase) -> PathBuf {
    let path = database.path("key-encryption-key");
    if !path.exists() {
        auth_service::key_encryption::generate(&path).expect("generate a key-encryption key");
    }
    path
}

/// The command-line flags that give a spawned auth-service binary the
/// same private files as [`auth_defaults`].
pub fn auth_file_args(database: &TestDatabase) -> Vec<String> {
    vec![
        "--key-encryption-key-file".into(),
        key_encryption_key_file(database).display().to_string(),
        "--mail-dir".into(),
        database.path("mail").display().to_string(),
    ]
}

/// A running auth-service.
pub struct AuthServer {
    pub addr: SocketAddr,
    pub clock: Clock,
    pub database_url: String,
    server: Server,
}

impl AuthServer {
    /// Starts on `database` with [`auth_config`].
    pub async fn start(database: &TestDatabase) -> Self {
        Self::start_with(auth_config(database)).await
    }

    /// Starts with `config` on a free port.
    pub async fn start_with(config: auth_service::Config) -> Self {
        Self::start_on(bind().await, config)
    }

    /// Starts on an already bound listener (to start it after a service
    /// that was told its address).
    pub fn start_on(listener: TcpListener, config: auth_service::Config) -> Self {
        let clock = config.clock.clone();
        let database_url = config.database_url.expose_secret().to_owned();
        let server = Server::spawn(listener, |listener, shutdown| {
            auth_service::serve(config, listener, shutdown)
        });
        Self {
            addr: server.addr,
            clock,
            database_url,
            server,
        }
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    pub async fn channel(&self) -> Channel {
        self.server.channel().await
    }

    pub async fn client(&self) -> AuthServiceClient<Channel> {
        AuthServiceClient::new(self.channel().await)
    }

    /// The health status of `service` ("" for the whole process).
    pub async fn health(&self, service: &str) -> Option<ServingStatus> {
        self.server.health(service).await
    }

    /// Registers a new user named `name` and returns them with their
    /// access token.
    pub async fn new_user(&self, name: &str) -> User {
        let response = self
            .client()
            .await
            .register(pb::RegisterRequest {
                email: format!("{name}-{}@example.com", Uuid::new_v4().simple()),
                password: PASSWORD.into(),
                display_name: name.into(),
            })
            .await
            .expect("register")
            .into_inner();
        let user = response.user.expect("a user");
        let tokens = response.tokens.expect("tokens");
        User {
            id: user.id.parse().expect("a UUID user id"),
            token: tokens.access_token,
        }
    }

    /// The JWK Set the auth-service publishes.
    pub async fn jwks_json(&self) -> String {
        self.client()
            .await
            .get_jwks(pb::GetJwksRequest {})
            .await
            .expect("GetJwks")
            .into_inner()
            .jwks_json
    }

    /// Starts the shutdown and returns at once.
    pub fn shut_down(&self) {
        self.server.shut_down();
    }

    /// Stops the server and waits for it to drain; panics if it failed.
    pub async fn stop(self) {
        self.server
            .stop()
            .await
            .expect("the auth-service exited cleanly");
    }
}

/// A signed-in user of the tests.
#[derive(Debug, Clone)]
pub struct User {
    pub id: Uuid,
    pub token: String,
}

/// An address no other test uses.
pub fn unique_email() -> String {
    format!("user-{}@example.com", Uuid::new_v4().simple())
}

/// A valid registration of `email` with [`PASSWORD`].
pub fn registration(email: &str) -> pb::RegisterRequest {
    pb::RegisterRequest {
        email: email.into(),
        password: PASSWORD.into(),
        display_name: "Test User".into(),
    }
}

pub async fn register(
    client: &mut AuthServiceClient<Channel>,
    email: &str,
) -> pb::RegisterResponse {
    client
        .register(registration(email))
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

/// `RequestPasswordReset` for `email`, with the whole response: tests of
/// enumeration compare its metadata for known and unknown emails.
pub async fn request_reset(
    client: &mut AuthServiceClient<Channel>,
    email: &str,
) -> Result<tonic::Response<pb::RequestPasswordResetResponse>, tonic::Status> {
    client
        .request_password_reset(pb::RequestPasswordResetRequest {
            email: email.into(),
        })
        .await
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
