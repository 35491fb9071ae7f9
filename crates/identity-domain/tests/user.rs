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
        })
        .then_expect_events(vec![email_requested("h1")]);
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
            new_phc: "phc:new".into(),
        })
        .then_expect_error(DomainError::InvalidCredentials);
    given_registered()
        .and(vec![set])
        .when(UserCommand::ChangePassword {
            old_password: Secret::new("old"),
            new_phc: "phc:new".into(),
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
            new_phc: "phc:new".into(),
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
            upgrade_phc: Some("phc:pw".into()),
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
            upgrade_phc: Some("phc:bad".into()),
        })
        .then_expect_error(DomainError::InvalidCredentials);
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
            upgrade_phc: None,
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
