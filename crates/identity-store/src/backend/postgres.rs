//! The log on PostgreSQL: concurrent writers, so the feed reads below the oldest open
//! transaction (`xid8` per row) and commits are announced with NOTIFY.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Row};
use tokio::sync::Notify;

use super::{cursors_and_hashes, to_i64, to_u64, Dialect, EventRow as _};
use crate::append::{fail_all, positions_of, AppendError, Key, NewEvent, NewKey, Outcome, Request};
use crate::{migrations, FeedCursor, StoreError, StoredEvent, NOTIFY_CHANNEL};

#[derive(Debug)]
pub(crate) struct Postgres;

impl Dialect for Postgres {
    type Pool = PgPool;
    const KIND: &'static str = "postgres";
    const WRITERS: usize = 2;
    const EVENT_COLUMNS: &'static str = "global_position, xid::text::bigint AS xid, aggregate_type, aggregate_id, sequence,
         event_type, event_version, payload, metadata, hash,
         to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS recorded_at";

    async fn connect(url: &str, max_connections: u32) -> Result<PgPool, StoreError> {
        let options = PgConnectOptions::from_str(url)?;
        Ok(PgPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await?)
    }

    async fn migrate(pool: &PgPool) -> Result<(), StoreError> {
        migrations::postgres(pool).await
    }

    async fn write_batch(pool: &PgPool, batch: &[Request]) -> Vec<Outcome> {
        write_batch(pool, batch).await
    }

    async fn read_feed(
        pool: &PgPool,
        after: FeedCursor,
        limit: i64,
        prefix: Option<String>,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        sqlx::query(&format!(
            "SELECT {} FROM events
              WHERE xid < pg_snapshot_xmin(pg_current_snapshot())
                AND (xid, global_position) > ($1::text::xid8, $2)
                AND ($4::text IS NULL OR substr(aggregate_id, 1, length($4::text)) = $4::text)
              ORDER BY events.xid, events.global_position
              LIMIT $3",
            Self::EVENT_COLUMNS
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
        .map(|r| r.stored_event())
        .collect()
    }

    async fn read_hashes(
        pool: &PgPool,
        after: FeedCursor,
        limit: i64,
    ) -> Result<Vec<(FeedCursor, Option<String>)>, StoreError> {
        let rows: Vec<(i64, i64, Option<String>)> = sqlx::query_as(
            "SELECT xid::text::bigint, global_position, hash FROM events
              WHERE xid < pg_snapshot_xmin(pg_current_snapshot())
                AND (xid, global_position) > ($1::text::xid8, $2)
              ORDER BY events.xid, events.global_position
              LIMIT $3",
        )
        .bind(to_i64(after.xid))
        .bind(to_i64(after.position))
        .bind(limit)
        // Not prepared, as in `read_feed`: the row comparison starts deep in the index.
        .persistent(false)
        .fetch_all(pool)
        .await?;
        cursors_and_hashes(rows)
    }

    async fn feed_tail(pool: &PgPool) -> Result<Option<FeedCursor>, StoreError> {
        let row: Option<(i64, i64)> = sqlx::query_as(
            "SELECT xid::text::bigint, global_position FROM events
              WHERE xid < pg_snapshot_xmin(pg_current_snapshot())
              ORDER BY events.xid DESC, events.global_position DESC LIMIT 1",
        )
        .persistent(false)
        .fetch_optional(pool)
        .await?;
        row.map(|(xid, position)| {
            Ok(FeedCursor {
                xid: to_u64(xid)?,
                position: to_u64(position)?,
            })
        })
        .transpose()
    }

    async fn cursor_of(pool: &PgPool, position: u64) -> Result<Option<FeedCursor>, StoreError> {
        let xid: Option<i64> =
            sqlx::query_scalar("SELECT xid::text::bigint FROM events WHERE global_position = $1")
                .bind(to_i64(position))
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

    fn metadata_field(key: &str, arg: &str) -> String {
        format!("metadata->>'{key}' = {arg}")
    }

    fn recorded_at_bound(t: &str, op: &str, arg: &str) -> Result<(String, String), StoreError> {
        Ok((
            format!("recorded_at {op} {arg}::timestamptz"),
            t.to_string(),
        ))
    }

    async fn fetch_listing(
        pool: &PgPool,
        sql: &str,
        args: &[String],
        timeout: Option<Duration>,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        // A filter no index serves scans the log: bounded by the statement timeout.
        let mut tx = pool.begin().await?;
        if let Some(t) = timeout {
            sqlx::query(&format!("SET LOCAL statement_timeout = {}", t.as_millis()))
                .execute(&mut *tx)
                .await?;
        }
        let mut q = sqlx::query(sql);
        for a in args {
            q = q.bind(a);
        }
        let rows = q.fetch_all(&mut *tx).await?;
        tx.commit().await?;
        rows.iter().map(|r| r.stored_event()).collect()
    }

    /// Listens for commits of other processes (NOTIFY) and wakes local waiters. Runs until
    /// the pool closes; reconnects after errors.
    fn listen(pool: &PgPool, appended: Arc<Notify>) {
        let pool = pool.clone();
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

/// sqlx 0.8.6 (the version postgres-es 0.5 pins) has a known TLS deadlock when rustls needs
/// to read and write at once (sqlx issue 4248, fixed in a later release). On loopback TLS buys
/// nothing, so as a precaution, unless the URL chooses an `sslmode`, connections to 127.0.0.1,
/// ::1 or localhost use plain TCP. Remote URLs are left as given.
pub(crate) fn loopback_without_tls(url: &str) -> String {
    let is_pg = url.starts_with("postgres://") || url.starts_with("postgresql://");
    if !is_pg || url.contains("sslmode=") {
        return url.to_string();
    }
    let after_scheme = url.split_once("://").map_or("", |(_, rest)| rest);
    let authority = after_scheme.split(['/', '?']).next().unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if host_port.starts_with('[') {
        host_port
            .split(']')
            .next()
            .unwrap_or("")
            .trim_start_matches('[')
    } else {
        host_port.split(':').next().unwrap_or("")
    };
    if matches!(host, "127.0.0.1" | "localhost" | "::1") || host.starts_with("127.") {
        let sep = if url.contains('?') { '&' } else { '?' };
        format!("{url}{sep}sslmode=disable")
    } else {
        url.to_string()
    }
}

/// The whole batch as one statement; when a row conflicts or the statement fails, each command
/// alone, so only the stale or bad one reports its error (see `append.rs`).
async fn write_batch(pool: &PgPool, batch: &[Request]) -> Vec<Outcome> {
    let mut all: Vec<&NewEvent> = Vec::new();
    let mut keys: Vec<&NewKey> = Vec::new();
    for request in batch {
        all.extend(&request.events);
        keys.extend(&request.keys);
    }
    match insert_postgres(pool, &all, &keys).await {
        Ok(Some(positions)) => {
            let mut outcomes = Vec::with_capacity(batch.len());
            for request in batch {
                outcomes.push(positions_of(&positions, request));
            }
            outcomes
        }
        Ok(None) | Err(_) if batch.len() > 1 => {
            // Somebody's events conflict or cannot be stored: write each command alone to
            // find whose.
            let mut outcomes = Vec::with_capacity(batch.len());
            for request in batch {
                let own: Vec<&NewEvent> = request.events.iter().collect::<Vec<_>>();
                let own_keys: Vec<&NewKey> = request.keys.iter().collect();
                outcomes.push(match insert_postgres(pool, &own, &own_keys).await {
                    Ok(Some(positions)) => positions_of(&positions, request),
                    Ok(None) => Err(AppendError::Conflict),
                    Err(e) => Err(AppendError::Store(e)),
                });
            }
            outcomes
        }
        Ok(None) => vec![Err(AppendError::Conflict)],
        Err(e) => fail_all(batch.len(), &e),
    }
}

/// Inserts `keys`, then `events`, in one transaction and commits; `None` (rolled back) when
/// any of them conflicts.
async fn insert_postgres(
    pool: &PgPool,
    events: &[&NewEvent],
    keys: &[&NewKey],
) -> Result<Option<HashMap<Key, i64>>, StoreError> {
    // Columns built before the query: nothing borrowed by a closure lives across an await.
    let mut types = Vec::with_capacity(events.len());
    let mut ids = Vec::with_capacity(events.len());
    let mut sequences = Vec::with_capacity(events.len());
    let mut event_types = Vec::with_capacity(events.len());
    let mut versions = Vec::with_capacity(events.len());
    let mut payloads = Vec::with_capacity(events.len());
    let mut metadata = Vec::with_capacity(events.len());
    let mut hashes = Vec::with_capacity(events.len());
    for e in events {
        types.push(e.aggregate_type);
        ids.push(e.aggregate_id.as_str());
        sequences.push(e.sequence);
        event_types.push(e.event_type.as_str());
        versions.push(e.event_version.as_str());
        payloads.push(&e.payload);
        metadata.push(&e.metadata);
        hashes.push(e.hash.as_str());
    }
    let mut tx = pool.begin().await?;
    if !keys.is_empty() {
        let column = |f: fn(&NewKey) -> &str| keys.iter().map(|k| f(k)).collect::<Vec<_>>();
        let stored = sqlx::query(
            "INSERT INTO data_keys (subject, master_key_id, wrapped, created_at)
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[])
             ON CONFLICT DO NOTHING
             RETURNING subject",
        )
        .bind(column(|k| &k.subject))
        .bind(column(|k| &k.master_key_id))
        .bind(column(|k| &k.wrapped))
        .bind(column(|k| &k.created_at))
        .fetch_all(&mut *tx)
        .await?;
        if stored.len() != keys.len() {
            tx.rollback().await?;
            return Ok(None);
        }
    }
    let rows = sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, hash)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::jsonb[], $7::jsonb[], $8::text[])
         ON CONFLICT DO NOTHING
         RETURNING aggregate_type, aggregate_id, sequence, global_position",
    )
    .bind(types)
    .bind(ids)
    .bind(sequences)
    .bind(event_types)
    .bind(versions)
    .bind(payloads)
    .bind(metadata)
    .bind(hashes)
    .fetch_all(&mut *tx)
    .await?;
    if rows.len() != events.len() {
        tx.rollback().await?;
        return Ok(None);
    }
    let mut positions = HashMap::with_capacity(rows.len());
    for row in rows {
        positions.insert(
            (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?),
            row.try_get::<i64, _>(3)?,
        );
    }
    tx.commit().await?;
    Ok(Some(positions))
}

#[cfg(test)]
mod tests {
    use super::loopback_without_tls;

    #[test]
    fn loopback_postgres_urls_use_plain_tcp_unless_they_choose() {
        assert_eq!(
            loopback_without_tls("postgres://postgres@127.0.0.1:5432/db"),
            "postgres://postgres@127.0.0.1:5432/db?sslmode=disable"
        );
        assert_eq!(
            loopback_without_tls("postgres://u:p@localhost/db?application_name=x"),
            "postgres://u:p@localhost/db?application_name=x&sslmode=disable"
        );
        assert_eq!(
            loopback_without_tls("postgres://u@127.0.0.1/db?sslmode=require"),
            "postgres://u@127.0.0.1/db?sslmode=require"
        );
        assert_eq!(
            loopback_without_tls("postgres://u@db.internal:5432/db"),
            "postgres://u@db.internal:5432/db"
        );
        assert_eq!(
            loopback_without_tls("sqlite://data/x.db"),
            "sqlite://data/x.db"
        );
    }
}
