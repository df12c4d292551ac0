//! The statuses of the contract's error table that carry details.
//!
//! Every service answers client mistakes with precise codes and machine-
//! readable details (`google.rpc.BadRequest`, `google.rpc.RetryInfo`), and
//! bugs with an `INTERNAL` whose message is fixed: the cause is logged with
//! the request's span, never sent.

use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

/// One field that failed validation, and why (in words safe to show a user).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub field: &'static str,
    pub description: String,
}

impl Violation {
    pub fn new(field: &'static str, description: impl Into<String>) -> Self {
        Self {
            field,
            description: description.into(),
        }
    }
}

/// `INVALID_ARGUMENT` naming each field in a `BadRequest` detail.
pub fn invalid_argument(violations: &[Violation]) -> Status {
    let message = violations
        .iter()
        .map(|v| format!("{}: {}", v.field, v.description))
        .collect::<Vec<_>>()
        .join("; ");
    let details = ErrorDetails::with_bad_request(
        violations
            .iter()
            .map(|v| FieldViolation::new(v.field, v.description.clone()))
            .collect::<Vec<_>>(),
    );
    Status::with_error_details(Code::InvalidArgument, message, details)
}

/// `RESOURCE_EXHAUSTED` telling the client when to retry.
pub fn resource_exhausted(message: &str, retry_after: Duration) -> Status {
    // Round up: retrying a little late is fine, early is another refusal.
    let retry_after =
        Duration::from_secs(retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0));
    Status::with_error_details(
        Code::ResourceExhausted,
        message,
        ErrorDetails::with_retry_info(Some(retry_after)),
    )
}

/// `UNAVAILABLE` for a dependency that is down; the cause is logged.
pub fn unavailable(cause: &dyn std::fmt::Display) -> Status {
    tracing::warn!(error = %cause, "dependency unavailable");
    Status::unavailable("the service is temporarily unavailable; retry later")
}

/// `INTERNAL` for a bug; the cause is logged, the message reveals nothing.
pub fn internal(cause: &dyn std::fmt::Display) -> Status {
    tracing::error!(error = %cause, "internal error");
    Status::internal("internal error")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_argument_names_each_field() {
        let status = invalid_argument(&[
            Violation::new("email", "is empty"),
            Violation::new("password", "too short"),
        ]);
        assert_eq!(status.code(), Code::InvalidArgument);
        let details = status.get_error_details();
        let fields: Vec<_> = details
            .bad_request()
            .unwrap()
            .field_violations
            .iter()
            .map(|v| v.field.clone())
            .collect();
        assert_eq!(fields, ["email", "password"]);
    }

    #[test]
    fn resource_exhausted_rounds_retry_up() {
        let status = resource_exhausted("slow down", Duration::from_millis(1500));
        let retry = status
            .get_error_details()
            .retry_info()
            .unwrap()
            .retry_delay
            .unwrap();
        assert_eq!(retry, Duration::from_secs(2));
    }
}
