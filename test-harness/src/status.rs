//! What a refused call says: its code, the fields a `BadRequest` detail
//! names (CONTRACT.md: every `INVALID_ARGUMENT` names its fields), and the
//! delay a `RESOURCE_EXHAUSTED`'s `RetryInfo` asks for.

use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::StatusExt;

/// The status code of a call that must fail; panics if it succeeded.
pub fn code<T: std::fmt::Debug>(result: Result<T, Status>) -> Code {
    result.expect_err("the call should have failed").code()
}

/// The field names of an `INVALID_ARGUMENT`'s `BadRequest` detail; panics
/// if the status is another code or has no such detail.
pub fn bad_fields(status: &Status) -> Vec<String> {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    status
        .get_error_details()
        .bad_request()
        .expect("a BadRequest detail")
        .field_violations
        .iter()
        .map(|violation| violation.field.clone())
        .collect()
}

/// The delay of a `RESOURCE_EXHAUSTED`'s `RetryInfo` detail; panics if the
/// status is another code or has no such detail.
pub fn retry_delay(status: &Status) -> Duration {
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    status
        .get_error_details()
        .retry_info()
        .and_then(|info| info.retry_delay)
        .expect("a RetryInfo detail")
}
