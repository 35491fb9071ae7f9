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

use crate::backend::{to_i64, to_u64, Backend, EventRow as _};
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
        match &self.backend {
            Backend::Postgres(pool) => sqlx::query(&format!(
                "SELECT {} FROM events
                  WHERE xid < pg_snapshot_xmin(pg_current_snapshot())
                    AND (xid, global_position) > ($1::text::xid8, $2)
                    AND ($4::text IS NULL OR substr(aggregate_id, 1, length($4::text)) = $4::text)
                  ORDER BY events.xid, events.global_position
                  LIMIT $3",
                self.backend.event_columns()
            ))
            .bind(to_i64(after.xid))
            .bind(to_i64(after.position))
            .bind(limit)
            .bind(prefix)
            // The table's columns, qualified: the bare `xid` in ORDER BY named the output
            // column (`xid::text::bigint`), which made PostgreSQL read and sort every later
            // event for each batch (seen: 0.5 s per batch at 1M events). Not prepared: a
            // generic plan cannot see that the row comparison starts deep in the index.
            .persistent(false)
            .fetch_all(pool)
            .await?
            .iter()
            .map(|r| self.read(r.stored_event()))
            .collect(),
            Backend::Sqlite(pool) => sqlx::query(&format!(
                "SELECT {} FROM events WHERE global_position > $1
                    AND ($3 IS NULL OR substr(aggregate_id, 1, length($3)) = $3)
                  ORDER BY global_position LIMIT $2",
                self.backend.event_columns()
            ))
            .bind(to_i64(after.position))
            .bind(limit)
            .bind(prefix)
            .fetch_all(pool)
            .await?
            .iter()
            .map(|r| self.read(r.stored_event()))
            .collect(),
        }
    }

    /// The cursor of the last event below the feed's horizon: a reader starting there sees
    /// every event from now on, without reading the past.
    pub async fn feed_tail(&self) -> Result<FeedCursor, StoreError> {
        let row: Option<(i64, i64)> =
            match &self.backend {
                Backend::Postgres(pool) => {
                    sqlx::query_as(
                        "SELECT xid::text::bigint, global_position FROM events
                      WHERE xid < pg_snapshot_xmin(pg_current_snapshot())
                      ORDER BY events.xid DESC, events.global_position DESC LIMIT 1",
                    )
                    .persistent(false)
                    .fetch_optional(pool)
                    .await?
                }
                Backend::Sqlite(pool) => sqlx::query_as(
                    "SELECT 0, global_position FROM events ORDER BY global_position DESC LIMIT 1",
                )
                .fetch_optional(pool)
                .await?,
            };
        Ok(match row {
            Some((xid, position)) => FeedCursor {
                xid: to_u64(xid)?,
                position: to_u64(position)?,
            },
            None => FeedCursor::default(),
        })
    }

    /// The feed cursor of the event at `position`, to compare with a reader's cursor; `None`
    /// when no such event exists (yet).
    pub async fn cursor_of(&self, position: u64) -> Result<Option<FeedCursor>, StoreError> {
        if position == 0 {
            return Ok(Some(FeedCursor::default()));
        }
        let pos = to_i64(position);
        match &self.backend {
            Backend::Postgres(pool) => {
                let xid: Option<i64> = sqlx::query_scalar(
                    "SELECT xid::text::bigint FROM events WHERE global_position = $1",
                )
                .bind(pos)
                .fetch_optional(pool)
                .await?;
                xid.map(|x| {
                    Ok(FeedCursor {
                        xid: to_u64(x)?,
                        position,
                    })
                })
                .transpose()
            }
            Backend::Sqlite(pool) => {
                let found: Option<i64> = sqlx::query_scalar(
                    "SELECT global_position FROM events WHERE global_position = $1",
                )
                .bind(pos)
                .fetch_optional(pool)
                .await?;
                Ok(found.map(|_| FeedCursor { xid: 0, position }))
            }
        }
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

    /// Listens for commits of other processes (PostgreSQL NOTIFY) and wakes local waiters.
    /// Runs until the process ends; reconnects after errors.
    pub(crate) fn spawn_listener(&self) {
        let Backend::Postgres(pool) = &self.backend else {
            return;
        };
        let pool = pool.clone();
        let appended = self.appended.clone();
        tokio::spawn(async move {
            loop {
                match sqlx::postgres::PgListener::connect_with(&pool).await {
                    Ok(mut listener) => {
                        if let Err(e) = listener.listen(NOTIFY_CHANNEL).await {
                            tracing::warn!(error = %e, "LISTEN failed; retrying");
                        } else {
                            loop {
                                match listener.recv().await {
                                    Ok(_) => appended.notify_waiters(),
                                    Err(e) => {
                                        tracing::warn!(error = %e, "event notifications lost; reconnecting");
                                        break;
                                    }
                                }
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot listen for event notifications; retrying")
                    }
                }
                if pool.is_closed() {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }
}
