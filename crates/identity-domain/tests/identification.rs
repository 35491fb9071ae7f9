//! Given/when/then tests of the Identification aggregate.

mod common;

use chrono::NaiveDate;
use common::*;
use cqrs_es::test::TestFramework;
use identity_domain::identification::*;
use identity_domain::values::*;
use identity_domain::DomainError;
use uuid::Uuid;

type IdTest = TestFramework<Identification>;

fn day(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).expect("date")
}

fn today() -> NaiveDate {
    day(2026, 11, 24)
}

fn subject() -> Subject {
    Subject {
        tenant: tenant(),
        user_id: user_id(1),
    }
}

fn started() -> IdentificationEvent {
    IdentificationEvent::IdentificationStarted {
        tenant: tenant(),
        user_id: user_id(1),
    }
}

fn identity() -> Identity {
    Identity {
        first_name: name("Ada"),
        surname: name("Lovelace"),
        nationality: CountryCode::parse("EE").expect("cc"),
        person_code: PersonCode::parse("EE", "38601010123").expect("pc"),
        date_of_birth: Some(day(1986, 1, 1)),
    }
}

fn document(expiry: Option<NaiveDate>) -> Document {
    Document {
        document_id: DocumentId(Uuid::from_u128(9)),
        kind: DocumentKind::Passport,
        number: "K1234567".into(),
        issue_date: day(2020, 1, 1),
        expiry_date: expiry,
        file: None,
    }
}

fn change(level: IdentificationLevel, reason: Option<&str>) -> IdentificationCommand {
    IdentificationCommand::ChangeLevel {
        subject: subject(),
        level,
        reason: reason.map(|r| Text::parse(r).expect("text")),
        by: "officer-7".into(),
        today: today(),
        at: t(5),
    }
}

fn submitted() -> IdentificationEvent {
    IdentificationEvent::IdentitySubmitted {
        identity: identity(),
        at: t(1),
    }
}

fn attached(expiry: Option<NaiveDate>) -> IdentificationEvent {
    IdentificationEvent::DocumentAttached {
        document: document(expiry),
        at: t(2),
    }
}

#[test]
fn the_first_submission_starts_the_identification() {
    IdTest::with(())
        .given_no_previous_events()
        .when(IdentificationCommand::SubmitIdentity {
            subject: subject(),
            identity: Box::new(identity()),
            today: today(),
            at: t(1),
        })
        .then_expect_events(vec![started(), submitted()]);
}

#[test]
fn a_date_of_birth_in_the_future_is_rejected() {
    let mut id = identity();
    id.date_of_birth = Some(day(2030, 1, 1));
    let err = IdTest::with(())
        .given_no_previous_events()
        .when(IdentificationCommand::SubmitIdentity {
            subject: subject(),
            identity: Box::new(id),
            today: today(),
            at: t(1),
        })
        .inspect_result()
        .expect_err("future");
    assert_eq!(err.reason(), "INVALID_ARGUMENT");
}

#[test]
fn attaching_a_document_records_its_metadata() {
    IdTest::with(())
        .given(vec![started()])
        .when(IdentificationCommand::AttachDocument {
            subject: subject(),
            document: Box::new(document(Some(day(2030, 1, 1)))),
            today: today(),
            at: t(2),
        })
        .then_expect_events(vec![attached(Some(day(2030, 1, 1)))]);
}

#[test]
fn a_document_expiring_before_its_issue_is_rejected() {
    let err = IdTest::with(())
        .given(vec![started()])
        .when(IdentificationCommand::AttachDocument {
            subject: subject(),
            document: Box::new(document(Some(day(2019, 1, 1)))),
            today: today(),
            at: t(2),
        })
        .inspect_result()
        .expect_err("bad dates");
    assert_eq!(err.reason(), "INVALID_ARGUMENT");
}

#[test]
fn attaching_the_same_document_twice_is_rejected() {
    IdTest::with(())
        .given(vec![started(), attached(None)])
        .when(IdentificationCommand::AttachDocument {
            subject: subject(),
            document: Box::new(document(None)),
            today: today(),
            at: t(2),
        })
        .then_expect_error(DomainError::DocumentAlreadyAttached);
}

#[test]
fn setting_the_pep_flag_records_who_and_why() {
    IdTest::with(())
        .given(vec![started()])
        .when(IdentificationCommand::SetPepStatus {
            subject: subject(),
            pep: true,
            records: vec![],
            reason: Some(Text::parse("minister").expect("text")),
            by: "officer-7".into(),
            at: t(3),
        })
        .then_expect_events(vec![IdentificationEvent::PepStatusSet {
            pep: true,
            reason: Some(Text::parse("minister").expect("text")),
            by: "officer-7".into(),
            at: t(3),
        }]);
}

#[test]
fn raising_to_basic_needs_no_documents() {
    IdTest::with(())
        .given(vec![started()])
        .when(change(IdentificationLevel::BasicIdentified, None))
        .then_expect_events(vec![IdentificationEvent::IdentificationLevelChanged {
            from: IdentificationLevel::Unidentified,
            to: IdentificationLevel::BasicIdentified,
            reason: None,
            by: "officer-7".into(),
            at: t(5),
        }]);
}

#[test]
fn identified_needs_a_submitted_identity() {
    IdTest::with(())
        .given(vec![started(), attached(None)])
        .when(change(IdentificationLevel::Identified, None))
        .then_expect_error(DomainError::IdentityRequired("identified"));
}

#[test]
fn identified_needs_an_unexpired_document() {
    IdTest::with(())
        .given(vec![started(), submitted()])
        .when(change(IdentificationLevel::FullyIdentified, None))
        .then_expect_error(DomainError::DocumentRequired("fully_identified"));
    IdTest::with(())
        .given(vec![
            started(),
            submitted(),
            attached(Some(day(2025, 1, 1))),
        ])
        .when(change(IdentificationLevel::Identified, None))
        .then_expect_error(DomainError::DocumentRequired("identified"));
}

#[test]
fn identified_is_reached_with_identity_and_a_valid_document() {
    IdTest::with(())
        .given(vec![
            started(),
            submitted(),
            attached(Some(day(2030, 1, 1))),
        ])
        .when(change(
            IdentificationLevel::Identified,
            Some("passport checked"),
        ))
        .then_expect_events(vec![IdentificationEvent::IdentificationLevelChanged {
            from: IdentificationLevel::Unidentified,
            to: IdentificationLevel::Identified,
            reason: Some(Text::parse("passport checked").expect("text")),
            by: "officer-7".into(),
            at: t(5),
        }]);
}

#[test]
fn lowering_the_level_needs_a_reason() {
    let raised = IdentificationEvent::IdentificationLevelChanged {
        from: IdentificationLevel::Unidentified,
        to: IdentificationLevel::BasicIdentified,
        reason: None,
        by: "officer-7".into(),
        at: t(4),
    };
    IdTest::with(())
        .given(vec![started(), raised.clone()])
        .when(change(IdentificationLevel::SemiIdentified, None))
        .then_expect_error(DomainError::ReasonRequired);
    IdTest::with(())
        .given(vec![started(), raised])
        .when(change(
            IdentificationLevel::SemiIdentified,
            Some("document revoked"),
        ))
        .then_expect_events(vec![IdentificationEvent::IdentificationLevelChanged {
            from: IdentificationLevel::BasicIdentified,
            to: IdentificationLevel::SemiIdentified,
            reason: Some(Text::parse("document revoked").expect("text")),
            by: "officer-7".into(),
            at: t(5),
        }]);
}

#[test]
fn changing_to_the_current_level_records_nothing() {
    IdTest::with(())
        .given_no_previous_events()
        .when(change(IdentificationLevel::Unidentified, None))
        .then_expect_events(vec![]);
}

#[test]
fn a_merge_gives_the_duplicates_identification_only_to_a_survivor_without_one() {
    let mut duplicate = Identification::default();
    for e in [
        started(),
        submitted(),
        attached(None),
        IdentificationEvent::IdentificationLevelChanged {
            from: IdentificationLevel::Unidentified,
            to: IdentificationLevel::Identified,
            reason: None,
            by: "officer-7".into(),
            at: t(3),
        },
    ] {
        cqrs_es::Aggregate::apply(&mut duplicate, e);
    }
    let receive = || IdentificationCommand::Receive {
        subject: subject(),
        from: Box::new(duplicate.clone()),
        reason: Text::parse("merged from user 2").expect("text"),
        by: "admin:1".into(),
        at: t(9),
    };
    IdTest::with(())
        .given_no_previous_events()
        .when(receive())
        .then_expect_events(vec![
            started(),
            IdentificationEvent::IdentitySubmitted {
                identity: identity(),
                at: t(9),
            },
            IdentificationEvent::DocumentAttached {
                document: document(None),
                at: t(9),
            },
            IdentificationEvent::IdentificationLevelChanged {
                from: IdentificationLevel::Unidentified,
                to: IdentificationLevel::Identified,
                reason: Some(Text::parse("merged from user 2").expect("text")),
                by: "admin:1".into(),
                at: t(9),
            },
        ]);
    // A survivor with an identity of its own keeps it.
    IdTest::with(())
        .given(vec![started(), submitted()])
        .when(receive())
        .then_expect_events(vec![]);
}

#[test]
fn pep_records_go_with_a_pep_status_and_are_replaced_whole() {
    let record = PepRecord {
        position: Text::parse("Member of parliament").expect("text"),
        country: CountryCode::parse("EE").expect("cc"),
        since: Some(day(2019, 4, 4)),
        until: None,
        relation: PepRelation::FamilyMember,
    };
    let set = |pep: bool, records: Vec<PepRecord>| IdentificationCommand::SetPepStatus {
        subject: subject(),
        pep,
        records,
        reason: None,
        by: "officer-7".into(),
        at: t(4),
    };
    IdTest::with(())
        .given(vec![started()])
        .when(set(true, vec![record.clone()]))
        .then_expect_events(vec![
            IdentificationEvent::PepStatusSet {
                pep: true,
                reason: None,
                by: "officer-7".into(),
                at: t(4),
            },
            IdentificationEvent::PepRecordsSet {
                pep_records: vec![record.clone()],
                reason: None,
                by: "officer-7".into(),
                at: t(4),
            },
        ]);
    let err = IdTest::with(())
        .given(vec![started()])
        .when(set(false, vec![record.clone()]))
        .inspect_result()
        .expect_err("records without a status");
    assert_eq!(err.reason(), "INVALID_ARGUMENT");
    let backwards = PepRecord {
        until: Some(day(2018, 1, 1)),
        ..record
    };
    let err = IdTest::with(())
        .given(vec![started()])
        .when(set(true, vec![backwards]))
        .inspect_result()
        .expect_err("until before since");
    assert_eq!(err.reason(), "INVALID_ARGUMENT");
}
