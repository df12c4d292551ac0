//! The one error type of the task-service, and its single conversion to a
//! gRPC status.
//!
//! Client mistakes map to precise codes with details; a database that cannot
//! be reached maps to `UNAVAILABLE`; anything else is a bug and becomes an
//! `INTERNAL` whose message is fixed. Driver and SQL text is only ever
//! logged (inside the request's span, so with its request id), never sent.

use serving::status::{self, Violation};
use tonic::Status;

/// The message of every `NOT_FOUND`: the same bytes whether the task never
/// existed or belongs to someone else, so the answer leaks nothing.
pub const NOT_FOUND_MESSAGE: &str = "task not found";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid argument: {0:?}")]
    InvalidArgument(Vec<Violation>),
    #[error("task not found")]
    NotFound,
    #[error("etag mismatch")]
    EtagMismatch,
    #[error("the owner has {limit} tasks, the most allowed")]
    QuotaExceeded { limit: i64 },
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("bug: {0}")]
    Internal(String),
}

impl Error {
    pub fn invalid(field: &'static str, description: impl Into<String>) -> Self {
        Self::InvalidArgument(vec![Violation::new(field, description)])
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        match error {
            Error::InvalidArgument(violations) => status::invalid_argument(&violations),
            Error::NotFound => Status::not_found(NOT_FOUND_MESSAGE),
            Error::EtagMismatch => {
                Status::aborted("the task changed since it was read (etag mismatch); read it again")
            }
            Error::QuotaExceeded { limit } => {
                serving::metrics::metrics().refused("task-service", "tasks_per_user");
                status::quota_exceeded(
                    "tasks",
                    &format!("at most {limit} tasks per user; delete some first"),
                )
            }
            Error::Database(cause) if serving::database::is_unavailable(&cause) => {
                status::unavailable(&cause)
            }
            Error::Database(cause) if serving::database::is_timeout(&cause) => {
                status::timed_out(&cause)
            }
            Error::Database(cause) => status::internal(&cause),
            Error::Migration(cause) => status::internal(&cause),
            Error::Internal(cause) => status::internal(&cause),
        }
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    #[test]
    fn database_errors_leak_no_driver_text() {
        let status = Status::from(Error::Database(sqlx::Error::Protocol(
            "SELECT secret FROM tasks".into(),
        )));
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("SELECT"));
        let status = Status::from(Error::Database(sqlx::Error::PoolTimedOut));
        assert_eq!(status.code(), Code::Unavailable);
        assert!(!status.message().to_lowercase().contains("pool"));
    }
}
