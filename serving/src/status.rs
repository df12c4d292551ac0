//! The statuses of the contract's error table that carry details.
//!
//! Every service answers client mistakes with precise codes and machine-
//! readable details (`google.rpc.BadRequest`, `google.rpc.RetryInfo`), and
//! bugs with an `INTERNAL` whose message is fixed: the cause is logged with
//! the request's span, never sent.
//!
//! Echo is bounded (checklist I1): a status may name what was wrong with a
//! client's value, but quotes at most [`MAX_QUOTED_CHARS`] of it, through
//! [`quote`], and a `BadRequest` lists at most [`MAX_VIOLATIONS`] fields.
//! A 60 KB field quoted whole would make a 180 KB header block, past what
//! proxies (the gateway included) accept on a connection other callers
//! share.

use std::time::Duration;

use rand::Rng as _;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

/// Most characters of a client's own text that a status or log line quotes.
pub const MAX_QUOTED_CHARS: usize = 32;

/// Most field violations one `INVALID_ARGUMENT` lists.
pub const MAX_VIOLATIONS: usize = 16;

/// A short prefix of client input, escaped, for a message or a log line:
/// at most [`MAX_QUOTED_CHARS`] characters, control characters escaped (no
/// forged log lines), and `…` when it was cut.
pub fn quote(input: &str) -> String {
    let mut quoted: String = input
        .chars()
        .take(MAX_QUOTED_CHARS)
        .flat_map(char::escape_debug)
        .collect();
    if input.chars().nth(MAX_QUOTED_CHARS).is_some() {
        quoted.push('…');
    }
    quoted
}

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

/// The violations of a request's fields, gathered so that one
/// `INVALID_ARGUMENT` names them all rather than only the first.
#[derive(Debug, Default)]
pub struct Violations(Vec<Violation>);

/// A request with at least one invalid field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid(pub Vec<Violation>);

impl Violations {
    /// The parsed value, or `None` with its violation kept.
    pub fn check<T>(&mut self, result: Result<T, Violation>) -> Option<T> {
        result.map_err(|violation| self.0.push(violation)).ok()
    }

    /// Adds a violation found otherwise.
    pub fn push(&mut self, violation: Violation) {
        self.0.push(violation);
    }

    /// `Ok` when every field was valid.
    pub fn finish(self) -> Result<(), Invalid> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(Invalid(self.0))
        }
    }
}

impl From<Violation> for Invalid {
    fn from(violation: Violation) -> Self {
        Self(vec![violation])
    }
}

impl From<Invalid> for Status {
    fn from(invalid: Invalid) -> Self {
        invalid_argument(&invalid.0)
    }
}

/// `INVALID_ARGUMENT` naming each field in a `BadRequest` detail (the
/// first [`MAX_VIOLATIONS`] of them).
pub fn invalid_argument(violations: &[Violation]) -> Status {
    let violations = &violations[..violations.len().min(MAX_VIOLATIONS)];
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

/// `RESOURCE_EXHAUSTED` for a server at one of its load bounds (calls in
/// flight), whose `RetryInfo` asks for at least `at_least` and at most
/// twice that, drawn at random to the millisecond. Unlike a rate limit's
/// delay, which is the caller's own and exact, a load refusal goes to many
/// callers at once: told the same whole second, they would all come back
/// together and be refused together again. Spread over the interval, they
/// return as the server drains.
pub fn overloaded(message: &str, at_least: Duration) -> Status {
    let millis = u64::try_from(at_least.as_millis()).unwrap_or(u64::MAX / 2);
    let retry_after =
        Duration::from_millis(rand::thread_rng().gen_range(millis..=millis.saturating_mul(2)));
    Status::with_error_details(
        Code::ResourceExhausted,
        message,
        ErrorDetails::with_retry_info(Some(retry_after)),
    )
}

/// `RESOURCE_EXHAUSTED` for a quota the caller has used up, with a
/// `google.rpc.QuotaFailure` naming it. Unlike a rate limit there is no
/// `RetryInfo`: waiting does not help, freeing some does.
pub fn quota_exceeded(subject: &str, description: &str) -> Status {
    Status::with_error_details(
        Code::ResourceExhausted,
        description,
        ErrorDetails::with_quota_failure_violation(subject, description),
    )
}

/// `DEADLINE_EXCEEDED` for a database statement stopped at its time limit;
/// the cause is logged.
pub fn timed_out(cause: &dyn std::fmt::Display) -> Status {
    tracing::warn!(error = %cause, "database statement stopped at its time limit");
    Status::deadline_exceeded("the database took too long to answer; retry later")
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
    fn quotes_are_short_and_escaped() {
        assert_eq!(quote("title"), "title");
        assert_eq!(quote("a\nb"), "a\\nb");
        let long = "x".repeat(60_000);
        let quoted = quote(&long);
        assert_eq!(quoted, format!("{}…", "x".repeat(MAX_QUOTED_CHARS)));
    }

    #[test]
    fn at_most_a_bounded_number_of_violations_is_listed() {
        let many: Vec<_> = (0..1000).map(|_| Violation::new("f", "bad")).collect();
        let status = invalid_argument(&many);
        let listed = status
            .get_error_details()
            .bad_request()
            .unwrap()
            .field_violations
            .len();
        assert_eq!(listed, MAX_VIOLATIONS);
        assert!(status.message().len() < 1024);
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

    #[test]
    fn overloaded_callers_are_told_different_times_within_the_interval() {
        let delays: std::collections::HashSet<Duration> = (0..20)
            .map(|_| {
                overloaded("busy", Duration::from_millis(500))
                    .get_error_details()
                    .retry_info()
                    .and_then(|info| info.retry_delay)
                    .expect("a RetryInfo")
            })
            .collect();
        assert!(delays.iter().all(|delay| {
            (Duration::from_millis(500)..=Duration::from_secs(1)).contains(delay)
        }));
        // 20 draws from 501 milliseconds: all alike once in ~10^51 runs.
        assert!(delays.len() > 1, "{delays:?}");
    }
}
