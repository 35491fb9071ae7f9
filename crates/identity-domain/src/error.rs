//! The domain's one error type. Every variant has a stable, machine-readable reason that the
//! API exposes (`ErrorInfo.reason`) and that callers match on; never rename a reason.

use serde::{Deserialize, Serialize};

/// One invalid input field, named as the caller named it (`email`, `items[3].phone`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldViolation {
    pub field: String,
    pub description: String,
}

impl FieldViolation {
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            description: description.into(),
        }
    }
}

/// Why a value object refused its input. The conversion layer attaches the field name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ValueError(pub String);

impl ValueError {
    pub fn new(description: impl Into<String>) -> Self {
        Self(description.into())
    }

    /// Attaches the field name, producing a domain error with one violation.
    pub fn at(self, field: impl Into<String>) -> DomainError {
        DomainError::InvalidArgument(vec![FieldViolation::new(field, self.0)])
    }
}

/// Which unique value a claim protects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClaimKind {
    Email,
    Phone,
    ExternalId,
    PersonCode,
}

impl ClaimKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Email => "email",
            Self::Phone => "phone",
            Self::ExternalId => "external_id",
            Self::PersonCode => "person_code",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error("invalid argument: {}", describe(.0))]
    InvalidArgument(Vec<FieldViolation>),
    #[error("{} is already assigned to another user", .0.as_str())]
    AlreadyAssigned(ClaimKind),
    #[error("the confirmation code is wrong; {attempts_left} attempts left")]
    InvalidCode { attempts_left: u32 },
    #[error("too many wrong codes; request a new code")]
    RateLimitExceeded,
    #[error("the confirmation code has expired; request a new code")]
    CodeExpired,
    #[error("there is no pending {0} change to confirm")]
    NoPendingChange(&'static str),
    #[error("user not found")]
    UserNotFound,
    #[error("the user was erased")]
    UserErased,
    #[error("user already exists")]
    UserAlreadyExists,
    #[error("user is inactive")]
    UserInactive,
    #[error("user was merged into {into} and is read-only")]
    UserMerged { into: String },
    #[error("a user cannot be merged into itself")]
    MergeIntoSelf,
    #[error("the user has no password")]
    NoCredential,
    #[error("the password does not match")]
    InvalidCredentials,
    #[error("too many wrong passwords; the account is locked for {retry_after_secs} s")]
    AccountLocked { retry_after_secs: u64 },
    #[error("too many requests; retry in {retry_after_secs} s")]
    RetryLater { retry_after_secs: u64 },
    #[error("the refresh token is not valid; sign in again")]
    InvalidRefreshToken,
    #[error("session not found")]
    SessionNotFound,
    #[error("the user already has a password; a legacy credential would replace it")]
    CredentialExists,
    #[error("too many passwords are being checked; retry shortly")]
    CredentialsBusy,
    #[error("passwords cannot be checked now; retry later")]
    CredentialsUnavailable,
    #[error("the person code does not match the user's identity")]
    InvalidIdentity,
    #[error("the password does not meet the policy: {0}")]
    InvalidPassword(&'static str),
    #[error("legacy password import is turned off (IDENTITY_LEGACY_IMPORT)")]
    LegacyImportDisabled,
    #[error("wallet not found")]
    WalletNotFound,
    #[error("wallet already exists")]
    WalletAlreadyExists,
    #[error("no wallet factory is configured for {0}")]
    NoWalletFactory(String),
    #[error("wallet is {0}")]
    WalletNotUsable(&'static str),
    #[error("wallet cannot go from {from} to {to}")]
    InvalidWalletTransition {
        from: &'static str,
        to: &'static str,
    },
    #[error("insufficient balance: {available} available, {requested} requested")]
    InsufficientBalance { available: u128, requested: u128 },
    #[error("the idempotency key was already used with a different request")]
    IdempotencyKeyReused,
    #[error("the resulting balance would overflow")]
    AmountOverflow,
    #[error("status tier not found")]
    TierNotFound,
    #[error("status tier already exists")]
    TierAlreadyExists,
    #[error("status tier is retired")]
    TierRetired,
    #[error("identification not found")]
    IdentificationNotFound,
    #[error("the level {0} needs a submitted identity")]
    IdentityRequired(&'static str),
    #[error("the level {0} needs at least one unexpired document")]
    DocumentRequired(&'static str),
    #[error("lowering the identification level needs a reason")]
    ReasonRequired,
    #[error("document already attached")]
    DocumentAlreadyAttached,
    #[error("tenant not found")]
    TenantNotFound,
    #[error("tenant already exists")]
    TenantAlreadyExists,
    #[error("project key not found")]
    ProjectKeyNotFound,
    #[error("admin not found")]
    AdminNotFound,
    #[error("an admin with this email already exists")]
    AdminAlreadyExists,
    #[error("the admin was removed")]
    AdminRemoved,
}

fn describe(violations: &[FieldViolation]) -> String {
    violations
        .iter()
        .map(|v| format!("{}: {}", v.field, v.description))
        .collect::<Vec<_>>()
        .join("; ")
}

impl DomainError {
    /// The stable reason callers match on (`ErrorInfo.reason`).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::InvalidArgument(_) => "INVALID_ARGUMENT",
            Self::AlreadyAssigned(ClaimKind::Email) => "EMAIL_ALREADY_ASSIGNED",
            Self::AlreadyAssigned(ClaimKind::Phone) => "PHONE_ALREADY_ASSIGNED",
            Self::AlreadyAssigned(ClaimKind::ExternalId) => "EXTERNAL_ID_ALREADY_ASSIGNED",
            Self::AlreadyAssigned(ClaimKind::PersonCode) => "PERSON_CODE_ALREADY_ASSIGNED",
            Self::InvalidCode { .. } => "INVALID_CODE",
            Self::RateLimitExceeded => "RATE_LIMIT_EXCEEDED",
            Self::CodeExpired => "CODE_EXPIRED",
            Self::NoPendingChange(_) => "NO_PENDING_CHANGE",
            Self::UserNotFound => "USER_NOT_FOUND",
            Self::UserErased => "USER_ERASED",
            Self::UserAlreadyExists => "USER_ALREADY_EXISTS",
            Self::UserInactive => "USER_INACTIVE",
            Self::UserMerged { .. } => "USER_MERGED",
            Self::MergeIntoSelf => "MERGE_INTO_SELF",
            Self::NoCredential => "NO_CREDENTIAL",
            Self::InvalidCredentials => "INVALID_CREDENTIALS",
            Self::AccountLocked { .. } => "ACCOUNT_LOCKED",
            Self::RetryLater { .. } => "RATE_LIMIT_EXCEEDED",
            Self::InvalidRefreshToken => "INVALID_REFRESH_TOKEN",
            Self::SessionNotFound => "SESSION_NOT_FOUND",
            Self::CredentialExists => "CREDENTIAL_EXISTS",
            Self::CredentialsBusy => "HASHING_BUSY",
            Self::CredentialsUnavailable => "HASHING_UNAVAILABLE",
            Self::LegacyImportDisabled => "LEGACY_IMPORT_DISABLED",
            Self::InvalidPassword(_) => "INVALID_PASSWORD",
            Self::InvalidIdentity => "INVALID_IDENTITY",
            Self::WalletNotFound => "WALLET_NOT_FOUND",
            Self::WalletAlreadyExists => "WALLET_ALREADY_EXISTS",
            Self::NoWalletFactory(_) => "NO_WALLET_FACTORY",
            Self::WalletNotUsable(_) => "WALLET_NOT_USABLE",
            Self::InvalidWalletTransition { .. } => "INVALID_WALLET_TRANSITION",
            Self::InsufficientBalance { .. } => "INSUFFICIENT_BALANCE",
            Self::IdempotencyKeyReused => "IDEMPOTENCY_KEY_REUSED",
            Self::AmountOverflow => "AMOUNT_OVERFLOW",
            Self::TierNotFound => "TIER_NOT_FOUND",
            Self::TierAlreadyExists => "TIER_ALREADY_EXISTS",
            Self::TierRetired => "TIER_RETIRED",
            Self::IdentificationNotFound => "IDENTIFICATION_NOT_FOUND",
            Self::IdentityRequired(_) => "IDENTITY_REQUIRED",
            Self::DocumentRequired(_) => "DOCUMENT_REQUIRED",
            Self::ReasonRequired => "REASON_REQUIRED",
            Self::DocumentAlreadyAttached => "DOCUMENT_ALREADY_ATTACHED",
            Self::TenantNotFound => "TENANT_NOT_FOUND",
            Self::TenantAlreadyExists => "TENANT_ALREADY_EXISTS",
            Self::ProjectKeyNotFound => "PROJECT_KEY_NOT_FOUND",
            Self::AdminNotFound => "ADMIN_NOT_FOUND",
            Self::AdminAlreadyExists => "ADMIN_ALREADY_EXISTS",
            Self::AdminRemoved => "ADMIN_REMOVED",
        }
    }

    /// Extra key/values for `ErrorInfo.metadata`, for errors a caller acts on.
    pub fn metadata(&self) -> Vec<(&'static str, String)> {
        match self {
            Self::InsufficientBalance {
                available,
                requested,
            } => vec![
                ("available", available.to_string()),
                ("requested", requested.to_string()),
            ],
            Self::InvalidCode { attempts_left } => {
                vec![("attempts_left", attempts_left.to_string())]
            }
            Self::UserMerged { into } => vec![("merged_into", into.clone())],
            Self::AccountLocked { retry_after_secs } | Self::RetryLater { retry_after_secs } => {
                vec![("retry_after_seconds", retry_after_secs.to_string())]
            }
            // Listed, not `_`: a new variant must decide what its caller learns.
            Self::InvalidArgument(_)
            | Self::AlreadyAssigned(_)
            | Self::RateLimitExceeded
            | Self::CodeExpired
            | Self::NoPendingChange(_)
            | Self::UserNotFound
            | Self::UserErased
            | Self::UserAlreadyExists
            | Self::UserInactive
            | Self::MergeIntoSelf
            | Self::NoCredential
            | Self::InvalidCredentials
            | Self::InvalidRefreshToken
            | Self::SessionNotFound
            | Self::CredentialExists
            | Self::CredentialsBusy
            | Self::CredentialsUnavailable
            | Self::InvalidIdentity
            | Self::InvalidPassword(_)
            | Self::LegacyImportDisabled
            | Self::WalletNotFound
            | Self::WalletAlreadyExists
            | Self::NoWalletFactory(_)
            | Self::WalletNotUsable(_)
            | Self::InvalidWalletTransition { .. }
            | Self::IdempotencyKeyReused
            | Self::AmountOverflow
            | Self::TierNotFound
            | Self::TierAlreadyExists
            | Self::TierRetired
            | Self::IdentificationNotFound
            | Self::IdentityRequired(_)
            | Self::DocumentRequired(_)
            | Self::DocumentAlreadyAttached
            | Self::ReasonRequired
            | Self::TenantNotFound
            | Self::TenantAlreadyExists
            | Self::ProjectKeyNotFound
            | Self::AdminNotFound
            | Self::AdminAlreadyExists
            | Self::AdminRemoved => Vec::new(),
        }
    }

    /// Shorthand for a single invalid field.
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self::InvalidArgument(vec![FieldViolation::new(field, description)])
    }
}

/// Gathers every invalid field of one request, so the caller sees all of them at once.
#[derive(Debug, Default)]
pub struct Violations(Vec<FieldViolation>);

impl Violations {
    pub fn new() -> Self {
        Self::default()
    }

    /// Keeps the parsed value, or records why it was refused under `field`.
    pub fn check<T>(&mut self, field: &str, parsed: Result<T, ValueError>) -> Option<T> {
        match parsed {
            Ok(v) => Some(v),
            Err(e) => {
                self.0.push(FieldViolation::new(field, e.0));
                None
            }
        }
    }

    pub fn push(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push(FieldViolation::new(field, description));
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Adds `other`'s violations after these.
    pub fn append(&mut self, other: Violations) {
        self.0.extend(other.0);
    }

    /// The refusal these violations make (INVALID_ARGUMENT with each of them).
    pub fn into_error(self) -> DomainError {
        DomainError::InvalidArgument(self.0)
    }

    /// `Ok(())` when nothing was refused.
    pub fn finish(self) -> Result<(), DomainError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(DomainError::InvalidArgument(self.0))
        }
    }
}
