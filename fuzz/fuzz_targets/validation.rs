//! Request validation, the one place client values become domain types:
//! every `parse`/`parse_*` of `task_service::domain` and the `Email`,
//! `Password` and `DisplayName` of `auth_service::domain`, over arbitrary
//! strings and numbers.
//!
//! Each answers a value or a violation, never a panic. A violation names
//! the field it was given and is short (a client's text is quoted through
//! `serving::status::quote` only). A value holds what its type promises,
//! checked against the contract written out here rather than against the
//! code: a title is trimmed and 1..=200 characters, an accepted email has
//! exactly one `@` and no whitespace or control characters, a password is
//! NFC and the same whichever normal form was typed, a page size is in
//! 1..=500, a time is in years 1..=9999 and truncated to microseconds, and
//! so on. Where the contract says exactly which inputs are refused, the
//! refusals are checked too.

#![no_main]

use std::collections::BTreeSet;

use arbitrary::Arbitrary;
use auth_service::domain::{
    DISPLAY_NAME_MAX_CHARS, DisplayName, EMAIL_MAX_CHARS, Email, PASSWORD_MAX_CHARS,
    PASSWORD_MIN_CHARS, Password,
};
use libfuzzer_sys::fuzz_target;
use serving::status::{MAX_QUOTED_CHARS, Violation};
use task_service::domain::{
    self, DEFAULT_PAGE_SIZE, Description, Etag, MAX_DESCRIPTION_CHARS, MAX_MASK_PATHS,
    MAX_PAGE_SIZE, MAX_TITLE_CHARS, OrderBy, SearchText, TaskTitle, UpdatableField,
};
use unicode_normalization::UnicodeNormalization;
use uuid::Uuid;

/// Longest violation description: fixed words, and at most
/// `MAX_QUOTED_CHARS` quoted characters escaped to at most 10 each.
const MAX_DESCRIPTION_LEN: usize = 120 + 10 * MAX_QUOTED_CHARS;

/// The first and last second of years 1..=9999.
const FIRST_SECOND: i64 = -62_135_596_800;
const LAST_SECOND: i64 = 253_402_300_799;

#[derive(Arbitrary, Debug)]
struct Input {
    text: String,
    paths: Vec<String>,
    number: i32,
    seconds: i64,
    nanos: i32,
}

fuzz_target!(|input: Input| {
    let text = input.text.as_str();
    task_values(text, input.number);
    update_mask(&input.paths);
    time(input.seconds, input.nanos);
    account_values(text);
});

/// A refusal names its field and quotes little.
fn check_violation(violation: &Violation, field: &str) {
    assert_eq!(violation.field, field);
    assert!(
        violation.description.chars().count() <= MAX_DESCRIPTION_LEN,
        "an unbounded echo: {}",
        violation.description
    );
}

fn task_values(text: &str, number: i32) {
    let trimmed = text.trim();

    let title_chars = trimmed.chars().count();
    match TaskTitle::parse("title", text) {
        Ok(title) => {
            assert_eq!(title.as_str(), trimmed);
            assert!((1..=MAX_TITLE_CHARS).contains(&title_chars));
        }
        Err(violation) => {
            check_violation(&violation, "title");
            assert!(title_chars == 0 || title_chars > MAX_TITLE_CHARS);
        }
    }

    match Description::parse("description", text) {
        Ok(description) => {
            assert_eq!(description.as_str(), text);
            assert!(text.chars().count() <= MAX_DESCRIPTION_CHARS);
        }
        Err(violation) => {
            check_violation(&violation, "description");
            assert!(text.chars().count() > MAX_DESCRIPTION_CHARS);
        }
    }

    match domain::parse_id("id", text) {
        Ok(id) => {
            assert!(!trimmed.is_empty());
            assert_eq!(id, Uuid::try_parse(trimmed).ok());
        }
        Err(violation) => {
            check_violation(&violation, "id");
            assert!(trimmed.is_empty());
        }
    }

    match domain::parse_request_id("request_id", text) {
        Ok(None) => assert!(trimmed.is_empty()),
        Ok(Some(id)) => assert_eq!(Uuid::try_parse(trimmed).ok(), Some(id)),
        Err(violation) => {
            check_violation(&violation, "request_id");
            assert!(!trimmed.is_empty() && Uuid::try_parse(trimmed).is_err());
        }
    }

    match domain::parse_etag(text) {
        None => assert!(text.is_empty()),
        Some(Etag::Version(version)) => {
            assert_eq!(text.trim_matches('"').parse::<i64>(), Ok(version));
            assert_eq!(Etag::Version(version).version(), version);
        }
        Some(Etag::Never) => {
            assert!(!text.is_empty() && text.trim_matches('"').parse::<i64>().is_err());
            assert_eq!(Etag::Never.version(), -1);
        }
    }

    match domain::parse_priority("priority", number) {
        Ok(priority) => assert_eq!(priority as i32, number),
        Err(violation) => check_violation(&violation, "priority"),
    }

    match domain::parse_page_size("page_size", number) {
        Ok(size) => {
            assert!((1..=MAX_PAGE_SIZE).contains(&size));
            let expected = match number {
                0 => DEFAULT_PAGE_SIZE,
                n => (n as usize).min(MAX_PAGE_SIZE),
            };
            assert_eq!(size, expected);
        }
        Err(violation) => {
            check_violation(&violation, "page_size");
            assert!(number < 0);
        }
    }

    match OrderBy::parse("order_by", text) {
        Ok(order) => {
            let words: Vec<&str> = text.split_whitespace().collect();
            let spelt: &[&str] = match order {
                OrderBy::CreateTimeDesc if words.is_empty() => &[],
                OrderBy::CreateTimeDesc => &["create_time", "desc"],
                OrderBy::CreateTime => &["create_time"],
                OrderBy::DueTime => &["due_time"],
                OrderBy::PriorityDesc => &["priority", "desc"],
                OrderBy::Title => &["title"],
            };
            assert_eq!(words, spelt);
        }
        Err(violation) => check_violation(&violation, "order_by"),
    }

    match SearchText::parse("query", text) {
        Ok(None) => assert!(text.is_empty()),
        Ok(Some(search)) => {
            assert!(text.chars().count() <= MAX_TITLE_CHARS);
            assert_eq!(search.as_str(), domain::fold_case(text));
            assert_eq!(unescape_like(&search.like_pattern()), search.as_str());
        }
        Err(violation) => {
            check_violation(&violation, "query");
            assert!(text.chars().count() > MAX_TITLE_CHARS);
        }
    }
}

/// The text a `LIKE '%...%' ESCAPE '\'` pattern matches literally; panics
/// on a wildcard that is not escaped (it would match more than the text).
fn unescape_like(pattern: &str) -> String {
    let inner = pattern
        .strip_prefix('%')
        .and_then(|rest| rest.strip_suffix('%'))
        .unwrap_or_else(|| panic!("not a substring pattern: {pattern:?}"));
    let mut text = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => text.push(chars.next().expect("an escape escapes something")),
            '%' | '_' => panic!("an unescaped wildcard in {pattern:?}"),
            c => text.push(c),
        }
    }
    text
}

fn update_mask(paths: &[String]) {
    let known = |path: &str| match path.trim() {
        "title" => Some(UpdatableField::Title),
        "description" => Some(UpdatableField::Description),
        "priority" => Some(UpdatableField::Priority),
        "due_time" => Some(UpdatableField::DueTime),
        "completed" => Some(UpdatableField::Completed),
        _ => None,
    };
    match domain::parse_update_mask("update_mask", paths) {
        Ok(fields) => {
            assert!((1..=MAX_MASK_PATHS).contains(&paths.len()));
            let expected: Option<BTreeSet<_>> = paths.iter().map(|path| known(path)).collect();
            assert_eq!(Some(fields), expected);
        }
        Err(violation) => {
            check_violation(&violation, "update_mask");
            assert!(
                paths.is_empty()
                    || paths.len() > MAX_MASK_PATHS
                    || paths.iter().any(|path| known(path).is_none())
            );
        }
    }
}

fn time(seconds: i64, nanos: i32) {
    let timestamp = prost_types::Timestamp { seconds, nanos };
    let valid = (0..1_000_000_000).contains(&nanos) && (FIRST_SECOND..=LAST_SECOND).contains(&seconds);
    match domain::parse_time("due_time", &timestamp) {
        Ok(time) => {
            assert!(valid, "{timestamp:?} accepted as {time}");
            let truncated = prost_types::Timestamp {
                seconds,
                nanos: nanos / 1000 * 1000,
            };
            assert_eq!(domain::timestamp(time), truncated);
        }
        Err(violation) => {
            check_violation(&violation, "due_time");
            assert!(!valid, "{timestamp:?} refused");
        }
    }
}

fn account_values(text: &str) {
    match Email::parse("email", text) {
        Ok(email) => {
            let address = email.as_str();
            assert_eq!(address, text.trim().to_lowercase());
            assert_eq!(address.matches('@').count(), 1, "{address:?}");
            let (local, domain) = address.split_once('@').expect("one @");
            assert!(!local.is_empty() && !domain.is_empty());
            assert!(!domain.starts_with('.') && !domain.ends_with('.'));
            assert!(
                !address.chars().any(|c| c.is_whitespace() || c.is_control()),
                "{address:?}"
            );
            assert!(address.chars().count() <= EMAIL_MAX_CHARS);
            // What was stored parses to itself: sign-in finds the account.
            assert_eq!(Email::parse("email", address).as_ref(), Ok(&email));
        }
        Err(violation) => check_violation(&violation, "email"),
    }

    let nfc: String = text.nfc().collect();
    let nfc_chars = nfc.chars().count();
    match Password::new_password("password", text) {
        Ok(password) => {
            assert_eq!(password.expose(), nfc);
            assert!((PASSWORD_MIN_CHARS..=PASSWORD_MAX_CHARS).contains(&nfc_chars));
            // The same password, typed composed or decomposed, signs in.
            for typed in [text.to_owned(), text.nfd().collect(), nfc.clone()] {
                let offered = Password::offered("password", &typed).unwrap_or_else(|violation| {
                    panic!("{typed:?} (the same password as {text:?}) is refused: {violation:?}")
                });
                assert_eq!(offered.expose(), nfc);
            }
        }
        Err(violation) => check_violation(&violation, "password"),
    }
    match Password::offered("password", text) {
        Ok(password) => {
            assert_eq!(password.expose(), nfc);
            assert!((1..=PASSWORD_MAX_CHARS).contains(&nfc_chars));
        }
        Err(violation) => {
            check_violation(&violation, "password");
            assert!(nfc_chars == 0 || nfc_chars > PASSWORD_MAX_CHARS || text.chars().count() > PASSWORD_MAX_CHARS);
        }
    }

    match DisplayName::parse("display_name", text) {
        Ok(name) => {
            let name = name.into_string();
            assert_eq!(name, text.trim());
            assert!(name.chars().count() <= DISPLAY_NAME_MAX_CHARS);
            assert!(!name.chars().any(char::is_control), "{name:?}");
        }
        Err(violation) => check_violation(&violation, "display_name"),
    }
}
