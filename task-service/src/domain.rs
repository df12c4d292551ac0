//! The task domain: values that can only hold what the contract allows.
//!
//! Parse, don't validate: every request field is turned into one of these
//! types once, at the edge, and each failure becomes a `BadRequest` field
//! violation naming the field as the client spelt it. Below this module no
//! code re-checks a title's length or a page size's sign.
//!
//! The owner of a task is not in here as a request value at all: it is the
//! [`access_token::Identity`] the authentication layer proved, and every
//! store call takes it as a separate argument.

use std::collections::BTreeSet;

use chrono::{DateTime, TimeZone, Utc};
use serving::status::Violation;
use todo_proto::tasks::v1 as proto;
use uuid::Uuid;

/// Longest title, in characters (Unicode scalar values), after trimming.
pub const MAX_TITLE_CHARS: usize = 200;
/// Longest description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 4000;
/// `page_size` 0 means this.
pub const DEFAULT_PAGE_SIZE: usize = 50;
/// `page_size` above this is treated as this.
pub const MAX_PAGE_SIZE: usize = 500;

/// A task as stored. `owner` never leaves the service.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Task {
    pub id: Uuid,
    pub owner: Uuid,
    pub title: String,
    pub description: String,
    pub completed: bool,
    pub priority: i32,
    pub due_time: Option<DateTime<Utc>>,
    pub create_time: DateTime<Utc>,
    pub update_time: DateTime<Utc>,
    pub complete_time: Option<DateTime<Utc>>,
    /// Bumped by every write; the etag is its decimal form.
    pub version: i64,
}

impl Task {
    pub fn etag(&self) -> String {
        // itoa: a fifth of the instructions of `to_string`'s formatting
        // machinery, paid for each task of a page.
        itoa::Buffer::new().format(self.version).to_owned()
    }
}

impl From<&Task> for proto::Task {
    fn from(task: &Task) -> Self {
        task.clone().into()
    }
}

/// Moves the strings: a page of tasks is converted without copying them.
impl From<Task> for proto::Task {
    fn from(task: Task) -> Self {
        let etag = task.etag();
        Self {
            // Without `Display`'s formatting machinery: 3% of a page of 50.
            id: task
                .id
                .hyphenated()
                .encode_lower(&mut Uuid::encode_buffer())
                .to_owned(),
            title: task.title,
            description: task.description,
            completed: task.completed,
            priority: task.priority,
            due_time: task.due_time.map(timestamp),
            create_time: Some(timestamp(task.create_time)),
            update_time: Some(timestamp(task.update_time)),
            complete_time: task.complete_time.map(timestamp),
            etag,
        }
    }
}

pub fn timestamp(time: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: time.timestamp(),
        nanos: time.timestamp_subsec_nanos().cast_signed(),
    }
}

/// A client-supplied time, truncated to microseconds (what both databases
/// store exactly). Years outside 1..=9999 are refused: they cannot be
/// stored by PostgreSQL and are never meant.
pub fn parse_time(
    field: &'static str,
    value: &prost_types::Timestamp,
) -> Result<DateTime<Utc>, Violation> {
    let invalid = || Violation::new(field, "must be a valid timestamp between years 1 and 9999");
    if !(0..1_000_000_000).contains(&value.nanos) {
        return Err(invalid());
    }
    let time = Utc
        .timestamp_opt(value.seconds, (value.nanos / 1000 * 1000).cast_unsigned())
        .single()
        .ok_or_else(invalid)?;
    let year = chrono::Datelike::year(&time);
    if !(1..=9999).contains(&year) {
        return Err(invalid());
    }
    Ok(time)
}

/// A task id: a UUID in any standard spelling, or `None` for a value that
/// is not one. Such a value names no task, so it answers like any unknown
/// id (`NOT_FOUND`, byte-identical, as the contract's errors table has it)
/// instead of teaching the caller what ids look like; only a missing id is
/// a validation error.
pub fn parse_id(field: &'static str, value: &str) -> Result<Option<Uuid>, Violation> {
    let value = value.trim();
    if value.is_empty() {
        return Err(Violation::new(field, "is required"));
    }
    Ok(Uuid::try_parse(value).ok())
}

/// A title: trimmed, 1 to 200 characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskTitle(String);

impl TaskTitle {
    pub fn parse(field: &'static str, value: &str) -> Result<Self, Violation> {
        let trimmed = value.trim();
        let chars = trimmed.chars().count();
        if chars == 0 {
            Err(Violation::new(field, "must not be empty"))
        } else if chars > MAX_TITLE_CHARS {
            Err(Violation::new(
                field,
                format!("must be at most {MAX_TITLE_CHARS} characters"),
            ))
        } else {
            Ok(Self(trimmed.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A description: at most 4000 characters, kept as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Description(String);

impl Description {
    pub fn parse(field: &'static str, value: &str) -> Result<Self, Violation> {
        if value.chars().count() > MAX_DESCRIPTION_CHARS {
            Err(Violation::new(
                field,
                format!("must be at most {MAX_DESCRIPTION_CHARS} characters"),
            ))
        } else {
            Ok(Self(value.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A task's priority: a value of the `Priority` enum.
pub type Priority = proto::Priority;

/// A value of the `Priority` enum (unknown numbers are refused).
pub fn parse_priority(field: &'static str, value: i32) -> Result<Priority, Violation> {
    proto::Priority::try_from(value)
        .map_err(|_| Violation::new(field, "must be a known Priority value"))
}

/// The optional `request_id` of `CreateTask`: empty means none.
pub fn parse_request_id(field: &'static str, value: &str) -> Result<Option<Uuid>, Violation> {
    if value.trim().is_empty() {
        return Ok(None);
    }
    Uuid::try_parse(value.trim())
        .map(Some)
        .map_err(|_| Violation::new(field, "must be a UUID or empty"))
}

/// An etag sent back by a client; empty means "unconditional". A value that
/// is not one of ours can never match, which is exactly `ABORTED`.
pub fn parse_etag(value: &str) -> Option<Etag> {
    if value.is_empty() {
        return None;
    }
    Some(
        value
            .trim_matches('"')
            .parse()
            .map(Etag::Version)
            .unwrap_or(Etag::Never),
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Etag {
    Version(i64),
    /// Not an etag this service ever issued: matches no task.
    Never,
}

impl Etag {
    /// The version a conditional write must find (`-1` matches no row).
    pub fn version(self) -> i64 {
        match self {
            Self::Version(version) => version,
            Self::Never => -1,
        }
    }
}

/// `page_size` made concrete.
pub fn parse_page_size(field: &'static str, value: i32) -> Result<usize, Violation> {
    match value {
        ..0 => Err(Violation::new(field, "must not be negative")),
        0 => Ok(DEFAULT_PAGE_SIZE),
        n => Ok(usize::try_from(n)
            .unwrap_or(MAX_PAGE_SIZE)
            .min(MAX_PAGE_SIZE)),
    }
}

/// The orders `ListTasks` offers. Each is a total order: ties on the named
/// field are broken by the id, so keyset paging never skips or repeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum OrderBy {
    /// `create_time desc`, newest first (the default).
    #[default]
    CreateTimeDesc,
    /// `create_time`, oldest first.
    CreateTime,
    /// `due_time`, soonest first; tasks without a due time last.
    DueTime,
    /// `priority desc`, highest first.
    PriorityDesc,
    /// `title`, by code point.
    Title,
}

impl OrderBy {
    pub fn parse(field: &'static str, value: &str) -> Result<Self, Violation> {
        let words: Vec<&str> = value.split_whitespace().collect();
        match words.as_slice() {
            [] | ["create_time", "desc"] => Ok(Self::CreateTimeDesc),
            ["create_time"] => Ok(Self::CreateTime),
            ["due_time"] => Ok(Self::DueTime),
            ["priority", "desc"] => Ok(Self::PriorityDesc),
            ["title"] => Ok(Self::Title),
            _ => Err(Violation::new(
                field,
                "must be one of `create_time desc`, `create_time`, `due_time`, `priority desc`, `title`",
            )),
        }
    }

    /// Whether the order is descending (on the field, then on the id).
    pub fn descending(self) -> bool {
        matches!(self, Self::CreateTimeDesc | Self::PriorityDesc)
    }

    /// Where `task` sits in this order: the keyset cursor after it.
    pub fn cursor_of(self, task: &Task) -> Cursor {
        let key = match self {
            Self::CreateTimeDesc | Self::CreateTime => {
                SortKey::Int(task.create_time.timestamp_micros())
            }
            Self::DueTime => SortKey::Int(due_sort_key(task.due_time)),
            Self::PriorityDesc => SortKey::Int(i64::from(task.priority)),
            Self::Title => SortKey::Text(task.title.clone()),
        };
        Cursor { key, id: task.id }
    }
}

/// Tasks without a due time sort after every real one.
pub const NO_DUE_TIME: i64 = i64::MAX;

pub fn due_sort_key(due_time: Option<DateTime<Utc>>) -> i64 {
    due_time.map_or(NO_DUE_TIME, |due| due.timestamp_micros())
}

/// The position after the last task of a page.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Cursor {
    pub key: SortKey,
    pub id: Uuid,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SortKey {
    Int(i64),
    Text(String),
}

/// A case-insensitive substring to look for in the title or description.
/// Both sides are lower-cased by Rust (Unicode-aware, identical on both
/// databases), and `%`, `_` and `\` are escaped for `LIKE ... ESCAPE '\'`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchText(String);

impl SearchText {
    pub fn parse(field: &'static str, value: &str) -> Result<Option<Self>, Violation> {
        if value.is_empty() {
            return Ok(None);
        }
        if value.chars().count() > MAX_TITLE_CHARS {
            return Err(Violation::new(
                field,
                format!("must be at most {MAX_TITLE_CHARS} characters"),
            ));
        }
        Ok(Some(Self(fold_case(value))))
    }

    /// The folded text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A `LIKE` pattern matching the text anywhere, with `\` as escape.
    pub fn like_pattern(&self) -> String {
        let mut pattern = String::with_capacity(self.0.len() + 2);
        pattern.push('%');
        for c in self.0.chars() {
            if matches!(c, '%' | '_' | '\\') {
                pattern.push('\\');
            }
            pattern.push(c);
        }
        pattern.push('%');
        pattern
    }
}

/// The case folding used for search: what `query` is compared against.
pub fn fold_case(text: &str) -> String {
    text.to_lowercase()
}

/// The filters and order of a `ListTasks` call.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListQuery {
    pub completed: Option<bool>,
    pub search: Option<SearchText>,
    pub order: OrderBy,
}

/// The fields an `UpdateTask` may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum UpdatableField {
    Title,
    Description,
    Priority,
    DueTime,
    Completed,
}

/// Most paths an `update_mask` may list (there are five fields; a few
/// repeats are tolerated).
pub const MAX_MASK_PATHS: usize = 10;

/// A non-empty set of known `update_mask` paths. An unknown path is named
/// in the violation by a short prefix only (see [`serving::status::quote`]).
pub fn parse_update_mask(
    field: &'static str,
    paths: &[String],
) -> Result<BTreeSet<UpdatableField>, Violation> {
    if paths.is_empty() {
        return Err(Violation::new(field, "must name at least one field"));
    }
    if paths.len() > MAX_MASK_PATHS {
        return Err(Violation::new(
            field,
            format!("must name at most {MAX_MASK_PATHS} paths"),
        ));
    }
    paths
        .iter()
        .map(|path| match path.trim() {
            "title" => Ok(UpdatableField::Title),
            "description" => Ok(UpdatableField::Description),
            "priority" => Ok(UpdatableField::Priority),
            "due_time" => Ok(UpdatableField::DueTime),
            "completed" => Ok(UpdatableField::Completed),
            other => Err(Violation::new(
                field,
                format!(
                    "unknown path `{}`; allowed: title, description, priority, due_time, completed",
                    serving::status::quote(other)
                ),
            )),
        })
        .collect()
}

/// The new values of an update; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskPatch {
    pub title: Option<TaskTitle>,
    pub description: Option<Description>,
    pub priority: Option<Priority>,
    /// `Some(None)` clears the due time.
    pub due_time: Option<Option<DateTime<Utc>>>,
    pub completed: Option<bool>,
}

/// A task to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTask {
    pub title: TaskTitle,
    pub description: Description,
    pub priority: Priority,
    pub due_time: Option<DateTime<Utc>>,
    pub request_id: Option<Uuid>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_are_trimmed_and_bounded_in_characters() {
        assert_eq!(
            TaskTitle::parse("title", "  buy milk \n").unwrap().as_str(),
            "buy milk"
        );
        assert!(TaskTitle::parse("title", "   ").is_err());
        assert!(TaskTitle::parse("title", &"é".repeat(200)).is_ok());
        assert!(TaskTitle::parse("title", &"é".repeat(201)).is_err());
    }

    #[test]
    fn page_sizes_follow_the_contract() {
        assert_eq!(parse_page_size("page_size", 0).unwrap(), 50);
        assert_eq!(parse_page_size("page_size", 7).unwrap(), 7);
        assert_eq!(parse_page_size("page_size", 501).unwrap(), 500);
        assert!(parse_page_size("page_size", -1).is_err());
    }

    #[test]
    fn only_the_documented_orders_are_accepted() {
        assert_eq!(
            OrderBy::parse("order_by", "").unwrap(),
            OrderBy::CreateTimeDesc
        );
        assert_eq!(
            OrderBy::parse("order_by", "create_time desc").unwrap(),
            OrderBy::CreateTimeDesc
        );
        assert_eq!(
            OrderBy::parse("order_by", "create_time").unwrap(),
            OrderBy::CreateTime
        );
        assert_eq!(
            OrderBy::parse("order_by", "due_time").unwrap(),
            OrderBy::DueTime
        );
        assert_eq!(
            OrderBy::parse("order_by", "priority desc").unwrap(),
            OrderBy::PriorityDesc
        );
        assert_eq!(OrderBy::parse("order_by", "title").unwrap(), OrderBy::Title);
        for bad in [
            "title desc",
            "priority",
            "id",
            "create_time asc",
            "title; DROP TABLE tasks",
        ] {
            assert!(OrderBy::parse("order_by", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn like_wildcards_are_escaped() {
        let search = SearchText::parse("query", "50%_Off\\").unwrap().unwrap();
        assert_eq!(search.like_pattern(), "%50\\%\\_off\\\\%");
    }

    #[test]
    fn update_masks_must_be_non_empty_and_known() {
        assert!(parse_update_mask("update_mask", &[]).is_err());
        assert!(parse_update_mask("update_mask", &["owner".into()]).is_err());
        let huge = parse_update_mask("update_mask", &["x".repeat(60_000)]).unwrap_err();
        assert!(huge.description.len() < 200, "{}", huge.description);
        assert!(parse_update_mask("update_mask", &vec!["title".into(); 11]).is_err());
        let fields =
            parse_update_mask("update_mask", &["title".into(), "completed".into()]).unwrap();
        assert_eq!(
            fields.into_iter().collect::<Vec<_>>(),
            [UpdatableField::Title, UpdatableField::Completed]
        );
    }

    #[test]
    fn foreign_etags_never_match() {
        assert_eq!(parse_etag(""), None);
        assert_eq!(parse_etag("7"), Some(Etag::Version(7)));
        assert_eq!(parse_etag("\"7\""), Some(Etag::Version(7)));
        assert_eq!(parse_etag("W/abc"), Some(Etag::Never));
    }
}
