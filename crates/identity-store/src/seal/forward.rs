//! Bringing a store written before sealing forward, once (`identity-admin seal-forward`,
//! docs/adr/0006, decision 9): the one time stored events are rewritten.
//!
//! Every personal field still stored in clear is sealed under its person's data key (made
//! now for a person who has none), or replaced by its erased value when the person was
//! erased; then the hash chain of each rewritten aggregate is computed again from its first
//! event. The signed checkpoints described the log before the rewrite, so they are removed
//! (the checkpointer signs the rewritten log again from its first event); an auditor's copy
//! of an earlier checkpoint no longer verifies, which is why this runs once, before the
//! first release, and is recorded in the release notes.

use futures::TryStreamExt as _;
use identity_domain::personal;
use rand::RngCore as _;
use serde_json::Value;

use super::{seal_bytes, Known, Place, SEALED};
use crate::backend::{on_pool, EventRow as _};
use crate::chain::{event_hash, HashInput};
use crate::{EventLog, StoreError, StoredEvent};

/// What [`EventLog::seal_forward`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SealForward {
    /// Aggregates with at least one rewritten event.
    pub aggregates: usize,
    /// Events whose payload or hash changed.
    pub events_rewritten: usize,
    /// Personal fields found in clear and sealed.
    pub fields_sealed: usize,
    /// Personal fields found in clear of a person already erased, now erased.
    pub fields_erased: usize,
    /// Signed checkpoints removed because they described the log before the rewrite.
    pub checkpoints_removed: usize,
}

/// Whether a stored personal value still needs sealing.
fn in_clear(value: &Value) -> bool {
    !value.is_null() && !value.as_str().is_some_and(|s| s.starts_with(SEALED))
}

impl EventLog {
    /// Seals every personal field stored in clear and rechains what that rewrote (see the
    /// module's documentation). Run with no replica serving; running it again changes
    /// nothing.
    pub async fn seal_forward(&self) -> Result<SealForward, StoreError> {
        self.keyring.master()?;
        let mut report = SealForward::default();
        let types: Vec<&str> = personal::SEALED.iter().map(|(a, _, _)| *a).collect();
        let marks: Vec<String> = (1..=types.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT {} FROM events WHERE aggregate_type IN ({})
              ORDER BY aggregate_type, aggregate_id, sequence",
            self.backend.event_columns(),
            marks.join(", ")
        );
        // One aggregate at a time, in the order the chain runs.
        let mut current: Vec<StoredEvent> = Vec::new();
        let rows: Vec<StoredEvent> = on_pool!(&self.backend, pool => {
            let mut q = sqlx::query(&sql);
            for t in &types {
                q = q.bind(*t);
            }
            let mut stream = q.fetch(pool);
            let mut rows = Vec::new();
            while let Some(r) = stream.try_next().await? {
                rows.push(r.stored_event()?);
            }
            rows
        });
        for e in rows {
            let same = current.first().is_some_and(|f| {
                f.aggregate_type == e.aggregate_type && f.aggregate_id == e.aggregate_id
            });
            if !same {
                self.forward_aggregate(std::mem::take(&mut current), &mut report)
                    .await?;
            }
            current.push(e);
        }
        self.forward_aggregate(current, &mut report).await?;
        if report.events_rewritten > 0 {
            report.checkpoints_removed = on_pool!(&self.backend, pool => sqlx::query(
                "DELETE FROM checkpoints"
            )
            .execute(pool)
            .await?
            .rows_affected()) as usize;
        }
        self.flush_wal().await?;
        Ok(report)
    }

    /// Seals one aggregate's clear personal fields and rewrites its chain, in one
    /// transaction; nothing when every field is sealed already.
    async fn forward_aggregate(
        &self,
        mut events: Vec<StoredEvent>,
        report: &mut SealForward,
    ) -> Result<(), StoreError> {
        let needs = events.iter().any(|e| {
            let mut payload = e.payload.clone();
            place(e)
                .personal_values(&mut payload)
                .iter()
                .any(|(_, v)| in_clear(v))
        });
        let Some(first) = events.first() else {
            return Ok(());
        };
        if !needs {
            return Ok(());
        }
        let subject = first.aggregate_id.clone();
        let known = self.forward_key(&subject, &first.aggregate_type).await?;
        let mut previous = String::new();
        let mut updates = Vec::new();
        for e in &mut events {
            let at = Place {
                aggregate_type: &e.aggregate_type,
                aggregate_id: &e.aggregate_id,
                event_type: &e.event_type,
            };
            let mut payload = e.payload.clone();
            for (field, value) in at.personal_values(&mut payload) {
                if !in_clear(value) {
                    continue;
                }
                match &known {
                    Known::Destroyed => {
                        *value = personal::erased_value(field);
                        report.fields_erased += 1;
                    }
                    Known::Live(cipher) => {
                        let plain = serde_json::to_vec(value).map_err(|e| {
                            StoreError::corrupt_by(format!("{}: not JSON", at.name(field)), e)
                        })?;
                        *value = Value::String(format!(
                            "{SEALED}{}",
                            seal_bytes(cipher, &at.aad(field), &plain)?
                        ));
                        report.fields_sealed += 1;
                    }
                }
            }
            let changed_payload = payload != e.payload;
            e.payload = payload;
            let hash = event_hash(&previous, &HashInput::from(&*e));
            if changed_payload || e.hash.as_deref() != Some(hash.as_str()) {
                updates.push((e.sequence, e.payload.clone(), hash.clone()));
            }
            previous = hash;
        }
        report.aggregates += 1;
        report.events_rewritten += updates.len();
        let (aggregate_type, aggregate_id) = (first_type(&events), subject.as_str());
        on_pool!(&self.backend, pool => {
            let mut tx = pool.begin().await?;
            for (sequence, payload, hash) in &updates {
                sqlx::query(
                    "UPDATE events SET payload = $1, hash = $2
                      WHERE aggregate_type = $3 AND aggregate_id = $4 AND sequence = $5",
                )
                .bind(sqlx::types::Json(payload))
                .bind(hash)
                .bind(aggregate_type)
                .bind(aggregate_id)
                .bind(crate::backend::to_i64(*sequence))
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
        });
        // Whatever was cached of this aggregate is as it was stored before.
        if let Ok(mut cache) = self.cache.lock() {
            cache.clear();
        }
        Ok(())
    }

    /// The key to seal a person's old fields with: theirs, or a new one stored now.
    async fn forward_key(&self, subject: &str, aggregate_type: &str) -> Result<Known, StoreError> {
        let owner = if aggregate_type == "Identification" || personal::is_person(aggregate_type) {
            subject
        } else {
            return Err(StoreError::config(format!(
                "{aggregate_type} holds personal fields but names no person"
            )));
        };
        if let Some(known) = self.prepare_key(owner).await? {
            return Ok(known);
        }
        let master = self.keyring.master()?;
        let mut key = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut key);
        let wrapped = master.wrap(owner, &key)?;
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        on_pool!(&self.backend, pool => sqlx::query(
            "INSERT INTO data_keys (subject, master_key_id, wrapped, created_at)
             VALUES ($1, $2, $3, $4) ON CONFLICT (subject) DO NOTHING",
        )
        .bind(owner)
        .bind(master.id())
        .bind(&wrapped)
        .bind(&now)
        .execute(pool)
        .await
        .map(|_| ()))?;
        self.prepare_key(owner)
            .await?
            .ok_or_else(|| StoreError::corrupt(format!("the data key of {owner} was not stored")))
    }
}

fn place(e: &StoredEvent) -> Place<'_> {
    Place {
        aggregate_type: &e.aggregate_type,
        aggregate_id: &e.aggregate_id,
        event_type: &e.event_type,
    }
}

fn first_type(events: &[StoredEvent]) -> &str {
    events.first().map_or("", |e| e.aggregate_type.as_str())
}
