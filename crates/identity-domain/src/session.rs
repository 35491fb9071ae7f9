//! What guards a user's password and what a correct password opens: the lockout policy
//! (failed checks are counted; past a limit the account locks with a growing back-off) and
//! sessions (a refresh token per session, stored as a digest, rotated on every use; a token
//! presented again after its rotation ends the session, since only a thief replays one).
//! Also the cadence of one-time codes: a new code comes no sooner than a cooldown and does
//! not wipe the wrong attempts of the code before it.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::error::DomainError;
use crate::user::Secret;
use crate::values::SessionId;

/// A sign-in: the password presented, and the session it opens when the password is right.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignIn {
    pub password: Secret,
    pub session: SessionId,
    /// The digest of the session's first refresh token.
    pub refresh_digest: String,
    pub expires_at: DateTime<Utc>,
    pub at: DateTime<Utc>,
}

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

/// What a signed-in person asks of their sessions: users and admins take the same commands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionCommand {
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
    End {
        session: Option<SessionId>,
        reason: SessionEnd,
        at: DateTime<Utc>,
    },
}

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

/// What signing in records of an account (a user's or an admin's). Each aggregate stores
/// these under its own event names; the rules that produce them are written once here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SignInFact {
    /// A wrong password; `locked_until` is set when this failure locks the account.
    CheckFailed {
        failed_attempts: u32,
        locked_until: Option<DateTime<Utc>>,
        at: DateTime<Utc>,
    },
    /// A right password after wrong ones: the count starts again.
    FailuresCleared { at: DateTime<Utc> },
    Started {
        session: SessionId,
        refresh_digest: String,
        started_at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    },
    Refreshed {
        session: SessionId,
        refresh_digest: String,
        at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    },
    Ended {
        sessions: Vec<SessionId>,
        reason: SessionEnd,
        at: DateTime<Utc>,
    },
}

/// The sign-in side of an account: wrong passwords in a row, the lock, and open sessions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignInState {
    /// Wrong passwords in a row.
    #[serde(default)]
    pub failed_password_checks: u32,
    #[serde(default)]
    pub locked_until: Option<DateTime<Utc>>,
    #[serde(default)]
    pub sessions: BTreeMap<SessionId, Session>,
}

fn same_digest(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

impl SignInState {
    /// Seconds the account stays locked after `at`, if it is locked.
    pub fn locked_for(&self, at: DateTime<Utc>) -> Option<u64> {
        self.locked_until
            .filter(|until| at < *until)
            .map(|until| seconds_until(until, at))
    }

    /// Refuses a password check while locked: a locked attempt costs no hash.
    pub fn ensure_unlocked(&self, at: DateTime<Utc>) -> Result<(), DomainError> {
        match self.locked_for(at) {
            Some(retry_after_secs) => Err(DomainError::AccountLocked { retry_after_secs }),
            None => Ok(()),
        }
    }

    /// What a verified password check records: a counted failure (which may lock), or the
    /// end of a run of failures.
    pub fn checked(&self, right: bool, at: DateTime<Utc>) -> Option<SignInFact> {
        if !right {
            let failed_attempts = self.failed_password_checks.saturating_add(1);
            return Some(SignInFact::CheckFailed {
                failed_attempts,
                locked_until: lock_for(failed_attempts).map(|d| at + d),
                at,
            });
        }
        (self.failed_password_checks > 0).then_some(SignInFact::FailuresCleared { at })
    }

    /// The sessions still open at `at`.
    pub fn live_sessions(&self, at: DateTime<Utc>) -> impl Iterator<Item = (&SessionId, &Session)> {
        self.sessions.iter().filter(move |(_, s)| s.expires_at > at)
    }

    /// Whether `session` is open at `at`.
    pub fn is_live(&self, session: SessionId, at: DateTime<Utc>) -> bool {
        self.live_sessions(at).any(|(id, _)| *id == session)
    }

    /// Ends every open session (nothing when there is none).
    pub fn end_all(&self, reason: SessionEnd, at: DateTime<Utc>) -> Option<SignInFact> {
        let sessions: Vec<SessionId> = self.live_sessions(at).map(|(id, _)| *id).collect();
        (!sessions.is_empty()).then_some(SignInFact::Ended {
            sessions,
            reason,
            at,
        })
    }

    /// Ends one open session.
    pub fn end_one(
        &self,
        session: SessionId,
        reason: SessionEnd,
        at: DateTime<Utc>,
    ) -> Result<SignInFact, DomainError> {
        if !self.is_live(session, at) {
            return Err(DomainError::SessionNotFound);
        }
        Ok(SignInFact::Ended {
            sessions: vec![session],
            reason,
            at,
        })
    }

    /// The session a sign-in whose password was right opens.
    pub fn opened(&self, attempt: SignIn) -> Vec<SignInFact> {
        self.start(
            attempt.session,
            attempt.refresh_digest,
            attempt.expires_at,
            attempt.at,
        )
    }

    /// A new session, ending the least recently used ones beyond [`MAX_SESSIONS`].
    pub fn start(
        &self,
        session: SessionId,
        refresh_digest: String,
        expires_at: DateTime<Utc>,
        at: DateTime<Utc>,
    ) -> Vec<SignInFact> {
        let mut live: Vec<(&SessionId, &Session)> = self.live_sessions(at).collect();
        let mut facts = Vec::new();
        if live.len() >= MAX_SESSIONS {
            live.sort_by_key(|(_, s)| s.refreshed_at);
            let excess = live.len() + 1 - MAX_SESSIONS;
            facts.push(SignInFact::Ended {
                sessions: live.iter().take(excess).map(|(id, _)| **id).collect(),
                reason: SessionEnd::Displaced,
                at,
            });
        }
        facts.push(SignInFact::Started {
            session,
            refresh_digest,
            started_at: at,
            expires_at,
        });
        facts
    }

    /// What a session command comes to (nothing: no session was live to end).
    pub fn decide(&self, command: SessionCommand) -> Result<Option<SignInFact>, DomainError> {
        match command {
            SessionCommand::Refresh {
                session,
                presented,
                refresh_digest,
                expires_at,
                at,
            } => self
                .refresh(session, &presented, refresh_digest, expires_at, at)
                .map(Some),
            SessionCommand::End {
                session: None,
                reason,
                at,
            } => Ok(self.end_all(reason, at)),
            SessionCommand::End {
                session: Some(session),
                reason,
                at,
            } => self.end_one(session, reason, at).map(Some),
        }
    }

    /// Continues a session with a new refresh token. Only the current token continues it: an
    /// older one in use means it was copied, so the whole session ends (and the caller is
    /// told the token is invalid once that is recorded).
    pub fn refresh(
        &self,
        session: SessionId,
        presented: &str,
        refresh_digest: String,
        expires_at: DateTime<Utc>,
        at: DateTime<Utc>,
    ) -> Result<SignInFact, DomainError> {
        let current = self
            .sessions
            .get(&session)
            .filter(|s| s.expires_at > at)
            .ok_or(DomainError::InvalidRefreshToken)?;
        if !same_digest(&current.refresh_digest, presented) {
            return Ok(SignInFact::Ended {
                sessions: vec![session],
                reason: SessionEnd::TokenReused,
                at,
            });
        }
        Ok(SignInFact::Refreshed {
            session,
            refresh_digest,
            at,
            expires_at,
        })
    }

    /// A new password: the failure count and the lock start again.
    pub fn clear_failures(&mut self) {
        self.failed_password_checks = 0;
        self.locked_until = None;
    }

    pub fn apply(&mut self, fact: SignInFact) {
        match fact {
            SignInFact::CheckFailed {
                failed_attempts,
                locked_until,
                ..
            } => {
                self.failed_password_checks = failed_attempts;
                if locked_until.is_some() {
                    self.locked_until = locked_until;
                }
            }
            SignInFact::FailuresCleared { .. } => self.clear_failures(),
            SignInFact::Started {
                session,
                refresh_digest,
                started_at,
                expires_at,
            } => {
                self.sessions.retain(|_, s| s.expires_at > started_at);
                self.sessions.insert(
                    session,
                    Session {
                        refresh_digest,
                        started_at,
                        refreshed_at: started_at,
                        expires_at,
                        rotations: 0,
                    },
                );
            }
            SignInFact::Refreshed {
                session,
                refresh_digest,
                at,
                expires_at,
            } => {
                if let Some(s) = self.sessions.get_mut(&session) {
                    s.refresh_digest = refresh_digest;
                    s.refreshed_at = at;
                    s.expires_at = expires_at;
                    s.rotations += 1;
                }
            }
            SignInFact::Ended { sessions, .. } => {
                for id in sessions {
                    self.sessions.remove(&id);
                }
            }
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
