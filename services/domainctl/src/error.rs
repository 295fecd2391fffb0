//! Exit codes scripts can rely on, and the errors that carry them.

use std::fmt;

/// Success.
pub const OK: i32 = 0;
/// The operation ran but the answer was negative (e.g. a command was rejected).
pub const NEGATIVE: i32 = 1;
/// Usage error (clap's own code).
pub const USAGE: i32 = 2;
/// Unknown tenant, domain or dead letter.
pub const NOT_FOUND: i32 = 3;
/// NATS or Postgres unreachable (or a service that should answer did not).
pub const UNREACHABLE: i32 = 4;

/// An error with the exit code it maps to and a message in plain words.
#[derive(Debug)]
pub struct CtlError {
    pub code: i32,
    pub message: String,
}

impl CtlError {
    pub fn new(code: i32, message: impl Into<String>) -> Self {
        CtlError {
            code,
            message: message.into(),
        }
    }
    pub fn negative(message: impl Into<String>) -> Self {
        Self::new(NEGATIVE, message)
    }
    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(USAGE, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(NOT_FOUND, message)
    }
    pub fn unreachable(message: impl Into<String>) -> Self {
        Self::new(UNREACHABLE, message)
    }
}

impl fmt::Display for CtlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CtlError {}

impl From<anyhow::Error> for CtlError {
    fn from(e: anyhow::Error) -> Self {
        match e.downcast::<CtlError>() {
            Ok(c) => c,
            Err(e) => CtlError::negative(format!("{e:#}")),
        }
    }
}

impl From<sqlx::Error> for CtlError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Tls(_) => CtlError::unreachable(format!(
                "Postgres: {e}; is Postgres running and DATABASE_URL right?"
            )),
            _ => CtlError::negative(format!("Postgres: {e}")),
        }
    }
}

pub type CtlResult<T> = Result<T, CtlError>;
