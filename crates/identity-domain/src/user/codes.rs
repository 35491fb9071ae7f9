//! One-time codes of pending changes: checking one, and what a new one inherits.

use super::*;

/// What confirming a code decided.
pub(super) enum CodeCheck {
    Matches,
    Wrong { failed_attempts: u32 },
}

pub(super) fn check_code<T>(
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
pub(super) fn next_code<T>(
    pending: Option<&PendingChange<T>>,
    at: DateTime<Utc>,
) -> Result<u32, DomainError> {
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

pub(super) fn pending<T>(
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

pub(super) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
