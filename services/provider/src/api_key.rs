//! The provider's secret, kept out of every printed form.

use std::fmt;

/// A provider API key.
///
/// `Debug` and `Display` print `ApiKey(***)`, so the key can sit in structs that derive
/// `Debug` and in tracing fields without leaking. The value is only reachable inside
/// this crate (for the `Authorization` header).
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// Wraps a secret. Surrounding white space (a trailing newline from a secrets file)
    /// is removed.
    pub fn new(secret: impl Into<String>) -> Self {
        let secret: String = secret.into();
        Self(secret.trim().to_owned())
    }

    /// True when no key was given.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The secret itself: only for building the `Authorization` header and for
    /// scrubbing error texts.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(***)")
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_hide_the_secret() {
        let key = ApiKey::new("re_very_secret_123\n");
        assert_eq!(format!("{key:?}"), "ApiKey(***)");
        assert_eq!(format!("{key}"), "ApiKey(***)");
        assert_eq!(key.expose(), "re_very_secret_123");
    }
}
