//! The tenants' keys of derived ids, and moving every stored key to a new master key.
//!
//! A tenant's [`IdKey`] keys the MAC of the ids derived from its people's personal values
//! (claim ids, identifier emails: `identity_domain::derive`). It is a row of `data_keys`
//! like a person's key (subject `ids:<tenant>`), wrapped by the master key, made on first
//! use by whichever replica comes first, and never destroyed: an erasure removes a person's
//! values, and without them an id says nothing.

use identity_domain::derive::IdKey;
use rand::RngCore as _;

use super::{Keyring, MasterKey};
use crate::backend::on_pool;
use crate::{EventLog, StoreError};

impl Keyring {
    pub(crate) fn set_previous(&mut self, previous: Vec<MasterKey>) {
        self.previous = previous;
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

impl EventLog {
    /// The tenant's key of derived ids: from memory, else the stored one, else a new one
    /// stored now (two replicas making one at once agree on the first stored).
    pub async fn id_key(&self, tenant: &str) -> Result<IdKey, StoreError> {
        if let Some(key) = self
            .keyring
            .ids
            .lock()
            .ok()
            .and_then(|m| m.get(tenant).cloned())
        {
            return Ok(key);
        }
        let master = self.keyring.master()?;
        let subject = format!("ids:{tenant}");
        let mut fresh = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut fresh);
        let wrapped = master.wrap(&subject, &fresh)?;
        let (master_id, wrapped): (String, Option<String>) = on_pool!(&self.backend, pool => {
            sqlx::query(
                "INSERT INTO data_keys (subject, master_key_id, wrapped, created_at)
                 VALUES ($1, $2, $3, $4) ON CONFLICT (subject) DO NOTHING",
            )
            .bind(&subject)
            .bind(master.id())
            .bind(&wrapped)
            .bind(now())
            .execute(pool)
            .await?;
            sqlx::query_as("SELECT master_key_id, wrapped FROM data_keys WHERE subject = $1")
                .bind(&subject)
                .fetch_one(pool)
                .await?
        });
        let wrapped = wrapped
            .ok_or_else(|| StoreError::corrupt(format!("the key of {subject} was destroyed")))?;
        let key = IdKey::from_bytes(self.keyring.unwrap(&subject, &master_id, &wrapped)?);
        if let Ok(mut map) = self.keyring.ids.lock() {
            map.insert(tenant.to_string(), key.clone());
        }
        Ok(key)
    }

    /// Moves every stored key wrapped by a master key rotated out to the current one (the
    /// second step of a rotation: docs/adr/0006). Each row is rewritten only if it is still
    /// as it was read, so replicas serving meanwhile lose nothing; a destroyed key stays
    /// destroyed. Returns how many keys were moved.
    pub async fn rewrap_keys(&self) -> Result<usize, StoreError> {
        let master = self.keyring.master()?;
        let rows: Vec<(String, String, String)> = on_pool!(&self.backend, pool => sqlx::query_as(
            "SELECT subject, master_key_id, wrapped FROM data_keys
              WHERE wrapped IS NOT NULL AND master_key_id <> $1",
        )
        .bind(master.id())
        .fetch_all(pool)
        .await?);
        let mut moved = 0;
        for (subject, old_id, old) in rows {
            let key = self.keyring.unwrap(&subject, &old_id, &old)?;
            let new = master.wrap(&subject, &key)?;
            let done = on_pool!(&self.backend, pool => sqlx::query(
                "UPDATE data_keys SET master_key_id = $1, wrapped = $2
                  WHERE subject = $3 AND master_key_id = $4 AND wrapped = $5",
            )
            .bind(master.id())
            .bind(&new)
            .bind(&subject)
            .bind(&old_id)
            .bind(&old)
            .execute(pool)
            .await?
            .rows_affected());
            moved += usize::from(done == 1);
        }
        self.flush_wal().await?;
        Ok(moved)
    }

    /// How many claims are held under an id of version 1 (a bare hash, before keyed ids):
    /// their values would be free under their keyed ids until `seal-forward` moves them.
    pub async fn unkeyed_claims_held(&self) -> Result<i64, StoreError> {
        let keyed = format!("%/{}%", identity_domain::derive::CLAIM_V2);
        Ok(on_pool!(&self.backend, pool => sqlx::query_scalar(
            "SELECT COUNT(*) FROM events e
              WHERE e.aggregate_type = 'UniqueClaim' AND e.event_type = 'ValueClaimed'
                AND e.aggregate_id NOT LIKE $1
                AND NOT EXISTS (SELECT 1 FROM events l
                                 WHERE l.aggregate_type = e.aggregate_type
                                   AND l.aggregate_id = e.aggregate_id
                                   AND l.sequence > e.sequence)",
        )
        .bind(&keyed)
        .fetch_one(pool)
        .await?))
    }

    /// How many stored keys each master key wraps (by its id), for `identity-admin keys`.
    pub async fn keys_by_master(&self) -> Result<Vec<(String, i64)>, StoreError> {
        Ok(on_pool!(&self.backend, pool => sqlx::query_as(
            "SELECT master_key_id, COUNT(*) FROM data_keys WHERE wrapped IS NOT NULL
              GROUP BY master_key_id ORDER BY master_key_id",
        )
        .fetch_all(pool)
        .await?))
    }
}
