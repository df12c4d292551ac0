//! Properties of the parsers that read a client's bytes before anything
//! else does (the same functions the `fuzz/` targets drive, here in the
//! normal test suite): a page token and the `authorization` header. Any
//! input gives an answer, never a panic, and only a genuine token opens.

use access_token::{BearerError, bearer_token};
use proptest::prelude::*;
use task_service::{
    domain::{Cursor, ListQuery, OrderBy, SortKey},
    page_token::PageTokenKey,
};
use tonic::metadata::MetadataMap;
use uuid::Uuid;

fn key() -> PageTokenKey {
    PageTokenKey::new(b"the property tests' page-token secret")
}

fn query(completed: Option<bool>) -> ListQuery {
    ListQuery {
        completed,
        search: None,
        order: OrderBy::CreateTimeDesc,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Whatever a client sends as a page token is refused, never a panic.
    #[test]
    fn any_string_is_refused_as_a_page_token(token in ".{0,300}", owner in any::<u128>()) {
        prop_assert!(key().open(&token, Uuid::from_u128(owner), &query(None)).is_err());
    }

    /// A genuine token opens for its owner and query only, to the cursor
    /// it was issued for; a changed character is refused.
    #[test]
    fn a_token_opens_only_as_issued(
        owner in any::<u128>(),
        other in any::<u128>(),
        at in any::<i64>(),
        id in any::<u128>(),
        flip in any::<prop::sample::Index>(),
    ) {
        prop_assume!(owner != other);
        let (owner, other) = (Uuid::from_u128(owner), Uuid::from_u128(other));
        let cursor = Cursor { key: SortKey::Int(at), id: Uuid::from_u128(id) };
        let key = key();
        let token = key.issue(owner, &query(None), &cursor);
        prop_assert_eq!(key.open(&token, owner, &query(None)).ok(), Some(cursor.clone()));
        prop_assert!(key.open(&token, other, &query(None)).is_err());
        prop_assert!(key.open(&token, owner, &query(Some(true))).is_err());
        let mut changed: Vec<char> = token.chars().collect();
        let index = flip.index(changed.len());
        changed[index] = if changed[index] == 'A' { 'B' } else { 'A' };
        let changed: String = changed.into_iter().collect();
        prop_assert!(key.open(&changed, owner, &query(None)).is_err());
    }

    /// Any `authorization` value gives a token or one of the three errors;
    /// a token comes back exactly as sent after `Bearer `.
    #[test]
    fn any_authorization_value_is_parsed_without_panic(value in "[ -~]{0,200}") {
        let mut metadata = MetadataMap::new();
        if let Ok(parsed) = value.parse() {
            metadata.insert("authorization", parsed);
            match bearer_token(&metadata) {
                Ok(token) => {
                    prop_assert!(!token.is_empty());
                    prop_assert!(value.to_ascii_lowercase().starts_with("bearer "));
                    prop_assert_eq!(token, value[7..].trim());
                }
                Err(error) => prop_assert_eq!(error, BearerError::Malformed),
            }
        }
    }
}
