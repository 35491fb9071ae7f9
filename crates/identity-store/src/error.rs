//! Why a store call failed, with the error it came from kept as the source.
//!
//! A message names what failed; the cause is the error under it (`source()`), never pasted
//! into the message, so a chain printer (`{e:#}` in the CLI, [`Report`] in logs) prints each
//! once. The cause is shared so the error stays `Clone`: a group commit hands one failure to
//! every writer waiting on it.

use std::fmt;
use std::sync::Arc;

/// The error a store error came from.
pub type Cause = Arc<dyn std::error::Error + Send + Sync>;

#[derive(Debug, Clone)]
pub enum StoreError {
    Unavailable(Cause),
    Corrupt { what: String, source: Option<Cause> },
    Config(Cause),
    TooSlow,
    Other(Cause),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unavailable(_) => f.write_str("the event store is unavailable"),
            Self::Corrupt { what, .. } => write!(f, "a stored event could not be read: {what}"),
            Self::Config(_) => f.write_str("invalid store configuration"),
            Self::TooSlow => f.write_str("the query ran past its time limit; narrow it"),
            Self::Other(_) => f.write_str("event store error"),
        }
    }
}

/// Written by hand rather than derived: the source is the error inside the shared cause, so a
/// caller can downcast it (to `sqlx::Error`, say), not the `Arc` around it.
impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Unavailable(c) | Self::Config(c) | Self::Other(c) => Some(&**c),
            Self::Corrupt { source, .. } => source.as_deref().map(|c| c as _),
            Self::TooSlow => None,
        }
    }
}

/// A cause that is only words of ours.
#[derive(Debug)]
struct Words(String);

impl fmt::Display for Words {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Words {}

/// A cause with what was being done when it happened.
#[derive(Debug)]
struct Doing {
    what: String,
    source: Cause,
}

impl fmt::Display for Doing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.what)
    }
}

impl std::error::Error for Doing {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

fn words(what: impl Into<String>) -> Cause {
    Arc::new(Words(what.into()))
}

impl StoreError {
    /// Stored data that does not read, with nothing under it.
    pub fn corrupt(what: impl Into<String>) -> Self {
        Self::Corrupt {
            what: what.into(),
            source: None,
        }
    }

    /// Stored data that does not read, because of `source`.
    pub fn corrupt_by(
        what: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::Corrupt {
            what: what.into(),
            source: Some(Arc::new(source)),
        }
    }

    pub fn unavailable(what: impl Into<String>) -> Self {
        Self::Unavailable(words(what))
    }

    pub fn other(what: impl Into<String>) -> Self {
        Self::Other(words(what))
    }

    pub fn config(what: impl Into<String>) -> Self {
        Self::Config(words(what))
    }

    /// A configuration that cannot be used, because of `source`, while doing `what`.
    pub fn config_by(
        what: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::Config(Arc::new(Doing {
            what: what.into(),
            source: Arc::new(source),
        }))
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => Self::Unavailable(Arc::new(e)),
            sqlx::Error::Configuration(_) => Self::Config(Arc::new(e)),
            // 57014: canceled by statement_timeout.
            sqlx::Error::Database(ref db) if db.code().as_deref() == Some("57014") => Self::TooSlow,
            other => Self::Other(Arc::new(other)),
        }
    }
}

/// A stored count or position that does not fit is stored data that does not read.
impl From<std::num::TryFromIntError> for StoreError {
    fn from(e: std::num::TryFromIntError) -> Self {
        Self::corrupt_by("a stored number is out of range", e)
    }
}

/// An error and every source under it, `outer: inner: innermost`, for one log field.
#[derive(Debug)]
pub struct Report<'a>(pub &'a (dyn std::error::Error + 'static));

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut next = self.0.source();
        while let Some(e) = next {
            write!(f, ": {e}")?;
            next = e.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cause_is_the_source_and_is_printed_once() {
        let e = StoreError::config_by(
            "cannot create ./data",
            std::io::Error::other("read-only file system"),
        );
        assert_eq!(e.to_string(), "invalid store configuration");
        assert_eq!(
            Report(&e).to_string(),
            "invalid store configuration: cannot create ./data: read-only file system"
        );
        let refused = StoreError::from(sqlx::Error::PoolTimedOut);
        assert!(matches!(refused, StoreError::Unavailable(_)));
        let source = std::error::Error::source(&refused).expect("a source");
        assert!(source.downcast_ref::<sqlx::Error>().is_some(), "{source}");
    }
}
