//! `auth.v1.AuthService`: each RPC parses its request into domain types,
//! does its one job against the store, and maps failures through
//! [`AuthError`]. Deny by default: every RPC except the public five
//! (Register, Login, Refresh, Logout, GetJwks) starts with
//! [`AuthApi::authenticate`], which accepts an access token only while its
//! session is live, so a revoked session's tokens stop working here at once
//! (resource servers honour them until `exp`, at most 15 minutes).

use std::{sync::Arc, time::Duration};

use access_token::{AccessClaims, Identity, IssuedClaims, VerifyError, bearer_token};
use chrono::TimeDelta;
use serving::{address::AddressKey, clock::Clock, status::Violation};
use todo_proto::auth::v1::{self as pb, auth_service_server::AuthService};
use tonic::{Request, Response, Status, metadata::MetadataMap};
use uuid::Uuid;

use crate::{
    domain::{DisplayName, Email, Password},
    error::AuthError,
    keyring::Keyring,
    password::Hasher,
    recovery::Mail,
    refresh_token::{self, RefreshToken, SuccessorKey},
    store::{AuthStore, Credentials, NewSession, Rotation, Session, Time, User},
    throttle::AddressLimiter,
};

/// Lifetimes and limits the RPCs apply.
#[derive(Debug, Clone)]
pub struct Policy {
    pub issuer: String,
    pub audience: String,
    pub access_token_ttl: TimeDelta,
    pub refresh_token_ttl: TimeDelta,
    pub session_max_lifetime: TimeDelta,
    pub login_max_failures: u32,
    pub login_max_failures_per_account: u32,
    pub login_failure_window: TimeDelta,
    pub known_address_ttl: TimeDelta,
    pub refresh_reuse_grace: TimeDelta,
}

pub struct AuthApi {
    pub store: Arc<dyn AuthStore>,
    pub successors: SuccessorKey,
    pub mail: Mail,
    pub hasher: Hasher,
    pub keyring: Arc<Keyring>,
    pub limiter: AddressLimiter,
    pub clock: Clock,
    pub policy: Policy,
}

const INVALID_REFRESH_TOKEN: &str = "refresh token is invalid, expired or revoked";
const INVALID_ACCESS_TOKEN: &str = "access token is invalid or expired";
pub(crate) const SESSION_ENDED: &str = "the session of this access token has ended";
const MAX_USER_AGENT_CHARS: usize = 256;

fn timestamp(time: Time) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: time.timestamp(),
        nanos: time.timestamp_subsec_nanos().cast_signed(),
    }
}

pub(crate) fn user_message(user: &User) -> pb::User {
    pb::User {
        id: user.id.to_string(),
        email: user.email.clone(),
        display_name: user.display_name.clone(),
        create_time: Some(timestamp(user.create_time)),
        email_verified: user.email_verified,
    }
}

fn session_message(session: &Session, current: Uuid) -> pb::Session {
    pb::Session {
        id: session.id.to_string(),
        create_time: Some(timestamp(session.create_time)),
        last_refresh_time: Some(timestamp(session.last_refresh_time)),
        expire_time: Some(timestamp(session.refresh_expire_time())),
        user_agent: session.user_agent.clone(),
        current: session.id == current,
    }
}

/// The client's `user-agent`, bounded and stripped of control characters
/// (it is shown back to the user in ListSessions and may reach logs).
fn user_agent(metadata: &MetadataMap) -> String {
    let raw = metadata
        .get("user-agent")
        .or_else(|| metadata.get("x-user-agent"))
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    raw.chars()
        .filter(|c| !c.is_control())
        .take(MAX_USER_AGENT_CHARS)
        .collect()
}

/// Both parsed values, or every violation of the two.
fn both<A, B>(a: Result<A, Violation>, b: Result<B, Violation>) -> Result<(A, B), AuthError> {
    match (a, b) {
        (Ok(a), Ok(b)) => Ok((a, b)),
        (a, b) => Err(AuthError::Invalid(
            a.err().into_iter().chain(b.err()).collect(),
        )),
    }
}

pub(crate) fn delta(duration: Duration) -> TimeDelta {
    TimeDelta::from_std(duration).unwrap_or(TimeDelta::MAX)
}

impl Policy {
    pub fn from_config(config: &crate::Config) -> Self {
        Self {
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            access_token_ttl: delta(config.access_token_ttl),
            refresh_token_ttl: delta(config.refresh_token_ttl),
            session_max_lifetime: delta(config.session_max_lifetime),
            login_max_failures: config.login_max_failures,
            login_max_failures_per_account: config.login_max_failures_per_account,
            login_failure_window: delta(config.login_failure_window),
            known_address_ttl: delta(config.known_address_ttl),
            refresh_reuse_grace: delta(config.refresh_reuse_grace),
        }
    }
}

impl AuthApi {
    pub(crate) fn check_address<T>(&self, request: &Request<T>) -> Result<(), AuthError> {
        self.limiter.check(request).map_err(|retry_after| {
            serving::metrics::metrics().refused("auth-service", "address_rate");
            tracing::warn!(address = ?self.limiter.client_address(request), "address rate limit hit");
            AuthError::Throttled {
                message: "too many requests from this address; retry later",
                retry_after,
            }
        })
    }

    /// A new session for `user_id` starting `now`, with its first token.
    fn new_session(
        &self,
        user: &User,
        user_agent: String,
        now: Time,
    ) -> (NewSession, RefreshToken) {
        let refresh = RefreshToken::generate();
        let absolute = now + self.policy.session_max_lifetime;
        let session = Session {
            id: Uuid::now_v7(),
            user_id: user.id,
            create_time: now,
            last_refresh_time: now,
            idle_expire_time: (now + self.policy.refresh_token_ttl).min(absolute),
            absolute_expire_time: absolute,
            user_agent,
            email_verified: user.email_verified,
        };
        (
            NewSession {
                session,
                refresh_token: refresh.hash,
            },
            refresh,
        )
    }

    /// An access token for `session` and the pair to hand out.
    fn token_pair(
        &self,
        session: &Session,
        refresh: &RefreshToken,
        now: Time,
    ) -> Result<pb::TokenPair, AuthError> {
        let expire = now + self.policy.access_token_ttl;
        let claims = AccessClaims {
            iss: self.policy.issuer.clone(),
            aud: self.policy.audience.clone(),
            sub: session.user_id,
            sid: session.id,
            iat: now.timestamp(),
            exp: expire.timestamp(),
            nbf: None,
            jti: Uuid::new_v4(),
        };
        let issued = IssuedClaims {
            access: &claims,
            email_verified: session.email_verified,
        };
        Ok(pb::TokenPair {
            access_token: self.keyring.sign(&issued)?,
            // Whole seconds, exactly the token's `exp`.
            access_token_expire_time: Some(prost_types::Timestamp {
                seconds: claims.exp,
                nanos: 0,
            }),
            refresh_token: refresh.expose().to_owned(),
            refresh_token_expire_time: Some(timestamp(session.refresh_expire_time())),
            token_type: "Bearer".to_owned(),
        })
    }

    /// The caller proven by the request's access token, whose session must
    /// still be live.
    pub async fn authenticate(
        &self,
        metadata: &MetadataMap,
    ) -> Result<(Identity, Session), AuthError> {
        let token = bearer_token(metadata).map_err(|error| {
            tracing::info!(%error, "request without a usable bearer token");
            AuthError::Unauthenticated("missing or malformed authorization metadata")
        })?;
        let now = self.clock.now();
        let verifier = self.keyring.verifier();
        let identity = match verifier.verify(token, now.timestamp()) {
            Err(VerifyError::UnknownKey) => {
                // Another replica may have rotated; reload at most every few seconds.
                if let Err(error) = self.keyring.reload(true).await {
                    // Cannot learn new keys now; the token stays unverifiable.
                    tracing::warn!(%error, "could not reload signing keys for an unknown kid");
                }
                verifier.verify(token, now.timestamp())
            }
            result => result,
        }
        .map_err(|error| {
            tracing::info!(%error, "access token refused");
            AuthError::Unauthenticated(INVALID_ACCESS_TOKEN)
        })?;
        let session = self
            .store
            .live_session(identity.user_id, identity.session_id, now)
            .await?
            .ok_or(AuthError::Unauthenticated(SESSION_ENDED))?;
        Ok((identity, session))
    }

    /// The key the sign-in windows of `request`'s client are counted under.
    pub(crate) fn address_key<T>(&self, request: &Request<T>) -> String {
        self.limiter.client_address(request).map_or_else(
            || "unknown".to_owned(),
            |address| AddressKey::of(address).to_string(),
        )
    }

    /// Counts a sign-in attempt for `email` from `address` and refuses it
    /// while a window is full. Why two windows (checklist L4, I5):
    ///
    /// - A strict one per account *and address* (`--login-max-failures`):
    ///   a stranger's wrong passwords fill their own window, never the
    ///   owner's, so nobody can keep an owner out by knowing their email.
    /// - A much higher ceiling per account (`--login-max-failures-per-
    ///   account`), over all addresses: guessing spread over many
    ///   addresses gains nothing past it. The ceiling does not apply to
    ///   addresses that signed in to the account lately, so even then the
    ///   owner's usual places still get in; only a new place waits for the
    ///   window to end.
    ///
    /// The attempt is counted *before* the password is checked, and only a
    /// success resets this address's window: fifty guesses sent in
    /// parallel are counted as fifty, not as zero.
    pub(crate) async fn count_attempt(
        &self,
        email: &str,
        address: &str,
        now: Time,
    ) -> Result<(), AuthError> {
        let window = self.policy.login_failure_window;
        let windows = self
            .store
            .record_sign_in_attempt(email, address, now, window, self.policy.known_address_ttl)
            .await?;
        let over_address =
            windows.from_address.attempts > i64::from(self.policy.login_max_failures);
        let over_account = !windows.known_address
            && windows.account.attempts > i64::from(self.policy.login_max_failures_per_account);
        if !(over_address || over_account) {
            return Ok(());
        }
        let full = if over_address {
            windows.from_address
        } else {
            windows.account
        };
        let retry_after = (full.window_start + window - now)
            .to_std()
            .unwrap_or_default();
        serving::metrics::metrics().refused(
            "auth-service",
            if over_address {
                "sign_in_window_address"
            } else {
                "sign_in_window_account"
            },
        );
        tracing::warn!(
            email,
            address,
            attempts_from_address = windows.from_address.attempts,
            attempts_on_account = windows.account.attempts,
            known_address = windows.known_address,
            "sign-in throttled"
        );
        Err(AuthError::Throttled {
            message: "too many failed sign-in attempts for this account; retry later",
            retry_after,
        })
    }

    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<pb::RegisterResponse, AuthError> {
        self.check_address(&request)?;
        let user_agent = user_agent(request.metadata());
        let address = self.address_key(&request);
        let request = request.into_inner();
        let email = Email::parse("email", &request.email);
        let password = Password::new_password("password", &request.password);
        let name = DisplayName::parse("display_name", &request.display_name);
        let ((email, password), name) = match (both(email, password), name) {
            (Ok(pair), Ok(name)) => (pair, name),
            (Err(AuthError::Invalid(mut violations)), name) => {
                violations.extend(name.err());
                return Err(AuthError::Invalid(violations));
            }
            (Err(other), _) => return Err(other),
            (Ok(_), Err(violation)) => return Err(violation.into()),
        };
        let password_hash = self.hasher.hash(&password).await?;
        let now = self.clock.now();
        let user = User {
            id: Uuid::now_v7(),
            email: email.as_str().to_owned(),
            display_name: name.into_string(),
            create_time: now,
            email_verified: false,
        };
        let (new_session, refresh) = self.new_session(&user, user_agent, now);
        match self
            .store
            .create_user(
                &Credentials {
                    user: user.clone(),
                    password_hash,
                },
                &new_session,
            )
            .await
        {
            Err(crate::store::StoreError::Conflict) => return Err(AuthError::EmailTaken),
            other => other?,
        }
        // Where an account was made is one of its owner's places.
        self.store
            .record_sign_in_success(&user.email, &address, now)
            .await?;
        tracing::info!(user_id = %user.id, "account registered");
        let tokens = self.token_pair(&new_session.session, &refresh, now)?;
        Ok(pb::RegisterResponse {
            user: Some(user_message(&user)),
            tokens: Some(tokens),
        })
    }

    async fn login(
        &self,
        request: Request<pb::LoginRequest>,
    ) -> Result<pb::LoginResponse, AuthError> {
        self.check_address(&request)?;
        let user_agent = user_agent(request.metadata());
        let address = self.address_key(&request);
        let request = request.into_inner();
        let (email, password) = both(
            Email::parse("email", &request.email),
            Password::offered("password", &request.password),
        )?;
        let now = self.clock.now();
        self.count_attempt(email.as_str(), &address, now).await?;
        // Unknown emails pay for a verification too: same work, same answer.
        let credentials = self.store.user_by_email(email.as_str()).await?;
        let valid = match &credentials {
            Some(known) => self.hasher.verify(&password, &known.password_hash).await?,
            None => self.hasher.verify_dummy(&password).await?,
        };
        let Some(credentials) = credentials.filter(|_| valid) else {
            tracing::warn!(email = email.as_str(), "sign-in failed");
            return Err(AuthError::BadCredentials);
        };
        let rehash = if self.hasher.needs_rehash(&credentials.password_hash) {
            Some(self.hasher.hash(&password).await?)
        } else {
            None
        };
        let (new_session, refresh) = self.new_session(&credentials.user, user_agent, now);
        let started = self
            .store
            .start_session(
                &new_session,
                &credentials.password_hash,
                rehash.as_deref(),
                &address,
                now,
            )
            .await?;
        if !started {
            // The password changed between our check and now: the old one
            // no longer signs in.
            tracing::warn!(user_id = %credentials.user.id, "sign-in raced a password change; refused");
            return Err(AuthError::BadCredentials);
        }
        if rehash.is_some() {
            tracing::info!(user_id = %credentials.user.id, "password rehashed at current parameters");
        }
        tracing::info!(user_id = %credentials.user.id, session_id = %new_session.session.id, "signed in");
        let tokens = self.token_pair(&new_session.session, &refresh, now)?;
        Ok(pb::LoginResponse {
            user: Some(user_message(&credentials.user)),
            tokens: Some(tokens),
        })
    }

    async fn refresh(
        &self,
        request: Request<pb::RefreshRequest>,
    ) -> Result<pb::RefreshResponse, AuthError> {
        self.check_address(&request)?;
        let presented = request.into_inner().refresh_token;
        if presented.is_empty() {
            return Err(Violation::new("refresh_token", "must not be empty").into());
        }
        if !refresh_token::is_well_formed(&presented) {
            return Err(AuthError::Unauthenticated(INVALID_REFRESH_TOKEN));
        }
        let now = self.clock.now();
        let next = self.successors.successor_of(&presented);
        let rotation = self
            .store
            .rotate_refresh_token(
                &refresh_token::hash(&presented),
                &next.hash,
                now,
                self.policy.refresh_token_ttl,
                self.policy.refresh_reuse_grace,
            )
            .await?;
        match rotation {
            Rotation::Rotated(session) => Ok(pb::RefreshResponse {
                tokens: Some(self.token_pair(&session, &next, now)?),
            }),
            Rotation::Repeated(session) => {
                tracing::info!(user_id = %session.user_id, session_id = %session.id, "refresh token presented again within the grace: same successor");
                Ok(pb::RefreshResponse {
                    tokens: Some(self.token_pair(&session, &next, now)?),
                })
            }
            Rotation::Reused {
                session_id,
                user_id,
            } => {
                tracing::warn!(%user_id, %session_id, "spent refresh token presented again: session revoked");
                Err(AuthError::Unauthenticated(INVALID_REFRESH_TOKEN))
            }
            Rotation::Invalid => Err(AuthError::Unauthenticated(INVALID_REFRESH_TOKEN)),
        }
    }

    async fn logout(
        &self,
        request: Request<pb::LogoutRequest>,
    ) -> Result<pb::LogoutResponse, AuthError> {
        self.check_address(&request)?;
        let presented = request.into_inner().refresh_token;
        if presented.is_empty() {
            return Err(Violation::new("refresh_token", "must not be empty").into());
        }
        // Like RFC 7009: an unknown token is already "logged out", so the
        // answer is the same and reveals nothing about the token.
        if refresh_token::is_well_formed(&presented) {
            self.store
                .revoke_session_by_token(&refresh_token::hash(&presented), self.clock.now())
                .await?;
        }
        Ok(pb::LogoutResponse {})
    }

    async fn current_user(
        &self,
        request: Request<pb::GetCurrentUserRequest>,
    ) -> Result<pb::GetCurrentUserResponse, AuthError> {
        let (identity, _) = self.authenticate(request.metadata()).await?;
        let credentials = self
            .store
            .user_by_id(identity.user_id)
            .await?
            .ok_or(AuthError::Unauthenticated(SESSION_ENDED))?;
        Ok(pb::GetCurrentUserResponse {
            user: Some(user_message(&credentials.user)),
        })
    }

    async fn list_sessions(
        &self,
        request: Request<pb::ListSessionsRequest>,
    ) -> Result<pb::ListSessionsResponse, AuthError> {
        let (identity, _) = self.authenticate(request.metadata()).await?;
        let sessions = self
            .store
            .list_sessions(identity.user_id, self.clock.now())
            .await?;
        Ok(pb::ListSessionsResponse {
            sessions: sessions
                .iter()
                .map(|session| session_message(session, identity.session_id))
                .collect(),
        })
    }

    async fn revoke_session(
        &self,
        request: Request<pb::RevokeSessionRequest>,
    ) -> Result<pb::RevokeSessionResponse, AuthError> {
        let (identity, _) = self.authenticate(request.metadata()).await?;
        let raw = request.into_inner().session_id;
        let raw = raw.trim();
        if raw.is_empty() {
            return Err(Violation::new("session_id", "is required").into());
        }
        // A value that is not a UUID names no session: it answers like any
        // session that is not the caller's.
        let Ok(session_id) = Uuid::parse_str(raw) else {
            tracing::info!(user_id = %identity.user_id, "revocation of a malformed session id");
            return Err(AuthError::NotFound);
        };
        if !self
            .store
            .revoke_session(identity.user_id, session_id, self.clock.now())
            .await?
        {
            tracing::warn!(user_id = %identity.user_id, %session_id, "revocation of a session that is not the caller's");
            return Err(AuthError::NotFound);
        }
        tracing::info!(user_id = %identity.user_id, %session_id, "session revoked");
        Ok(pb::RevokeSessionResponse {})
    }

    async fn change_password(
        &self,
        request: Request<pb::ChangePasswordRequest>,
    ) -> Result<pb::ChangePasswordResponse, AuthError> {
        let (identity, _) = self.authenticate(request.metadata()).await?;
        let address = self.address_key(&request);
        let request = request.into_inner();
        let (current, new) = both(
            Password::offered("current_password", &request.current_password),
            Password::new_password("new_password", &request.new_password),
        )?;
        let now = self.clock.now();
        let credentials = self
            .store
            .user_by_id(identity.user_id)
            .await?
            .ok_or(AuthError::Unauthenticated(SESSION_ENDED))?;
        // A stolen access token must not become a password oracle.
        self.count_attempt(&credentials.user.email, &address, now)
            .await?;
        if !self
            .hasher
            .verify(&current, &credentials.password_hash)
            .await?
        {
            tracing::warn!(user_id = %identity.user_id, "password change with a wrong current password");
            return Err(AuthError::Unauthenticated("current_password is incorrect"));
        }
        self.store
            .record_sign_in_success(&credentials.user.email, &address, now)
            .await?;
        let password_hash = self.hasher.hash(&new).await?;
        let next = RefreshToken::generate();
        let session = self
            .store
            .change_password(
                identity.user_id,
                identity.session_id,
                &password_hash,
                &next.hash,
                now,
                self.policy.refresh_token_ttl,
            )
            .await?
            .ok_or(AuthError::Unauthenticated(SESSION_ENDED))?;
        tracing::info!(user_id = %identity.user_id, "password changed; other sessions revoked");
        Ok(pb::ChangePasswordResponse {
            tokens: Some(self.token_pair(&session, &next, now)?),
        })
    }
}

#[tonic::async_trait]
impl AuthService for AuthApi {
    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        Ok(Response::new(AuthApi::register(self, request).await?))
    }

    async fn login(
        &self,
        request: Request<pb::LoginRequest>,
    ) -> Result<Response<pb::LoginResponse>, Status> {
        Ok(Response::new(AuthApi::login(self, request).await?))
    }

    async fn refresh(
        &self,
        request: Request<pb::RefreshRequest>,
    ) -> Result<Response<pb::RefreshResponse>, Status> {
        Ok(Response::new(AuthApi::refresh(self, request).await?))
    }

    async fn logout(
        &self,
        request: Request<pb::LogoutRequest>,
    ) -> Result<Response<pb::LogoutResponse>, Status> {
        Ok(Response::new(AuthApi::logout(self, request).await?))
    }

    async fn get_current_user(
        &self,
        request: Request<pb::GetCurrentUserRequest>,
    ) -> Result<Response<pb::GetCurrentUserResponse>, Status> {
        Ok(Response::new(self.current_user(request).await?))
    }

    async fn list_sessions(
        &self,
        request: Request<pb::ListSessionsRequest>,
    ) -> Result<Response<pb::ListSessionsResponse>, Status> {
        Ok(Response::new(AuthApi::list_sessions(self, request).await?))
    }

    async fn revoke_session(
        &self,
        request: Request<pb::RevokeSessionRequest>,
    ) -> Result<Response<pb::RevokeSessionResponse>, Status> {
        Ok(Response::new(AuthApi::revoke_session(self, request).await?))
    }

    async fn change_password(
        &self,
        request: Request<pb::ChangePasswordRequest>,
    ) -> Result<Response<pb::ChangePasswordResponse>, Status> {
        Ok(Response::new(
            AuthApi::change_password(self, request).await?,
        ))
    }

    async fn get_jwks(
        &self,
        _request: Request<pb::GetJwksRequest>,
    ) -> Result<Response<pb::GetJwksResponse>, Status> {
        Ok(Response::new(pb::GetJwksResponse {
            jwks_json: self.keyring.jwks_json().to_string(),
        }))
    }

    async fn request_email_verification(
        &self,
        request: Request<pb::RequestEmailVerificationRequest>,
    ) -> Result<Response<pb::RequestEmailVerificationResponse>, Status> {
        Ok(Response::new(
            AuthApi::request_email_verification(self, request).await?,
        ))
    }

    async fn verify_email(
        &self,
        request: Request<pb::VerifyEmailRequest>,
    ) -> Result<Response<pb::VerifyEmailResponse>, Status> {
        Ok(Response::new(AuthApi::verify_email(self, request).await?))
    }

    async fn request_password_reset(
        &self,
        request: Request<pb::RequestPasswordResetRequest>,
    ) -> Result<Response<pb::RequestPasswordResetResponse>, Status> {
        Ok(Response::new(
            AuthApi::request_password_reset(self, request).await?,
        ))
    }

    async fn reset_password(
        &self,
        request: Request<pb::ResetPasswordRequest>,
    ) -> Result<Response<pb::ResetPasswordResponse>, Status> {
        Ok(Response::new(AuthApi::reset_password(self, request).await?))
    }

    async fn delete_account(
        &self,
        request: Request<pb::DeleteAccountRequest>,
    ) -> Result<Response<pb::DeleteAccountResponse>, Status> {
        Ok(Response::new(AuthApi::delete_account(self, request).await?))
    }
}
