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
use tokio::sync::{mpsc, oneshot, Mutex};

use crate::backend::{dialect, Backend, Dialect as _};
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

/// A person's new data key, wrapped, stored in the transaction of the first events sealed
/// under it (seal/): a key exists only if its events do, and costs no commit of its own.
#[derive(Debug, Clone)]
pub(crate) struct NewKey {
    pub(crate) subject: String,
    pub(crate) master_key_id: String,
    pub(crate) wrapped: String,
    pub(crate) created_at: String,
}

/// Why an append did not go through.
#[derive(Debug)]
pub(crate) enum AppendError {
    /// Another writer already holds one of the sequences: the command ran on stale state.
    Conflict,
    Store(StoreError),
}

/// What one append comes to: the positions of its events, or why not.
pub(crate) type Outcome = Result<Vec<u64>, AppendError>;

#[derive(Debug)]
pub(crate) struct Request {
    pub(crate) events: Vec<NewEvent>,
    /// Data keys the events are sealed under, new with them: stored first, in the same
    /// transaction; one already stored is a conflict (another writer got there first).
    pub(crate) keys: Vec<NewKey>,
    reply: oneshot::Sender<Outcome>,
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
        let writers = dialect!(backend, D, _pool => D::WRITERS);
        for _ in 0..writers {
            tokio::spawn(writer(backend.clone(), receiver.clone()));
        }
        Self { requests }
    }

    /// Appends one unit's events atomically and answers, after the commit, with the global
    /// position of each event, in order.
    pub(crate) async fn append(
        &self,
        events: Vec<NewEvent>,
        keys: Vec<NewKey>,
    ) -> Result<Vec<u64>, AppendError> {
        let stopped =
            || AppendError::Store(StoreError::unavailable("the event writer has stopped"));
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Request {
                events,
                keys,
                reply,
            })
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
        let outcomes = dialect!(&backend, D, pool => D::write_batch(pool, &batch).await);
        for (request, outcome) in batch.into_iter().zip(outcomes) {
            // The caller may have gone (a cancelled RPC); its events are committed anyway.
            let _ = request.reply.send(outcome);
        }
    }
}

/// Whether a database error is a unique violation: 23505 on PostgreSQL, 1555/2067 on SQLite.
pub(crate) fn is_conflict(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if matches!(db.code().as_deref(), Some("23505" | "1555" | "2067")))
}

pub(crate) type Key = (String, String, i64);

pub(crate) fn positions_of(positions: &HashMap<Key, i64>, request: &Request) -> Outcome {
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

pub(crate) fn fail_all(n: usize, e: &StoreError) -> Vec<Outcome> {
    (0..n).map(|_| Err(AppendError::Store(e.clone()))).collect()
}
