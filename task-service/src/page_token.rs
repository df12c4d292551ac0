//! Opaque, sealed `ListTasks` page tokens.
//!
//! A page token is the keyset cursor (the sort key and id of the last task
//! returned), sealed with AES-256-GCM: encrypted, so it reveals nothing
//! (not even a title, when the order is by title: checklist K3), and
//! authenticated together with what it is bound to: the caller's user id,
//! the `completed` filter, the `query` and the `order_by`. The binding is
//! not carried in the token, it is the associated data recomputed from the
//! request that presents it, so a token replayed by another user, with
//! other filters, or with a single byte changed does not open and is
//! `INVALID_ARGUMENT`. A token is `base64url(nonce || ciphertext || tag)`.
//!
//! The key is a random secret that the first replica stores in the tasks
//! database (see the stores' `page_token_secret`), so every replica shares
//! it with no configuration and tokens survive restarts.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serving::status::Violation;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::domain::{Cursor, ListQuery};

/// The field named in the violation of a bad token.
const FIELD: &str = "page_token";

/// Longest page token accepted; the tokens this service issues are far
/// shorter (a cursor holds at most a 200-character title).
pub const MAX_PAGE_TOKEN_BYTES: usize = 4096;

/// The sealing key. No `Debug`: it is a secret.
pub struct PageTokenKey {
    key: LessSafeKey,
}

impl PageTokenKey {
    /// The key derived from the stored secret (any length; SHA-256 makes it
    /// the 32 bytes AES-256 takes).
    pub fn new(secret: &[u8]) -> Self {
        let bytes: [u8; 32] = Sha256::digest(secret).into();
        let key = UnboundKey::new(&AES_256_GCM, &bytes).expect("32 bytes is an AES-256 key");
        Self {
            key: LessSafeKey::new(key),
        }
    }

    /// What a token is bound to: it opens only for the same owner and query.
    fn binding(owner: Uuid, query: &ListQuery) -> Vec<u8> {
        serde_json::to_vec(&(
            "tasks.v1.ListTasks/2",
            owner,
            query.completed,
            query.search.as_ref().map(super::domain::SearchText::as_str),
            query.order,
        ))
        .expect("plain values always serialise")
    }

    /// The token continuing after `cursor` for this owner and query.
    pub fn issue(&self, owner: Uuid, query: &ListQuery, cursor: &Cursor) -> String {
        let mut sealed = serde_json::to_vec(cursor).expect("a cursor always serialises");
        let nonce: [u8; NONCE_LEN] = rand::random();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(Self::binding(owner, query)),
                &mut sealed,
            )
            .expect("sealing a short cursor cannot fail");
        let mut token = nonce.to_vec();
        token.extend_from_slice(&sealed);
        URL_SAFE_NO_PAD.encode(token)
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
        let mut bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
        if bytes.len() < NONCE_LEN {
            return Err(invalid());
        }
        let mut sealed = bytes.split_off(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(&bytes).map_err(|_| invalid())?;
        let cursor = self
            .key
            .open_in_place(nonce, Aad::from(Self::binding(owner, query)), &mut sealed)
            .map_err(|_| invalid())?;
        serde_json::from_slice(cursor).map_err(|_| invalid())
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
        let key = PageTokenKey::new(b"secret");
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
            PageTokenKey::new(b"other")
                .open(&token, owner, &query)
                .is_err()
        );
    }

    #[test]
    fn any_changed_byte_is_refused() {
        let key = PageTokenKey::new(b"secret");
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

    #[test]
    fn a_token_reveals_nothing_of_its_cursor() {
        let key = PageTokenKey::new(b"secret");
        let cursor = Cursor {
            key: SortKey::Text("my secret plans".into()),
            id: Uuid::now_v7(),
        };
        let token = key.issue(Uuid::now_v7(), &ListQuery::default(), &cursor);
        let decoded = URL_SAFE_NO_PAD.decode(&token).unwrap();
        let text = String::from_utf8_lossy(&decoded);
        assert!(!text.contains("secret"), "{text}");
        assert!(!text.contains(&cursor.id.to_string()));
        // Two tokens of one cursor differ (a fresh nonce each).
        assert_ne!(
            token,
            key.issue(Uuid::now_v7(), &ListQuery::default(), &cursor)
        );
    }
}
