//! The Admin aggregate: a person who operates the service, of one type, attached to tenants.
//!
//! An admin's id is derived from the email ([`admin_id`]), so the event store's primary key
//! makes the email unique across replicas without a separate claim. What each type may do is
//! the server's permission table; here an admin is its type, its tenants and whether it is
//! still active.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::DomainError;
use crate::session::{SessionCommand, SessionEnd, SignIn, SignInFact, SignInState};
use crate::tenant::SYSTEM_SCOPE;
use crate::user::{Credential, Secret, UserServices};
use crate::values::{Email, Name, TenantId};
use crate::RecordsRejection;

/// What an admin is for; each type is a documented set of permissions (server side).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum AdminType {
    /// Every permission, in every tenant.
    SuperAdmin,
    /// Everything inside the tenants it is attached to.
    TenantAdmin,
    /// Reads, including the audit trail, in the tenants it is attached to; never writes.
    Auditor,
}

impl AdminType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SuperAdmin => "SUPER_ADMIN",
            Self::TenantAdmin => "TENANT_ADMIN",
            Self::Auditor => "AUDITOR",
        }
    }
}

/// An admin's id (version 1): a UUID v5 of the normalized email, so one email is one admin.
pub fn admin_id(email: &Email) -> Uuid {
    Uuid::new_v5(
        &Uuid::NAMESPACE_URL,
        format!("identity:admin/v1/{}", email.as_str()).as_bytes(),
    )
}

/// The aggregate id of an admin.
pub fn admin_aggregate_id(id: &Uuid) -> String {
    format!("{SYSTEM_SCOPE}/admin:{id}")
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminCommand {
    Create {
        admin_id: Uuid,
        email: Email,
        display_name: Name,
        admin_type: AdminType,
        tenants: BTreeSet<TenantId>,
        at: DateTime<Utc>,
    },
    AssignTenant {
        tenant: TenantId,
        at: DateTime<Utc>,
    },
    RemoveTenant {
        tenant: TenantId,
        at: DateTime<Utc>,
    },
    /// The admin can no longer act anywhere; its history stays.
    Remove {
        at: DateTime<Utc>,
    },
    /// Sets the password the admin signs in with (hashed here; the policy is checked before).
    SetPassword {
        password: Secret,
        at: DateTime<Utc>,
    },
    /// Checks the password (unless locked) and, when right, opens a session.
    SignIn(SignIn),
    /// Refreshes or ends sessions.
    Sessions(SessionCommand),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminEvent {
    AdminCreated {
        admin_id: Uuid,
        email: Email,
        display_name: Name,
        admin_type: AdminType,
        tenants: BTreeSet<TenantId>,
        created_at: DateTime<Utc>,
    },
    AdminAssignedToTenant {
        tenant: TenantId,
        at: DateTime<Utc>,
    },
    AdminRemovedFromTenant {
        tenant: TenantId,
        at: DateTime<Utc>,
    },
    AdminRemoved {
        at: DateTime<Utc>,
    },
    /// A new password; every open session ends with it.
    AdminPasswordSet {
        credential: Credential,
        at: DateTime<Utc>,
    },
    /// Failed checks, the lock and sessions, by the rules users sign in by.
    AdminSignIn(SignInFact),
}

impl DomainEvent for AdminEvent {
    fn event_type(&self) -> String {
        match self {
            Self::AdminCreated { .. } => "AdminCreated",
            Self::AdminAssignedToTenant { .. } => "AdminAssignedToTenant",
            Self::AdminRemovedFromTenant { .. } => "AdminRemovedFromTenant",
            Self::AdminRemoved { .. } => "AdminRemoved",
            Self::AdminPasswordSet { .. } => "AdminPasswordSet",
            Self::AdminSignIn(fact) => match fact {
                SignInFact::CheckFailed { .. } => "AdminPasswordCheckFailed",
                SignInFact::FailuresCleared { .. } => "AdminPasswordFailuresCleared",
                SignInFact::Started { .. } => "AdminSessionStarted",
                SignInFact::Refreshed { .. } => "AdminSessionRefreshed",
                SignInFact::Ended { .. } => "AdminSessionsEnded",
            },
        }
        .to_string()
    }
    fn event_version(&self) -> String {
        "1.0".to_string()
    }
}

impl RecordsRejection for AdminEvent {
    fn rejection(&self) -> Option<DomainError> {
        match self {
            Self::AdminSignIn(SignInFact::CheckFailed { .. }) => {
                Some(DomainError::InvalidCredentials)
            }
            Self::AdminSignIn(SignInFact::Ended {
                reason: SessionEnd::TokenReused,
                ..
            }) => Some(DomainError::InvalidRefreshToken),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Admin {
    pub id: Option<Uuid>,
    pub email: Option<Email>,
    pub display_name: Option<Name>,
    pub admin_type: Option<AdminType>,
    pub tenants: BTreeSet<TenantId>,
    pub removed: bool,
    pub created_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub credential: Option<Credential>,
    #[serde(default)]
    pub sign_in: SignInState,
}

impl Admin {
    /// Whether this admin may act in `tenant` at all (its type then says what it may do).
    pub fn acts_in(&self, tenant: &TenantId) -> bool {
        !self.removed
            && (self.admin_type == Some(AdminType::SuperAdmin) || self.tenants.contains(tenant))
    }

    fn decide_plain(&self, command: AdminCommand) -> Result<Vec<AdminEvent>, DomainError> {
        use AdminEvent as E;
        if let AdminCommand::Create {
            admin_id,
            email,
            display_name,
            admin_type,
            tenants,
            at,
        } = command
        {
            if self.id.is_some() {
                return Err(DomainError::AdminAlreadyExists);
            }
            return Ok(vec![E::AdminCreated {
                admin_id,
                email,
                display_name,
                admin_type,
                tenants,
                created_at: at,
            }]);
        }
        if self.id.is_none() {
            return Err(DomainError::AdminNotFound);
        }
        if self.removed {
            return Err(DomainError::AdminRemoved);
        }
        Ok(match command {
            AdminCommand::Create { .. } => return Err(DomainError::AdminAlreadyExists),
            AdminCommand::AssignTenant { tenant, at } => {
                if self.tenants.contains(&tenant) {
                    vec![]
                } else {
                    vec![E::AdminAssignedToTenant { tenant, at }]
                }
            }
            AdminCommand::RemoveTenant { tenant, at } => {
                if self.tenants.contains(&tenant) {
                    vec![E::AdminRemovedFromTenant { tenant, at }]
                } else {
                    vec![]
                }
            }
            AdminCommand::Remove { at } => vec![E::AdminRemoved { at }],
            AdminCommand::Sessions(command) => self
                .sign_in
                .decide(command)?
                .map(E::AdminSignIn)
                .into_iter()
                .collect(),
            AdminCommand::SetPassword { .. } | AdminCommand::SignIn(_) => {
                return Err(DomainError::invalid(
                    "password",
                    "passwords are hashed by the handler",
                ))
            }
        })
    }

    /// The commands that hash or verify a password.
    async fn decide_with_password(
        &self,
        command: AdminCommand,
        services: &UserServices,
    ) -> Result<Vec<AdminEvent>, DomainError> {
        use AdminEvent as E;
        if self.id.is_none() {
            return Err(DomainError::AdminNotFound);
        }
        if self.removed {
            return Err(DomainError::AdminRemoved);
        }
        match command {
            AdminCommand::SetPassword { password, at } => {
                let phc = services.credentials.hash(&password).await?;
                let mut events = vec![E::AdminPasswordSet {
                    credential: Credential::Modern { phc },
                    at,
                }];
                events.extend(
                    self.sign_in
                        .end_all(SessionEnd::PasswordChanged, at)
                        .map(E::AdminSignIn),
                );
                Ok(events)
            }
            AdminCommand::SignIn(attempt) => {
                self.sign_in.ensure_unlocked(attempt.at)?;
                let current = self.credential.as_ref().ok_or(DomainError::NoCredential)?;
                let right = services
                    .credentials
                    .verify(current, &attempt.password)
                    .await?;
                let mut facts: Vec<SignInFact> = self
                    .sign_in
                    .checked(right, attempt.at)
                    .into_iter()
                    .collect();
                if right {
                    facts.extend(self.sign_in.opened(attempt));
                }
                let events = facts.into_iter().map(E::AdminSignIn).collect();
                Ok(events)
            }
            other => self.decide_plain(other),
        }
    }
}

decided_aggregate!(Admin, AdminCommand, AdminEvent, services: UserServices);

impl Admin {
    /// The password hasher (the one users' passwords go through) serves the commands that
    /// hash or verify one.
    async fn decide(
        &self,
        command: AdminCommand,
        services: &UserServices,
    ) -> Result<Vec<AdminEvent>, DomainError> {
        match command {
            c @ (AdminCommand::SetPassword { .. } | AdminCommand::SignIn(_)) => {
                self.decide_with_password(c, services).await
            }
            c => self.decide_plain(c),
        }
    }

    fn evolve(&mut self, event: AdminEvent) {
        use AdminEvent as E;
        match event {
            E::AdminCreated {
                admin_id,
                email,
                display_name,
                admin_type,
                tenants,
                created_at,
            } => {
                *self = Admin {
                    id: Some(admin_id),
                    email: Some(email),
                    display_name: Some(display_name),
                    admin_type: Some(admin_type),
                    tenants,
                    removed: false,
                    created_at: Some(created_at),
                    credential: None,
                    sign_in: SignInState::default(),
                };
            }
            E::AdminAssignedToTenant { tenant, .. } => {
                self.tenants.insert(tenant);
            }
            E::AdminRemovedFromTenant { tenant, .. } => {
                self.tenants.remove(&tenant);
            }
            E::AdminRemoved { .. } => self.removed = true,
            E::AdminPasswordSet { credential, .. } => {
                self.credential = Some(credential);
                self.sign_in.clear_failures();
            }
            E::AdminSignIn(fact) => self.sign_in.apply(fact),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).expect("time")
    }

    fn run(a: &mut Admin, c: AdminCommand) -> Result<(), DomainError> {
        for e in a.decide_plain(c)? {
            a.evolve(e);
        }
        Ok(())
    }

    fn tenant(s: &str) -> TenantId {
        TenantId::parse(s).expect("tenant")
    }

    fn auditor() -> Admin {
        let email = Email::parse("Ana@Example.com").expect("email");
        let mut a = Admin::default();
        run(
            &mut a,
            AdminCommand::Create {
                admin_id: admin_id(&email),
                email,
                display_name: Name::parse("Ana").expect("name"),
                admin_type: AdminType::Auditor,
                tenants: BTreeSet::from([tenant("acme")]),
                at: at(),
            },
        )
        .expect("creates");
        a
    }

    #[test]
    fn one_email_is_one_admin_id() {
        let a = Email::parse("ana@example.com").expect("email");
        let b = Email::parse(" ANA@example.com ").expect("email");
        assert_eq!(admin_id(&a), admin_id(&b));
    }

    #[test]
    fn an_admin_acts_only_in_its_tenants_until_detached_or_removed() {
        let mut a = auditor();
        assert!(a.acts_in(&tenant("acme")));
        assert!(!a.acts_in(&tenant("globex")));
        run(
            &mut a,
            AdminCommand::AssignTenant {
                tenant: tenant("globex"),
                at: at(),
            },
        )
        .expect("assigns");
        assert!(a.acts_in(&tenant("globex")));
        run(
            &mut a,
            AdminCommand::RemoveTenant {
                tenant: tenant("acme"),
                at: at(),
            },
        )
        .expect("detaches");
        assert!(!a.acts_in(&tenant("acme")));
        run(&mut a, AdminCommand::Remove { at: at() }).expect("removes");
        assert!(!a.acts_in(&tenant("globex")));
        assert_eq!(
            run(
                &mut a,
                AdminCommand::AssignTenant {
                    tenant: tenant("acme"),
                    at: at()
                }
            ),
            Err(DomainError::AdminRemoved)
        );
    }
}
