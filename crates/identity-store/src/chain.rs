//! Tamper evidence: every event carries a SHA-256 hash chaining it to the previous event of
//! its aggregate, written in the same transaction as the event.
//!
//! `hash = SHA-256(previous hash (hex, "" for the first event) ‖ 0x0A ‖ canonical(event))`,
//! where `canonical(event)` is the compact JSON array
//! `[aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata]`
//! with object keys sorted and numbers written one way (whole numbers as integers). The
//! encoding depends only on the stored values, so PostgreSQL's `jsonb` and SQLite's text give
//! the same hash.
//!
//! postgres-es / sqlite-es cannot write a column they do not know in their insert, so
//! [`ChainedRepository`] implements cqrs-es's `PersistedEventRepository` over the same table:
//! reads go to the crates' repositories; `persist` inserts with the hash (DESIGN.md, 10).

use cqrs_es::persist::{
    PersistedEventRepository, PersistenceError, ReplayStream, SerializedEvent, SerializedSnapshot,
};
use cqrs_es::Aggregate;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::Backend;

/// Writes `v` in the canonical form the hash chain uses.
fn canonical(v: &Value, out: &mut String) {
    match v {
        Value::Null | Value::Bool(_) | Value::String(_) => {
            out.push_str(&serde_json::to_string(v).unwrap_or_default());
        }
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                out.push_str(&i.to_string());
            } else if let Some(u) = n.as_u64() {
                out.push_str(&u.to_string());
            } else {
                let f = n.as_f64().unwrap_or(0.0);
                if f.fract() == 0.0 && f.abs() < 9.0e15 {
                    out.push_str(&(f as i64).to_string());
                } else {
                    out.push_str(&serde_json::to_string(&f).unwrap_or_default());
                }
            }
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::to_string(k).unwrap_or_default());
                out.push(':');
                canonical(&map[k], out);
            }
            out.push('}');
        }
    }
}

/// The fields of an event that its hash covers.
#[derive(Debug, Clone, Copy)]
pub struct HashInput<'a> {
    pub aggregate_type: &'a str,
    pub aggregate_id: &'a str,
    pub sequence: u64,
    pub event_type: &'a str,
    pub event_version: &'a str,
    pub payload: &'a Value,
    pub metadata: &'a Value,
}

/// The chained hash of an event, as lowercase hex.
pub fn event_hash(previous: &str, e: &HashInput<'_>) -> String {
    let mut body = String::new();
    let head = Value::Array(vec![
        Value::from(e.aggregate_type),
        Value::from(e.aggregate_id),
        Value::from(e.sequence),
        Value::from(e.event_type),
        Value::from(e.event_version),
        e.payload.clone(),
        e.metadata.clone(),
    ]);
    canonical(&head, &mut body);
    let mut h = Sha256::new();
    h.update(previous.as_bytes());
    h.update(b"\n");
    h.update(body.as_bytes());
    hex::encode(h.finalize())
}

fn persistence_error(e: sqlx::Error) -> PersistenceError {
    match &e {
        sqlx::Error::Database(db) => {
            // 23505: PostgreSQL unique violation; 1555/2067: SQLite primary key / unique.
            if matches!(db.code().as_deref(), Some("23505" | "1555" | "2067")) {
                return PersistenceError::OptimisticLockError;
            }
            PersistenceError::UnknownError(Box::new(e))
        }
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed => PersistenceError::ConnectionError(Box::new(e)),
        _ => PersistenceError::UnknownError(Box::new(e)),
    }
}

/// An event repository that reads through postgres-es / sqlite-es and writes events with
/// their chained hash.
#[derive(Debug)]
pub(crate) struct ChainedRepository<R> {
    inner: R,
    backend: Backend,
}

impl<R> ChainedRepository<R> {
    pub(crate) fn new(inner: R, backend: Backend) -> Self {
        Self { inner, backend }
    }
}

impl<R: PersistedEventRepository> PersistedEventRepository for ChainedRepository<R> {
    async fn get_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        self.inner.get_events::<A>(aggregate_id).await
    }

    async fn get_last_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
        last_sequence: usize,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        self.inner
            .get_last_events::<A>(aggregate_id, last_sequence)
            .await
    }

    async fn get_snapshot<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Option<SerializedSnapshot>, PersistenceError> {
        self.inner.get_snapshot::<A>(aggregate_id).await
    }

    async fn persist<A: Aggregate>(
        &self,
        events: &[SerializedEvent],
        snapshot_update: Option<(String, Value, usize)>,
    ) -> Result<(), PersistenceError> {
        if snapshot_update.is_some() {
            return Err(PersistenceError::UnknownError(
                "snapshots are not used by this service (docs/adr/0001-event-log.md)".into(),
            ));
        }
        let Some(first) = events.first() else {
            return Ok(());
        };
        match &self.backend {
            Backend::Postgres(pool) => {
                let mut tx = pool.begin().await.map_err(persistence_error)?;
                let mut previous: String = sqlx::query_scalar(
                    "SELECT COALESCE(hash, '') FROM events WHERE aggregate_type = $1 AND aggregate_id = $2 ORDER BY sequence DESC LIMIT 1",
                )
                .bind(A::TYPE)
                .bind(&first.aggregate_id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(persistence_error)?
                .unwrap_or_default();
                for e in events {
                    let hash = hash_of::<A>(&previous, e);
                    sqlx::query(
                        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, hash)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    )
                    .bind(A::TYPE)
                    .bind(&e.aggregate_id)
                    .bind(e.sequence as i64)
                    .bind(&e.event_type)
                    .bind(&e.event_version)
                    .bind(&e.payload)
                    .bind(&e.metadata)
                    .bind(&hash)
                    .execute(&mut *tx)
                    .await
                    .map_err(persistence_error)?;
                    previous = hash;
                }
                tx.commit().await.map_err(persistence_error)
            }
            Backend::Sqlite(pool) => {
                // IMMEDIATE: take the write lock before reading the previous hash, so the
                // read-then-insert cannot fail on a lock upgrade ("database is locked").
                let mut tx = pool
                    .begin_with("BEGIN IMMEDIATE")
                    .await
                    .map_err(persistence_error)?;
                let mut previous: String = sqlx::query_scalar(
                    "SELECT COALESCE(hash, '') FROM events WHERE aggregate_type = ?1 AND aggregate_id = ?2 ORDER BY sequence DESC LIMIT 1",
                )
                .bind(A::TYPE)
                .bind(&first.aggregate_id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(persistence_error)?
                .unwrap_or_default();
                for e in events {
                    let hash = hash_of::<A>(&previous, e);
                    sqlx::query(
                        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, hash)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    )
                    .bind(A::TYPE)
                    .bind(&e.aggregate_id)
                    .bind(e.sequence as i64)
                    .bind(&e.event_type)
                    .bind(&e.event_version)
                    .bind(e.payload.to_string())
                    .bind(e.metadata.to_string())
                    .bind(&hash)
                    .execute(&mut *tx)
                    .await
                    .map_err(persistence_error)?;
                    previous = hash;
                }
                tx.commit().await.map_err(persistence_error)
            }
        }
    }

    async fn stream_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<ReplayStream, PersistenceError> {
        self.inner.stream_events::<A>(aggregate_id).await
    }

    async fn stream_all_events<A: Aggregate>(&self) -> Result<ReplayStream, PersistenceError> {
        self.inner.stream_all_events::<A>().await
    }
}

fn hash_of<A: Aggregate>(previous: &str, e: &SerializedEvent) -> String {
    event_hash(
        previous,
        &HashInput {
            aggregate_type: A::TYPE,
            aggregate_id: &e.aggregate_id,
            sequence: e.sequence as u64,
            event_type: &e.event_type,
            event_version: &e.event_version,
            payload: &e.payload,
            metadata: &e.metadata,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_form_ignores_key_order_and_number_spelling() {
        let a: Value = serde_json::from_str(r#"{"b":1,"a":{"y":2.0,"x":[1,"s"]}}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"a":{"x":[1,"s"],"y":2},"b":1}"#).unwrap();
        let (mut sa, mut sb) = (String::new(), String::new());
        canonical(&a, &mut sa);
        canonical(&b, &mut sb);
        assert_eq!(sa, sb);
        assert_eq!(sa, r#"{"a":{"x":[1,"s"],"y":2},"b":1}"#);
    }

    #[test]
    fn the_hash_chains_to_the_previous_one() {
        let payload = serde_json::json!({"E": {"n": 1}});
        let meta = serde_json::json!({"actor": "a"});
        let input = HashInput {
            aggregate_type: "T",
            aggregate_id: "t/1",
            sequence: 1,
            event_type: "E",
            event_version: "1.0",
            payload: &payload,
            metadata: &meta,
        };
        let first = event_hash("", &input);
        assert_eq!(first.len(), 64);
        assert_ne!(first, event_hash("00", &input));
        assert_eq!(first, event_hash("", &input));
    }
}
