//! The outbox: messages that must leave through a delivery channel (one-time codes for a
//! notification service) exactly once, even when the process dies between deciding and
//! sending.
//!
//! A message is written here *before* the command that gives it meaning is appended, and a
//! relay sends it only once the log shows that command took effect (for a code: the user's
//! pending change carries the message's `code_hash`). So a crash before the append leaves a
//! row that never matches and expires; a crash after it leaves a row the next relay sends; a
//! crash after sending but before removal sends it again under the same message id, which the
//! channel deduplicates. Rows hold the code in clear only until they are sent or expire.

use chrono::{DateTime, Utc};
use sqlx::Row;

use crate::backend::on_pool;
use crate::{EventLog, StoreError};

/// One message waiting to be sent.
#[derive(Clone, PartialEq, Eq)]
pub struct OutboxMessage {
    /// Unique and stable: the channel deduplicates on it.
    pub id: String,
    /// The aggregate whose state decides whether the message is due.
    pub aggregate_id: String,
    /// The stored form of the code the message carries.
    pub code_hash: String,
    /// What the channel receives (JSON).
    pub body: String,
    /// After this the message is worthless and is dropped unsent.
    pub expires_at: DateTime<Utc>,
}

impl std::fmt::Debug for OutboxMessage {
    // The body holds a code and a destination: never in logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboxMessage")
            .field("id", &self.id)
            .field("aggregate_id", &self.aggregate_id)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

fn decode(
    id: String,
    aggregate_id: String,
    code_hash: String,
    body: String,
    expires: i64,
) -> Result<OutboxMessage, StoreError> {
    let expires_at = DateTime::from_timestamp(expires, 0)
        .ok_or_else(|| StoreError::corrupt(format!("outbox row {id}: bad expiry {expires}")))?;
    Ok(OutboxMessage {
        id,
        aggregate_id,
        code_hash,
        body,
        expires_at,
    })
}

impl EventLog {
    /// Stores a message before the command that makes it due is appended.
    pub async fn outbox_put(&self, message: &OutboxMessage) -> Result<(), StoreError> {
        const COLUMNS: &str = "INSERT INTO outbox (id, aggregate_id, code_hash, body, expires_at)";
        let expires = message.expires_at.timestamp();
        on_pool!(&self.backend, pool => sqlx::query(&format!("{COLUMNS} VALUES ($1, $2, $3, $4, $5)"))
            .bind(&message.id)
            .bind(&message.aggregate_id)
            .bind(&message.code_hash)
            .bind(&message.body)
            .bind(expires)
            .execute(pool)
            .await
            .map(|_| ())?);
        Ok(())
    }

    /// The oldest waiting messages, at most `limit`.
    pub async fn outbox_waiting(&self, limit: u32) -> Result<Vec<OutboxMessage>, StoreError> {
        const SQL: &str = "SELECT id, aggregate_id, code_hash, body, expires_at FROM outbox ORDER BY created_at, id LIMIT";
        let rows = on_pool!(&self.backend, pool => sqlx::query(&format!("{SQL} $1"))
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?
            .into_iter()
            .map(|r| decode(r.get(0), r.get(1), r.get(2), r.get(3), r.get::<i64, _>(4)))
            .collect::<Result<Vec<_>, _>>()?);
        Ok(rows)
    }

    /// Forgets a message: sent, superseded, refused or expired. Removing a missing one is fine.
    pub async fn outbox_remove(&self, id: &str) -> Result<(), StoreError> {
        const SQL: &str = "DELETE FROM outbox WHERE id =";
        on_pool!(&self.backend, pool => sqlx::query(&format!("{SQL} $1"))
            .bind(id)
            .execute(pool)
            .await
            .map(|_| ())?);
        Ok(())
    }
}
