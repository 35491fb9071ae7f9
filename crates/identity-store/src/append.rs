//! The write path: group commit.
//!
//! Commands do not open transactions of their own. Each hands its events, already
//! sequenced and hash-chained, to a writer task; a writer gathers whatever appends are
//! waiting (up to [`MAX_BATCH_EVENTS`]) and writes them in one transaction, so many
//! concurrent commands share one commit and one fsync. Every caller is answered only after
//! that commit, with the global position of its last event: an acknowledged command is
//! durable exactly as before.
//!
//! One command's failure must not fail the others:
//! - PostgreSQL: the whole batch is one `INSERT … SELECT FROM UNNEST(…) ON CONFLICT DO
//!   NOTHING RETURNING …`. When every row comes back, the batch commits. When a row is
//!   missing (another writer took that sequence) or the statement fails for any other
//!   reason (a payload the database refuses), the batch rolls back and each command is
//!   written alone, so only the stale or bad one reports its error. Both are rare: commands
//!   on one aggregate are serialized in-process, so conflicts come from other replicas, and
//!   input is validated before it becomes an event.
//! - SQLite: in-process and without round trips, so each command gets a savepoint inside
//!   the batch's transaction and a failing one rolls back to it.
//!
//! A command here may carry the events of several aggregates (a unit of work: a claim and
//! the registration it guards); they commit together or not at all.
//!
//! DESIGN.md, performance notes; docs/adr/0001-event-log.md.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;
use sqlx::{PgPool, Row, SqlitePool};
use tokio::sync::{mpsc, oneshot, Mutex};

use crate::backend::Backend;
use crate::StoreError;

/// The most events one transaction carries; more waiting appends go to the next batch.
const MAX_BATCH_EVENTS: usize = 512;

/// One event ready to be appended, with its chained hash.
#[derive(Debug)]
pub(crate) struct NewEvent {
    pub(crate) aggregate_type: &'static str,
    pub(crate) aggregate_id: String,
    pub(crate) sequence: i64,
    pub(crate) event_type: String,
    pub(crate) event_version: String,
    pub(crate) payload: Value,
    pub(crate) metadata: Value,
    pub(crate) hash: String,
}

/// Why an append did not go through.
#[derive(Debug)]
pub(crate) enum AppendError {
    /// Another writer already holds one of the sequences: the command ran on stale state.
    Conflict,
    Store(StoreError),
}

#[derive(Debug)]
struct Request {
    events: Vec<NewEvent>,
    reply: oneshot::Sender<Result<Vec<u64>, AppendError>>,
}

/// The handle commands append through. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Appender {
    requests: mpsc::Sender<Request>,
}

impl Appender {
    /// Starts the writer tasks: two on PostgreSQL (one gathers while the other commits),
    /// one on SQLite (it has a single writer anyway).
    pub(crate) fn start(backend: &Backend) -> Self {
        let (requests, receiver) = mpsc::channel(4096);
        let receiver = Arc::new(Mutex::new(receiver));
        let writers = match backend {
            Backend::Postgres(_) => 2,
            Backend::Sqlite(_) => 1,
        };
        for _ in 0..writers {
            tokio::spawn(writer(backend.clone(), receiver.clone()));
        }
        Self { requests }
    }

    /// Appends one unit's events atomically and answers, after the commit, with the global
    /// position of each event, in order.
    pub(crate) async fn append(&self, events: Vec<NewEvent>) -> Result<Vec<u64>, AppendError> {
        let stopped =
            || AppendError::Store(StoreError::unavailable("the event writer has stopped"));
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Request { events, reply })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

async fn writer(backend: Backend, receiver: Arc<Mutex<mpsc::Receiver<Request>>>) {
    loop {
        let batch = {
            let mut receiver = receiver.lock().await;
            let Some(first) = receiver.recv().await else {
                return;
            };
            let mut size = first.events.len();
            let mut batch = vec![first];
            while size < MAX_BATCH_EVENTS {
                match receiver.try_recv() {
                    Ok(next) => {
                        size += next.events.len();
                        batch.push(next);
                    }
                    Err(_) => break,
                }
            }
            batch
        };
        let outcomes = match &backend {
            Backend::Postgres(pool) => write_postgres(pool, &batch).await,
            Backend::Sqlite(pool) => write_sqlite(pool, &batch).await,
        };
        for (request, outcome) in batch.into_iter().zip(outcomes) {
            // The caller may have gone (a cancelled RPC); its events are committed anyway.
            let _ = request.reply.send(outcome);
        }
    }
}

/// Whether a database error is a unique violation: 23505 on PostgreSQL, 1555/2067 on SQLite.
fn is_conflict(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if matches!(db.code().as_deref(), Some("23505" | "1555" | "2067")))
}

type Key = (String, String, i64);

fn positions_of(positions: &HashMap<Key, i64>, request: &Request) -> Result<Vec<u64>, AppendError> {
    let mut out = Vec::with_capacity(request.events.len());
    for e in &request.events {
        let key = (
            e.aggregate_type.to_string(),
            e.aggregate_id.clone(),
            e.sequence,
        );
        let position = positions.get(&key).copied().ok_or_else(|| {
            AppendError::Store(StoreError::other(format!(
                "event {}/{}#{} came back without a position",
                e.aggregate_type, e.aggregate_id, e.sequence
            )))
        })?;
        out.push(u64::try_from(position).map_err(|e| AppendError::Store(e.into()))?);
    }
    Ok(out)
}

async fn write_postgres(pool: &PgPool, batch: &[Request]) -> Vec<Result<Vec<u64>, AppendError>> {
    let mut all: Vec<&NewEvent> = Vec::new();
    for request in batch {
        all.extend(&request.events);
    }
    match insert_postgres(pool, &all).await {
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
                outcomes.push(match insert_postgres(pool, &own).await {
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

/// Inserts `events` in one transaction and commits; `None` (rolled back) when any of them
/// conflicts.
async fn insert_postgres(
    pool: &PgPool,
    events: &[&NewEvent],
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

fn fail_all(n: usize, e: &StoreError) -> Vec<Result<Vec<u64>, AppendError>> {
    (0..n).map(|_| Err(AppendError::Store(e.clone()))).collect()
}

async fn write_sqlite(pool: &SqlitePool, batch: &[Request]) -> Vec<Result<Vec<u64>, AppendError>> {
    match sqlite_batch(pool, batch).await {
        Ok(outcomes) => outcomes,
        Err(e) => fail_all(batch.len(), &e),
    }
}

/// One transaction; each command under its own savepoint, so a conflicting one is rolled
/// back alone.
async fn sqlite_batch(
    pool: &SqlitePool,
    batch: &[Request],
) -> Result<Vec<Result<Vec<u64>, AppendError>>, StoreError> {
    // IMMEDIATE: take the write lock first, so no statement fails on a lock upgrade.
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let mut outcomes = Vec::with_capacity(batch.len());
    for request in batch {
        let mut savepoint = sqlx::Connection::begin(&mut *tx).await?;
        let mut positions = Vec::with_capacity(request.events.len());
        let mut failure = None;
        for e in &request.events {
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
