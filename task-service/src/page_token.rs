//! Opaque, tamper-evident `ListTasks` page tokens.
//!
//! A page token is the keyset cursor (the sort key and id of the last task
//! returned) followed by an HMAC-SHA256 over the cursor *and* what it is
//! bound to: the caller's user id, the `completed` filter, the `query` and
//! the `order_by`. The binding is not carried in the token, it is recomputed
//! from the request that presents it, so a token replayed by another user,
//! with other filters, or with a single byte changed fails the MAC and is
//! `INVALID_ARGUMENT`.
//!
//! The key is a random secret that the first replica stores in the tasks
//! database (see the stores' `page_token_secret`), so every replica shares
//! it with no configuration and tokens survive restarts.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use serving::status::Violation;
use sha2::Sha256;
use uuid::Uuid;

use crate::domain::{Cursor, ListQuery};

type HmacSha256 = Hmac<Sha256>;

/// The field named in the violation of a bad token.
const FIELD: &str = "page_token";

/// Longest page token accepted; the tokens this service issues are far
/// shorter (a cursor holds at most a 200-character title).
pub const MAX_PAGE_TOKEN_BYTES: usize = 4096;

/// The MAC key. No `Debug`: it is a secret.
#[derive(Clone)]
pub struct PageTokenKey {
    secret: Vec<u8>,
}

impl PageTokenKey {
    pub fn new(secret: Vec<u8>) -> Self {
        Self { secret }
    }

    fn mac(&self, owner: Uuid, query: &ListQuery, cursor_json: &[u8]) -> HmacSha256 {
        let mut mac =
            HmacSha256::new_from_slice(&self.secret).expect("HMAC accepts keys of any length");
        let binding = serde_json::to_vec(&(
            "tasks.v1.ListTasks/1",
            owner,
            query.completed,
            query.search.as_ref().map(|search| search.as_str()),
            query.order,
        ))
        .expect("plain values always serialise");
        // Length-prefix the binding so its bytes cannot run into the cursor's.
        mac.update(&(binding.len() as u64).to_be_bytes());
        mac.update(&binding);
        mac.update(cursor_json);
        mac
    }

    /// The token continuing after `cursor` for this owner and query.
    pub fn issue(&self, owner: Uuid, query: &ListQuery, cursor: &Cursor) -> String {
        let cursor_json = serde_json::to_vec(cursor).expect("a cursor always serialises");
        let tag = self.mac(owner, query, &cursor_json).finalize().into_bytes();
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(&cursor_json),
            URL_SAFE_NO_PAD.encode(tag)
        )
    }

    /// The cursor of `token`, if this service issued it for exactly this
    /// owner and query.
    pub fn open(&self, token: &str, owner: Uuid, query: &ListQuery) -> Result<Cursor, Violation> {
        let invalid = || {
            Violation::new(
                FIELD,
                "is not a page token of this query; start again without it",
            )
        };
        if token.len() > MAX_PAGE_TOKEN_BYTES {
            return Err(invalid());
        }
        let (cursor_b64, tag_b64) = token.split_once('.').ok_or_else(invalid)?;
        let cursor_json = URL_SAFE_NO_PAD.decode(cursor_b64).map_err(|_| invalid())?;
        let tag = URL_SAFE_NO_PAD.decode(tag_b64).map_err(|_| invalid())?;
        // Constant-time comparison.
        self.mac(owner, query, &cursor_json)
            .verify_slice(&tag)
            .map_err(|_| invalid())?;
        serde_json::from_slice(&cursor_json).map_err(|_| invalid())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{OrderBy, SearchText, SortKey};

    fn cursor() -> Cursor {
        Cursor {
            key: SortKey::Int(42),
            id: Uuid::now_v7(),
        }
    }

    #[test]
    fn a_token_opens_only_for_its_owner_and_query() {
        let key = PageTokenKey::new(b"secret".to_vec());
        let owner = Uuid::now_v7();
        let query = ListQuery::default();
        let token = key.issue(owner, &query, &cursor());
        assert!(key.open(&token, owner, &query).is_ok());
        assert!(key.open(&token, Uuid::now_v7(), &query).is_err());
        let other_order = ListQuery {
            order: OrderBy::Title,
            ..ListQuery::default()
        };
        assert!(key.open(&token, owner, &other_order).is_err());
        let other_filter = ListQuery {
            completed: Some(false),
            ..ListQuery::default()
        };
        assert!(key.open(&token, owner, &other_filter).is_err());
        let other_search = ListQuery {
            search: SearchText::parse("query", "x").unwrap(),
            ..ListQuery::default()
        };
        assert!(key.open(&token, owner, &other_search).is_err());
        assert!(
            PageTokenKey::new(b"other".to_vec())
                .open(&token, owner, &query)
                .is_err()
        );
    }

    #[test]
    fn any_changed_byte_is_refused() {
        let key = PageTokenKey::new(b"secret".to_vec());
        let owner = Uuid::now_v7();
        let query = ListQuery::default();
        let token = key.issue(owner, &query, &cursor());
        for i in 0..token.len() {
            let mut bytes = token.clone().into_bytes();
            bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
            let tampered = String::from_utf8(bytes).unwrap();
            if tampered != token {
                assert!(key.open(&tampered, owner, &query).is_err(), "byte {i}");
            }
        }
        assert!(key.open("", owner, &query).is_err());
        assert!(key.open("garbage", owner, &query).is_err());
    }
}
