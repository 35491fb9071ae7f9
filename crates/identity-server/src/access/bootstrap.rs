//! Building the gate from settings (the development registry itself is
//! `identity_access::registry`).

use anyhow::Context as _;
use identity_domain::values::{Email, TenantId};
use identity_store::EventLog;

use super::token::{PublicKey, TrustedIssuer, Verifier};
use super::{Access, Directory};
use crate::settings::{Environment, Settings};
pub use identity_access::registry::{
    dev_admin_id, ensure_registry, signing_key, DEV_ADMIN_EMAIL, DEV_TENANT,
};

/// The gate: the verifier of the service's own and trusted issuers' tokens, and the
/// registry, loaded (and in development bootstrapped) from the store.
pub async fn access(log: &EventLog, settings: &Settings) -> anyhow::Result<Access> {
    let key = signing_key(settings)?;
    let trusted: Vec<TrustedIssuer> = match &settings.trusted_issuers_file {
        Some(path) => {
            let raw = std::fs::read_to_string(path)
                .with_context(|| format!("reading IDENTITY_TRUSTED_ISSUERS {}", path.display()))?;
            serde_json::from_str(&raw)
                .with_context(|| format!("IDENTITY_TRUSTED_ISSUERS {}", path.display()))?
        }
        None => Vec::new(),
    };
    if key.is_none() && trusted.is_empty() {
        anyhow::bail!(
            "no way to authenticate callers: set IDENTITY_SIGNING_KEY_FILE or IDENTITY_TRUSTED_ISSUERS (or IDENTITY_ENVIRONMENT=development)"
        );
    }
    let previous = settings
        .previous_signing_keys
        .iter()
        .map(|p| PublicKey::load(p))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let verifier = Verifier::new(
        key.as_ref().map(|k| (k, settings.jwt_issuer.as_str())),
        &previous,
        &trusted,
        &settings.jwt_audience,
    )?;
    if settings.environment == Environment::Development {
        ensure_registry(
            log,
            &TenantId::parse(DEV_TENANT)?,
            &Email::parse(DEV_ADMIN_EMAIL)?,
        )
        .await?;
    }
    let directory = Directory::open(log.clone()).await?;
    Ok(Access::new(
        verifier,
        directory,
        log.clone(),
        settings.reflection,
        key.as_ref(),
        &previous,
    ))
}
