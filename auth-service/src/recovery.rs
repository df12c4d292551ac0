//! Account recovery and verification: the RPCs that work through a mailed
//! link (`RequestEmailVerification`/`VerifyEmail`,
//! `RequestPasswordReset`/`ResetPassword`), and `DeleteAccount`.
//!
//! The decisions a reader must know:
//!
//! - **Tokens** are 256 random bits, like refresh tokens, stored only as
//!   SHA-256, single use (spending one deletes it), valid 24 hours
//!   (verification) or 30 minutes (reset). A new request supersedes the
//!   older tokens of its kind; a reset or a password change voids every
//!   reset token. Any token that is not live answers `UNAUTHENTICATED`.
//! - **No enumeration.** `RequestPasswordReset` answers the same, in the
//!   same time, for a known and an unknown email: both pay the throttle's
//!   one write and nothing else before the answer; looking the account up
//!   and queueing its mail happen after it, in a task of their own. The
//!   throttle counts per email whether or not an account has it.
//! - **Throttled** per client address (the limiter of every public RPC)
//!   and per email: [`MAIL_REQUESTS_PER_WINDOW`] per [`MAIL_WINDOW`].

use std::{sync::Arc, time::Duration};

use chrono::TimeDelta;
use todo_proto::auth::v1 as pb;
use tokio::sync::Notify;
use tonic::Request;
use uuid::Uuid;

use crate::{
    domain::{Email, Password},
    error::AuthError,
    key_encryption::KeyEncryption,
    mail::Mailer,
    refresh_token::{self, RefreshToken},
    service::{AuthApi, SESSION_ENDED, user_message},
    store::{AuthStore, MailTokenKind},
};

/// A verification link's lifetime.
pub const VERIFICATION_TTL: TimeDelta = TimeDelta::hours(24);
/// A reset link's lifetime.
pub const RESET_TTL: TimeDelta = TimeDelta::minutes(30);
/// Mails of one kind one email may be sent per window.
pub const MAIL_REQUESTS_PER_WINDOW: i64 = 3;
pub const MAIL_WINDOW: TimeDelta = TimeDelta::minutes(15);

const INVALID_LINK: &str = "this link is invalid, used or expired; ask for a new one";

/// What the mail RPCs need beside the rest of [`AuthApi`].
#[derive(Clone)]
pub struct Mail {
    pub mailer: Mailer,
    /// Wakes the delivery worker when a mail is queued.
    pub queued: Arc<Notify>,
    /// Seals queued mails: they hold live links.
    pub keks: Arc<dyn KeyEncryption>,
}

fn scope(kind: MailTokenKind) -> &'static str {
    match kind {
        MailTokenKind::VerifyEmail => "mail:verify-email",
        MailTokenKind::ResetPassword => "mail:reset-password",
    }
}

impl AuthApi {
    /// Counts a mail request for `email` and refuses it past the window.
    async fn throttle_mail(&self, email: &str, kind: MailTokenKind) -> Result<(), AuthError> {
        let now = self.clock.now();
        let window = self
            .store
            .count_request(email, scope(kind), now, MAIL_WINDOW)
            .await?;
        if window.attempts > MAIL_REQUESTS_PER_WINDOW {
            let retry_after = (window.window_start + MAIL_WINDOW - now)
                .to_std()
                .unwrap_or(Duration::from_secs(1));
            serving::metrics::metrics().refused("auth-service", "mail_requests");
            tracing::warn!(email, ?kind, "mail requests throttled for this email");
            return Err(AuthError::Throttled {
                message: "too many mails asked for this address; retry later",
                retry_after,
            });
        }
        Ok(())
    }

    pub(crate) async fn request_email_verification(
        &self,
        request: Request<pb::RequestEmailVerificationRequest>,
    ) -> Result<pb::RequestEmailVerificationResponse, AuthError> {
        let (identity, _) = self.authenticate(request.metadata()).await?;
        let credentials = self
            .store
            .user_by_id(identity.user_id)
            .await?
            .ok_or(AuthError::Unauthenticated(SESSION_ENDED))?;
        let user = credentials.user;
        if user.email_verified {
            return Ok(pb::RequestEmailVerificationResponse {});
        }
        self.throttle_mail(&user.email, MailTokenKind::VerifyEmail)
            .await?;
        queue(
            self.store.as_ref(),
            &self.mail,
            MailTokenKind::VerifyEmail,
            user.id,
            &user.email,
            &user.display_name,
            self.clock.now(),
        )
        .await?;
        Ok(pb::RequestEmailVerificationResponse {})
    }

    pub(crate) async fn verify_email(
        &self,
        request: Request<pb::VerifyEmailRequest>,
    ) -> Result<pb::VerifyEmailResponse, AuthError> {
        self.check_address(&request)?;
        let token = request.into_inner().token;
        if !refresh_token::is_well_formed(&token) {
            return Err(AuthError::Unauthenticated(INVALID_LINK));
        }
        let user = self
            .store
            .verify_email(&refresh_token::hash(&token), self.clock.now())
            .await?
            .ok_or(AuthError::Unauthenticated(INVALID_LINK))?;
        tracing::info!(user_id = %user.id, "email address verified");
        Ok(pb::VerifyEmailResponse {
            user: Some(user_message(&user)),
        })
    }

    pub(crate) async fn request_password_reset(
        &self,
        request: Request<pb::RequestPasswordResetRequest>,
    ) -> Result<pb::RequestPasswordResetResponse, AuthError> {
        self.check_address(&request)?;
        let email = Email::parse("email", &request.into_inner().email)?;
        self.throttle_mail(email.as_str(), MailTokenKind::ResetPassword)
            .await?;
        // The same answer, at the same moment, whether the account exists:
        // finding it and queueing its mail happen after the answer.
        let (store, mail, now) = (self.store.clone(), self.mail.clone(), self.clock.now());
        tokio::spawn(async move {
            let outcome = async {
                let Some(credentials) = store.user_by_email(email.as_str()).await? else {
                    return Ok::<_, AuthError>(());
                };
                let user = credentials.user;
                queue(
                    store.as_ref(),
                    &mail,
                    MailTokenKind::ResetPassword,
                    user.id,
                    &user.email,
                    &user.display_name,
                    now,
                )
                .await
            };
            if let Err(error) = outcome.await {
                tracing::error!(%error, "cannot queue a password reset mail");
            }
        });
        Ok(pb::RequestPasswordResetResponse {})
    }

    pub(crate) async fn reset_password(
        &self,
        request: Request<pb::ResetPasswordRequest>,
    ) -> Result<pb::ResetPasswordResponse, AuthError> {
        self.check_address(&request)?;
        let request = request.into_inner();
        let password = Password::new_password("new_password", &request.new_password)?;
        if !refresh_token::is_well_formed(&request.token) {
            return Err(AuthError::Unauthenticated(INVALID_LINK));
        }
        let token = refresh_token::hash(&request.token);
        // A cheap look first: a dead link costs no hash.
        if !self
            .store
            .reset_token_is_live(&token, self.clock.now())
            .await?
        {
            return Err(AuthError::Unauthenticated(INVALID_LINK));
        }
        let password_hash = self.hasher.hash(&password).await?;
        let user_id = self
            .store
            .reset_password(&token, &password_hash, self.clock.now())
            .await?
            .ok_or(AuthError::Unauthenticated(INVALID_LINK))?;
        tracing::info!(%user_id, "password reset; every session ended");
        Ok(pb::ResetPasswordResponse {})
    }

    /// Deletes the caller's account after checking its password again
    /// (counted like a sign-in: a stolen access token is no oracle). Every
    /// session ends with the account, and the event the store logs makes
    /// every task-service refuse its tokens and delete its tasks.
    pub(crate) async fn delete_account(
        &self,
        request: Request<pb::DeleteAccountRequest>,
    ) -> Result<pb::DeleteAccountResponse, AuthError> {
        let (identity, _) = self.authenticate(request.metadata()).await?;
        let address = self.address_key(&request);
        let password = Password::offered("password", &request.into_inner().password)?;
        let now = self.clock.now();
        let credentials = self
            .store
            .user_by_id(identity.user_id)
            .await?
            .ok_or(AuthError::Unauthenticated(SESSION_ENDED))?;
        self.count_attempt(&credentials.user.email, &address, now)
            .await?;
        if !self
            .hasher
            .verify(&password, &credentials.password_hash)
            .await?
        {
            tracing::warn!(user_id = %identity.user_id, "account deletion with a wrong password");
            return Err(AuthError::Unauthenticated("password is incorrect"));
        }
        if !self.store.delete_account(identity.user_id, now).await? {
            return Err(AuthError::Unauthenticated(SESSION_ENDED));
        }
        tracing::info!(user_id = %identity.user_id, "account deleted");
        Ok(pb::DeleteAccountResponse {})
    }
}

/// Makes a `kind` token for the user and queues its mail, in one
/// transaction, then wakes the delivery worker.
async fn queue(
    store: &dyn AuthStore,
    mail: &Mail,
    kind: MailTokenKind,
    user_id: Uuid,
    email: &str,
    name: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), AuthError> {
    let token = RefreshToken::generate();
    let message = mail
        .mailer
        .compose(kind, email, name, token.expose(), mail.keks.as_ref())
        .map_err(|error| AuthError::Mail(error.to_string()))?;
    let ttl = match kind {
        MailTokenKind::VerifyEmail => VERIFICATION_TTL,
        MailTokenKind::ResetPassword => RESET_TTL,
    };
    store
        .issue_mail_token(user_id, kind, &token.hash, now + ttl, &message, now)
        .await?;
    mail.queued.notify_one();
    tracing::info!(%user_id, ?kind, mail = %message.id, "mail queued");
    Ok(())
}
