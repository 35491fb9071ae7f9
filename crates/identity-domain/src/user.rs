//! The User aggregate: registration, profile, activation, contact confirmation, roles,
//! credentials and merging. Uniqueness of email, phone and external id is not decided here
//! but by `UniqueClaim` aggregates, which the server claims before it registers a user.

use std::collections::BTreeSet;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

use crate::derive::{identifier_email, IdentifierSource};
use crate::error::DomainError;
use crate::session::{
    seconds_until, CodeChannel, Session, SessionEnd, SignInFact, SignInState,
    CODE_ATTEMPT_WINDOW_SECS, CODE_COOLDOWN_SECS,
};
use crate::values::{
    Email, ExternalId, JsonObject, Locale, Name, Phone, Role, SessionId, TenantId, UserId,
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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterUser {
    pub user_id: UserId,
    pub tenant: TenantId,
    pub email: Option<Email>,
    pub phone: Option<Phone>,
    pub external_id: Option<ExternalId>,
    pub first_name: Option<Name>,
    pub last_name: Option<Name>,
    pub locale: Option<Locale>,
    pub custom_data: JsonObject,
    pub public_profile: JsonObject,
    pub at: DateTime<Utc>,
}

/// A partial profile update: `None` leaves a field as it is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UpdateProfile {
    pub first_name: Option<Name>,
    pub last_name: Option<Name>,
    pub locale: Option<Locale>,
    pub custom_data: Option<JsonObject>,
    pub public_profile: Option<JsonObject>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RolesMode {
    Add,
    Replace,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserCommand {
    Register(Box<RegisterUser>),
    UpdateProfile(Box<UpdateProfile>, DateTime<Utc>),
    Deactivate {
        at: DateTime<Utc>,
    },
    Reactivate {
        at: DateTime<Utc>,
    },
    RequestEmailChange {
        email: Email,
        code_hash: String,
        expires_at: DateTime<Utc>,
        at: DateTime<Utc>,
    },
    ConfirmEmail {
        code_hash: String,
        at: DateTime<Utc>,
    },
    RequestPhoneChange {
        phone: Phone,
        code_hash: String,
        expires_at: DateTime<Utc>,
        at: DateTime<Utc>,
    },
    ConfirmPhone {
        code_hash: String,
        at: DateTime<Utc>,
    },
    SetRoles {
        roles: BTreeSet<Role>,
        mode: RolesMode,
    },
    SetPassword {
        phc: String,
    },
    /// Checks the old password (counted like any check) and only then hashes the new one.
    ChangePassword {
        old_password: Secret,
        new_password: Secret,
        at: DateTime<Utc>,
    },
    ImportLegacyCredential {
        salt: String,
        digest: String,
    },
    /// Verifies a password. A legacy credential that verifies is replaced by a modern hash of
    /// the same password.
    VerifyPassword {
        password: Secret,
        at: DateTime<Utc>,
    },
    /// Verifies the password and opens a session whose refresh token has `refresh_digest`.
    SignIn {
        password: Secret,
        session: SessionId,
        refresh_digest: String,
        expires_at: DateTime<Utc>,
        at: DateTime<Utc>,
    },
    /// Rotates a session's refresh token: `presented` must be the current one's digest; a
    /// rotated-away one ends the session.
    Refresh {
        session: SessionId,
        presented: String,
        refresh_digest: String,
        expires_at: DateTime<Utc>,
        at: DateTime<Utc>,
    },
    /// Ends one session, or all of them (`None`).
    EndSessions {
        session: Option<SessionId>,
        reason: SessionEnd,
        at: DateTime<Utc>,
    },
    RequestPasswordReset {
        channel: CodeChannel,
        code_hash: String,
        expires_at: DateTime<Utc>,
        at: DateTime<Utc>,
    },
    ResetPassword {
        code_hash: String,
        new_password: Secret,
        at: DateTime<Utc>,
    },
    MergeInto {
        survivor: UserId,
        at: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum UserEvent {
    UserRegistered {
        user_id: UserId,
        tenant: TenantId,
        email: Option<Email>,
        phone: Option<Phone>,
        external_id: Option<ExternalId>,
        identifier_email: String,
        first_name: Option<Name>,
        last_name: Option<Name>,
        locale: Option<Locale>,
        custom_data: JsonObject,
        public_profile: JsonObject,
        registered_at: DateTime<Utc>,
    },
    /// Only the fields that changed are present.
    UserProfileUpdated {
        first_name: Option<Name>,
        last_name: Option<Name>,
        locale: Option<Locale>,
        custom_data: Option<JsonObject>,
        public_profile: Option<JsonObject>,
        updated_at: DateTime<Utc>,
    },
    UserDeactivated {
        at: DateTime<Utc>,
    },
    UserReactivated {
        at: DateTime<Utc>,
    },
    EmailChangeRequested {
        email: Email,
        code_hash: String,
        expires_at: DateTime<Utc>,
    },
    EmailConfirmationFailed {
        failed_attempts: u32,
    },
    EmailConfirmed {
        email: Email,
        previous: Option<Email>,
        at: DateTime<Utc>,
    },
    PhoneChangeRequested {
        phone: Phone,
        code_hash: String,
        expires_at: DateTime<Utc>,
    },
    PhoneConfirmationFailed {
        failed_attempts: u32,
    },
    PhoneConfirmed {
        phone: Phone,
        previous: Option<Phone>,
        at: DateTime<Utc>,
    },
    /// Carries the whole resulting set of roles.
    RolesChanged {
        roles: BTreeSet<Role>,
    },
    PasswordSet {
        credential: Credential,
    },
    PasswordChanged {
        credential: Credential,
    },
    LegacyCredentialImported {
        credential: Credential,
    },
    LegacyCredentialUpgraded {
        credential: Credential,
    },
    UserMerged {
        into: UserId,
        at: DateTime<Utc>,
    },
    /// A wrong password; `locked_until` is set when this failure locks the account.
    PasswordCheckFailed {
        failed_attempts: u32,
        locked_until: Option<DateTime<Utc>>,
        at: DateTime<Utc>,
    },
    /// A right password after wrong ones: the count starts again.
    PasswordFailuresCleared {
        at: DateTime<Utc>,
    },
    SessionStarted {
        session: SessionId,
        refresh_digest: String,
        started_at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    },
    SessionRefreshed {
        session: SessionId,
        refresh_digest: String,
        at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    },
    SessionsEnded {
        sessions: Vec<SessionId>,
        reason: SessionEnd,
        at: DateTime<Utc>,
    },
    /// Supersedes `EmailChangeRequested` (still read): carries when it was asked and the wrong
    /// attempts it inherits from the code before it.
    EmailChangeStarted {
        email: Email,
        code_hash: String,
        requested_at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
        failed_attempts: u32,
    },
    /// Supersedes `PhoneChangeRequested` (still read), as `EmailChangeStarted`.
    PhoneChangeStarted {
        phone: Phone,
        code_hash: String,
        requested_at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
        failed_attempts: u32,
    },
    PasswordResetStarted {
        channel: CodeChannel,
        code_hash: String,
        requested_at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
        failed_attempts: u32,
    },
    PasswordResetFailed {
        failed_attempts: u32,
    },
    PasswordReset {
        credential: Credential,
        at: DateTime<Utc>,
    },
}

impl DomainEvent for UserEvent {
    fn event_type(&self) -> String {
        match self {
            Self::UserRegistered { .. } => "UserRegistered",
            Self::UserProfileUpdated { .. } => "UserProfileUpdated",
            Self::UserDeactivated { .. } => "UserDeactivated",
            Self::UserReactivated { .. } => "UserReactivated",
            Self::EmailChangeRequested { .. } => "EmailChangeRequested",
            Self::EmailConfirmationFailed { .. } => "EmailConfirmationFailed",
            Self::EmailConfirmed { .. } => "EmailConfirmed",
            Self::PhoneChangeRequested { .. } => "PhoneChangeRequested",
            Self::PhoneConfirmationFailed { .. } => "PhoneConfirmationFailed",
            Self::PhoneConfirmed { .. } => "PhoneConfirmed",
            Self::RolesChanged { .. } => "RolesChanged",
            Self::PasswordSet { .. } => "PasswordSet",
            Self::PasswordChanged { .. } => "PasswordChanged",
            Self::LegacyCredentialImported { .. } => "LegacyCredentialImported",
            Self::LegacyCredentialUpgraded { .. } => "LegacyCredentialUpgraded",
            Self::UserMerged { .. } => "UserMerged",
            Self::PasswordCheckFailed { .. } => "PasswordCheckFailed",
            Self::PasswordFailuresCleared { .. } => "PasswordFailuresCleared",
            Self::SessionStarted { .. } => "SessionStarted",
            Self::SessionRefreshed { .. } => "SessionRefreshed",
            Self::SessionsEnded { .. } => "SessionsEnded",
            Self::EmailChangeStarted { .. } => "EmailChangeStarted",
            Self::PhoneChangeStarted { .. } => "PhoneChangeStarted",
            Self::PasswordResetStarted { .. } => "PasswordResetStarted",
            Self::PasswordResetFailed { .. } => "PasswordResetFailed",
            Self::PasswordReset { .. } => "PasswordReset",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        "1.0".to_string()
    }
}

impl From<SignInFact> for UserEvent {
    fn from(fact: SignInFact) -> Self {
        match fact {
            SignInFact::CheckFailed {
                failed_attempts,
                locked_until,
                at,
            } => Self::PasswordCheckFailed {
                failed_attempts,
                locked_until,
                at,
            },
            SignInFact::FailuresCleared { at } => Self::PasswordFailuresCleared { at },
            SignInFact::Started {
                session,
                refresh_digest,
                started_at,
                expires_at,
            } => Self::SessionStarted {
                session,
                refresh_digest,
                started_at,
                expires_at,
            },
            SignInFact::Refreshed {
                session,
                refresh_digest,
                at,
                expires_at,
            } => Self::SessionRefreshed {
                session,
                refresh_digest,
                at,
                expires_at,
            },
            SignInFact::Ended {
                sessions,
                reason,
                at,
            } => Self::SessionsEnded {
                sessions,
                reason,
                at,
            },
        }
    }
}

impl RecordsRejection for UserEvent {
    fn rejection(&self) -> Option<DomainError> {
        match self {
            Self::EmailConfirmationFailed { failed_attempts }
            | Self::PhoneConfirmationFailed { failed_attempts }
            | Self::PasswordResetFailed { failed_attempts } => Some(DomainError::InvalidCode {
                attempts_left: MAX_CODE_ATTEMPTS.saturating_sub(*failed_attempts),
            }),
            Self::PasswordCheckFailed { .. } => Some(DomainError::InvalidCredentials),
            Self::SessionsEnded {
                reason: SessionEnd::TokenReused,
                ..
            } => Some(DomainError::InvalidRefreshToken),
            _ => None,
        }
    }
}

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
}

/// What confirming a code decided.
enum CodeCheck {
    Matches,
    Wrong { failed_attempts: u32 },
}

fn check_code<T>(
    pending: Option<&PendingChange<T>>,
    what: &'static str,
    code_hash: &str,
    at: DateTime<Utc>,
) -> Result<CodeCheck, DomainError> {
    let pending = pending.ok_or(DomainError::NoPendingChange(what))?;
    if pending.failed_attempts >= MAX_CODE_ATTEMPTS {
        return Err(DomainError::RateLimitExceeded);
    }
    if at > pending.expires_at {
        return Err(DomainError::CodeExpired);
    }
    if constant_time_eq(pending.code_hash.as_bytes(), code_hash.as_bytes()) {
        Ok(CodeCheck::Matches)
    } else {
        Ok(CodeCheck::Wrong {
            failed_attempts: pending.failed_attempts + 1,
        })
    }
}

/// The wrong attempts a new code inherits from the pending one, or why no code is due yet:
/// not before [`CODE_COOLDOWN_SECS`] after the last, and not while the last one is locked by
/// wrong attempts within [`CODE_ATTEMPT_WINDOW_SECS`].
fn next_code<T>(pending: Option<&PendingChange<T>>, at: DateTime<Utc>) -> Result<u32, DomainError> {
    let Some((pending, requested)) = pending.and_then(|p| Some((p, p.requested_at?))) else {
        return Ok(0);
    };
    let cooldown_end = requested + chrono::Duration::seconds(CODE_COOLDOWN_SECS);
    if at < cooldown_end {
        return Err(DomainError::RetryLater {
            retry_after_secs: seconds_until(cooldown_end, at),
        });
    }
    let window_end = requested + chrono::Duration::seconds(CODE_ATTEMPT_WINDOW_SECS);
    if at >= window_end {
        return Ok(0);
    }
    if pending.failed_attempts >= MAX_CODE_ATTEMPTS {
        return Err(DomainError::RetryLater {
            retry_after_secs: seconds_until(window_end, at),
        });
    }
    Ok(pending.failed_attempts)
}

fn pending<T>(
    value: T,
    code_hash: String,
    requested_at: Option<DateTime<Utc>>,
    expires_at: DateTime<Utc>,
    failed_attempts: u32,
) -> Option<PendingChange<T>> {
    Some(PendingChange {
        value,
        code_hash,
        expires_at,
        failed_attempts,
        requested_at,
    })
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl User {
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
            identifier_email: identifier_email(&cmd.tenant, source),
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
        let allow_inactive = matches!(command, C::Reactivate { .. } | C::EndSessions { .. });
        if !matches!(command, C::Register(_)) {
            self.ensure_usable(allow_inactive)?;
        }
        let events = match command {
            C::Register(cmd) => {
                if self.id.is_some() {
                    return Err(DomainError::UserAlreadyExists);
                }
                vec![Self::register(*cmd)?]
            }
            C::UpdateProfile(update, at) => self.profile_changes(*update, at).into_iter().collect(),
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
            C::SignIn {
                password,
                session,
                refresh_digest,
                expires_at,
                at,
            } => {
                let (right, mut events) =
                    self.check_password(&password, true, at, services).await?;
                if right {
                    events.extend(
                        self.sign_in
                            .start(session, refresh_digest, expires_at, at)
                            .into_iter()
                            .map(UserEvent::from),
                    );
                }
                events
            }
            C::Refresh {
                session,
                presented,
                refresh_digest,
                expires_at,
                at,
            } => vec![self
                .sign_in
                .refresh(session, &presented, refresh_digest, expires_at, at)?
                .into()],
            C::EndSessions {
                session: None,
                reason,
                at,
            } => self.end_all_sessions(reason, at).into_iter().collect(),
            C::EndSessions {
                session: Some(session),
                reason,
                at,
            } => vec![self.sign_in.end_one(session, reason, at)?.into()],
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
            C::MergeInto { survivor, at } => {
                if Some(survivor) == self.id {
                    return Err(DomainError::MergeIntoSelf);
                }
                vec![E::UserMerged { into: survivor, at }]
            }
        };
        Ok(events)
    }
}

impl Aggregate for User {
    const TYPE: &'static str = "User";
    type Command = UserCommand;
    type Event = UserEvent;
    type Error = DomainError;
    type Services = UserServices;

    async fn handle(
        &mut self,
        command: Self::Command,
        services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        for event in self.decide(command, services).await? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        use UserEvent as E;
        match event {
            E::UserRegistered {
                user_id,
                tenant,
                email,
                phone,
                external_id,
                identifier_email,
                first_name,
                last_name,
                locale,
                custom_data,
                public_profile,
                registered_at,
            } => {
                *self = User {
                    id: Some(user_id),
                    tenant: Some(tenant),
                    email,
                    phone,
                    external_id,
                    identifier_email,
                    first_name,
                    last_name,
                    locale,
                    custom_data,
                    public_profile,
                    active: true,
                    registered_at: Some(registered_at),
                    updated_at: Some(registered_at),
                    ..User::default()
                };
            }
            E::UserProfileUpdated {
                first_name,
                last_name,
                locale,
                custom_data,
                public_profile,
                updated_at,
            } => {
                if first_name.is_some() {
                    self.first_name = first_name;
                }
                if last_name.is_some() {
                    self.last_name = last_name;
                }
                if locale.is_some() {
                    self.locale = locale;
                }
                if let Some(c) = custom_data {
                    self.custom_data = c;
                }
                if let Some(p) = public_profile {
                    self.public_profile = p;
                }
                self.updated_at = Some(updated_at);
            }
            E::UserDeactivated { at } => {
                self.active = false;
                self.updated_at = Some(at);
            }
            E::UserReactivated { at } => {
                self.active = true;
                self.updated_at = Some(at);
            }
            E::EmailChangeRequested {
                email,
                code_hash,
                expires_at,
            } => self.pending_email = pending(email, code_hash, None, expires_at, 0),
            E::EmailChangeStarted {
                email,
                code_hash,
                requested_at,
                expires_at,
                failed_attempts,
            } => {
                self.pending_email = pending(
                    email,
                    code_hash,
                    Some(requested_at),
                    expires_at,
                    failed_attempts,
                );
            }
            E::EmailConfirmationFailed { failed_attempts } => {
                if let Some(p) = self.pending_email.as_mut() {
                    p.failed_attempts = failed_attempts;
                }
            }
            E::EmailConfirmed { email, at, .. } => {
                self.email = Some(email);
                self.email_confirmed = true;
                self.pending_email = None;
                self.updated_at = Some(at);
            }
            E::PhoneChangeRequested {
                phone,
                code_hash,
                expires_at,
            } => self.pending_phone = pending(phone, code_hash, None, expires_at, 0),
            E::PhoneChangeStarted {
                phone,
                code_hash,
                requested_at,
                expires_at,
                failed_attempts,
            } => {
                self.pending_phone = pending(
                    phone,
                    code_hash,
                    Some(requested_at),
                    expires_at,
                    failed_attempts,
                );
            }
            E::PhoneConfirmationFailed { failed_attempts } => {
                if let Some(p) = self.pending_phone.as_mut() {
                    p.failed_attempts = failed_attempts;
                }
            }
            E::PhoneConfirmed { phone, at, .. } => {
                self.phone = Some(phone);
                self.phone_confirmed = true;
                self.pending_phone = None;
                self.updated_at = Some(at);
            }
            E::RolesChanged { roles } => self.roles = roles,
            E::PasswordSet { credential } | E::PasswordChanged { credential } => {
                self.credential = Some(credential);
                self.sign_in.clear_failures();
            }
            E::LegacyCredentialImported { credential }
            | E::LegacyCredentialUpgraded { credential } => self.credential = Some(credential),
            E::PasswordCheckFailed {
                failed_attempts,
                locked_until,
                at,
            } => self.sign_in.apply(SignInFact::CheckFailed {
                failed_attempts,
                locked_until,
                at,
            }),
            E::PasswordFailuresCleared { at } => {
                self.sign_in.apply(SignInFact::FailuresCleared { at })
            }
            E::SessionStarted {
                session,
                refresh_digest,
                started_at,
                expires_at,
            } => self.sign_in.apply(SignInFact::Started {
                session,
                refresh_digest,
                started_at,
                expires_at,
            }),
            E::SessionRefreshed {
                session,
                refresh_digest,
                at,
                expires_at,
            } => self.sign_in.apply(SignInFact::Refreshed {
                session,
                refresh_digest,
                at,
                expires_at,
            }),
            E::SessionsEnded {
                sessions,
                reason,
                at,
            } => self.sign_in.apply(SignInFact::Ended {
                sessions,
                reason,
                at,
            }),
            E::PasswordResetStarted {
                channel,
                code_hash,
                requested_at,
                expires_at,
                failed_attempts,
            } => {
                self.pending_reset = pending(
                    channel,
                    code_hash,
                    Some(requested_at),
                    expires_at,
                    failed_attempts,
                );
            }
            E::PasswordResetFailed { failed_attempts } => {
                if let Some(p) = self.pending_reset.as_mut() {
                    p.failed_attempts = failed_attempts;
                }
            }
            E::PasswordReset { credential, at } => {
                self.credential = Some(credential);
                self.sign_in.clear_failures();
                self.pending_reset = None;
                self.updated_at = Some(at);
            }
            E::UserMerged { into, at } => {
                self.merged_into = Some(into);
                self.updated_at = Some(at);
            }
        }
    }
}
