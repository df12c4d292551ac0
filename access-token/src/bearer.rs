//! Reading `authorization: Bearer <token>` from gRPC metadata.
//!
//! Exactly one `authorization` entry is accepted: two entries could be read
//! differently by a proxy and by us, so that ambiguity is refused outright.
//! The scheme is case-insensitive (RFC 7235); anything but `Bearer` and an
//! empty token are refused. Tokens are never taken from messages or URLs.

use tonic::metadata::MetadataMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BearerError {
    #[error("missing authorization metadata")]
    Missing,
    #[error("more than one authorization entry")]
    Duplicated,
    #[error("authorization must be `Bearer <access token>`")]
    Malformed,
}

/// The bearer token of a request, or why there is none.
pub fn bearer_token(metadata: &MetadataMap) -> Result<&str, BearerError> {
    let mut entries = metadata.get_all("authorization").iter();
    let value = entries.next().ok_or(BearerError::Missing)?;
    if entries.next().is_some() {
        return Err(BearerError::Duplicated);
    }
    let value = value.to_str().map_err(|_| BearerError::Malformed)?;
    let (scheme, token) = value.split_once(' ').ok_or(BearerError::Malformed)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(BearerError::Malformed);
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(values: &[&str]) -> MetadataMap {
        let mut map = MetadataMap::new();
        for value in values {
            map.append("authorization", value.parse().unwrap());
        }
        map
    }

    #[test]
    fn accepts_bearer_in_any_case() {
        assert_eq!(bearer_token(&metadata(&["Bearer abc"])), Ok("abc"));
        assert_eq!(bearer_token(&metadata(&["bearer abc"])), Ok("abc"));
        assert_eq!(bearer_token(&metadata(&["BEARER abc"])), Ok("abc"));
    }

    #[test]
    fn refuses_everything_else() {
        assert_eq!(bearer_token(&metadata(&[])), Err(BearerError::Missing));
        assert_eq!(
            bearer_token(&metadata(&["Bearer a", "Bearer b"])),
            Err(BearerError::Duplicated)
        );
        for bad in [
            "Basic dXNlcjpwYXNz",
            "Bearer ",
            "Bearer",
            "abc",
            "Token abc",
        ] {
            assert_eq!(
                bearer_token(&metadata(&[bad])),
                Err(BearerError::Malformed),
                "{bad}"
            );
        }
    }
}
