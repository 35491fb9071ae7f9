//! The global feed: every event, in an order that never skips one, from a cursor.
//!
//! On PostgreSQL, transactions commit out of order: an event with a lower `global_position`
//! can become visible after a higher one. A reader that checkpointed "up to position N" would
//! then skip the late one forever. So the feed reads only events whose writing transaction is
//! older than the oldest transaction still running (`xid < pg_snapshot_xmin(...)`): that set
//! is final, nothing can be added to it. Every event written later belongs to a transaction at
//! or above that horizon, so the feed orders by (transaction id, position) and its cursor is
//! that pair. Per aggregate the order is the sequence order: an aggregate's next event is
//! written by a transaction that read the previous one committed, so it gets a later xid.
//!
//! On SQLite writers are serialized and positions are assigned inside the writing
//! transaction, so positions become visible in order; the cursor's xid is always 0.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::backend::{dialect, Dialect as _};
use crate::{EventLog, StoreError};

/// Where a reader of the feed stands: everything at or before it has been read.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct FeedCursor {
    /// The writing transaction of the last event read (always 0 on SQLite).
    pub xid: u64,
    /// The global position of the last event read.
    pub position: u64,
}

/// One stored event, as the feed delivers it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub position: u64,
    pub xid: u64,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: u64,
    pub event_type: String,
    pub event_version: String,
    pub payload: serde_json::Value,
    pub metadata: serde_json::Value,
    /// RFC 3339.
    pub recorded_at: String,
    /// The chained hash (hex); `None` for events written before hashing existed.
    pub hash: Option<String>,
}

impl StoredEvent {
    pub fn cursor(&self) -> FeedCursor {
        FeedCursor {
            xid: self.xid,
            position: self.position,
        }
    }
}

/// The Postgres channel notified on every commit that appends events.
pub const NOTIFY_CHANNEL: &str = "identity_events";

impl EventLog {
    /// Up to `limit` events after `after`, in feed order, never past the safe horizon.
    pub async fn read_feed(
        &self,
        after: FeedCursor,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        self.read_feed_of(after, limit, None).await
    }

    /// [`EventLog::read_feed`], only the events of one tenant (filtered in the database).
    pub async fn read_feed_of(
        &self,
        after: FeedCursor,
        limit: u32,
        tenant: Option<&str>,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let limit = i64::from(limit.max(1));
        let prefix = tenant.map(|t| format!("{t}/"));
        let rows =
            dialect!(&self.backend, D, pool => D::read_feed(pool, after, limit, prefix).await?);
        self.decoded(rows).await
    }

    /// The cursor of the last event below the feed's horizon: a reader starting there sees
    /// every event from now on, without reading the past.
    pub async fn feed_tail(&self) -> Result<FeedCursor, StoreError> {
        Ok(dialect!(&self.backend, D, pool => D::feed_tail(pool).await?).unwrap_or_default())
    }

    /// The feed cursor of the event at `position`, to compare with a reader's cursor; `None`
    /// when no such event exists (yet).
    pub async fn cursor_of(&self, position: u64) -> Result<Option<FeedCursor>, StoreError> {
        if position == 0 {
            return Ok(Some(FeedCursor::default()));
        }
        dialect!(&self.backend, D, pool => D::cursor_of(pool, position).await)
    }

    /// Waits until new events may be in the feed: a commit notification, or `fallback` at
    /// the latest (notifications can be missed, e.g. across a reconnect).
    pub async fn wait_for_events(&self, fallback: Duration) {
        let notified = self.appended.notified();
        tokio::select! {
            () = notified => {}
            () = tokio::time::sleep(fallback) => {}
        }
    }

    /// Wakes local waiters on commits of other processes, where the database announces them.
    pub(crate) fn spawn_listener(&self) {
        dialect!(&self.backend, D, pool => D::listen(pool, self.appended.clone()));
    }
}
