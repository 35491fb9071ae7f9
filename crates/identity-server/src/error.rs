//! The one place where errors are classified ([`ApiError::classify`]: code, reason, metadata,
//! field violations, who is to blame and so how it is logged) and become gRPC statuses. Span
//! outcomes and per-item errors of bulk calls use the same classification. The matches are
//! exhaustive, with no `_` arm: a new error variant does not compile until someone decides
//! its code and log level.

use identity_domain::{ClaimKind, DomainError, FieldViolation};
use identity_projections::ProjectionError;
use identity_store::{ExecuteError, Report, StoreError};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// The `ErrorInfo.domain` of every error this service returns.
pub const ERROR_DOMAIN: &str = "identity.v1";

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// No credential, or one that does not verify.
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller may not act in that tenant.
    #[error("the caller may not act in tenant {0}")]
    TenantNotAllowed(String),
    /// The caller lacks the permission the call needs.
    #[error("this call needs the permission {}", .0.name())]
    PermissionDenied(crate::access::Permission),
    /// The caller holds the permission, but not over this target (another tenant's admin, a
    /// type above its own).
    #[error("{0}")]
    Forbidden(String),
    /// A read mask asked for a field the caller's scopes do not reach.
    #[error("the field {field} needs the scope {scope}")]
    FieldOutOfScope { field: String, scope: &'static str },
    #[error("missing or invalid metadata {key}: {message}")]
    Metadata { key: &'static str, message: String },
    #[error("the aggregate kept changing under concurrent writes; retry")]
    Conflict,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("internal error: {0}")]
    Internal(String),
    #[error(transparent)]
    Projection(#[from] ProjectionError),
    /// Too many expensive calls are running; retry shortly.
    #[error("too many {what} calls are running; retry shortly")]
    Busy { what: &'static str },
    /// Too many event streams are open for the caller's tenant or connection.
    #[error("at most {limit} event streams may be open per {scope}")]
    TooManyStreams { scope: &'static str, limit: usize },
    /// A stream's consumer fell too far behind the live feed.
    #[error(
        "the stream fell {behind} events behind the feed; resume from position {resume_after}"
    )]
    SlowConsumer { behind: u64, resume_after: u64 },
    /// A query's read model had not reached the caller's `min_position` by the deadline.
    #[error("the {projection} read model has applied up to position {applied}, not yet {requested} (head {head}); retry shortly")]
    ReadModelBehind {
        projection: &'static str,
        requested: u64,
        applied: u64,
        head: u64,
    },
}

impl From<ExecuteError<DomainError>> for ApiError {
    fn from(e: ExecuteError<DomainError>) -> Self {
        match e {
            ExecuteError::Domain(d) => Self::Domain(d),
            ExecuteError::Conflict => Self::Conflict,
            ExecuteError::Store(s) => Self::Store(s),
        }
    }
}

fn domain_code(e: &DomainError) -> Code {
    use DomainError as D;
    match e {
        D::InvalidArgument(_) => Code::InvalidArgument,
        D::AlreadyAssigned(
            ClaimKind::Email | ClaimKind::Phone | ClaimKind::ExternalId | ClaimKind::PersonCode,
        ) => Code::AlreadyExists,
        D::UserAlreadyExists
        | D::WalletAlreadyExists
        | D::TierAlreadyExists
        | D::DocumentAlreadyAttached
        | D::TenantAlreadyExists
        | D::AdminAlreadyExists => Code::AlreadyExists,
        D::InvalidCode { .. } => Code::InvalidArgument,
        D::RateLimitExceeded
        | D::AccountLocked { .. }
        | D::RetryLater { .. }
        | D::CredentialsBusy => Code::ResourceExhausted,
        D::CredentialsUnavailable => Code::Unavailable,
        D::CodeExpired
        | D::NoPendingChange(_)
        | D::UserInactive
        | D::UserMerged { .. }
        | D::MergeIntoSelf
        | D::NoCredential
        | D::WalletNotUsable(_)
        | D::InvalidWalletTransition { .. }
        | D::InsufficientBalance { .. }
        | D::IdempotencyKeyReused
        | D::AmountOverflow
        | D::TierRetired
        | D::IdentityRequired(_)
        | D::DocumentRequired(_)
        | D::AdminRemoved
        | D::CredentialExists
        | D::LegacyImportDisabled
        | D::NoWalletFactory(_)
        | D::InvalidIdentity => Code::FailedPrecondition,
        D::ReasonRequired | D::InvalidPassword(_) => Code::InvalidArgument,
        D::InvalidCredentials | D::InvalidRefreshToken => Code::Unauthenticated,
        D::UserNotFound
        | D::UserErased
        | D::WalletNotFound
        | D::TierNotFound
        | D::IdentificationNotFound
        | D::TenantNotFound
        | D::ProjectKeyNotFound
        | D::AdminNotFound
        | D::SessionNotFound => Code::NotFound,
    }
}

fn details_for(reason: &str, metadata: Vec<(&'static str, String)>) -> ErrorDetails {
    let map: std::collections::HashMap<String, String> = metadata
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    ErrorDetails::with_error_info(reason, ERROR_DOMAIN, map)
}

/// Who has to act on an error, which decides how it is logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blame {
    /// The caller's input or rights: answered, not logged.
    Caller,
    /// Load or contention: logged as a warning.
    Load,
    /// Ours (a dependency down, a bug, corrupt data): logged as an error, its text hidden.
    Service,
}

/// How the service answers an error: decided once per variant, here, and used by the
/// Status mapping, span outcomes and per-item errors of bulk calls.
#[derive(Debug)]
pub struct Classified {
    pub code: Code,
    pub reason: &'static str,
    pub metadata: Vec<(&'static str, String)>,
    /// Field violations (BadRequest details).
    pub violations: Vec<(String, String)>,
    pub blame: Blame,
    /// What the caller is told instead of the error's own text, when that must stay inside.
    pub public_message: Option<&'static str>,
}

impl Classified {
    fn new(code: Code, reason: &'static str, blame: Blame) -> Self {
        Self {
            code,
            reason,
            metadata: Vec::new(),
            violations: Vec::new(),
            blame,
            public_message: None,
        }
    }

    fn with(mut self, metadata: Vec<(&'static str, String)>) -> Self {
        self.metadata = metadata;
        self
    }

    fn violation(mut self, field: impl Into<String>, why: impl Into<String>) -> Self {
        self.violations.push((field.into(), why.into()));
        self
    }

    fn hidden(mut self, message: &'static str) -> Self {
        self.public_message = Some(message);
        self
    }
}

fn violations_of(list: &[FieldViolation]) -> Vec<(String, String)> {
    list.iter()
        .map(|v| (v.field.clone(), v.description.clone()))
        .collect()
}

fn internal() -> Classified {
    Classified::new(Code::Internal, "INTERNAL", Blame::Service).hidden("internal error")
}

impl ApiError {
    /// A paging token or cursor (`field`) this service did not give: INVALID_ARGUMENT naming
    /// the field.
    pub fn foreign_token(field: &str) -> Self {
        DomainError::invalid(field, format!("not a {field} this service gave")).into()
    }

    /// The one exhaustive classification (no `_` arm).
    pub fn classify(&self) -> Classified {
        use Blame::{Caller, Load, Service};
        match self {
            ApiError::Domain(d) => {
                let blame = match d {
                    DomainError::CredentialsUnavailable => Service,
                    DomainError::CredentialsBusy => Load,
                    _ => Caller,
                };
                let mut c = Classified::new(domain_code(d), d.reason(), blame).with(d.metadata());
                match d {
                    DomainError::InvalidArgument(v) => c.violations = violations_of(v),
                    DomainError::ReasonRequired => c = c.violation("reason", d.to_string()),
                    DomainError::InvalidPassword(why) => c = c.violation("new_password", *why),
                    _ => {}
                }
                c
            }
            ApiError::Unauthenticated(_) => {
                Classified::new(Code::Unauthenticated, "UNAUTHENTICATED", Caller)
            }
            ApiError::TenantNotAllowed(t) => {
                Classified::new(Code::PermissionDenied, "TENANT_NOT_ALLOWED", Caller)
                    .with(vec![("tenant", t.clone())])
            }
            ApiError::PermissionDenied(p) => {
                Classified::new(Code::PermissionDenied, "PERMISSION_DENIED", Caller)
                    .with(vec![("permission", p.name().to_string())])
            }
            ApiError::FieldOutOfScope { field, scope } => {
                Classified::new(Code::PermissionDenied, "FIELD_OUT_OF_SCOPE", Caller).with(vec![
                    ("field", field.clone()),
                    ("scope", (*scope).to_string()),
                ])
            }
            ApiError::Forbidden(_) => Classified::new(Code::PermissionDenied, "FORBIDDEN", Caller),
            ApiError::Metadata { key, message } => {
                Classified::new(Code::InvalidArgument, "INVALID_METADATA", Caller)
                    .violation(*key, message.clone())
            }
            ApiError::Conflict => Classified::new(Code::Aborted, "CONCURRENCY_CONFLICT", Load),
            ApiError::Store(s) => match s {
                StoreError::Unavailable(_) => {
                    Classified::new(Code::Unavailable, "STORE_UNAVAILABLE", Service)
                        .hidden("the event store is unavailable; retry later")
                }
                StoreError::TooSlow => {
                    Classified::new(Code::ResourceExhausted, "QUERY_TOO_SLOW", Caller)
                }
                StoreError::Corrupt { .. } | StoreError::Config(_) | StoreError::Other(_) => {
                    internal()
                }
            },
            ApiError::Projection(p) => match p {
                ProjectionError::UnknownProjection { .. } => {
                    Classified::new(Code::InvalidArgument, "UNKNOWN_PROJECTION", Caller)
                        .violation("name", p.to_string())
                }
                ProjectionError::RebuildRunning(name) => {
                    Classified::new(Code::FailedPrecondition, "REBUILD_IN_PROGRESS", Caller)
                        .with(vec![("projection", name.clone())])
                }
                p if p.is_too_slow() => {
                    Classified::new(Code::ResourceExhausted, "QUERY_TOO_SLOW", Caller)
                        .hidden("the query ran past its time limit; narrow it")
                }
                p if p.is_unavailable() => {
                    Classified::new(Code::Unavailable, "STORE_UNAVAILABLE", Service)
                        .hidden("the read models are unavailable; retry later")
                }
                ProjectionError::Store(_)
                | ProjectionError::Database(_)
                | ProjectionError::Event { .. }
                | ProjectionError::CorruptRow(_) => internal(),
            },
            ApiError::ReadModelBehind {
                projection,
                requested,
                applied,
                head,
            } => Classified::new(Code::Unavailable, "READ_MODEL_BEHIND", Load).with(vec![
                ("projection", (*projection).to_string()),
                ("requested_position", requested.to_string()),
                ("applied_position", applied.to_string()),
                ("head_position", head.to_string()),
                ("behind_by", head.saturating_sub(*applied).to_string()),
            ]),
            ApiError::Busy { what } => {
                Classified::new(Code::ResourceExhausted, "CONCURRENCY_LIMIT", Load)
                    .with(vec![("call", (*what).to_string())])
            }
            ApiError::TooManyStreams { scope, limit } => {
                Classified::new(Code::ResourceExhausted, "TOO_MANY_STREAMS", Caller).with(vec![
                    ("scope", (*scope).to_string()),
                    ("limit", limit.to_string()),
                ])
            }
            ApiError::SlowConsumer {
                behind,
                resume_after,
            } => Classified::new(Code::ResourceExhausted, "SLOW_CONSUMER", Load).with(vec![
                ("behind", behind.to_string()),
                ("resume_after_position", resume_after.to_string()),
            ]),
            ApiError::Internal(_) => internal(),
        }
    }

    /// What the caller is told (errors that are ours keep their text inside).
    pub fn public_message(&self, c: &Classified) -> String {
        c.public_message
            .map_or_else(|| self.to_string(), str::to_string)
    }
}

/// Logs an error as its blame says (errors of the caller are answered, not logged).
pub fn report(e: &ApiError, c: &Classified) {
    match c.blame {
        Blame::Service => tracing::error!(error = %Report(e), reason = c.reason, "request failed"),
        Blame::Load => {
            tracing::warn!(error = %Report(e), reason = c.reason, "request refused under load")
        }
        Blame::Caller => {}
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Self {
        let c = e.classify();
        report(&e, &c);
        let message = e.public_message(&c);
        let mut details = details_for(c.reason, c.metadata);
        for (field, why) in c.violations {
            details.add_bad_request_violation(field, why);
        }
        Status::with_error_details(c.code, message, details)
    }
}

/// The gRPC code name of an error, for per-item errors of bulk calls.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
