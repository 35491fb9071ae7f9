//! The master key: read from a file (or made once, for development), and what wraps and
//! unwraps each person's data key.

use std::path::Path;

use chacha20poly1305::aead::KeyInit;
use chacha20poly1305::XChaCha20Poly1305;
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};

use super::{open_bytes, seal_bytes};
use crate::StoreError;

/// The key that wraps every person's data key: 32 bytes, kept outside the database (a file
/// or a secret store). Its `Debug` shows only its id.
#[derive(Clone)]
pub struct MasterKey {
    id: String,
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterKey").field("id", &self.id).finish()
    }
}

impl MasterKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        // The id names the key (in data_keys rows and errors) without revealing it.
        let id =
            hex::encode(&Sha256::digest([b"master-key-id/v1:".as_slice(), &bytes].concat())[..6]);
        Self {
            id,
            cipher: XChaCha20Poly1305::new(&bytes.into()),
        }
    }

    /// Which master key this is (a digest of it), as data-key rows record it.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Reads a key file: 64 hex characters (white space around them is ignored).
    pub fn read(path: &Path) -> Result<Self, StoreError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            StoreError::config_by(format!("reading the master key {}", path.display()), e)
        })?;
        let bytes: [u8; 32] = hex::decode(text.trim())
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| {
                StoreError::config(format!(
                    "the master key {} is not 64 hex characters (32 bytes)",
                    path.display()
                ))
            })?;
        Ok(Self::from_bytes(bytes))
    }

    /// Reads the key file, first creating it with a new random key when there is none (the
    /// development default, like the SQLite file). Processes starting together agree on
    /// one key: the file appears whole or not at all (written aside, then linked).
    pub fn read_or_create(path: &Path) -> Result<Self, StoreError> {
        if !path.exists() {
            let mut bytes = [0u8; 32];
            rand::rngs::OsRng.fill_bytes(&mut bytes);
            let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
            if let Some(dir) = dir {
                std::fs::create_dir_all(dir)
                    .map_err(|e| StoreError::config_by(format!("creating {}", dir.display()), e))?;
            }
            let aside = path.with_extension(format!("new-{}", std::process::id()));
            write_private(&aside, hex::encode(bytes).as_bytes())
                .map_err(|e| StoreError::config_by(format!("writing {}", aside.display()), e))?;
            // A hard link fails when the file exists: the first process's key wins.
            let linked = std::fs::hard_link(&aside, path);
            let _ = std::fs::remove_file(&aside);
            match linked {
                Ok(()) => tracing::info!(path = %path.display(), "created a master key"),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    return Err(StoreError::config_by(
                        format!("creating the master key {}", path.display()),
                        e,
                    ))
                }
            }
        }
        Self::read(path)
    }

    pub(super) fn wrap(&self, subject: &str, key: &[u8; 32]) -> Result<String, StoreError> {
        seal_bytes(&self.cipher, &self.wrap_aad(subject), key)
    }

    pub(super) fn unwrap(&self, subject: &str, wrapped: &str) -> Option<[u8; 32]> {
        open_bytes(&self.cipher, &self.wrap_aad(subject), wrapped)?
            .try_into()
            .ok()
    }

    fn wrap_aad(&self, subject: &str) -> String {
        format!("data-key/v1\n{subject}\n{}", self.id)
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    options.open(path)?.write_all(bytes)
}
