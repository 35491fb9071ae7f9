//! Given/when/then tests of the User aggregate's one-time codes: email and phone changes,
//! wrong attempts, locks, expiry and cooldown.

mod common;

use common::users::*;
use common::*;
use identity_domain::user::*;
use identity_domain::{DomainError, RecordsRejection};

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

fn confirm_email(code: &str, at: chrono::DateTime<chrono::Utc>) -> UserCommand {
    UserCommand::ConfirmEmail {
        code_hash: code.into(),
        at,
    }
}

/// The new address confirmed, replacing the registered one.
fn email_confirmed(at: chrono::DateTime<chrono::Utc>) -> UserEvent {
    UserEvent::EmailConfirmed {
        email: email("new@example.com"),
        previous: Some(email("ada@example.com")),
        at,
    }
}

fn five_wrong_codes() -> Vec<UserEvent> {
    (1..=5)
        .map(|n| UserEvent::EmailConfirmationFailed { failed_attempts: n })
        .collect()
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

#[test]
fn confirming_with_the_right_code_changes_the_email() {
    given_registered()
        .and(vec![email_requested("h1")])
        .when(confirm_email("h1", t(10)))
        .then_expect_events(vec![email_confirmed(t(10))]);
}

#[test]
fn a_wrong_code_is_recorded_and_reported_as_invalid_code() {
    let events = given_registered()
        .and(vec![email_requested("h1")])
        .when(confirm_email("wrong", t(10)))
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
    given_registered()
        .and(vec![email_requested("h1")])
        .and(five_wrong_codes())
        .when(confirm_email("h1", t(10)))
        .then_expect_error(DomainError::RateLimitExceeded);
}

#[test]
fn a_new_code_unlocks_a_locked_change() {
    given_registered()
        .and(vec![email_requested("h1")])
        .and(five_wrong_codes())
        .and(vec![email_requested("h2")])
        .when(confirm_email("h2", t(10)))
        .then_expect_events(vec![email_confirmed(t(10))]);
}

#[test]
fn an_expired_code_is_rejected() {
    given_registered()
        .and(vec![email_requested("h1")])
        .when(confirm_email("h1", t(601)))
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
