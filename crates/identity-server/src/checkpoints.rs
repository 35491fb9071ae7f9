//! The keys of signed checkpoints (`identity_store::Checkpoint`): the service's signing key
//! signs them; it and the rotated-out keys (`IDENTITY_PREVIOUS_SIGNING_KEYS`) verify them.
//! Checkpoints start with their own line, so a checkpoint signature can never pass for a
//! token's, although one key makes both.

use anyhow::Context as _;
use identity_store::{CheckpointSigner, CheckpointVerifier};

use crate::settings::Settings;

#[derive(Debug, Clone, Default)]
pub struct Checkpoints {
    /// `None` without a signing key of the service's own: nothing is signed.
    pub signer: Option<CheckpointSigner>,
    pub keys: CheckpointVerifier,
}

impl Checkpoints {
    /// The keys the settings name (the signing key exists by now in development).
    pub fn load(settings: &Settings) -> anyhow::Result<Self> {
        let own = settings.signing_key_path().filter(|p| p.exists());
        let signer = match &own {
            Some(p) => Some(
                std::fs::read_to_string(p)
                    .map_err(anyhow::Error::from)
                    .and_then(|pem| Ok(CheckpointSigner::from_pem(&pem)?))
                    .with_context(|| format!("the signing key {}", p.display()))?,
            ),
            None => None,
        };
        let keys = verifier(settings)?;
        Ok(Self { signer, keys })
    }
}

/// Every key a checkpoint of this service may be signed with: its signing key and the
/// rotated-out ones.
pub fn verifier(settings: &Settings) -> anyhow::Result<CheckpointVerifier> {
    let own = settings.signing_key_path().filter(|p| p.exists());
    let paths = own.iter().chain(&settings.previous_signing_keys);
    Ok(CheckpointVerifier::from_files(paths.map(|p| p.as_path()))?)
}
