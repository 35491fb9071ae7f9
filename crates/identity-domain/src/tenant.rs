//! The Tenant aggregate: the registry of tenants, their project keys and their role table.
//!
//! A tenant exists only once `TenantCreated` is stored: naming a tenant in a call never
//! creates it. Project keys are stored as a digest of their secret (never the secret), each
//! tied to this tenant, and revocable. The role table maps a user's roles (SetUserRoles) to
//! permission names; the server checks that the names exist before a command carries them.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::DomainError;
use crate::values::{Name, TenantId};
use crate::RecordsRejection;

/// The prefix of every aggregate id of the access registry (tenants, admins). `@` is not a
/// tenant character, so no tenant's ids can collide with it.
pub const SYSTEM_SCOPE: &str = "@system";

/// The aggregate id of a tenant's registry entry.
pub fn tenant_aggregate_id(tenant: &TenantId) -> String {
    format!("{SYSTEM_SCOPE}/tenant:{tenant}")
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TenantCommand {
    Create {
        tenant: TenantId,
        name: Name,
        at: DateTime<Utc>,
    },
    IssueProjectKey {
        key_id: String,
        /// SHA-256 of the key's secret, hex.
        digest: String,
        name: Name,
        at: DateTime<Utc>,
    },
    RevokeProjectKey {
        key_id: String,
        at: DateTime<Utc>,
    },
    /// Replaces one role's permissions; an empty set removes the role.
    SetRolePermissions {
        role: String,
        permissions: BTreeSet<String>,
        at: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TenantEvent {
    TenantCreated {
        tenant: TenantId,
        name: Name,
        created_at: DateTime<Utc>,
    },
    ProjectKeyIssued {
        key_id: String,
        digest: String,
        name: Name,
        issued_at: DateTime<Utc>,
    },
    ProjectKeyRevoked {
        key_id: String,
        revoked_at: DateTime<Utc>,
    },
    RolePermissionsSet {
        role: String,
        permissions: BTreeSet<String>,
        at: DateTime<Utc>,
    },
}

domain_event!(
    TenantEvent,
    "1.0",
    [
        TenantCreated,
        ProjectKeyIssued,
        ProjectKeyRevoked,
        RolePermissionsSet,
    ]
);

impl RecordsRejection for TenantEvent {}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectKey {
    pub key_id: String,
    pub digest: String,
    pub name: Name,
    pub issued_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenant {
    pub id: Option<TenantId>,
    pub name: Option<Name>,
    pub created_at: Option<DateTime<Utc>>,
    pub keys: BTreeMap<String, ProjectKey>,
    /// Roles this tenant defined or changed; the server's default table fills the rest.
    pub roles: BTreeMap<String, BTreeSet<String>>,
}

impl Tenant {
    fn decide(&self, command: TenantCommand) -> Result<Vec<TenantEvent>, DomainError> {
        use TenantEvent as E;
        if let TenantCommand::Create { tenant, name, at } = command {
            if self.id.is_some() {
                return Err(DomainError::TenantAlreadyExists);
            }
            return Ok(vec![E::TenantCreated {
                tenant,
                name,
                created_at: at,
            }]);
        }
        if self.id.is_none() {
            return Err(DomainError::TenantNotFound);
        }
        Ok(match command {
            TenantCommand::Create { .. } => return Err(DomainError::TenantAlreadyExists),
            TenantCommand::IssueProjectKey {
                key_id,
                digest,
                name,
                at,
            } => {
                if self.keys.contains_key(&key_id) {
                    return Err(DomainError::invalid("key_id", "already issued"));
                }
                vec![E::ProjectKeyIssued {
                    key_id,
                    digest,
                    name,
                    issued_at: at,
                }]
            }
            TenantCommand::RevokeProjectKey { key_id, at } => match self.keys.get(&key_id) {
                None => return Err(DomainError::ProjectKeyNotFound),
                Some(k) if k.revoked_at.is_some() => vec![],
                Some(_) => vec![E::ProjectKeyRevoked {
                    key_id,
                    revoked_at: at,
                }],
            },
            TenantCommand::SetRolePermissions {
                role,
                permissions,
                at,
            } => {
                if self.roles.get(&role) == Some(&permissions) {
                    vec![]
                } else {
                    vec![E::RolePermissionsSet {
                        role,
                        permissions,
                        at,
                    }]
                }
            }
        })
    }

    /// The key with this id, if it was issued here and is not revoked.
    pub fn live_key(&self, key_id: &str) -> Option<&ProjectKey> {
        self.keys.get(key_id).filter(|k| k.revoked_at.is_none())
    }
}

decided_aggregate!(Tenant, TenantCommand, TenantEvent);

impl Tenant {
    fn evolve(&mut self, event: TenantEvent) {
        use TenantEvent as E;
        match event {
            E::TenantCreated {
                tenant,
                name,
                created_at,
            } => {
                self.id = Some(tenant);
                self.name = Some(name);
                self.created_at = Some(created_at);
            }
            E::ProjectKeyIssued {
                key_id,
                digest,
                name,
                issued_at,
            } => {
                self.keys.insert(
                    key_id.clone(),
                    ProjectKey {
                        key_id,
                        digest,
                        name,
                        issued_at,
                        revoked_at: None,
                    },
                );
            }
            E::ProjectKeyRevoked { key_id, revoked_at } => {
                if let Some(k) = self.keys.get_mut(&key_id) {
                    k.revoked_at = Some(revoked_at);
                }
            }
            E::RolePermissionsSet {
                role, permissions, ..
            } => {
                self.roles.insert(role, permissions);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).expect("time")
    }

    fn run(t: &mut Tenant, c: TenantCommand) -> Result<(), DomainError> {
        for e in t.decide(c)? {
            t.evolve(e);
        }
        Ok(())
    }

    fn create_acme() -> TenantCommand {
        TenantCommand::Create {
            tenant: TenantId::parse("acme").expect("id"),
            name: Name::parse("Acme").expect("name"),
            at: at(),
        }
    }

    fn created() -> Tenant {
        let mut t = Tenant::default();
        run(&mut t, create_acme()).expect("creates");
        t
    }

    #[test]
    fn a_tenant_exists_once_and_keys_need_it() {
        let mut none = Tenant::default();
        let issue = TenantCommand::IssueProjectKey {
            key_id: "k1".into(),
            digest: "d".into(),
            name: Name::parse("web").expect("name"),
            at: at(),
        };
        assert_eq!(
            run(&mut none, issue.clone()),
            Err(DomainError::TenantNotFound)
        );
        let mut t = created();
        assert_eq!(
            run(&mut t, create_acme()),
            Err(DomainError::TenantAlreadyExists)
        );
        run(&mut t, issue).expect("issues");
        assert!(t.live_key("k1").is_some());
    }

    #[test]
    fn a_revoked_key_is_no_longer_live_and_revoking_twice_appends_nothing() {
        let mut t = created();
        run(
            &mut t,
            TenantCommand::IssueProjectKey {
                key_id: "k1".into(),
                digest: "d".into(),
                name: Name::parse("web").expect("name"),
                at: at(),
            },
        )
        .expect("issues");
        let revoke = TenantCommand::RevokeProjectKey {
            key_id: "k1".into(),
            at: at(),
        };
        assert_eq!(t.decide(revoke.clone()).expect("decides").len(), 1);
        run(&mut t, revoke.clone()).expect("revokes");
        assert!(t.live_key("k1").is_none());
        assert!(t.decide(revoke).expect("decides").is_empty());
        assert_eq!(
            t.decide(TenantCommand::RevokeProjectKey {
                key_id: "nope".into(),
                at: at()
            }),
            Err(DomainError::ProjectKeyNotFound)
        );
    }
}
