//! Given/when/then tests of admins signing in: the same lockout and session rules as users.

mod common;

use common::*;
use cqrs_es::test::TestFramework;
use identity_domain::admin::*;
use identity_domain::session::{lock_for, SessionEnd, SignInFact};
use identity_domain::session::{SessionCommand, SignIn};
use identity_domain::user::{Credential, Secret};
use identity_domain::values::SessionId;
use identity_domain::DomainError;
use uuid::Uuid;

fn given_admin() -> cqrs_es::test::AggregateTestExecutor<Admin> {
    TestFramework::<Admin>::with(services()).given(vec![
        ops_admin_created(0),
        AdminEvent::AdminPasswordSet {
            credential: Credential::Modern {
                phc: "phc:right".into(),
            },
            at: t(1),
        },
    ])
}

fn session(n: u128) -> SessionId {
    SessionId(Uuid::from_u128(n))
}

fn sign_in(password: &str, at: i64) -> AdminCommand {
    AdminCommand::SignIn(SignIn {
        password: Secret::new(password),
        session: session(1),
        refresh_digest: "d1".into(),
        expires_at: t(10_000),
        at: t(at),
    })
}

fn failures(n: u32) -> Vec<AdminEvent> {
    (1..=n)
        .map(|i| {
            AdminEvent::AdminSignIn(SignInFact::CheckFailed {
                failed_attempts: i,
                locked_until: lock_for(i).map(|d| t(i as i64) + d),
                at: t(i as i64),
            })
        })
        .collect()
}

#[test]
fn the_right_password_opens_a_session() {
    given_admin()
        .when(sign_in("right", 5))
        .then_expect_events(vec![AdminEvent::AdminSignIn(SignInFact::Started {
            session: session(1),
            refresh_digest: "d1".into(),
            started_at: t(5),
            expires_at: t(10_000),
        })]);
}

#[test]
fn twenty_wrong_passwords_lock_an_admin_and_a_locked_attempt_is_refused_before_hashing() {
    given_admin()
        .and(failures(19))
        .when(sign_in("wrong", 20))
        .then_expect_events(vec![AdminEvent::AdminSignIn(SignInFact::CheckFailed {
            failed_attempts: 20,
            locked_until: Some(t(80)),
            at: t(20),
        })]);
    given_admin()
        .and(failures(20))
        .when(sign_in("right", 21))
        .then_expect_error(DomainError::AccountLocked {
            retry_after_secs: 59,
        });
}

#[test]
fn a_new_password_ends_every_session_and_an_old_refresh_token_ends_its_session() {
    let started = AdminEvent::AdminSignIn(SignInFact::Started {
        session: session(1),
        refresh_digest: "d1".into(),
        started_at: t(5),
        expires_at: t(10_000),
    });
    given_admin()
        .and(vec![started.clone()])
        .when(AdminCommand::SetPassword {
            password: Secret::new("newer"),
            at: t(6),
        })
        .then_expect_events(vec![
            AdminEvent::AdminPasswordSet {
                credential: Credential::Modern {
                    phc: "phc:newer".into(),
                },
                at: t(6),
            },
            AdminEvent::AdminSignIn(SignInFact::Ended {
                sessions: vec![session(1)],
                reason: SessionEnd::PasswordChanged,
                at: t(6),
            }),
        ]);
    given_admin()
        .and(vec![started])
        .when(AdminCommand::Sessions(SessionCommand::Refresh {
            session: session(1),
            presented: "stolen".into(),
            refresh_digest: "d2".into(),
            expires_at: t(20_000),
            at: t(7),
        }))
        .then_expect_events(vec![AdminEvent::AdminSignIn(SignInFact::Ended {
            sessions: vec![session(1)],
            reason: SessionEnd::TokenReused,
            at: t(7),
        })]);
}

#[test]
fn a_removed_admin_cannot_sign_in() {
    given_admin()
        .and(vec![AdminEvent::AdminRemoved { at: t(2) }])
        .when(sign_in("right", 5))
        .then_expect_error(DomainError::AdminRemoved);
}
