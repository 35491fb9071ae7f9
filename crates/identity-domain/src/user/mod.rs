//! The User aggregate: registration, profile, activation, contact confirmation, roles,
//! credentials and merging. Uniqueness of email, phone and external id is not decided here
//! but by `UniqueClaim` aggregates, which the server claims before it registers a user.

use std::collections::BTreeSet;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

use crate::derive::{keyed_identifier_email, IdentifierSource};
use crate::error::DomainError;
use crate::session::{
    seconds_until, CodeChannel, Session, SessionCommand, SessionEnd, SignIn, SignInFact,
    SignInState, CODE_ATTEMPT_WINDOW_SECS, CODE_COOLDOWN_SECS,
};
use crate::values::{
    Email, ExternalId, JsonObject, Locale, Name, Phone, ProfileDetails, Role, SessionId, TenantId,
    Text, UserId,
};
use crate::RecordsRejection;

/// Wrong codes allowed before a pending change locks.
pub const MAX_CODE_ATTEMPTS: u32 = 5;

/// A plaintext password on its way to verification. Never serialized, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// A password someone chooses, held to the policy: 8 to 256 characters (any characters;
    /// no composition rules, after NIST SP 800-63B). Passwords already set are not re-judged.
    pub fn new_password(raw: &str) -> Result<Self, &'static str> {
        let n = raw.chars().count();
        if !(8..=256).contains(&n) {
            return Err("password must be 8 to 256 characters");
        }
        Ok(Self::new(raw))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// A stored credential. Only hashes: the plaintext never enters an event.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "scheme")]
pub enum Credential {
    /// A PHC string (argon2id in this service).
    Modern { phc: String },
    /// A migrated credential: base64 of SHA-1 over salt followed by password.
    LegacySha1 { salt: String, digest: String },
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Modern { .. } => f.write_str("Credential::Modern(***)"),
            Self::LegacySha1 { .. } => f.write_str("Credential::LegacySha1(***)"),
        }
    }
}

/// Checks a password against a stored credential, and hashes a new one. Lives outside the
/// domain because hashing is slow and CPU-bound (the server runs it on dedicated low-priority
/// threads). The aggregate calls it only after its own checks pass (not locked, old password
/// right), so a refused attempt costs no hash.
pub trait CredentialVerifier: Send + Sync {
    fn verify<'a>(
        &'a self,
        credential: &'a Credential,
        password: &'a Secret,
    ) -> Pin<Box<dyn Future<Output = Result<bool, DomainError>> + Send + 'a>>;

    /// A modern PHC string for `password`.
    fn hash<'a>(
        &'a self,
        password: &'a Secret,
    ) -> Pin<Box<dyn Future<Output = Result<String, DomainError>> + Send + 'a>>;
}

#[derive(Clone)]
pub struct UserServices {
    pub credentials: Arc<dyn CredentialVerifier>,
}

/// Refuses every password operation: for commands that never touch one (bootstrap).
struct NoCredentials;

impl CredentialVerifier for NoCredentials {
    fn verify<'a>(
        &'a self,
        _: &'a Credential,
        _: &'a Secret,
    ) -> Pin<Box<dyn Future<Output = Result<bool, DomainError>> + Send + 'a>> {
        Box::pin(async { Err(DomainError::CredentialsUnavailable) })
    }

    fn hash<'a>(
        &'a self,
        _: &'a Secret,
    ) -> Pin<Box<dyn Future<Output = Result<String, DomainError>> + Send + 'a>> {
        Box::pin(async { Err(DomainError::CredentialsUnavailable) })
    }
}

impl UserServices {
    /// Services without a password hasher, for commands that never use one.
    pub fn without_credentials() -> Self {
        Self {
            credentials: Arc::new(NoCredentials),
        }
    }
}

impl fmt::Debug for UserServices {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("UserServices")
    }
}

mod aggregate;
mod codes;
mod commands;
mod contacts;
mod events;

use codes::*;
pub use commands::*;
pub use contacts::{Change, ProfileField, SetContacts};
pub use events::*;

/// A contact change waiting for its one-time code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingChange<T> {
    pub value: T,
    pub code_hash: String,
    pub expires_at: DateTime<Utc>,
    pub failed_attempts: u32,
    /// When the code was asked for (unknown for changes recorded before this was kept).
    #[serde(default)]
    pub requested_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: Option<UserId>,
    pub tenant: Option<TenantId>,
    pub email: Option<Email>,
    pub email_confirmed: bool,
    pub phone: Option<Phone>,
    pub phone_confirmed: bool,
    pub external_id: Option<ExternalId>,
    pub identifier_email: String,
    pub first_name: Option<Name>,
    pub last_name: Option<Name>,
    pub locale: Option<Locale>,
    pub custom_data: JsonObject,
    pub public_profile: JsonObject,
    pub active: bool,
    pub roles: BTreeSet<Role>,
    pub credential: Option<Credential>,
    pub pending_email: Option<PendingChange<Email>>,
    pub pending_phone: Option<PendingChange<Phone>>,
    pub merged_into: Option<UserId>,
    pub registered_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    /// Wrong passwords in a row, the lock and the open sessions.
    #[serde(flatten)]
    pub sign_in: SignInState,
    #[serde(default)]
    pub pending_reset: Option<PendingChange<CodeChannel>>,
    /// Erased (docs/adr/0006): nothing personal is left, and nothing more is done.
    #[serde(default)]
    pub erased: bool,
    /// Address, date of birth, gender, options and linked accounts.
    #[serde(default)]
    pub details: ProfileDetails,
}

impl User {
    /// Whether this user may own a new wallet: it exists, is active and has not been merged
    /// into another user. Returns the identifier email that salts the wallet's address.
    pub fn may_own_a_new_wallet(&self) -> Result<&str, DomainError> {
        self.ensure_usable(false)?;
        Ok(&self.identifier_email)
    }

    /// The user must exist, not be merged away, and (unless `allow_inactive`) be active.
    fn ensure_usable(&self, allow_inactive: bool) -> Result<(), DomainError> {
        if self.id.is_none() {
            return Err(DomainError::UserNotFound);
        }
        if let Some(into) = self.merged_into {
            return Err(DomainError::UserMerged {
                into: into.to_string(),
            });
        }
        if !allow_inactive && !self.active {
            return Err(DomainError::UserInactive);
        }
        Ok(())
    }

    /// Whether a pending change (email, phone or password reset) waits for the code stored
    /// as `code_hash`: a code is worth sending only while this holds.
    pub fn awaits_code(&self, code_hash: &str) -> bool {
        let hashes = [
            self.pending_email.as_ref().map(|p| p.code_hash.as_str()),
            self.pending_phone.as_ref().map(|p| p.code_hash.as_str()),
            self.pending_reset.as_ref().map(|p| p.code_hash.as_str()),
        ];
        hashes.into_iter().flatten().any(|h| h == code_hash)
    }

    /// Whether a password (verified or not yet) is stored in the legacy scheme.
    pub fn has_legacy_credential(&self) -> bool {
        matches!(self.credential, Some(Credential::LegacySha1 { .. }))
    }

    /// Seconds the account stays locked after `at`, if it is locked.
    pub fn locked_for(&self, at: DateTime<Utc>) -> Option<u64> {
        self.sign_in.locked_for(at)
    }

    /// The sessions still open at `at`.
    pub fn live_sessions(&self, at: DateTime<Utc>) -> impl Iterator<Item = (&SessionId, &Session)> {
        self.sign_in.live_sessions(at)
    }

    /// Checks a password unless the account is locked (then no hash is spent). A right one
    /// clears the failure count and, when `upgrade` is set, replaces a legacy credential with
    /// a modern hash; a wrong one is counted and may lock the account.
    async fn check_password(
        &self,
        password: &Secret,
        upgrade: bool,
        at: DateTime<Utc>,
        services: &UserServices,
    ) -> Result<(bool, Vec<UserEvent>), DomainError> {
        self.sign_in.ensure_unlocked(at)?;
        let current = self.credential.as_ref().ok_or(DomainError::NoCredential)?;
        let right = services.credentials.verify(current, password).await?;
        let mut events: Vec<UserEvent> = self
            .sign_in
            .checked(right, at)
            .map(Into::into)
            .into_iter()
            .collect();
        if right && upgrade && self.has_legacy_credential() {
            let phc = services.credentials.hash(password).await?;
            events.push(UserEvent::LegacyCredentialUpgraded {
                credential: Credential::Modern { phc },
            });
        }
        Ok((right, events))
    }

    /// Ends every open session (nothing when there is none).
    fn end_all_sessions(&self, reason: SessionEnd, at: DateTime<Utc>) -> Option<UserEvent> {
        self.sign_in.end_all(reason, at).map(Into::into)
    }

    fn register(cmd: RegisterUser) -> Result<UserEvent, DomainError> {
        let source = match (&cmd.email, &cmd.external_id, &cmd.phone) {
            (Some(e), _, _) => IdentifierSource::Email(e),
            (None, Some(x), _) => IdentifierSource::ExternalId(x),
            (None, None, Some(p)) => IdentifierSource::Phone(p),
            (None, None, None) => {
                return Err(DomainError::invalid(
                    "email",
                    "at least one of email, phone or external_id is required",
                ))
            }
        };
        Ok(UserEvent::UserRegistered {
            user_id: cmd.user_id,
            identifier_email: keyed_identifier_email(&cmd.id_key, &cmd.tenant, source),
            tenant: cmd.tenant,
            email: cmd.email,
            phone: cmd.phone,
            external_id: cmd.external_id,
            first_name: cmd.first_name,
            last_name: cmd.last_name,
            locale: cmd.locale,
            custom_data: cmd.custom_data,
            public_profile: cmd.public_profile,
            registered_at: cmd.at,
        })
    }

    /// The events of a profile update: the changed names, locale and objects, and new
    /// details.
    fn profile_events(&self, mut u: UpdateProfile, at: DateTime<Utc>) -> Vec<UserEvent> {
        let details = u.details.take().filter(|d| *d != self.details);
        self.profile_changes(u, at)
            .into_iter()
            .chain(details.map(|details| UserEvent::ProfileDetailsSet { details, at }))
            .collect()
    }

    fn profile_changes(&self, u: UpdateProfile, at: DateTime<Utc>) -> Option<UserEvent> {
        fn changed<T: PartialEq>(new: Option<T>, old: &Option<T>) -> Option<T> {
            new.filter(|n| old.as_ref() != Some(n))
        }
        fn changed_obj(new: Option<JsonObject>, old: &JsonObject) -> Option<JsonObject> {
            new.filter(|n| n != old)
        }
        let first_name = changed(u.first_name, &self.first_name);
        let last_name = changed(u.last_name, &self.last_name);
        let locale = changed(u.locale, &self.locale);
        let custom_data = changed_obj(u.custom_data, &self.custom_data);
        let public_profile = changed_obj(u.public_profile, &self.public_profile);
        let nothing = first_name.is_none()
            && last_name.is_none()
            && locale.is_none()
            && custom_data.is_none()
            && public_profile.is_none();
        (!nothing).then_some(UserEvent::UserProfileUpdated {
            first_name,
            last_name,
            locale,
            custom_data,
            public_profile,
            updated_at: at,
        })
    }

    async fn decide(
        &self,
        command: UserCommand,
        services: &UserServices,
    ) -> Result<Vec<UserEvent>, DomainError> {
        use UserCommand as C;
        use UserEvent as E;
        let allow_inactive = matches!(
            command,
            C::Reactivate { .. } | C::Upsert(_) | C::Sessions(SessionCommand::End { .. })
        );
        if self.erased {
            return Err(DomainError::UserErased);
        }
        match command {
            C::Register(_) => {}
            // Inactive and merged users are erased too: they still hold personal data.
            C::Erase { .. } if self.id.is_none() => return Err(DomainError::UserNotFound),
            C::Erase { .. } => {}
            _ => self.ensure_usable(allow_inactive)?,
        }
        let events = match command {
            C::Register(cmd) => {
                if self.id.is_some() {
                    return Err(DomainError::UserAlreadyExists);
                }
                let (details, at) = (cmd.details.clone(), cmd.at);
                let mut events = vec![Self::register(*cmd)?];
                if !details.is_empty() {
                    events.push(E::ProfileDetailsSet { details, at });
                }
                events
            }
            C::UpdateProfile(update, at) => self.profile_events(*update, at),
            C::Deactivate { at } => std::iter::once(E::UserDeactivated { at })
                .chain(self.end_all_sessions(SessionEnd::Revoked, at))
                .collect(),
            C::Reactivate { at } => {
                if self.active {
                    vec![]
                } else {
                    vec![E::UserReactivated { at }]
                }
            }
            C::RequestEmailChange {
                email,
                code_hash,
                expires_at,
                at,
            } => vec![E::EmailChangeStarted {
                email,
                code_hash,
                requested_at: at,
                expires_at,
                failed_attempts: next_code(self.pending_email.as_ref(), at)?,
            }],
            C::ConfirmEmail { code_hash, at } => {
                match check_code(self.pending_email.as_ref(), "email", &code_hash, at)? {
                    CodeCheck::Matches => {
                        let pending = self
                            .pending_email
                            .as_ref()
                            .ok_or(DomainError::NoPendingChange("email"))?;
                        vec![E::EmailConfirmed {
                            email: pending.value.clone(),
                            previous: self.email.clone(),
                            at,
                        }]
                    }
                    CodeCheck::Wrong { failed_attempts } => {
                        vec![E::EmailConfirmationFailed { failed_attempts }]
                    }
                }
            }
            C::RequestPhoneChange {
                phone,
                code_hash,
                expires_at,
                at,
            } => vec![E::PhoneChangeStarted {
                phone,
                code_hash,
                requested_at: at,
                expires_at,
                failed_attempts: next_code(self.pending_phone.as_ref(), at)?,
            }],
            C::ConfirmPhone { code_hash, at } => {
                match check_code(self.pending_phone.as_ref(), "phone", &code_hash, at)? {
                    CodeCheck::Matches => {
                        let pending = self
                            .pending_phone
                            .as_ref()
                            .ok_or(DomainError::NoPendingChange("phone"))?;
                        vec![E::PhoneConfirmed {
                            phone: pending.value.clone(),
                            previous: self.phone.clone(),
                            at,
                        }]
                    }
                    CodeCheck::Wrong { failed_attempts } => {
                        vec![E::PhoneConfirmationFailed { failed_attempts }]
                    }
                }
            }
            C::SetRoles { roles, mode } => {
                let next: BTreeSet<Role> = match mode {
                    RolesMode::Add => self.roles.union(&roles).cloned().collect(),
                    RolesMode::Replace => roles,
                };
                if next == self.roles {
                    vec![]
                } else {
                    vec![E::RolesChanged { roles: next }]
                }
            }
            C::SetPassword { phc } => vec![E::PasswordSet {
                credential: Credential::Modern { phc },
            }],
            C::ChangePassword {
                old_password,
                new_password,
                at,
            } => {
                let (right, mut events) = self
                    .check_password(&old_password, false, at, services)
                    .await?;
                if right {
                    let phc = services.credentials.hash(&new_password).await?;
                    events.push(E::PasswordChanged {
                        credential: Credential::Modern { phc },
                    });
                }
                events
            }
            C::ImportLegacyCredential { salt, digest } => {
                if matches!(self.credential, Some(Credential::Modern { .. })) {
                    return Err(DomainError::CredentialExists);
                }
                vec![E::LegacyCredentialImported {
                    credential: Credential::LegacySha1 { salt, digest },
                }]
            }
            C::VerifyPassword { password, at } => {
                self.check_password(&password, true, at, services).await?.1
            }
            C::SignIn(attempt) => {
                let (right, mut events) = self
                    .check_password(&attempt.password, true, attempt.at, services)
                    .await?;
                if right {
                    let opened = self.sign_in.opened(attempt);
                    events.extend(opened.into_iter().map(UserEvent::from));
                }
                events
            }
            C::Sessions(command) => self
                .sign_in
                .decide(command)?
                .map(UserEvent::from)
                .into_iter()
                .collect(),
            C::RequestPasswordReset {
                channel,
                code_hash,
                expires_at,
                at,
            } => vec![E::PasswordResetStarted {
                channel,
                code_hash,
                requested_at: at,
                expires_at,
                failed_attempts: next_code(self.pending_reset.as_ref(), at)?,
            }],
            C::ResetPassword {
                code_hash,
                new_password,
                at,
            } => match check_code(
                self.pending_reset.as_ref(),
                "password reset",
                &code_hash,
                at,
            )? {
                CodeCheck::Matches => {
                    let phc = services.credentials.hash(&new_password).await?;
                    std::iter::once(E::PasswordReset {
                        credential: Credential::Modern { phc },
                        at,
                    })
                    .chain(self.end_all_sessions(SessionEnd::PasswordReset, at))
                    .collect()
                }
                CodeCheck::Wrong { failed_attempts } => {
                    vec![E::PasswordResetFailed { failed_attempts }]
                }
            },
            C::Upsert(u) => self.upsert(*u)?,
            C::MergeInto { survivor, at } => {
                if Some(survivor) == self.id {
                    return Err(DomainError::MergeIntoSelf);
                }
                vec![E::UserMerged { into: survivor, at }]
            }
            C::Erase {
                basis,
                erased_by,
                at,
            } => self
                .end_all_sessions(SessionEnd::Revoked, at)
                .into_iter()
                .chain([E::UserErased {
                    basis,
                    erased_by,
                    at,
                }])
                .collect(),
        };
        Ok(events)
    }
}
