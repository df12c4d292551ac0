//! `ListTasks` page tokens: `PageTokenKey::open` over any string a client
//! can put in `page_token`, for any owner and query.
//!
//! Opening must never panic, whatever the token (bad base64, short, long,
//! sealed for someone else). Beside that, the sealing contract is checked
//! as a round trip on a cursor the fuzzer chooses: a token issued for an
//! owner and a query opens to that cursor for exactly that owner and query,
//! is refused for another owner or another query, and is refused once any
//! one of its characters is changed.
//!
//! Nothing is asserted about the arbitrary token beyond not panicking: the
//! fuzzer sees the strings the target compares, so it may replay a token
//! this same key issued, which then rightly opens.

#![no_main]

use std::sync::LazyLock;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use task_service::{
    domain::{Cursor, ListQuery, MAX_TITLE_CHARS, OrderBy, SearchText, SortKey},
    page_token::PageTokenKey,
};
use uuid::Uuid;

/// One key for the whole run, as one service holds one.
static KEY: LazyLock<PageTokenKey> =
    LazyLock::new(|| PageTokenKey::new(b"the fuzz target's page-token secret"));

#[derive(Arbitrary, Debug)]
struct Input {
    token: String,
    owner: [u8; 16],
    other_owner: [u8; 16],
    query: Query,
    other_query: Query,
    cursor: FuzzCursor,
    tamper_at: usize,
    tamper_with: char,
}

#[derive(Arbitrary, Debug)]
struct Query {
    completed: Option<bool>,
    search: String,
    order: u8,
}

impl Query {
    /// The query as the service would have parsed it from a request: a
    /// search text too long for the contract is simply left out.
    fn list_query(&self) -> ListQuery {
        const ORDERS: [OrderBy; 5] = [
            OrderBy::CreateTimeDesc,
            OrderBy::CreateTime,
            OrderBy::DueTime,
            OrderBy::PriorityDesc,
            OrderBy::Title,
        ];
        ListQuery {
            completed: self.completed,
            search: SearchText::parse("query", &self.search).ok().flatten(),
            order: ORDERS[usize::from(self.order) % ORDERS.len()],
        }
    }
}

#[derive(Arbitrary, Debug)]
enum FuzzCursor {
    Int(i64, [u8; 16]),
    Text(String, [u8; 16]),
}

impl FuzzCursor {
    /// A cursor the service could issue: a text key is a task title, so at
    /// most `MAX_TITLE_CHARS` characters.
    fn cursor(&self) -> Cursor {
        match self {
            Self::Int(key, id) => Cursor {
                key: SortKey::Int(*key),
                id: Uuid::from_bytes(*id),
            },
            Self::Text(title, id) => Cursor {
                key: SortKey::Text(title.chars().take(MAX_TITLE_CHARS).collect()),
                id: Uuid::from_bytes(*id),
            },
        }
    }
}

fuzz_target!(|input: Input| {
    let owner = Uuid::from_bytes(input.owner);
    let query = input.query.list_query();

    // Whatever a client sends: an answer, never a panic.
    let _ = KEY.open(&input.token, owner, &query);

    // A token this key issued opens for its owner and query only.
    let cursor = input.cursor.cursor();
    let token = KEY.issue(owner, &query, &cursor);
    assert_eq!(KEY.open(&token, owner, &query).as_ref(), Ok(&cursor));

    let other_owner = Uuid::from_bytes(input.other_owner);
    if other_owner != owner {
        assert!(KEY.open(&token, other_owner, &query).is_err());
    }
    let other_query = input.other_query.list_query();
    if other_query != query {
        assert!(KEY.open(&token, owner, &other_query).is_err());
    }

    // One changed character and it is refused (base64 decoding is
    // canonical, so a different string is never the same sealed bytes).
    let mut chars: Vec<char> = token.chars().collect();
    let at = input.tamper_at % chars.len();
    if chars[at] != input.tamper_with {
        chars[at] = input.tamper_with;
        let tampered: String = chars.into_iter().collect();
        assert!(KEY.open(&tampered, owner, &query).is_err());
    }
});
