//! What happened to a user: the events stored for ever (their JSON is pinned by
//! `tests/event_schema.rs`).

use super::*;

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
    /// The person was erased: their data key is destroyed, so every personal field of their
    /// events reads as erased from now on. Holds no personal data itself.
    UserErased {
        basis: Text,
        erased_by: String,
        at: DateTime<Utc>,
    },
    /// Set (or cleared, `None`) by a trusted caller (UpsertUsers), not confirmed by code.
    EmailSet {
        email: Option<Email>,
        previous: Option<Email>,
        at: DateTime<Utc>,
    },
    /// As `EmailSet`.
    PhoneSet {
        phone: Option<Phone>,
        previous: Option<Phone>,
        at: DateTime<Utc>,
    },
    ExternalIdSet {
        external_id: Option<ExternalId>,
        previous: Option<ExternalId>,
        at: DateTime<Utc>,
    },
    /// The user's profile details, replaced whole.
    ProfileDetailsSet {
        details: ProfileDetails,
        at: DateTime<Utc>,
    },
    /// Profile fields emptied by a trusted caller (UpsertUsers with an update mask).
    ProfileFieldsCleared {
        fields: BTreeSet<ProfileField>,
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
            Self::UserErased { .. } => "UserErased",
            Self::EmailSet { .. } => "EmailSet",
            Self::PhoneSet { .. } => "PhoneSet",
            Self::ExternalIdSet { .. } => "ExternalIdSet",
            Self::ProfileFieldsCleared { .. } => "ProfileFieldsCleared",
            Self::ProfileDetailsSet { .. } => "ProfileDetailsSet",
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
