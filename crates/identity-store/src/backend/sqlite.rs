//! The log in SQLite: one writer at a time, so positions are simply one past the highest and
//! the feed needs no horizon; no notifications across processes (readers poll).

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;

use super::{cursors_and_hashes, to_i64, to_u64, Dialect, EventRow as _};
use crate::append::{fail_all, is_conflict, AppendError, Outcome, Request};
use crate::{migrations, FeedCursor, StoreError, StoredEvent};

/// How long a statement waits for another connection's lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// SQLITE_BUSY, or one of its extended codes.
fn is_busy(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => db
            .code()
            .and_then(|c| c.parse::<i64>().ok())
            .is_some_and(|c| c & 0xff == 5),
        _ => false,
    }
}

#[derive(Debug)]
pub(crate) struct Sqlite;

impl Dialect for Sqlite {
    type Pool = SqlitePool;
    const KIND: &'static str = "sqlite";
    const WRITERS: usize = 1;
    /// SQLite has no transaction ids: its feed orders by position alone.
    const EVENT_COLUMNS: &'static str =
        "global_position, 0 AS xid, aggregate_type, aggregate_id, sequence, event_type,
         event_version, payload, metadata, hash, recorded_at";

    async fn connect(url: &str, max_connections: u32) -> Result<SqlitePool, StoreError> {
        let path = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .unwrap_or(url);
        let file = path.split('?').next().unwrap_or(path);
        if let Some(dir) = std::path::Path::new(file).parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir).map_err(|e| {
                    StoreError::config_by(format!("cannot create {}", dir.display()), e)
                })?;
            }
        }
        // FULL synchronous mode: a command is acknowledged only once its events are on disk.
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            // Deleted and overwritten bytes are zeroed, not left in free pages: an erased
            // person's data key must not survive in the file (docs/adr/0006).
            .pragma("secure_delete", "ON")
            .busy_timeout(BUSY_TIMEOUT);
        // Opening a new file while another process sets it up (WAL mode, the first tables)
        // can answer SQLITE_BUSY at once, before any busy handler applies: seen as "database is
        // locked" when four replicas start together on a new store. Try again for as long as
        // a busy statement would wait.
        let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
        loop {
            let opened = SqlitePoolOptions::new()
                .max_connections(max_connections.clamp(1, 8))
                .connect_with(options.clone())
                .await;
            match opened {
                Err(e) if is_busy(&e) && std::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                other => return Ok(other?),
            }
        }
    }

    async fn migrate(pool: &SqlitePool) -> Result<(), StoreError> {
        migrations::sqlite(pool).await
    }

    async fn write_batch(pool: &SqlitePool, batch: &[Request]) -> Vec<Outcome> {
        write_batch(pool, batch).await
    }

    async fn read_feed(
        pool: &SqlitePool,
        after: FeedCursor,
        limit: i64,
        prefix: Option<String>,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        sqlx::query(&format!(
            "SELECT {} FROM events WHERE global_position > $1
                AND ($3 IS NULL OR substr(aggregate_id, 1, length($3)) = $3)
              ORDER BY global_position LIMIT $2",
            Self::EVENT_COLUMNS
        ))
        .bind(to_i64(after.position))
        .bind(limit)
        .bind(prefix)
        .fetch_all(pool)
        .await?
        .iter()
        .map(|r| r.stored_event())
        .collect()
    }

    async fn read_hashes(
        pool: &SqlitePool,
        after: FeedCursor,
        limit: i64,
    ) -> Result<Vec<(FeedCursor, Option<String>)>, StoreError> {
        let rows: Vec<(i64, i64, Option<String>)> = sqlx::query_as(
            "SELECT 0, global_position, hash FROM events WHERE global_position > $1
              ORDER BY global_position LIMIT $2",
        )
        .bind(to_i64(after.position))
        .bind(limit)
        .fetch_all(pool)
        .await?;
        cursors_and_hashes(rows)
    }

    async fn feed_tail(pool: &SqlitePool) -> Result<Option<FeedCursor>, StoreError> {
        let position: Option<i64> = sqlx::query_scalar(
            "SELECT global_position FROM events ORDER BY global_position DESC LIMIT 1",
        )
        .fetch_optional(pool)
        .await?;
        position
            .map(|p| {
                Ok(FeedCursor {
                    xid: 0,
                    position: to_u64(p)?,
                })
            })
            .transpose()
    }

    async fn cursor_of(pool: &SqlitePool, position: u64) -> Result<Option<FeedCursor>, StoreError> {
        let found: Option<i64> =
            sqlx::query_scalar("SELECT global_position FROM events WHERE global_position = $1")
                .bind(to_i64(position))
                .fetch_optional(pool)
                .await?;
        Ok(found.map(|_| FeedCursor { xid: 0, position }))
    }

    fn metadata_field(key: &str, arg: &str) -> String {
        format!("json_extract(metadata, '$.{key}') = {arg}")
    }

    /// SQLite keeps `recorded_at` as `YYYY-MM-DDTHH:MM:SS.sssZ` text; compare in that form.
    fn recorded_at_bound(t: &str, op: &str, arg: &str) -> Result<(String, String), StoreError> {
        let v = chrono::DateTime::parse_from_rfc3339(t)
            .map(|d| {
                d.with_timezone(&chrono::Utc)
                    .format("%Y-%m-%dT%H:%M:%S%.3fZ")
                    .to_string()
            })
            .map_err(|_| StoreError::other(format!("bad time {t:?}")))?;
        Ok((format!("recorded_at {op} {arg}"), v))
    }

    async fn fetch_listing(
        pool: &SqlitePool,
        sql: &str,
        args: &[String],
        _timeout: Option<Duration>,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let mut q = sqlx::query(sql);
        for a in args {
            q = q.bind(a);
        }
        q.fetch_all(pool)
            .await?
            .iter()
            .map(|r| r.stored_event())
            .collect()
    }
}

async fn write_batch(pool: &SqlitePool, batch: &[Request]) -> Vec<Outcome> {
    match sqlite_batch(pool, batch).await {
        Ok(outcomes) => outcomes,
        Err(e) => fail_all(batch.len(), &e),
    }
}

/// One transaction; each command under its own savepoint, so a conflicting one is rolled
/// back alone.
async fn sqlite_batch(pool: &SqlitePool, batch: &[Request]) -> Result<Vec<Outcome>, StoreError> {
    // IMMEDIATE: take the write lock first, so no statement fails on a lock upgrade.
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let mut outcomes = Vec::with_capacity(batch.len());
    for request in batch {
        let mut savepoint = sqlx::Connection::begin(&mut *tx).await?;
        let mut positions = Vec::with_capacity(request.events.len());
        let mut failure = None;
        // New data keys first: one already stored fails as a conflict, like a taken sequence.
        for k in &request.keys {
            let stored = sqlx::query(
                "INSERT INTO data_keys (subject, master_key_id, wrapped, created_at)
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(k.subject.as_str())
            .bind(k.master_key_id.as_str())
            .bind(k.wrapped.as_str())
            .bind(k.created_at.as_str())
            .execute(&mut *savepoint)
            .await;
            if let Err(e) = stored {
                failure = Some(e);
                break;
            }
        }
        let events = if failure.is_none() {
            &request.events[..]
        } else {
            &[]
        };
        for e in events {
            // Writers are serialized (BEGIN IMMEDIATE), so one past the highest is the next
            // position; the unique index makes MAX a single probe.
            let inserted: Result<i64, sqlx::Error> = sqlx::query_scalar(
                "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, hash, global_position)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, (SELECT COALESCE(MAX(global_position), 0) + 1 FROM events))
                 RETURNING global_position",
            )
            .bind(e.aggregate_type)
            .bind(e.aggregate_id.as_str())
            .bind(e.sequence)
            .bind(e.event_type.as_str())
            .bind(e.event_version.as_str())
            .bind(e.payload.to_string())
            .bind(e.metadata.to_string())
            .bind(e.hash.as_str())
            .fetch_one(&mut *savepoint)
            .await;
            match inserted {
                Ok(position) => positions.push(position),
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        match failure {
            None => {
                savepoint.commit().await?;
                outcomes.push(
                    positions
                        .into_iter()
                        .map(|p| u64::try_from(p).map_err(|e| AppendError::Store(e.into())))
                        .collect(),
                );
            }
            Some(e) => {
                savepoint.rollback().await?;
                outcomes.push(Err(if is_conflict(&e) {
                    AppendError::Conflict
                } else {
                    AppendError::Store(e.into())
                }));
            }
        }
    }
    tx.commit().await?;
    Ok(outcomes)
}
