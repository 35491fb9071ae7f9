//! Given/when/then tests of the User aggregate: registration, profile, lifecycle, roles and
//! merging. One-time codes are in `user_codes.rs`, credentials and sessions in
//! `user_credentials.rs`.

mod common;

use std::collections::BTreeSet;

use common::users::*;
use common::*;
use cqrs_es::Aggregate as _;
use identity_domain::derive::{keyed_identifier_email, IdentifierSource};
use identity_domain::user::*;
use identity_domain::values::*;
use identity_domain::DomainError;

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
    let expected = keyed_identifier_email(
        &cmd.id_key,
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

#[test]
fn only_an_active_unmerged_user_may_own_a_new_wallet() {
    let mut user = User::default();
    assert_eq!(user.may_own_a_new_wallet(), Err(DomainError::UserNotFound));
    user.apply(registered());
    let UserEvent::UserRegistered {
        identifier_email, ..
    } = registered()
    else {
        unreachable!("a registration")
    };
    assert_eq!(user.may_own_a_new_wallet(), Ok(identifier_email.as_str()));
    user.apply(UserEvent::UserDeactivated { at: t(1) });
    assert_eq!(user.may_own_a_new_wallet(), Err(DomainError::UserInactive));
    user.apply(UserEvent::UserMerged {
        into: user_id(2),
        at: t(2),
    });
    assert_eq!(
        user.may_own_a_new_wallet(),
        Err(DomainError::UserMerged {
            into: user_id(2).to_string()
        })
    );
}

fn erase(at: i64) -> UserCommand {
    UserCommand::Erase {
        basis: Text::parse("GDPR art. 17").expect("text"),
        erased_by: "admin:7".into(),
        at: t(at),
    }
}

#[test]
fn erasing_records_who_erased_whom_and_why_and_leaves_nothing_personal() {
    UserTest::with(services())
        .given(vec![registered(), UserEvent::UserDeactivated { at: t(1) }])
        .when(erase(2))
        .then_expect_events(vec![UserEvent::UserErased {
            basis: Text::parse("GDPR art. 17").expect("text"),
            erased_by: "admin:7".into(),
            at: t(2),
        }]);
    let mut user = User::default();
    for e in [
        registered(),
        UserEvent::UserErased {
            basis: Text::parse("GDPR art. 17").expect("text"),
            erased_by: "admin:7".into(),
            at: t(2),
        },
    ] {
        user.apply(e);
    }
    assert!(user.erased && !user.active);
    assert!(
        user.id.is_some(),
        "the id stays: balances and history refer to it"
    );
    assert_eq!(
        (user.email, user.phone, user.first_name, user.last_name),
        (None, None, None, None)
    );
    assert!(user.custom_data.as_map().is_empty() && user.identifier_email.is_empty());
}

#[test]
fn an_erased_user_takes_no_more_commands_and_an_unknown_one_cannot_be_erased() {
    let erased = UserEvent::UserErased {
        basis: Text::parse("GDPR art. 17").expect("text"),
        erased_by: "admin:7".into(),
        at: t(2),
    };
    for command in [erase(3), UserCommand::Reactivate { at: t(3) }] {
        UserTest::with(services())
            .given(vec![registered(), erased.clone()])
            .when(command)
            .then_expect_error(DomainError::UserErased);
    }
    UserTest::with(services())
        .given_no_previous_events()
        .when(erase(1))
        .then_expect_error(DomainError::UserNotFound);
}
