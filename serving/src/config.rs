//! Configuration defaults, made one way for every binary.
//!
//! Each setting is a clap flag with an environment fallback and a
//! documented default. [`defaults`] reads those same declarations, with
//! an empty command line and every environment fallback switched off, so
//! `Config::default()` is exactly what `--help` documents: tests and the
//! all-in-one stack start from it without the process environment leaking
//! in, and a default is written in one place only.

pub use secrecy::{ExposeSecret, SecretString};

/// Parses a flag whose value is a secret (a database or SMTP URL with its
/// password): kept as a [`SecretString`], which `Debug` prints redacted,
/// so no config dump or log line shows it.
pub fn secret(text: &str) -> Result<SecretString, std::convert::Infallible> {
    Ok(SecretString::from(text))
}

/// The documented default of every flag of `T`, ignoring the environment.
///
/// # Panics
///
/// When a flag of `T` is required (has no default): a programming error
/// that every service's unit tests catch.
pub fn defaults<T: clap::Args + clap::FromArgMatches>() -> T {
    let command = T::augment_args(clap::Command::new("defaults"))
        .mut_args(|arg| arg.env(None::<&'static str>));
    let matches = command
        .try_get_matches_from(["defaults"])
        .expect("every flag has a default");
    T::from_arg_matches(&matches).expect("the defaults are valid")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::defaults;
    use crate::transport::TransportArgs;

    #[test]
    fn the_environment_does_not_leak_into_the_defaults() {
        // A fallback that is set in the environment of whoever runs the
        // tests must not change a default.
        let parsed: TransportArgs = defaults();
        assert_eq!(parsed.request_timeout, Duration::from_secs(30));
        assert_eq!(parsed.max_message_bytes, 1024 * 1024);
    }
}
