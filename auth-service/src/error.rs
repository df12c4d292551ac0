//! The one error type of the auth-service, and its mapping to gRPC statuses.
//!
//! Client mistakes map to precise codes. Everything else (a database that
//! is down, a bug) is logged here with the request's span and answered with
//! a fixed message, so no SQL, path, hash or token ever reaches a client.

use std::time::Duration;

use serving::status::{self, Violation};
use tonic::Status;

use crate::{keyring::KeyringError, password::HashError, store::StoreError};

/// The message of every failed sign-in, whether the email is unknown or the
/// password wrong: one message, so the answer reveals nothing.
pub const BAD_CREDENTIALS: &str = "invalid email or password";

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("invalid request")]
    Invalid(Vec<Violation>),
    #[error("email already registered")]
    EmailTaken,
    #[error("bad credentials")]
    BadCredentials,
    #[error("unauthenticated: {0}")]
    Unauthenticated(&'static str),
    #[error("not found")]
    NotFound,
    #[error("throttled")]
    Throttled {
        message: &'static str,
        retry_after: Duration,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Hash(#[from] HashError),
    #[error(transparent)]
    Keys(#[from] KeyringError),
    #[error("could not sign a token")]
    Sign(#[from] access_token::KeyError),
    #[error("could not compose a mail: {0}")]
    Mail(String),
}

impl From<serving::status::Invalid> for AuthError {
    fn from(invalid: serving::status::Invalid) -> Self {
        Self::Invalid(invalid.0)
    }
}

impl From<Violation> for AuthError {
    fn from(violation: Violation) -> Self {
        Self::Invalid(vec![violation])
    }
}

impl From<AuthError> for Status {
    fn from(error: AuthError) -> Self {
        match error {
            AuthError::Invalid(violations) => status::invalid_argument(&violations),
            AuthError::EmailTaken => {
                Status::already_exists("an account with this email already exists")
            }
            AuthError::BadCredentials => Status::unauthenticated(BAD_CREDENTIALS),
            AuthError::Unauthenticated(message) => Status::unauthenticated(message),
            AuthError::NotFound => Status::not_found("session not found"),
            AuthError::Throttled {
                message,
                retry_after,
            } => status::resource_exhausted(message, retry_after),
            AuthError::Store(StoreError::Unavailable(cause)) => status::unavailable(&cause),
            AuthError::Store(StoreError::Timeout(cause)) => status::timed_out(&cause),
            AuthError::Store(StoreError::Conflict) => {
                Status::aborted("conflicting concurrent change; retry")
            }
            other => status::internal(&other),
        }
    }
}
