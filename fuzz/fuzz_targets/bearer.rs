//! `authorization` metadata: `access_token::bearer_token` over any values a
//! client can send (every byte string that is a valid header value, one or
//! several entries).
//!
//! Beyond never panicking, the answer must follow the contract of
//! `bearer.rs`: no entry is `Missing`, two or more are `Duplicated`, and a
//! token is returned only from a single `Bearer <token>` entry (scheme in
//! any case), non-empty and trimmed; every single value of that shape
//! yields its token.

#![no_main]

use access_token::{BearerError, bearer_token};
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use tonic::metadata::MetadataMap;

/// More entries than this tell nothing new.
const MAX_ENTRIES: usize = 4;

fuzz_target!(|values: Vec<Vec<u8>>| {
    let mut headers = HeaderMap::new();
    for value in values.iter().take(MAX_ENTRIES) {
        if let Ok(value) = HeaderValue::from_bytes(value) {
            headers.append(http::header::AUTHORIZATION, value);
        }
    }
    let entries: Vec<HeaderValue> = headers
        .get_all(http::header::AUTHORIZATION)
        .iter()
        .cloned()
        .collect();
    let metadata = MetadataMap::from_headers(headers);
    let answer = bearer_token(&metadata);

    match entries.as_slice() {
        [] => assert_eq!(answer, Err(BearerError::Missing)),
        [value] => {
            let expected = expected_token(value);
            assert_eq!(answer.ok(), expected, "{value:?}");
            if let Some(token) = expected {
                assert!(!token.is_empty() && token == token.trim());
            } else {
                assert_eq!(answer, Err(BearerError::Malformed));
            }
        }
        _ => assert_eq!(answer, Err(BearerError::Duplicated)),
    }
});

/// The token of a single `authorization` value, written from the contract
/// rather than from the code: visible ASCII, the scheme `Bearer` in any
/// case, one space, then the token with surrounding whitespace dropped.
fn expected_token(value: &HeaderValue) -> Option<&str> {
    let text = value.to_str().ok()?;
    let space = text.find(' ')?;
    let (scheme, rest) = (&text[..space], &text[space + 1..]);
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = rest.trim();
    (!token.is_empty()).then_some(token)
}
