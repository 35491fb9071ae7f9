//! What guards a user's password and what a correct password opens: the lockout policy
//! (failed checks are counted; past a limit the account locks with a growing back-off) and
//! sessions (a refresh token per session, stored as a digest, rotated on every use; a token
//! presented again after its rotation ends the session, since only a thief replays one).
//! Also the cadence of one-time codes: a new code comes no sooner than a cooldown and does
//! not wipe the wrong attempts of the code before it.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// Wrong passwords in a row before the account locks.
pub const LOCK_AFTER_FAILURES: u32 = 20;
/// The first lock's length; every further wrong password after a lock doubles it.
pub const FIRST_LOCK_SECS: i64 = 60;
/// The longest lock.
pub const MAX_LOCK_SECS: i64 = 24 * 3600;
/// Live sessions a user keeps; signing in beyond this ends the oldest.
pub const MAX_SESSIONS: usize = 20;
/// The shortest time between two one-time codes for the same purpose.
pub const CODE_COOLDOWN_SECS: i64 = 60;
/// A new code inherits the wrong attempts of a code requested less than this long before.
pub const CODE_ATTEMPT_WINDOW_SECS: i64 = 3600;

/// How long the account locks after `failed_attempts` wrong passwords in a row, if at all:
/// 1 minute at the 20th, then 2, 4, 8 … minutes, at most a day.
pub fn lock_for(failed_attempts: u32) -> Option<Duration> {
    if failed_attempts < LOCK_AFTER_FAILURES {
        return None;
    }
    let doublings = (failed_attempts - LOCK_AFTER_FAILURES).min(30);
    let secs = FIRST_LOCK_SECS
        .saturating_mul(1i64 << doublings)
        .min(MAX_LOCK_SECS);
    Some(Duration::seconds(secs))
}

/// Seconds until `until`, rounded up (at least 1).
pub fn seconds_until(until: DateTime<Utc>, now: DateTime<Utc>) -> u64 {
    let ms = (until - now).num_milliseconds().max(1) as u64;
    ms.div_ceil(1000)
}

/// One signed-in session of a user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// The digest of the one refresh token that continues this session.
    pub refresh_digest: String,
    pub started_at: DateTime<Utc>,
    pub refreshed_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// How many times the refresh token was rotated.
    pub rotations: u32,
}

/// Why sessions ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionEnd {
    SignedOut,
    Revoked,
    /// A rotated-away refresh token was presented again.
    TokenReused,
    PasswordReset,
    PasswordChanged,
    /// More than [`MAX_SESSIONS`] were open.
    Displaced,
}

impl SessionEnd {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SignedOut => "signed_out",
            Self::Revoked => "revoked",
            Self::TokenReused => "token_reused",
            Self::PasswordReset => "password_reset",
            Self::PasswordChanged => "password_changed",
            Self::Displaced => "displaced",
        }
    }
}

/// Where a password-reset code was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CodeChannel {
    Email,
    Phone,
}

impl CodeChannel {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Email => "email",
            Self::Phone => "phone",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_starts_at_the_twentieth_failure_and_doubles() {
        assert_eq!(lock_for(19), None);
        assert_eq!(lock_for(20), Some(Duration::seconds(60)));
        assert_eq!(lock_for(21), Some(Duration::seconds(120)));
        assert_eq!(lock_for(23), Some(Duration::seconds(480)));
        assert_eq!(lock_for(40), Some(Duration::seconds(MAX_LOCK_SECS)));
        assert_eq!(lock_for(u32::MAX), Some(Duration::seconds(MAX_LOCK_SECS)));
    }

    #[test]
    fn retry_after_rounds_up() {
        let now = DateTime::<Utc>::from_timestamp(1_000, 0).unwrap();
        assert_eq!(seconds_until(now + Duration::milliseconds(1500), now), 2);
        assert_eq!(seconds_until(now, now), 1);
    }
}
