//! Given/when/then tests of the User aggregate's credentials: passwords, legacy imports,
//! lockout after wrong guesses, and sign-in sessions with rotating refresh tokens.

mod common;

use common::users::*;
use common::*;
use identity_domain::session::{SessionCommand, SignIn};
use identity_domain::user::*;
use identity_domain::values::*;
use identity_domain::DomainError;

fn with_password() -> Vec<UserEvent> {
    vec![UserEvent::PasswordSet {
        credential: Credential::Modern {
            phc: "phc:right".into(),
        },
    }]
}

fn failures(n: u32) -> Vec<UserEvent> {
    (1..=n)
        .map(|i| UserEvent::PasswordCheckFailed {
            failed_attempts: i,
            locked_until: identity_domain::session::lock_for(i).map(|d| t(i as i64) + d),
            at: t(i as i64),
        })
        .collect()
}

/// The defect: VerifyPassword answered any number of wrong guesses.
#[test]
fn twenty_wrong_passwords_lock_the_account_with_a_growing_back_off() {
    given_registered()
        .and(with_password())
        .and(failures(19))
        .when(UserCommand::VerifyPassword {
            password: Secret::new("wrong"),
            at: t(20),
        })
        .then_expect_events(vec![UserEvent::PasswordCheckFailed {
            failed_attempts: 20,
            locked_until: Some(t(80)),
            at: t(20),
        }]);
    // Locked: even the right password is refused, before any hash.
    given_registered()
        .and(with_password())
        .and(failures(20))
        .when(UserCommand::VerifyPassword {
            password: Secret::new("right"),
            at: t(21),
        })
        .then_expect_error(DomainError::AccountLocked {
            retry_after_secs: 59,
        });
    // After the lock, one more wrong password locks for twice as long.
    given_registered()
        .and(with_password())
        .and(failures(20))
        .when(UserCommand::VerifyPassword {
            password: Secret::new("wrong"),
            at: t(100),
        })
        .then_expect_events(vec![UserEvent::PasswordCheckFailed {
            failed_attempts: 21,
            locked_until: Some(t(220)),
            at: t(100),
        }]);
    // A right one after the lock clears the count.
    given_registered()
        .and(with_password())
        .and(failures(20))
        .when(UserCommand::VerifyPassword {
            password: Secret::new("right"),
            at: t(100),
        })
        .then_expect_events(vec![UserEvent::PasswordFailuresCleared { at: t(100) }]);
}

#[test]
fn a_refresh_token_rotates_and_a_reused_one_ends_the_session() {
    let session = SessionId(uuid::Uuid::from_u128(9));
    let started = UserEvent::SessionStarted {
        session,
        refresh_digest: "d1".into(),
        started_at: t(0),
        expires_at: t(1000),
    };
    given_registered()
        .and(with_password())
        .when(UserCommand::SignIn(SignIn {
            password: Secret::new("right"),
            session,
            refresh_digest: "d1".into(),
            expires_at: t(1000),
            at: t(0),
        }))
        .then_expect_events(vec![started.clone()]);
    given_registered()
        .and(vec![started.clone()])
        .when(UserCommand::Sessions(SessionCommand::Refresh {
            session,
            presented: "d1".into(),
            refresh_digest: "d2".into(),
            expires_at: t(1500),
            at: t(10),
        }))
        .then_expect_events(vec![UserEvent::SessionRefreshed {
            session,
            refresh_digest: "d2".into(),
            at: t(10),
            expires_at: t(1500),
        }]);
    let refreshed = UserEvent::SessionRefreshed {
        session,
        refresh_digest: "d2".into(),
        at: t(10),
        expires_at: t(1500),
    };
    given_registered()
        .and(vec![started.clone(), refreshed])
        .when(UserCommand::Sessions(SessionCommand::Refresh {
            session,
            presented: "d1".into(),
            refresh_digest: "d3".into(),
            expires_at: t(1500),
            at: t(20),
        }))
        .then_expect_events(vec![UserEvent::SessionsEnded {
            sessions: vec![session],
            reason: identity_domain::session::SessionEnd::TokenReused,
            at: t(20),
        }]);
    given_registered()
        .and(vec![started])
        .when(UserCommand::Sessions(SessionCommand::Refresh {
            session,
            presented: "d1".into(),
            refresh_digest: "d2".into(),
            expires_at: t(3000),
            at: t(1000),
        }))
        .then_expect_error(DomainError::InvalidRefreshToken);
}

#[test]
fn a_legacy_credential_cannot_replace_a_modern_one() {
    given_registered()
        .and(with_password())
        .when(UserCommand::ImportLegacyCredential {
            salt: "s".into(),
            digest: "d".into(),
        })
        .then_expect_error(DomainError::CredentialExists);
}

#[test]
fn setting_a_password_stores_only_its_hash() {
    given_registered()
        .when(UserCommand::SetPassword {
            phc: "phc:secret".into(),
        })
        .then_expect_events(vec![UserEvent::PasswordSet {
            credential: Credential::Modern {
                phc: "phc:secret".into(),
            },
        }]);
}

#[test]
fn changing_the_password_needs_the_old_one() {
    let set = UserEvent::PasswordSet {
        credential: Credential::Modern {
            phc: "phc:old".into(),
        },
    };
    given_registered()
        .and(vec![set.clone()])
        .when(UserCommand::ChangePassword {
            old_password: Secret::new("wrong"),
            new_password: Secret::new("new"),
            at: t(5),
        })
        .then_expect_events(vec![UserEvent::PasswordCheckFailed {
            failed_attempts: 1,
            locked_until: None,
            at: t(5),
        }]);
    given_registered()
        .and(vec![set])
        .when(UserCommand::ChangePassword {
            old_password: Secret::new("old"),
            new_password: Secret::new("new"),
            at: t(5),
        })
        .then_expect_events(vec![UserEvent::PasswordChanged {
            credential: Credential::Modern {
                phc: "phc:new".into(),
            },
        }]);
}

#[test]
fn changing_a_password_that_was_never_set_is_rejected() {
    given_registered()
        .when(UserCommand::ChangePassword {
            old_password: Secret::new("x"),
            new_password: Secret::new("new"),
            at: t(5),
        })
        .then_expect_error(DomainError::NoCredential);
}

#[test]
fn a_legacy_credential_is_imported_then_upgraded_on_first_verification() {
    let legacy = Credential::LegacySha1 {
        salt: "s4lt".into(),
        digest: "s4ltpw".into(),
    };
    given_registered()
        .when(UserCommand::ImportLegacyCredential {
            salt: "s4lt".into(),
            digest: "s4ltpw".into(),
        })
        .then_expect_events(vec![UserEvent::LegacyCredentialImported {
            credential: legacy.clone(),
        }]);
    given_registered()
        .and(vec![UserEvent::LegacyCredentialImported {
            credential: legacy.clone(),
        }])
        .when(UserCommand::VerifyPassword {
            password: Secret::new("pw"),
            at: t(5),
        })
        .then_expect_events(vec![UserEvent::LegacyCredentialUpgraded {
            credential: Credential::Modern {
                phc: "phc:pw".into(),
            },
        }]);
    given_registered()
        .and(vec![UserEvent::LegacyCredentialImported {
            credential: legacy,
        }])
        .when(UserCommand::VerifyPassword {
            password: Secret::new("bad"),
            at: t(5),
        })
        .then_expect_events(vec![UserEvent::PasswordCheckFailed {
            failed_attempts: 1,
            locked_until: None,
            at: t(5),
        }]);
}

#[test]
fn verifying_a_modern_password_records_nothing() {
    given_registered()
        .and(vec![UserEvent::PasswordSet {
            credential: Credential::Modern {
                phc: "phc:pw".into(),
            },
        }])
        .when(UserCommand::VerifyPassword {
            password: Secret::new("pw"),
            at: t(5),
        })
        .then_expect_events(vec![]);
}

#[test]
fn a_new_password_is_held_to_the_policy_in_characters_not_bytes() {
    use identity_domain::user::Secret;
    assert!(Secret::new_password("short").is_err());
    assert!(Secret::new_password(&"a".repeat(257)).is_err());
    // Eight characters of two bytes each: long enough.
    assert_eq!(
        Secret::new_password("ääääääää")
            .expect("8 characters")
            .expose(),
        "ääääääää"
    );
    assert!(Secret::new_password(&"ä".repeat(256)).is_ok());
}
