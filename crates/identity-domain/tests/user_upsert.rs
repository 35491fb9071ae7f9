//! UpsertUsers on a matched user: contacts set outright (unconfirmed), fields cleared, the
//! active flag, in one decision.

mod common;

use std::collections::BTreeSet;

use common::users::*;
use common::*;
use identity_domain::user::*;
use identity_domain::values::*;
use identity_domain::DomainError;

fn upsert(contacts: SetContacts, clear: &[ProfileField], active: Option<bool>) -> UserCommand {
    UserCommand::Upsert(Box::new(Upsert {
        profile: UpdateProfile::default(),
        clear: clear.iter().copied().collect::<BTreeSet<_>>(),
        contacts,
        active,
        at: t(5),
    }))
}

#[test]
fn contacts_are_set_and_cleared_and_only_changes_are_recorded() {
    let email = Email::parse("new@example.com").expect("email");
    let contacts = SetContacts {
        email: Some(Some(email.clone())),
        // The registration's external id, unchanged: nothing is recorded for it.
        external_id: Some(Some(ExternalId::parse("crm-1").expect("id"))),
        phone: Some(None),
    };
    UserTest::with(services())
        .given(vec![registered()])
        .when(upsert(contacts, &[ProfileField::FirstName], Some(false)))
        .then_expect_events(vec![
            UserEvent::EmailSet {
                email: Some(email),
                previous: Some(Email::parse("ada@example.com").expect("email")),
                at: t(5),
            },
            UserEvent::ProfileFieldsCleared {
                fields: [ProfileField::FirstName].into(),
                at: t(5),
            },
            UserEvent::UserDeactivated { at: t(5) },
        ]);
}

#[test]
fn clearing_every_contact_value_is_refused() {
    let none = SetContacts {
        email: Some(None),
        phone: Some(None),
        external_id: Some(None),
    };
    let err = UserTest::with(services())
        .given(vec![registered()])
        .when(upsert(none, &[], None))
        .inspect_result()
        .expect_err("nothing would be left");
    assert_eq!(err.reason(), "INVALID_ARGUMENT");
}

#[test]
fn an_inactive_user_is_upserted_and_reactivated_first() {
    let email = Email::parse("back@example.com").expect("email");
    let contacts = SetContacts {
        email: Some(Some(email.clone())),
        ..SetContacts::default()
    };
    UserTest::with(services())
        .given(vec![registered(), UserEvent::UserDeactivated { at: t(1) }])
        .when(upsert(contacts, &[], Some(true)))
        .then_expect_events(vec![
            UserEvent::UserReactivated { at: t(5) },
            UserEvent::EmailSet {
                email: Some(email),
                previous: Some(Email::parse("ada@example.com").expect("email")),
                at: t(5),
            },
        ]);
    let merged = UserEvent::UserMerged {
        into: user_id(9),
        at: t(1),
    };
    UserTest::with(services())
        .given(vec![registered(), merged])
        .when(upsert(SetContacts::default(), &[], None))
        .then_expect_error(DomainError::UserMerged {
            into: user_id(9).to_string(),
        });
}
