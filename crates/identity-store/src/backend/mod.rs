//! The two databases the log lives in.
//!
//! What is the same on both is written once: statements with `$N` placeholders (PostgreSQL's,
//! which sqlx's SQLite driver binds by number too) run on either pool through [`on_pool!`], and
//! rows are read through [`EventRow`], the one place that knows PostgreSQL keeps JSON as
//! `jsonb` and SQLite as text. What really differs is one [`Dialect`] per database, each in its
//! own module ([`postgres`], [`sqlite`]): connecting, migrating, the group-commit writer's
//! batch, the feed's horizon and cursors, listing filters, and commit notifications. The
//! command loop, the cache and the hash chain sit above it, written once; [`dialect!`] picks
//! the dialect of the log at hand.

use std::sync::Arc;

use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::{PgPool, Row, SqlitePool};
use tokio::sync::Notify;

use crate::append::{Outcome, Request};
use crate::{FeedCursor, StoreError, StoredEvent};

pub(crate) mod postgres;
pub(crate) mod sqlite;

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

/// Runs `$body` with `$pool` bound to the log's pool and `$d` to its [`Dialect`]:
/// `dialect!(&self.backend, D, pool => D::feed_tail(pool).await)`.
macro_rules! dialect {
    ($backend:expr, $d:ident, $pool:ident => $body:expr) => {
        match $backend {
            $crate::backend::Backend::Postgres($pool) => {
                type $d = $crate::backend::postgres::Postgres;
                $body
            }
            $crate::backend::Backend::Sqlite($pool) => {
                type $d = $crate::backend::sqlite::Sqlite;
                $body
            }
        }
    };
}
pub(crate) use dialect;

/// What one database does its own way. Implemented by [`postgres::Postgres`] and
/// [`sqlite::Sqlite`]; nothing outside the crate sees it.
pub(crate) trait Dialect {
    type Pool: Clone + Send + Sync + 'static;
    /// The name logs and health details use.
    const KIND: &'static str;
    /// Writer tasks: one gathers while another commits where commits have round trips.
    const WRITERS: usize;
    /// The columns of a [`StoredEvent`], as [`EventRow::stored_event`] reads them.
    const EVENT_COLUMNS: &'static str;

    async fn connect(url: &str, max_connections: u32) -> Result<Self::Pool, StoreError>;
    async fn migrate(pool: &Self::Pool) -> Result<(), StoreError>;
    /// Writes one batch of appends (see `append.rs`), answering each in order.
    async fn write_batch(pool: &Self::Pool, batch: &[Request]) -> Vec<Outcome>;
    /// Up to `limit` events after `after` in feed order, below the horizon, optionally of
    /// aggregates whose id starts with `prefix` (a tenant's); as stored.
    async fn read_feed(
        pool: &Self::Pool,
        after: FeedCursor,
        limit: i64,
        prefix: Option<String>,
    ) -> Result<Vec<StoredEvent>, StoreError>;
    /// The cursors and stored hashes of up to `limit` events after `after` in feed order,
    /// below the horizon: what the checkpointer digests, without reading payloads.
    async fn read_hashes(
        pool: &Self::Pool,
        after: FeedCursor,
        limit: i64,
    ) -> Result<Vec<(FeedCursor, Option<String>)>, StoreError>;
    /// The cursor of the last event below the horizon, if any.
    async fn feed_tail(pool: &Self::Pool) -> Result<Option<FeedCursor>, StoreError>;
    /// The cursor of the event at `position` (above 0), if it exists.
    async fn cursor_of(pool: &Self::Pool, position: u64) -> Result<Option<FeedCursor>, StoreError>;
    /// A condition on one text field of the metadata, against argument `arg`.
    fn metadata_field(key: &str, arg: &str) -> String;
    /// A bound on `recorded_at` (`op` is `>=` or `<`) and the argument for it, from RFC 3339.
    fn recorded_at_bound(t: &str, op: &str, arg: &str) -> Result<(String, String), StoreError>;
    /// Runs a listing built from this dialect's parts, with its arguments, under `timeout`
    /// where the database can bound a statement.
    async fn fetch_listing(
        pool: &Self::Pool,
        sql: &str,
        args: &[String],
        timeout: Option<std::time::Duration>,
    ) -> Result<Vec<StoredEvent>, StoreError>;
    /// Wakes `appended` on commits of other processes, where the database can say so.
    fn listen(_pool: &Self::Pool, _appended: Arc<Notify>) {}
}

impl Backend {
    pub(crate) fn event_columns(&self) -> &'static str {
        dialect!(self, D, _pool => D::EVENT_COLUMNS)
    }
}

/// A stored number (never negative) as the `u64` the crate hands out.
pub(crate) fn to_u64(v: i64) -> Result<u64, StoreError> {
    Ok(u64::try_from(v)?)
}

/// `(xid, position, hash)` rows as feed cursors with their stored hashes.
pub(crate) fn cursors_and_hashes(
    rows: Vec<(i64, i64, Option<String>)>,
) -> Result<Vec<(FeedCursor, Option<String>)>, StoreError> {
    rows.into_iter()
        .map(|(xid, position, hash)| {
            let cursor = FeedCursor {
                xid: to_u64(xid)?,
                position: to_u64(position)?,
            };
            Ok((cursor, hash))
        })
        .collect()
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

    /// A row selected with [`Dialect::EVENT_COLUMNS`], as stored (not yet brought forward:
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
