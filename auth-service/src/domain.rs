//! Parse, don't validate: request fields become types that can only hold
//! valid values, and every failure becomes a `BadRequest` field violation.
//!
//! Passwords are normalised to Unicode NFC before anything else, at Register,
//! Login and ChangePassword alike, so a composed and a decomposed "é" are the
//! same password whichever keyboard typed it (NIST SP 800-63B 5.1.1.2).
//! Length is counted in Unicode scalar values after normalisation and is
//! never truncated; an oversized input is refused before any hashing.

use secrecy::{ExposeSecret, SecretString};
use serving::status::Violation;
use unicode_normalization::UnicodeNormalization;

pub const EMAIL_MAX_CHARS: usize = 254;
pub const PASSWORD_MIN_CHARS: usize = 8;
pub const PASSWORD_MAX_CHARS: usize = 128;
pub const DISPLAY_NAME_MAX_CHARS: usize = 100;

/// A trimmed, lower-cased email address with one `@` and no spaces or
/// control characters. Deliverability is the job of a verification mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub fn parse(field: &'static str, raw: &str) -> Result<Self, Violation> {
        let email = raw.trim().to_lowercase();
        if email.is_empty() {
            return Err(Violation::new(field, "must not be empty"));
        }
        if email.chars().count() > EMAIL_MAX_CHARS {
            return Err(Violation::new(
                field,
                format!("must be at most {EMAIL_MAX_CHARS} characters"),
            ));
        }
        let well_formed = match email.split_once('@') {
            Some((local, domain)) => {
                !local.is_empty()
                    && !domain.is_empty()
                    && !domain.contains('@')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
            }
            None => false,
        };
        if !well_formed || email.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(Violation::new(field, "must be an email address"));
        }
        Ok(Self(email))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A password in NFC, within the length policy. `Debug` prints `[REDACTED]`.
#[derive(Debug, Clone)]
pub struct Password(SecretString);

impl Password {
    /// A password for a new account or a new password: 8 to 128
    /// characters, and not one of the most common passwords (NIST SP
    /// 800-63B asks for a blocklist; no composition rules are imposed).
    pub fn new_password(field: &'static str, raw: &str) -> Result<Self, Violation> {
        let password = Self::normalised(field, raw)?;
        if password.0.expose_secret().chars().count() < PASSWORD_MIN_CHARS {
            return Err(Violation::new(
                field,
                format!("must be at least {PASSWORD_MIN_CHARS} characters"),
            ));
        }
        if is_common(password.0.expose_secret()) {
            return Err(Violation::new(
                field,
                "is one of the most common passwords; choose another",
            ));
        }
        Ok(password)
    }

    /// A password offered to sign in: any non-empty one up to the maximum,
    /// so a policy change never locks out an older account.
    pub fn offered(field: &'static str, raw: &str) -> Result<Self, Violation> {
        let password = Self::normalised(field, raw)?;
        if password.0.expose_secret().is_empty() {
            return Err(Violation::new(field, "must not be empty"));
        }
        Ok(password)
    }

    fn normalised(field: &'static str, raw: &str) -> Result<Self, Violation> {
        let too_long = || {
            Violation::new(
                field,
                format!("must be at most {PASSWORD_MAX_CHARS} characters"),
            )
        };
        // Cheap bound first, so a megabyte of input is refused before it
        // is even normalised. The rule is on the normalised form: a
        // password typed decomposed (NFD, as some systems send it) has up
        // to four scalar values per composed one, of up to four bytes each,
        // and must still sign in (found by fuzz/validation).
        const DECOMPOSED: usize = 4;
        if raw.len() > PASSWORD_MAX_CHARS * DECOMPOSED * 4
            || raw.chars().count() > PASSWORD_MAX_CHARS * DECOMPOSED
        {
            return Err(too_long());
        }
        let normalised: String = raw.nfc().collect();
        if normalised.chars().count() > PASSWORD_MAX_CHARS {
            return Err(too_long());
        }
        Ok(Self(normalised.into()))
    }

    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

/// The most common passwords of at least 8 characters, lower-cased.
const COMMON_PASSWORDS: &str = include_str!("common_passwords.txt");

fn is_common(password: &str) -> bool {
    let lowered = password.to_lowercase();
    COMMON_PASSWORDS.lines().any(|common| common == lowered)
}

/// A display name: trimmed, at most 100 characters, no control characters
/// (a CR or LF in a name must never be able to forge a log line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisplayName(String);

impl DisplayName {
    pub fn parse(field: &'static str, raw: &str) -> Result<Self, Violation> {
        let name = raw.trim();
        if name.chars().count() > DISPLAY_NAME_MAX_CHARS {
            return Err(Violation::new(
                field,
                format!("must be at most {DISPLAY_NAME_MAX_CHARS} characters"),
            ));
        }
        if name.chars().any(char::is_control) {
            return Err(Violation::new(field, "must not contain control characters"));
        }
        Ok(Self(name.to_owned()))
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// Collects the violations of several fields, so one response names them all.
#[derive(Debug, Default)]
pub struct Violations(Vec<Violation>);

impl Violations {
    pub fn check<T>(&mut self, result: Result<T, Violation>) -> Option<T> {
        result.map_err(|violation| self.0.push(violation)).ok()
    }

    /// `Ok(())` if every check passed, otherwise all the violations.
    pub fn finish(self) -> Result<(), Vec<Violation>> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(self.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_trimmed_and_lower_cased() {
        assert_eq!(
            Email::parse("email", "  Alice@Example.COM ")
                .unwrap()
                .as_str(),
            "alice@example.com"
        );
        for bad in [
            "",
            "  ",
            "alice",
            "@example.com",
            "alice@",
            "a b@example.com",
            "a@b@c",
            "a@.com",
        ] {
            assert!(Email::parse("email", bad).is_err(), "{bad:?}");
        }
        let long = format!("{}@example.com", "a".repeat(250));
        assert!(Email::parse("email", &long).is_err());
    }

    #[test]
    fn password_length_counts_scalar_values() {
        assert!(Password::new_password("password", &"😀".repeat(7)).is_err());
        assert!(Password::new_password("password", &"😀".repeat(8)).is_ok());
        assert!(Password::new_password("password", &"a".repeat(128)).is_ok());
        assert!(Password::new_password("password", &"a".repeat(129)).is_err());
        assert!(Password::new_password("password", "with spaces ok").is_ok());
    }

    #[test]
    fn the_most_common_passwords_are_refused_with_the_reason() {
        for common in [
            "password",
            "Password123",
            "12345678",
            "qwertyuiop",
            "iloveyou",
        ] {
            let violation = Password::new_password("password", common).unwrap_err();
            assert!(violation.description.contains("common"), "{common}");
        }
        // Signing in with one still works (accounts made before the list).
        assert!(Password::offered("password", "password").is_ok());
    }

    #[test]
    fn composed_and_decomposed_passwords_are_equal() {
        let composed = Password::new_password("password", "caf\u{e9}-caf\u{e9}").unwrap();
        let decomposed = Password::offered("password", "cafe\u{301}-cafe\u{301}").unwrap();
        assert_eq!(composed.expose(), decomposed.expose());
    }

    #[test]
    fn a_longest_password_typed_decomposed_still_signs_in() {
        // 128 composed characters, 256 scalar values once decomposed: the
        // limit is on the normalised form (found by fuzz/validation).
        let composed = "\u{1dc}".repeat(128);
        let decomposed = "u\u{308}\u{300}".repeat(128);
        let registered = Password::new_password("password", &composed).unwrap();
        let offered = Password::offered("password", &decomposed).unwrap();
        assert_eq!(registered.expose(), offered.expose());
        assert!(Password::offered("password", &"u\u{308}\u{300}".repeat(129)).is_err());
    }

    #[test]
    fn display_names_refuse_control_characters() {
        assert!(DisplayName::parse("display_name", "").is_ok());
        assert!(DisplayName::parse("display_name", "Ann\r\nINFO forged").is_err());
        assert!(DisplayName::parse("display_name", &"x".repeat(101)).is_err());
    }

    #[test]
    fn password_debug_is_redacted() {
        let password = Password::new_password("password", "hunter2hunter2").unwrap();
        assert!(!format!("{password:?}").contains("hunter2"));
    }
}
