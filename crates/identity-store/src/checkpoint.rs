//! Signed checkpoints: evidence over the whole log, not one aggregate at a time.
//!
//! Each event's hash chains it to the previous event of its aggregate (`chain.rs`), so an
//! edited event is caught, but an aggregate whose last events were removed, or an aggregate
//! removed whole, leaves chains that still verify. A checkpoint closes that gap: it holds a
//! running digest over every event of the log in feed order (the gap-safe order of
//! `feed.rs`: transaction, then position; position alone on SQLite) up to a feed cursor,
//! with the number of events, signed with the service's Ed25519 key.
//!
//! `digest₀ = ""`, `digestₙ = hex(SHA-256(digestₙ₋₁ ‖ "\n" ‖ position ‖ "\n" ‖ hash))`
//! where `hash` is the event's stored chain hash (`-` for an unhashed event). The chain hash
//! covers the event's content and its predecessor, and verifying the chains checks every
//! stored hash against its event, so the two checks together cover every byte: an event
//! edited with its hash left alone breaks its chain; one edited with its chain recomputed
//! changes the digest. Removing, inserting or reordering any event at or before a checkpoint
//! changes the digest (or the count) recomputed from the log, and the signature cannot be
//! remade without the key. Events after the latest checkpoint are covered by the next one.
//! Digesting reads positions and hashes only, never payloads: the checkpointer costs a
//! fraction of a projector.
//!
//! The signed text is [`Checkpoint::signed_text`]; its first line names the purpose, so a
//! signature over it can never be taken for a token signature made with the same key.

use ed25519_dalek::pkcs8::{DecodePrivateKey as _, DecodePublicKey as _};
use ed25519_dalek::{Signer as _, Verifier as _};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use sqlx::Row;

use crate::backend::{dialect, on_pool, to_i64, to_u64, Dialect as _};
use crate::{EventLog, FeedCursor, StoreError};

/// The running digest over the log, event by event, in feed order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunningDigest {
    /// The last event folded in.
    pub cursor: FeedCursor,
    /// How many events were folded in.
    pub events: u64,
    /// Hex; empty before the first event.
    pub digest: String,
}

impl RunningDigest {
    /// Folds in the next event of the feed: its cursor and its stored chain hash.
    pub fn add(&mut self, cursor: FeedCursor, hash: Option<&str>) {
        let mut h = Sha256::new();
        h.update(self.digest.as_bytes());
        h.update(format!("\n{}\n", cursor.position).as_bytes());
        h.update(hash.unwrap_or("-").as_bytes());
        self.digest = hex::encode(h.finalize());
        self.events += 1;
        self.cursor = cursor;
    }
}

/// A signed statement of what the log held up to a feed cursor. Also the file an auditor
/// keeps elsewhere (`identity-admin checkpoint`) and gives back to `verify --checkpoint`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The writing transaction of the last event covered (0 on SQLite).
    pub xid: u64,
    /// The global position of the last event covered.
    pub position: u64,
    /// How many events it covers.
    pub events: u64,
    /// The running digest (hex).
    pub digest: String,
    /// RFC 3339.
    pub signed_at: String,
    /// The signing key's id (the `kid` the service publishes in its JWKS).
    pub key_id: String,
    /// Ed25519 over [`Checkpoint::signed_text`], hex.
    pub signature: String,
}

impl Checkpoint {
    /// The exact text the signature covers.
    pub fn signed_text(&self) -> String {
        format!(
            "identity-checkpoint v1\nxid {}\nposition {}\nevents {}\ndigest {}\nsigned_at {}\n",
            self.xid, self.position, self.events, self.digest, self.signed_at
        )
    }

    pub fn cursor(&self) -> FeedCursor {
        FeedCursor {
            xid: self.xid,
            position: self.position,
        }
    }
}

/// The id of an Ed25519 public key: the first four bytes of its SHA-256, in hex (as the
/// service's JWKS names it).
fn key_id(key: &ed25519_dalek::VerifyingKey) -> String {
    hex::encode(&Sha256::digest(key.as_bytes())[..4])
}

/// Signs checkpoints with the service's Ed25519 key.
#[derive(Clone)]
pub struct CheckpointSigner {
    key: ed25519_dalek::SigningKey,
    key_id: String,
}

impl std::fmt::Debug for CheckpointSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointSigner")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl CheckpointSigner {
    /// From a PKCS#8 PEM Ed25519 private key.
    pub fn from_pem(pem: &str) -> Result<Self, StoreError> {
        let key = ed25519_dalek::SigningKey::from_pkcs8_pem(pem)
            .map_err(|e| StoreError::config_by("not a PKCS#8 Ed25519 private key", e))?;
        Ok(Self {
            key_id: key_id(&key.verifying_key()),
            key,
        })
    }

    /// The public half, to verify with.
    pub fn verifier(&self) -> CheckpointVerifier {
        CheckpointVerifier {
            keys: vec![self.key.verifying_key()],
        }
    }

    /// Signs what `digest` holds now.
    pub fn sign(&self, digest: &RunningDigest, signed_at: String) -> Checkpoint {
        let mut c = Checkpoint {
            xid: digest.cursor.xid,
            position: digest.cursor.position,
            events: digest.events,
            digest: digest.digest.clone(),
            signed_at,
            key_id: self.key_id.clone(),
            signature: String::new(),
        };
        c.signature = hex::encode(self.key.sign(c.signed_text().as_bytes()).to_bytes());
        c
    }
}

/// The public keys a checkpoint may be signed with (the current key and rotated-out ones).
#[derive(Debug, Clone, Default)]
pub struct CheckpointVerifier {
    keys: Vec<ed25519_dalek::VerifyingKey>,
}

impl CheckpointVerifier {
    /// Adds a key from a PEM file's text: an SPKI public key or a PKCS#8 private key.
    pub fn with_pem(mut self, pem: &str) -> Result<Self, StoreError> {
        let key = match ed25519_dalek::SigningKey::from_pkcs8_pem(pem) {
            Ok(private) => private.verifying_key(),
            Err(_) => ed25519_dalek::VerifyingKey::from_public_key_pem(pem).map_err(|e| {
                StoreError::config_by("not an Ed25519 public (SPKI) or private (PKCS#8) key", e)
            })?,
        };
        self.keys.push(key);
        Ok(self)
    }

    /// The keys in these PEM files (each an SPKI public key or a PKCS#8 private key).
    pub fn from_files<'a>(
        paths: impl IntoIterator<Item = &'a std::path::Path>,
    ) -> Result<Self, StoreError> {
        let mut keys = Self::default();
        for path in paths {
            let pem = std::fs::read_to_string(path)
                .map_err(|e| StoreError::config_by(format!("reading {}", path.display()), e))?;
            keys = keys
                .with_pem(&pem)
                .map_err(|e| StoreError::config_by(format!("the key {}", path.display()), e))?;
        }
        Ok(keys)
    }

    /// Why the signature does not hold, if it does not.
    pub fn check_signature(&self, c: &Checkpoint) -> Result<(), String> {
        let key = self
            .keys
            .iter()
            .find(|k| key_id(k) == c.key_id)
            .ok_or_else(|| format!("signed with key {}, which is not a known key", c.key_id))?;
        let bytes: [u8; 64] = hex::decode(&c.signature)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| "the signature is not 64 bytes of hex".to_string())?;
        key.verify(
            c.signed_text().as_bytes(),
            &ed25519_dalek::Signature::from_bytes(&bytes),
        )
        .map_err(|_| "the signature does not match the checkpoint".to_string())
    }
}

/// What checking the log against one checkpoint found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointCheck {
    pub checkpoint: Checkpoint,
    /// Why the log does not match it; `None` when it does.
    pub problem: Option<String>,
}

impl CheckpointCheck {
    pub fn matches(&self) -> bool {
        self.problem.is_none()
    }
}

/// Feed rows per read while digesting the log.
const DIGEST_BATCH: u32 = 2000;

impl EventLog {
    /// Folds the log's events after `from`'s cursor into it, as stored, up to the feed's
    /// horizon or `until` (inclusive), whichever comes first.
    pub async fn digest_from(
        &self,
        mut from: RunningDigest,
        until: Option<FeedCursor>,
    ) -> Result<RunningDigest, StoreError> {
        loop {
            let after = from.cursor;
            let limit = i64::from(DIGEST_BATCH);
            let batch =
                dialect!(&self.backend, D, pool => D::read_hashes(pool, after, limit).await?);
            let full = batch.len() == DIGEST_BATCH as usize;
            for (cursor, hash) in &batch {
                if until.is_some_and(|u| *cursor > u) {
                    return Ok(from);
                }
                from.add(*cursor, hash.as_deref());
            }
            if !full {
                return Ok(from);
            }
        }
    }

    /// Stores a checkpoint. Another replica may have stored one at the same cursor (the
    /// same digest): the first one stays.
    pub async fn store_checkpoint(&self, c: &Checkpoint) -> Result<(), StoreError> {
        let sql =
            "INSERT INTO checkpoints (xid, position, events, digest, signed_at, key_id, signature)
                   VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (xid, position) DO NOTHING";
        on_pool!(&self.backend, pool => {
            sqlx::query(sql)
                .bind(to_i64(c.xid))
                .bind(to_i64(c.position))
                .bind(to_i64(c.events))
                .bind(&c.digest)
                .bind(&c.signed_at)
                .bind(&c.key_id)
                .bind(&c.signature)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Every stored checkpoint, in feed order.
    pub async fn checkpoints(&self) -> Result<Vec<Checkpoint>, StoreError> {
        self.checkpoints_ordered("ORDER BY xid, position").await
    }

    /// The latest stored checkpoint, if any.
    pub async fn latest_checkpoint(&self) -> Result<Option<Checkpoint>, StoreError> {
        Ok(self
            .checkpoints_ordered("ORDER BY xid DESC, position DESC LIMIT 1")
            .await?
            .pop())
    }

    async fn checkpoints_ordered(&self, order: &str) -> Result<Vec<Checkpoint>, StoreError> {
        let sql = format!(
            "SELECT xid, position, events, digest, signed_at, key_id, signature
               FROM checkpoints {order}"
        );
        on_pool!(&self.backend, pool => sqlx::query(&sql)
            .fetch_all(pool)
            .await?
            .iter()
            .map(|r| {
                Ok(Checkpoint {
                    xid: to_u64(r.try_get("xid")?)?,
                    position: to_u64(r.try_get("position")?)?,
                    events: to_u64(r.try_get("events")?)?,
                    digest: r.try_get("digest")?,
                    signed_at: r.try_get("signed_at")?,
                    key_id: r.try_get("key_id")?,
                    signature: r.try_get("signature")?,
                })
            })
            .collect())
    }

    /// Checks the log against `c`: its signature, then the digest and count of the events
    /// up to its cursor, recomputed from the log as stored.
    pub async fn check_checkpoint(
        &self,
        c: &Checkpoint,
        keys: &CheckpointVerifier,
    ) -> Result<CheckpointCheck, StoreError> {
        let problem = match keys.check_signature(c) {
            Err(why) => Some(why),
            Ok(()) => {
                let found = self
                    .digest_from(RunningDigest::default(), Some(c.cursor()))
                    .await?;
                if found.events != c.events || found.digest != c.digest {
                    Some(format!(
                        "the log up to position {} does not match the checkpoint signed at {}: \
                         {} events found where {} were signed, digest {}: events were removed, \
                         inserted, edited or reordered",
                        c.position,
                        c.signed_at,
                        found.events,
                        c.events,
                        if found.digest == c.digest {
                            "equal"
                        } else {
                            "different"
                        }
                    ))
                } else if found.cursor != c.cursor() {
                    Some(format!(
                        "the event the checkpoint ends at (position {}) is not in the log",
                        c.position
                    ))
                } else {
                    None
                }
            }
        };
        Ok(CheckpointCheck {
            checkpoint: c.clone(),
            problem,
        })
    }
}

impl EventLog {
    /// Signs a checkpoint of the log every `every`, while there are new events: the
    /// checkpointer. It digests what is new at least every second in between. It resumes from the latest checkpoint it can verify with `signer`'s key
    /// (one signed elsewhere, or one that does not verify, means starting from the first
    /// event). Runs until dropped; a failure is logged and retried at the next interval.
    pub async fn run_checkpoints(self, signer: CheckpointSigner, every: std::time::Duration) {
        let keys = signer.verifier();
        let mut digest = match self.latest_checkpoint().await {
            Ok(Some(c)) if keys.check_signature(&c).is_ok() => RunningDigest {
                cursor: c.cursor(),
                events: c.events,
                digest: c.digest,
            },
            Ok(_) => RunningDigest::default(),
            Err(e) => {
                tracing::warn!(error = %crate::Report(&e), "checkpoints: cannot read the latest one; starting from the first event");
                RunningDigest::default()
            }
        };
        let mut signed = digest.cursor;
        let mut last_signed = std::time::Instant::now();
        // Digest at least every second, so that the reading is spread out; sign at `every`.
        let read_every = every.min(std::time::Duration::from_secs(1));
        loop {
            match self.digest_from(digest.clone(), None).await {
                Ok(next) => digest = next,
                Err(e) => {
                    tracing::warn!(error = %crate::Report(&e), "checkpoints: reading the log failed; retrying");
                }
            }
            if digest.events > 0 && digest.cursor != signed && last_signed.elapsed() >= every {
                let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
                let c = signer.sign(&digest, at);
                match self.store_checkpoint(&c).await {
                    Ok(()) => {
                        signed = digest.cursor;
                        last_signed = std::time::Instant::now();
                        tracing::debug!(
                            position = c.position,
                            events = c.events,
                            "checkpoint signed"
                        );
                    }
                    Err(e) => {
                        tracing::warn!(error = %crate::Report(&e), "checkpoints: storing one failed; retrying");
                    }
                }
            }
            tokio::time::sleep(read_every).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(position: u64) -> FeedCursor {
        FeedCursor { xid: 0, position }
    }

    fn signer() -> CheckpointSigner {
        use ed25519_dalek::pkcs8::EncodePrivateKey as _;
        let pem = ed25519_dalek::SigningKey::from_bytes(&[7; 32])
            .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
            .expect("pem");
        CheckpointSigner::from_pem(&pem).expect("key")
    }

    #[test]
    fn the_digest_depends_on_every_event_and_its_place() {
        let mut both = RunningDigest::default();
        both.add(at(1), Some("a"));
        both.add(at(2), Some("b"));
        let mut swapped = RunningDigest::default();
        swapped.add(at(1), Some("b"));
        swapped.add(at(2), Some("a"));
        let mut edited = RunningDigest::default();
        edited.add(at(1), Some("a"));
        edited.add(at(2), Some("c"));
        let mut moved = RunningDigest::default();
        moved.add(at(1), Some("a"));
        moved.add(at(3), Some("b"));
        assert_eq!((both.events, both.cursor), (2, at(2)));
        for other in [&swapped, &edited, &moved] {
            assert_ne!(both.digest, other.digest);
        }
    }

    #[test]
    fn a_signature_holds_only_for_what_was_signed_and_with_a_known_key() {
        let signer = signer();
        let mut d = RunningDigest::default();
        d.add(at(1), Some("a"));
        let c = signer.sign(&d, "2026-12-04T00:00:00Z".into());
        let keys = signer.verifier();
        assert_eq!(keys.check_signature(&c), Ok(()));
        let fewer = Checkpoint {
            events: 0,
            ..c.clone()
        };
        assert!(keys.check_signature(&fewer).is_err());
        assert!(CheckpointVerifier::default().check_signature(&c).is_err());
    }
}
