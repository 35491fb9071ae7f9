//! Given/when/then tests of the User aggregate.

mod common;

use std::collections::BTreeSet;

use common::*;
use cqrs_es::test::TestFramework;
use identity_domain::derive::{identifier_email, IdentifierSource};
use identity_domain::user::*;
use identity_domain::values::*;
use identity_domain::{DomainError, RecordsRejection};

type UserTest = TestFramework<User>;

fn register_cmd() -> RegisterUser {
    RegisterUser {
        user_id: user_id(1),
        tenant: tenant(),
        email: Some(email("ada@example.com")),
        phone: None,
        external_id: Some(ExternalId::parse("crm-1").expect("id")),
        first_name: Some(name("Ada")),
        last_name: Some(name("Lovelace")),
        locale: Some(Locale::parse("en").expect("locale")),
        custom_data: JsonObject::parse(r#"{"tier":"gold"}"#).expect("json"),
        public_profile: JsonObject::default(),
        at: t(0),
    }
}

fn registered() -> UserEvent {
    let c = register_cmd();
    UserEvent::UserRegistered {
        user_id: c.user_id,
        identifier_email: identifier_email(
            &c.tenant,
            IdentifierSource::Email(c.email.as_ref().expect("email")),
        ),
        tenant: c.tenant,
        email: c.email,
        phone: c.phone,
        external_id: c.external_id,
        first_name: c.first_name,
        last_name: c.last_name,
        locale: c.locale,
        custom_data: c.custom_data,
        public_profile: c.public_profile,
        registered_at: c.at,
    }
}

fn given_registered() -> cqrs_es::test::AggregateTestExecutor<User> {
    UserTest::with(services()).given(vec![registered()])
}

fn email_requested(code: &str) -> UserEvent {
    UserEvent::EmailChangeRequested {
        email: email("new@example.com"),
        code_hash: code.to_string(),
        expires_at: t(600),
    }
}

#[test]
fn registering_records_the_user_with_a_derived_identifier_email() {
    UserTest::with(services())
        .given_no_previous_events()
        .when(UserCommand::Register(Box::new(register_cmd())))
        .then_expect_events(vec![registered()]);
}

#[test]
fn registering_without_email_phone_or_external_id_is_rejected() {
    let mut cmd = register_cmd();
    cmd.email = None;
    cmd.external_id = None;
    let err = UserTest::with(services())
        .given_no_previous_events()
        .when(UserCommand::Register(Box::new(cmd)))
        .inspect_result()
        .expect_err("must fail");
    assert_eq!(err.reason(), "INVALID_ARGUMENT");
}

#[test]
fn registering_with_only_an_external_id_derives_the_identifier_from_it() {
    let mut cmd = register_cmd();
    cmd.email = None;
    let events = UserTest::with(services())
        .given_no_previous_events()
        .when(UserCommand::Register(Box::new(cmd.clone())))
        .inspect_result()
        .expect("registers");
    let expected = identifier_email(
        &cmd.tenant,
        IdentifierSource::ExternalId(cmd.external_id.as_ref().expect("id")),
    );
    assert!(
        matches!(&events[0], UserEvent::UserRegistered { identifier_email, .. } if *identifier_email == expected)
    );
}

#[test]
fn registering_an_existing_user_again_is_rejected() {
    given_registered()
        .when(UserCommand::Register(Box::new(register_cmd())))
        .then_expect_error(DomainError::UserAlreadyExists);
}

#[test]
fn commands_on_an_unknown_user_fail_with_user_not_found() {
    UserTest::with(services())
        .given_no_previous_events()
        .when(UserCommand::Deactivate { at: t(1) })
        .then_expect_error(DomainError::UserNotFound);
}

#[test]
fn updating_the_profile_records_only_what_changed() {
    given_registered()
        .when(UserCommand::UpdateProfile(
            Box::new(UpdateProfile {
                first_name: Some(name("Ada")),
                last_name: Some(name("King")),
                ..UpdateProfile::default()
            }),
            t(5),
        ))
        .then_expect_events(vec![UserEvent::UserProfileUpdated {
            first_name: None,
            last_name: Some(name("King")),
            locale: None,
            custom_data: None,
            public_profile: None,
            updated_at: t(5),
        }]);
}

#[test]
fn updating_the_profile_with_no_change_records_nothing() {
    given_registered()
        .when(UserCommand::UpdateProfile(
            Box::new(UpdateProfile {
                first_name: Some(name("Ada")),
                ..UpdateProfile::default()
            }),
            t(5),
        ))
        .then_expect_events(vec![]);
}

#[test]
fn deactivating_records_it() {
    given_registered()
        .when(UserCommand::Deactivate { at: t(2) })
        .then_expect_events(vec![UserEvent::UserDeactivated { at: t(2) }]);
}

#[test]
fn commands_on_an_inactive_user_fail_with_user_inactive() {
    given_registered()
        .and(vec![UserEvent::UserDeactivated { at: t(2) }])
        .when(UserCommand::SetRoles {
            roles: BTreeSet::from([Role::parse("admin").expect("role")]),
            mode: RolesMode::Add,
        })
        .then_expect_error(DomainError::UserInactive);
}

#[test]
fn reactivating_an_inactive_user_records_it() {
    given_registered()
        .and(vec![UserEvent::UserDeactivated { at: t(2) }])
        .when(UserCommand::Reactivate { at: t(3) })
        .then_expect_events(vec![UserEvent::UserReactivated { at: t(3) }]);
}

#[test]
fn reactivating_an_active_user_records_nothing() {
    given_registered()
        .when(UserCommand::Reactivate { at: t(3) })
        .then_expect_events(vec![]);
}

#[test]
fn requesting_an_email_change_records_the_hashed_code() {
    given_registered()
        .when(UserCommand::RequestEmailChange {
            email: email("new@example.com"),
            code_hash: "h1".into(),
            expires_at: t(600),
            at: t(0),
        })
        .then_expect_events(vec![email_started("h1", t(0), 0)]);
}

fn email_started(code: &str, at: chrono::DateTime<chrono::Utc>, failed: u32) -> UserEvent {
    UserEvent::EmailChangeStarted {
        email: email("new@example.com"),
        code_hash: code.to_string(),
        requested_at: at,
        expires_at: at + chrono::Duration::seconds(600),
        failed_attempts: failed,
    }
}

fn request_email(code: &str, at: chrono::DateTime<chrono::Utc>) -> UserCommand {
    UserCommand::RequestEmailChange {
        email: email("new@example.com"),
        code_hash: code.to_string(),
        expires_at: at + chrono::Duration::seconds(600),
        at,
    }
}

/// The defect: a new code request reset the five wrong attempts, so asking again and again
/// gave unlimited guesses. Now a new code comes only after a cooldown and inherits the count.
#[test]
fn a_new_code_neither_comes_before_the_cooldown_nor_resets_the_wrong_attempts() {
    given_registered()
        .and(vec![email_started("h1", t(0), 0)])
        .when(request_email("h2", t(30)))
        .then_expect_error(DomainError::RetryLater {
            retry_after_secs: 30,
        });
    given_registered()
        .and(vec![
            email_started("h1", t(0), 0),
            UserEvent::EmailConfirmationFailed { failed_attempts: 1 },
            UserEvent::EmailConfirmationFailed { failed_attempts: 2 },
        ])
        .when(request_email("h2", t(61)))
        .then_expect_events(vec![email_started("h2", t(61), 2)]);
    // Locked by five wrong codes: no new code until the hour since the last one is over.
    given_registered()
        .and(vec![
            email_started("h1", t(0), 4),
            UserEvent::EmailConfirmationFailed { failed_attempts: 5 },
        ])
        .when(request_email("h2", t(120)))
        .then_expect_error(DomainError::RetryLater {
            retry_after_secs: 3480,
        });
    given_registered()
        .and(vec![
            email_started("h1", t(0), 4),
            UserEvent::EmailConfirmationFailed { failed_attempts: 5 },
        ])
        .when(request_email("h2", t(3600)))
        .then_expect_events(vec![email_started("h2", t(3600), 0)]);
}

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
        .when(UserCommand::SignIn {
            password: Secret::new("right"),
            session,
            refresh_digest: "d1".into(),
            expires_at: t(1000),
            at: t(0),
        })
        .then_expect_events(vec![started.clone()]);
    given_registered()
        .and(vec![started.clone()])
        .when(UserCommand::Refresh {
            session,
            presented: "d1".into(),
            refresh_digest: "d2".into(),
            expires_at: t(1500),
            at: t(10),
        })
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
        .when(UserCommand::Refresh {
            session,
            presented: "d1".into(),
            refresh_digest: "d3".into(),
            expires_at: t(1500),
            at: t(20),
        })
        .then_expect_events(vec![UserEvent::SessionsEnded {
            sessions: vec![session],
            reason: identity_domain::session::SessionEnd::TokenReused,
            at: t(20),
        }]);
    given_registered()
        .and(vec![started])
        .when(UserCommand::Refresh {
            session,
            presented: "d1".into(),
            refresh_digest: "d2".into(),
            expires_at: t(3000),
            at: t(1000),
        })
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
fn confirming_with_the_right_code_changes_the_email() {
    given_registered()
        .and(vec![email_requested("h1")])
        .when(UserCommand::ConfirmEmail {
            code_hash: "h1".into(),
            at: t(10),
        })
        .then_expect_events(vec![UserEvent::EmailConfirmed {
            email: email("new@example.com"),
            previous: Some(email("ada@example.com")),
            at: t(10),
        }]);
}

#[test]
fn a_wrong_code_is_recorded_and_reported_as_invalid_code() {
    let events = given_registered()
        .and(vec![email_requested("h1")])
        .when(UserCommand::ConfirmEmail {
            code_hash: "wrong".into(),
            at: t(10),
        })
        .inspect_result()
        .expect("the attempt is recorded");
    assert_eq!(
        events,
        vec![UserEvent::EmailConfirmationFailed { failed_attempts: 1 }]
    );
    assert_eq!(
        events[0].rejection(),
        Some(DomainError::InvalidCode { attempts_left: 4 })
    );
}

#[test]
fn after_five_wrong_codes_the_change_is_locked() {
    let failures: Vec<UserEvent> = (1..=5)
        .map(|n| UserEvent::EmailConfirmationFailed { failed_attempts: n })
        .collect();
    given_registered()
        .and(vec![email_requested("h1")])
        .and(failures)
        .when(UserCommand::ConfirmEmail {
            code_hash: "h1".into(),
            at: t(10),
        })
        .then_expect_error(DomainError::RateLimitExceeded);
}

#[test]
fn a_new_code_unlocks_a_locked_change() {
    let failures: Vec<UserEvent> = (1..=5)
        .map(|n| UserEvent::EmailConfirmationFailed { failed_attempts: n })
        .collect();
    given_registered()
        .and(vec![email_requested("h1")])
        .and(failures)
        .and(vec![email_requested("h2")])
        .when(UserCommand::ConfirmEmail {
            code_hash: "h2".into(),
            at: t(10),
        })
        .then_expect_events(vec![UserEvent::EmailConfirmed {
            email: email("new@example.com"),
            previous: Some(email("ada@example.com")),
            at: t(10),
        }]);
}

#[test]
fn an_expired_code_is_rejected() {
    given_registered()
        .and(vec![email_requested("h1")])
        .when(UserCommand::ConfirmEmail {
            code_hash: "h1".into(),
            at: t(601),
        })
        .then_expect_error(DomainError::CodeExpired);
}

#[test]
fn confirming_without_a_pending_change_is_rejected() {
    given_registered()
        .when(UserCommand::ConfirmPhone {
            code_hash: "h1".into(),
            at: t(1),
        })
        .then_expect_error(DomainError::NoPendingChange("phone"));
}

#[test]
fn the_phone_is_confirmed_with_its_code_and_wrong_codes_count() {
    let requested = UserEvent::PhoneChangeRequested {
        phone: phone("+372 5555 1234"),
        code_hash: "p1".into(),
        expires_at: t(600),
    };
    let failed = given_registered()
        .and(vec![requested.clone()])
        .when(UserCommand::ConfirmPhone {
            code_hash: "nope".into(),
            at: t(1),
        })
        .inspect_result()
        .expect("recorded");
    assert_eq!(
        failed,
        vec![UserEvent::PhoneConfirmationFailed { failed_attempts: 1 }]
    );
    given_registered()
        .and(vec![requested])
        .when(UserCommand::ConfirmPhone {
            code_hash: "p1".into(),
            at: t(1),
        })
        .then_expect_events(vec![UserEvent::PhoneConfirmed {
            phone: phone("37255551234"),
            previous: None,
            at: t(1),
        }]);
}

#[test]
fn adding_roles_extends_the_set_and_replacing_swaps_it() {
    let admin = Role::parse("admin").expect("role");
    let support = Role::parse("support").expect("role");
    given_registered()
        .and(vec![UserEvent::RolesChanged {
            roles: BTreeSet::from([admin.clone()]),
        }])
        .when(UserCommand::SetRoles {
            roles: BTreeSet::from([support.clone()]),
            mode: RolesMode::Add,
        })
        .then_expect_events(vec![UserEvent::RolesChanged {
            roles: BTreeSet::from([admin.clone(), support.clone()]),
        }]);
    given_registered()
        .and(vec![UserEvent::RolesChanged {
            roles: BTreeSet::from([admin]),
        }])
        .when(UserCommand::SetRoles {
            roles: BTreeSet::from([support.clone()]),
            mode: RolesMode::Replace,
        })
        .then_expect_events(vec![UserEvent::RolesChanged {
            roles: BTreeSet::from([support]),
        }]);
}

#[test]
fn setting_the_same_roles_records_nothing() {
    let admin = Role::parse("admin").expect("role");
    given_registered()
        .and(vec![UserEvent::RolesChanged {
            roles: BTreeSet::from([admin.clone()]),
        }])
        .when(UserCommand::SetRoles {
            roles: BTreeSet::from([admin]),
            mode: RolesMode::Add,
        })
        .then_expect_events(vec![]);
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
fn secrets_never_print() {
    assert_eq!(format!("{:?}", Secret::new("hunter2")), "Secret(***)");
    let c = Credential::Modern {
        phc: "$argon2id$secret".into(),
    };
    assert!(!format!("{c:?}").contains("argon2id"));
}

#[test]
fn merging_makes_the_user_read_only_and_points_to_the_survivor() {
    given_registered()
        .when(UserCommand::MergeInto {
            survivor: user_id(2),
            at: t(9),
        })
        .then_expect_events(vec![UserEvent::UserMerged {
            into: user_id(2),
            at: t(9),
        }]);
    given_registered()
        .and(vec![UserEvent::UserMerged {
            into: user_id(2),
            at: t(9),
        }])
        .when(UserCommand::Deactivate { at: t(10) })
        .then_expect_error(DomainError::UserMerged {
            into: user_id(2).to_string(),
        });
}

#[test]
fn merging_a_user_into_itself_is_rejected() {
    given_registered()
        .when(UserCommand::MergeInto {
            survivor: user_id(1),
            at: t(9),
        })
        .then_expect_error(DomainError::MergeIntoSelf);
}
