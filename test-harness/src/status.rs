//! What a refused call says: its code, and the fields a `BadRequest`
//! detail names (CONTRACT.md: every `INVALID_ARGUMENT` names its fields).

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
