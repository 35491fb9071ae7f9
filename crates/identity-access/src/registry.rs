//! The signing key the settings name, and the registry development starts with: a tenant and
//! a SUPER_ADMIN, created on first start (and by `identity-admin bootstrap`).

use std::collections::BTreeSet;
use std::collections::HashMap;

use identity_domain::admin::{admin_aggregate_id, admin_id, Admin, AdminCommand, AdminType};
use identity_domain::tenant::{tenant_aggregate_id, Tenant, TenantCommand};
use identity_domain::values::{Email, Name, TenantId};
use identity_domain::DomainError;
use identity_settings::{Environment, Settings};
use identity_store::{EventLog, ExecuteError};

use crate::token::SigningKey;

/// The tenant development starts with.
pub const DEV_TENANT: &str = "dev";
/// The SUPER_ADMIN development starts with.
pub const DEV_ADMIN_EMAIL: &str = "admin@dev.local";

/// The development admin's id.
pub fn dev_admin_id() -> uuid::Uuid {
    admin_id(&Email::parse(DEV_ADMIN_EMAIL).unwrap_or_else(|_| unreachable!("a valid email")))
}

/// The signing key the settings name (created in development if missing).
pub fn signing_key(settings: &Settings) -> anyhow::Result<Option<SigningKey>> {
    settings
        .signing_key_path()
        .map(|p| SigningKey::load_or_create(&p, settings.environment == Environment::Development))
        .transpose()
}

fn bootstrap_metadata() -> HashMap<String, String> {
    HashMap::from([
        ("actor".to_string(), "system:bootstrap".to_string()),
        ("principal_kind".to_string(), "system".to_string()),
        ("principal_id".to_string(), "bootstrap".to_string()),
        ("command".to_string(), "Bootstrap".to_string()),
        ("time".to_string(), chrono::Utc::now().to_rfc3339()),
    ])
}

/// Creates `tenant` and a SUPER_ADMIN with `email` attached to it, unless they exist.
/// What `identity-admin bootstrap` runs, and what development runs on every start.
pub async fn ensure_registry(
    log: &EventLog,
    tenant: &TenantId,
    email: &Email,
) -> anyhow::Result<()> {
    let at = chrono::Utc::now();
    let created = log
        .execute::<Tenant, _>(
            &tenant_aggregate_id(tenant),
            &TenantCommand::Create {
                tenant: tenant.clone(),
                name: Name::parse(tenant.as_str())?,
                at,
            },
            &(),
            &bootstrap_metadata(),
        )
        .await;
    match created {
        Ok(_) | Err(ExecuteError::Domain(DomainError::TenantAlreadyExists)) => {}
        Err(e) => return Err(anyhow::anyhow!("creating tenant {tenant}: {e}")),
    }
    let id = admin_id(email);
    let created = log
        .execute::<Admin, _>(
            &admin_aggregate_id(&id),
            &AdminCommand::Create {
                admin_id: id,
                email: email.clone(),
                display_name: Name::parse("Administrator")?,
                admin_type: AdminType::SuperAdmin,
                tenants: BTreeSet::from([tenant.clone()]),
                at,
            },
            &identity_domain::user::UserServices::without_credentials(),
            &bootstrap_metadata(),
        )
        .await;
    match created {
        Ok(_) | Err(ExecuteError::Domain(DomainError::AdminAlreadyExists)) => Ok(()),
        Err(e) => Err(anyhow::anyhow!("creating admin {email}: {e}")),
    }
}
