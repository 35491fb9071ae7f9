//! The two databases the log lives in, and what the rest of the crate needs to treat them
//! alike: statements are written once with `$N` placeholders (PostgreSQL's, which sqlx's
//! SQLite driver binds by number too) and run on either pool through [`on_pool!`]; rows are
//! read through [`EventRow`], the one place that knows PostgreSQL keeps JSON as `jsonb` and
//! SQLite as text. What really differs by dialect (the feed's transaction horizon, the
//! group-commit writer, notifications, migrations) stays in a `match` on [`Backend`] at the
//! place it happens, with both arms side by side.

use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::{PgPool, Row, SqlitePool};

use crate::{StoreError, StoredEvent};

/// Which database holds the log.
#[derive(Debug, Clone)]
pub(crate) enum Backend {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

/// Runs the same code on whichever pool the log has: `on_pool!(&self.backend, pool => …)`.
/// The body is compiled once per driver, so a statement and its row decoding are written
/// once.
macro_rules! on_pool {
    ($backend:expr, $pool:ident => $body:expr) => {
        match $backend {
            $crate::backend::Backend::Postgres($pool) => $body,
            $crate::backend::Backend::Sqlite($pool) => $body,
        }
    };
}
pub(crate) use on_pool;

impl Backend {
    /// The columns of a [`StoredEvent`], as [`EventRow::stored_event`] reads them. SQLite has
    /// no transaction ids: its feed orders by position alone.
    pub(crate) fn event_columns(&self) -> &'static str {
        match self {
            Self::Postgres(_) => {
                "global_position, xid::text::bigint AS xid, aggregate_type, aggregate_id, sequence,
                 event_type, event_version, payload, metadata, hash,
                 to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS recorded_at"
            }
            Self::Sqlite(_) => {
                "global_position, 0 AS xid, aggregate_type, aggregate_id, sequence, event_type,
                 event_version, payload, metadata, hash, recorded_at"
            }
        }
    }
}

/// A stored number (never negative) as the `u64` the crate hands out.
pub(crate) fn to_u64(v: i64) -> Result<u64, StoreError> {
    Ok(u64::try_from(v)?)
}

/// A position or cursor as a database argument. A value beyond `i64::MAX` lies beyond every
/// stored position, so it saturates: as a lower bound it matches nothing, as an upper bound
/// everything.
pub(crate) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Reading a row of the events table the same way from either database.
pub(crate) trait EventRow: Row {
    /// A JSON column (`jsonb` on PostgreSQL, text on SQLite).
    fn json(&self, column: &str) -> Result<Value, StoreError>;

    /// A row selected with [`Backend::event_columns`], as stored (not yet brought forward:
    /// see `decode.rs`).
    fn stored_event(&self) -> Result<StoredEvent, StoreError>;
}

macro_rules! event_row {
    ($row:ty, |$r:ident, $column:ident| $json:expr) => {
        impl EventRow for $row {
            fn json(&self, $column: &str) -> Result<Value, StoreError> {
                let $r = self;
                $json
            }

            fn stored_event(&self) -> Result<StoredEvent, StoreError> {
                Ok(StoredEvent {
                    position: to_u64(self.try_get("global_position")?)?,
                    xid: to_u64(self.try_get("xid")?)?,
                    aggregate_type: self.try_get("aggregate_type")?,
                    aggregate_id: self.try_get("aggregate_id")?,
                    sequence: to_u64(self.try_get("sequence")?)?,
                    event_type: self.try_get("event_type")?,
                    event_version: self.try_get("event_version")?,
                    payload: self.json("payload")?,
                    metadata: self.json("metadata")?,
                    hash: self.try_get("hash")?,
                    recorded_at: self.try_get("recorded_at")?,
                })
            }
        }
    };
}

event_row!(PgRow, |r, column| Ok(r.try_get::<Value, _>(column)?));
event_row!(SqliteRow, |r, column| {
    let text: &str = r.try_get(column)?;
    serde_json::from_str(text).map_err(|e| StoreError::corrupt_by(format!("column {column}"), e))
});
