//! The time as services see it: the system clock, or in tests a clock that
//! only moves when told to, so session lifetimes and token expiry can be
//! tested without sleeping.

use std::{
    fmt,
    sync::{Arc, Mutex},
    time::Duration,
};

use chrono::{DateTime, DurationRound, TimeDelta, Utc};

/// A source of "now". `Clock::default()` is the system clock.
#[derive(Clone, Default)]
pub struct Clock {
    manual: Option<Arc<Mutex<DateTime<Utc>>>>,
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.manual.is_some() {
            "Clock(manual)"
        } else {
            "Clock(system)"
        })
    }
}

impl Clock {
    /// A clock stopped at the current time, moved with [`Clock::advance`].
    pub fn manual() -> Self {
        Self {
            manual: Some(Arc::new(Mutex::new(truncate(Utc::now())))),
        }
    }

    /// Now, truncated to microseconds: what both databases store exactly, so
    /// a timestamp read back equals the one written.
    pub fn now(&self) -> DateTime<Utc> {
        match &self.manual {
            Some(time) => *time
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
            None => truncate(Utc::now()),
        }
    }

    /// Moves a manual clock forward; does nothing to the system clock.
    pub fn advance(&self, by: Duration) {
        if let Some(time) = &self.manual {
            let mut time = time
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            *time += TimeDelta::from_std(by).unwrap_or(TimeDelta::MAX);
        }
    }
}

fn truncate(time: DateTime<Utc>) -> DateTime<Utc> {
    time.duration_trunc(TimeDelta::microseconds(1))
        .unwrap_or(time)
}
