//! A database failure in words, whatever the engine: what callers may act on (a full disk,
//! a database busy past its timeout) and the engine's message for the logs. No engine's error
//! type crosses this crate's API.

/// What kind of failure it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendErrorKind {
    /// The disk, or the database's size limit, is full: nothing was written.
    Full,
    /// The database stayed locked or busy past the timeout.
    Busy,
    /// Anything else (I/O, corruption, a constraint, a bug).
    Other,
}

/// A failure of the database engine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct BackendError {
    /// What kind of failure.
    pub kind: BackendErrorKind,
    /// The engine's own words.
    pub message: String,
}

impl From<rusqlite::Error> for BackendError {
    fn from(e: rusqlite::Error) -> Self {
        let kind = match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DiskFull) => BackendErrorKind::Full,
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
                BackendErrorKind::Busy
            }
            _ => BackendErrorKind::Other,
        };
        Self {
            kind,
            message: e.to_string(),
        }
    }
}

impl BackendError {
    /// A failure of kind [`BackendErrorKind::Other`] with this message.
    pub fn other(message: impl Into<String>) -> Self {
        Self {
            kind: BackendErrorKind::Other,
            message: message.into(),
        }
    }
}
