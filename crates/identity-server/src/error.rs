//! The one place where errors become gRPC statuses. Both matches are exhaustive, with no `_`
//! arm: a new error variant does not compile until someone decides its code and log level.

use identity_domain::{ClaimKind, DomainError, FieldViolation};
use identity_projections::ProjectionError;
use identity_store::{ExecuteError, StoreError};
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
        | D::InvalidIdentity => Code::FailedPrecondition,
        D::ReasonRequired | D::InvalidPassword(_) => Code::InvalidArgument,
        D::InvalidCredentials | D::InvalidRefreshToken => Code::Unauthenticated,
        D::UserNotFound
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

fn add_violations(details: &mut ErrorDetails, violations: &[FieldViolation]) {
    for v in violations {
        details.add_bad_request_violation(v.field.clone(), v.description.clone());
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Self {
        let message = e.to_string();
        match &e {
            ApiError::Domain(d) => {
                let mut details = details_for(d.reason(), d.metadata());
                if let DomainError::InvalidArgument(v) = d {
                    add_violations(&mut details, v);
                } else if let DomainError::ReasonRequired = d {
                    details.add_bad_request_violation("reason", d.to_string());
                } else if let DomainError::InvalidPassword(why) = d {
                    details.add_bad_request_violation("new_password", *why);
                }
                Status::with_error_details(domain_code(d), message, details)
            }
            ApiError::Unauthenticated(_) => Status::with_error_details(
                Code::Unauthenticated,
                message,
                details_for("UNAUTHENTICATED", vec![]),
            ),
            ApiError::TenantNotAllowed(t) => Status::with_error_details(
                Code::PermissionDenied,
                message,
                details_for("TENANT_NOT_ALLOWED", vec![("tenant", t.clone())]),
            ),
            ApiError::PermissionDenied(p) => Status::with_error_details(
                Code::PermissionDenied,
                message,
                details_for(
                    "PERMISSION_DENIED",
                    vec![("permission", p.name().to_string())],
                ),
            ),
            ApiError::FieldOutOfScope { field, scope } => Status::with_error_details(
                Code::PermissionDenied,
                message,
                details_for(
                    "FIELD_OUT_OF_SCOPE",
                    vec![("field", field.clone()), ("scope", (*scope).to_string())],
                ),
            ),
            ApiError::Forbidden(_) => Status::with_error_details(
                Code::PermissionDenied,
                message,
                details_for("FORBIDDEN", vec![]),
            ),
            ApiError::Metadata { key, message: m } => {
                let mut details = details_for("INVALID_METADATA", vec![]);
                details.add_bad_request_violation(*key, m.clone());
                Status::with_error_details(Code::InvalidArgument, message, details)
            }
            ApiError::Conflict => {
                tracing::warn!("command gave up after repeated concurrency conflicts");
                Status::with_error_details(
                    Code::Aborted,
                    message,
                    details_for("CONCURRENCY_CONFLICT", vec![]),
                )
            }
            ApiError::Store(s) => match s {
                StoreError::Unavailable(_) => {
                    tracing::error!(error = %s, "event store unavailable");
                    Status::with_error_details(
                        Code::Unavailable,
                        "the event store is unavailable; retry later",
                        details_for("STORE_UNAVAILABLE", vec![]),
                    )
                }
                StoreError::TooSlow => Status::with_error_details(
                    Code::ResourceExhausted,
                    message,
                    details_for("QUERY_TOO_SLOW", vec![]),
                ),
                StoreError::Corrupt(_) | StoreError::Config(_) | StoreError::Other(_) => {
                    tracing::error!(error = %s, "event store error");
                    Status::with_error_details(
                        Code::Internal,
                        "internal error",
                        details_for("INTERNAL", vec![]),
                    )
                }
            },
            ApiError::Projection(p) => match p {
                ProjectionError::UnknownProjection { .. } => {
                    let mut details = details_for("UNKNOWN_PROJECTION", vec![]);
                    details.add_bad_request_violation("name", p.to_string());
                    Status::with_error_details(Code::InvalidArgument, message, details)
                }
                ProjectionError::RebuildRunning(name) => Status::with_error_details(
                    Code::FailedPrecondition,
                    message,
                    details_for("REBUILD_IN_PROGRESS", vec![("projection", name.clone())]),
                ),
                p if p.is_too_slow() => Status::with_error_details(
                    Code::ResourceExhausted,
                    "the query ran past its time limit; narrow it",
                    details_for("QUERY_TOO_SLOW", vec![]),
                ),
                p if p.is_unavailable() => {
                    tracing::error!(error = %p, "read models unavailable");
                    Status::with_error_details(
                        Code::Unavailable,
                        "the read models are unavailable; retry later",
                        details_for("STORE_UNAVAILABLE", vec![]),
                    )
                }
                ProjectionError::Store(_)
                | ProjectionError::Database(_)
                | ProjectionError::Event { .. }
                | ProjectionError::CorruptRow(_) => {
                    tracing::error!(error = %p, "read model error");
                    Status::with_error_details(
                        Code::Internal,
                        "internal error",
                        details_for("INTERNAL", vec![]),
                    )
                }
            },
            ApiError::ReadModelBehind {
                projection,
                requested,
                applied,
                head,
            } => {
                let metadata = vec![
                    ("projection", (*projection).to_string()),
                    ("requested_position", requested.to_string()),
                    ("applied_position", applied.to_string()),
                    ("head_position", head.to_string()),
                    ("behind_by", head.saturating_sub(*applied).to_string()),
                ];
                Status::with_error_details(
                    Code::Unavailable,
                    message,
                    details_for("READ_MODEL_BEHIND", metadata),
                )
            }
            ApiError::Busy { what } => Status::with_error_details(
                Code::ResourceExhausted,
                message,
                details_for("CONCURRENCY_LIMIT", vec![("call", (*what).to_string())]),
            ),
            ApiError::TooManyStreams { scope, limit } => Status::with_error_details(
                Code::ResourceExhausted,
                message,
                details_for(
                    "TOO_MANY_STREAMS",
                    vec![
                        ("scope", (*scope).to_string()),
                        ("limit", limit.to_string()),
                    ],
                ),
            ),
            ApiError::SlowConsumer {
                behind,
                resume_after,
            } => Status::with_error_details(
                Code::ResourceExhausted,
                message,
                details_for(
                    "SLOW_CONSUMER",
                    vec![
                        ("behind", behind.to_string()),
                        ("resume_after_position", resume_after.to_string()),
                    ],
                ),
            ),
            ApiError::Internal(m) => {
                tracing::error!(error = %m, "internal error");
                Status::with_error_details(
                    Code::Internal,
                    "internal error",
                    details_for("INTERNAL", vec![]),
                )
            }
        }
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
