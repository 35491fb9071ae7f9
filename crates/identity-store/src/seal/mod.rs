//! Personal fields sealed per person (docs/adr/0006-personal-data-keys-and-erasure.md).
//!
//! The domain lists which fields of which events are personal
//! (`identity_domain::personal`); the person is the aggregate id. On the way in
//! ([`EventLog::seal`], in the command path before the hash is chained) each such field,
//! when it holds a value, becomes the string `sealed:v1:<base64url(nonce ‖ ciphertext)>`:
//! XChaCha20-Poly1305 under the person's data key, over the field's JSON, bound to the
//! aggregate, event type and field name (a ciphertext moved elsewhere does not open). The
//! hash chain and the checkpoints cover the sealed bytes.
//!
//! On the way out, the decode point opens them ([`EventLog::open_rows`], [`open_payload`])
//! before upcasters run, so nothing above the store sees a sealed value.
//!
//! Data keys live in `data_keys`, one row per person, wrapped by the master key (AEAD, bound
//! to the person and the master key's id); unwrapped ones are kept in memory. A field
//! stored before sealing existed is read as it is.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use identity_domain::personal;
use rand::RngCore as _;
use serde_json::Value;

use crate::append::NewKey;
use crate::backend::on_pool;
use crate::{EventLog, StoreError, StoredEvent};

mod forward;
mod ids;
mod master;
pub use forward::SealForward;
pub use master::MasterKey;

const SEALED: &str = "sealed:v1:";
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;
const NONCE_LEN: usize = 24;
/// Unwrapped data keys kept in memory; past this many the cache starts over.
const KEPT_KEYS: usize = 100_000;
/// How long a live data key is used from memory before it is read again: another replica
/// may have destroyed it (an erasure), and this one must stop opening the person's fields.
const LIVE_KEY_TTL: std::time::Duration = std::time::Duration::from_secs(30);

pub(super) fn seal_bytes(
    cipher: &XChaCha20Poly1305,
    aad: &str,
    plain: &[u8],
) -> Result<String, StoreError> {
    let mut nonce = [0u8; NONCE_LEN];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let sealed = cipher
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: plain,
                aad: aad.as_bytes(),
            },
        )
        // Only a message past the cipher's limit (hundreds of gigabytes) fails.
        .map_err(|_| StoreError::other("a personal field could not be sealed"))?;
    Ok(B64.encode([nonce.as_slice(), &sealed].concat()))
}

pub(super) fn open_bytes(cipher: &XChaCha20Poly1305, aad: &str, text: &str) -> Option<Vec<u8>> {
    let bytes = B64.decode(text).ok()?;
    if bytes.len() < NONCE_LEN {
        return None;
    }
    let (nonce, sealed) = bytes.split_at(NONCE_LEN);
    cipher
        .decrypt(
            XNonce::from_slice(nonce),
            Payload {
                msg: sealed,
                aad: aad.as_bytes(),
            },
        )
        .ok()
}

/// Data keys a unit of work made for people who had none: stored in the unit's transaction
/// (append.rs), kept in the keyring once it commits, forgotten if it does not.
#[derive(Default)]
pub(crate) struct PendingKeys {
    rows: Vec<NewKey>,
    ciphers: HashMap<String, Arc<XChaCha20Poly1305>>,
}

impl PendingKeys {
    pub(crate) fn rows(&self) -> Vec<NewKey> {
        self.rows.clone()
    }
}

/// The key to seal with, unless the person was erased.
fn live(subject: &str, known: Known) -> Result<Arc<XChaCha20Poly1305>, StoreError> {
    match known {
        Known::Live(cipher) => Ok(cipher),
        Known::Destroyed => Err(StoreError::config(format!(
            "{subject} was erased: no personal data of theirs is written again"
        ))),
    }
}

/// What the keyring knows of one person's data key.
#[derive(Clone)]
pub(crate) enum Known {
    Live(Arc<XChaCha20Poly1305>),
    /// Destroyed by an erasure: the person's sealed fields read as erased.
    Destroyed,
}

/// The master key and the data keys unwrapped so far. Cheap to clone.
#[derive(Clone, Default)]
pub struct Keyring {
    master: Option<MasterKey>,
    /// Master keys rotated out: they still unwrap the data keys they wrapped until
    /// `identity-admin rewrap-keys` has moved those to `master`; they never wrap.
    previous: Vec<MasterKey>,
    known: Arc<Mutex<HashMap<String, (Known, std::time::Instant)>>>,
    /// The tenants' keys of derived ids, never destroyed, so kept for good once read.
    ids: Arc<Mutex<HashMap<String, identity_domain::derive::IdKey>>>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("master", &self.master)
            .finish_non_exhaustive()
    }
}

/// The personal fields a payload holds (`{"EventType": {field: value, ...}}`), by name, as
/// the domain lists them for its event.
fn personal_values<'p>(
    aggregate_type: &str,
    event_type: &str,
    payload: &'p mut Value,
) -> Vec<(&'static str, &'p mut Value)> {
    let fields = personal::sealed_fields(aggregate_type, event_type);
    if fields.is_empty() {
        return Vec::new();
    }
    let Some(body) = payload.get_mut(event_type).and_then(Value::as_object_mut) else {
        return Vec::new();
    };
    body.iter_mut()
        .filter_map(|(name, value)| {
            let field = fields.iter().find(|f| **f == name.as_str())?;
            Some((*field, value))
        })
        .collect()
}

/// The event a payload belongs to: what each of its seals is bound to, and how errors name
/// a field of it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Place<'a> {
    pub(crate) aggregate_type: &'a str,
    pub(crate) aggregate_id: &'a str,
    pub(crate) event_type: &'a str,
}

impl Place<'_> {
    /// The associated data of one field's seal.
    fn aad(&self, field: &str) -> String {
        format!(
            "field/v1\n{}\n{}\n{}\n{field}",
            self.aggregate_type, self.aggregate_id, self.event_type
        )
    }

    fn name(&self, field: &str) -> String {
        format!(
            "{}/{}: {}.{field}",
            self.aggregate_type, self.aggregate_id, self.event_type
        )
    }

    fn personal_values<'p>(&self, payload: &'p mut Value) -> Vec<(&'static str, &'p mut Value)> {
        personal_values(self.aggregate_type, self.event_type, payload)
    }
}

impl Keyring {
    /// A keyring that seals with data keys wrapped by `master`; without one, nothing is
    /// sealed and a sealed field cannot be read.
    pub fn new(master: Option<MasterKey>) -> Self {
        Self {
            master,
            ..Self::default()
        }
    }

    /// The current master key, which wraps every new key.
    fn master(&self) -> Result<&MasterKey, StoreError> {
        self.master
            .as_ref()
            .ok_or_else(|| StoreError::config("no master key: personal data cannot be sealed"))
    }

    /// Unwraps a stored key with the master key that wrapped it (the current one or one
    /// rotated out).
    fn unwrap(
        &self,
        subject: &str,
        master_id: &str,
        wrapped: &str,
    ) -> Result<[u8; 32], StoreError> {
        let Some(master) = self
            .master
            .iter()
            .chain(&self.previous)
            .find(|m| m.id() == master_id)
        else {
            let known: Vec<&str> = self
                .master
                .iter()
                .chain(&self.previous)
                .map(MasterKey::id)
                .collect();
            return Err(StoreError::config(format!(
                "the data key of {subject} is wrapped by master key {master_id}, and this \
                 process has {}: is IDENTITY_MASTER_KEY_FILE the one this store was written with \
                 (or, after a rotation, is the old key in IDENTITY_PREVIOUS_MASTER_KEY_FILES)?",
                known.join(", ")
            )));
        };
        master.unwrap(subject, wrapped).ok_or_else(|| {
            StoreError::corrupt(format!("the data key of {subject} does not unwrap"))
        })
    }

    /// What is known of a person's key, if it is fresh enough to rely on without reading it
    /// again (a live key for [`LIVE_KEY_TTL`]; a destroyed one for ever).
    fn cached(&self, subject: &str) -> Option<Known> {
        let map = self.known.lock().ok()?;
        let (known, at) = map.get(subject)?;
        // A destroyed key never comes back; a live one is checked again now and then.
        let fresh = matches!(known, Known::Destroyed) || at.elapsed() < LIVE_KEY_TTL;
        fresh.then(|| known.clone())
    }

    fn remember(&self, subject: &str, known: Known) {
        if let Ok(mut map) = self.known.lock() {
            if map.len() >= KEPT_KEYS {
                map.clear();
            }
            map.insert(subject.to_string(), (known, std::time::Instant::now()));
        }
    }
}

/// Opens the sealed personal fields of one payload with its person's key, as known when the
/// read began (`None`: no key, so a sealed field is an error); a destroyed key makes them
/// read as erased.
pub(crate) fn open_payload(
    known: Option<&Known>,
    at: Place<'_>,
    mut payload: Value,
) -> Result<Value, StoreError> {
    for (field, value) in at.personal_values(&mut payload) {
        let Some(sealed) = value.as_str().and_then(|s| s.strip_prefix(SEALED)) else {
            continue;
        };
        let what = || at.name(field);
        let cipher = match known {
            None => {
                return Err(StoreError::corrupt(format!(
                    "{}: sealed, and no data key opens it",
                    what()
                )))
            }
            Some(Known::Live(cipher)) => cipher,
            Some(Known::Destroyed) => {
                *value = personal::erased_value(field);
                continue;
            }
        };
        let plain = open_bytes(cipher, &at.aad(field), sealed)
            .ok_or_else(|| StoreError::corrupt(format!("{}: the seal does not open", what())))?;
        *value = serde_json::from_slice(&plain)
            .map_err(|e| StoreError::corrupt_by(format!("{}: opened, not JSON", what()), e))?;
    }
    Ok(payload)
}

impl EventLog {
    /// Seals the personal fields of a payload about to be appended (before its hash is
    /// chained), creating the person's data key on first use (`fresh`: the aggregate has no
    /// event yet). Without a master key, or for an event with no personal value, the payload
    /// is returned as it is.
    pub(crate) async fn seal(
        &self,
        at: Place<'_>,
        fresh: bool,
        mut payload: Value,
        pending: &mut PendingKeys,
    ) -> Result<Value, StoreError> {
        if self.keyring.master.is_none() {
            return Ok(payload);
        }
        let mut cipher = None;
        for (field, value) in at.personal_values(&mut payload) {
            if value.is_null() {
                continue;
            }
            let cipher = match &cipher {
                Some(c) => c,
                None => cipher.insert(self.data_key_for_writing(at, fresh, pending).await?),
            };
            let plain = serde_json::to_vec(value)
                .map_err(|e| StoreError::corrupt_by(format!("{}: not JSON", at.name(field)), e))?;
            *value = Value::String(format!(
                "{SEALED}{}",
                seal_bytes(cipher, &at.aad(field), &plain)?
            ));
        }
        Ok(payload)
    }

    /// The data key to seal a person's fields with: the one stored for them, or a new one
    /// made in this unit (stored with its events, `PendingKeys`). `fresh`: the aggregate has
    /// no event yet, so when it is the person itself (a registration) there is no stored key
    /// to look for.
    async fn data_key_for_writing(
        &self,
        at: Place<'_>,
        fresh: bool,
        pending: &mut PendingKeys,
    ) -> Result<Arc<XChaCha20Poly1305>, StoreError> {
        let subject = at.aggregate_id;
        if let Some(cipher) = pending.ciphers.get(subject) {
            return Ok(cipher.clone());
        }
        let new_person = fresh && personal::is_person(at.aggregate_type);
        if self.keyring.cached(subject).is_none() && !new_person {
            self.load_keys(&[subject]).await?;
        }
        if let Some(known) = self.keyring.cached(subject) {
            return live(subject, known);
        }
        let master = self.keyring.master()?;
        let mut key = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut key);
        pending.rows.push(NewKey {
            subject: subject.to_string(),
            master_key_id: master.id().to_string(),
            wrapped: master.wrap(subject, &key)?,
            created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        });
        let cipher = Arc::new(XChaCha20Poly1305::new(&key.into()));
        pending.ciphers.insert(subject.to_string(), cipher.clone());
        Ok(cipher)
    }

    /// Keeps the keys a unit stored, now that its transaction committed.
    pub(crate) fn keep_keys(&self, keys: PendingKeys) {
        for (subject, cipher) in keys.ciphers {
            self.keyring.remember(&subject, Known::Live(cipher));
        }
    }

    /// Loads and unwraps the stored data keys of `subjects` into the keyring.
    async fn load_keys(&self, subjects: &[&str]) -> Result<Vec<(String, Known)>, StoreError> {
        let mut loaded = Vec::new();
        if self.keyring.master.is_none() {
            return Ok(loaded);
        }
        for chunk in subjects.chunks(500) {
            let marks: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "SELECT subject, master_key_id, wrapped FROM data_keys WHERE subject IN ({})",
                marks.join(", ")
            );
            let rows: Vec<(String, String, Option<String>)> = on_pool!(&self.backend, pool => {
                let mut q = sqlx::query_as(&sql);
                for s in chunk {
                    q = q.bind(*s);
                }
                q.fetch_all(pool).await?
            });
            for (subject, master_id, wrapped) in rows {
                let Some(wrapped) = wrapped else {
                    self.keyring.remember(&subject, Known::Destroyed);
                    loaded.push((subject, Known::Destroyed));
                    continue;
                };
                let key = self.keyring.unwrap(&subject, &master_id, &wrapped)?;
                let known = Known::Live(Arc::new(XChaCha20Poly1305::new(&key.into())));
                self.keyring.remember(&subject, known.clone());
                loaded.push((subject, known));
            }
        }
        Ok(loaded)
    }

    /// Makes sure the data keys that rows of personal aggregates need are in the keyring
    /// (one query for all that are missing), then opens the rows' sealed fields.
    pub(crate) async fn open_rows(
        &self,
        rows: Vec<StoredEvent>,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        // The keys this batch opens with, as known now: from memory when fresh, else read
        // (one query for all missing), so that none can age out while the batch is opened.
        let mut keys: HashMap<String, Known> = HashMap::new();
        let mut missing: BTreeSet<&str> = BTreeSet::new();
        for e in &rows {
            if personal::sealed_fields(&e.aggregate_type, &e.event_type).is_empty() {
                continue;
            }
            match self.keyring.cached(&e.aggregate_id) {
                Some(known) => {
                    keys.insert(e.aggregate_id.clone(), known);
                }
                None => {
                    missing.insert(&e.aggregate_id);
                }
            }
        }
        if !missing.is_empty() {
            let missing: Vec<&str> = missing.into_iter().collect();
            keys.extend(self.load_keys(&missing).await?);
        }
        rows.into_iter()
            .map(|mut e| {
                let payload = std::mem::take(&mut e.payload);
                let at = Place {
                    aggregate_type: &e.aggregate_type,
                    aggregate_id: &e.aggregate_id,
                    event_type: &e.event_type,
                };
                e.payload = open_payload(keys.get(&e.aggregate_id), at, payload)?;
                Ok(e)
            })
            .collect()
    }

    /// Destroys the data key of `subject` (an erasure): from now on every personal field
    /// sealed under it reads as erased, and nothing personal of theirs is sealed again; their
    /// messages waiting in the outbox are dropped. The
    /// row stays as a tombstone (so that no new key is made for them); on SQLite the freed
    /// bytes are zeroed (`secure_delete`) and the write-ahead log emptied, so that no copy of
    /// the key is left in the files. Idempotent.
    pub async fn destroy_key(&self, subject: &str) -> Result<(), StoreError> {
        // A message still waiting to reach them (a code to their email or phone) goes too.
        on_pool!(&self.backend, pool => sqlx::query("DELETE FROM outbox WHERE aggregate_id = $1")
            .bind(subject)
            .execute(pool)
            .await
            .map(|_| ()))?;
        let master_id = self.keyring.master.as_ref().map_or("", MasterKey::id);
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        on_pool!(&self.backend, pool => sqlx::query(
            "INSERT INTO data_keys (subject, master_key_id, wrapped, created_at, destroyed_at)
             VALUES ($1, $2, NULL, $3, $3)
             ON CONFLICT (subject) DO UPDATE
                SET wrapped = NULL, destroyed_at = COALESCE(data_keys.destroyed_at, $3)",
        )
        .bind(subject)
        .bind(master_id)
        .bind(&now)
        .execute(pool)
        .await
        .map(|_| ()))?;
        self.keyring.remember(subject, Known::Destroyed);
        self.flush_wal().await
    }

    /// The keys of every person the log says was erased are destroyed (idempotent): run at
    /// start, so that a crash between an erasure and its key's destruction, or a restored
    /// backup, cannot bring a key back.
    pub async fn destroy_erased_keys(&self) -> Result<usize, StoreError> {
        let erased: Vec<String> = on_pool!(&self.backend, pool => sqlx::query_scalar(
            "SELECT e.aggregate_id FROM events e
              WHERE e.aggregate_type = 'User' AND e.event_type = 'UserErased'
                AND NOT EXISTS (SELECT 1 FROM data_keys k
                                 WHERE k.subject = e.aggregate_id AND k.wrapped IS NULL)",
        )
        .fetch_all(pool)
        .await?);
        for subject in &erased {
            self.destroy_key(subject).await?;
        }
        Ok(erased.len())
    }

    /// On SQLite, moves the write-ahead log into the database file and empties it, so that
    /// page images holding erased bytes do not linger there. Nothing on PostgreSQL.
    pub async fn flush_wal(&self) -> Result<(), StoreError> {
        if let crate::backend::Backend::Sqlite(pool) = &self.backend {
            sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(pool)
                .await?;
        }
        Ok(())
    }

    /// The data key of one person, as known now (fresh from memory, else read), if any.
    pub(crate) async fn prepare_key(&self, subject: &str) -> Result<Option<Known>, StoreError> {
        if let Some(known) = self.keyring.cached(subject) {
            return Ok(Some(known));
        }
        Ok(self
            .load_keys(&[subject])
            .await?
            .into_iter()
            .find_map(|(s, known)| (s == subject).then_some(known)))
    }
}

#[cfg(test)]
mod tests;
