//! A fuzz harness over every conversion a request goes through (proto → domain values, the
//! Struct ↔ JSON conversion of custom data and profiles, page tokens, timestamps, enums):
//! arbitrary requests, hostile text (NUL, control characters, any Unicode), deep Structs,
//! NaN and infinite numbers and out-of-range timestamps, sent to the real server. Every
//! answer must be a success or the caller's own error with details; an INTERNAL, UNKNOWN or
//! a broken connection (a panic on a request path) fails the property.
//!
//! Bounded for CI: `PROPTEST_CASES` cases per RPC (default 64), on the SQLite store.

#[macro_use]
mod common;

use std::collections::BTreeMap;

use common::*;
use identity_proto::prost_types::{self, value::Kind};
use identity_proto::v1 as pb;
use identity_proto::v1::audit_service_client::AuditServiceClient;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use tonic::Code;
use tonic_types::StatusExt as _;

/// Text a hostile or careless caller sends: anything, or something close to valid.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[a-z0-9.+_-]{0,12}@[a-z0-9-]{0,12}\\.[a-z]{0,4}",
        "\\+?[0-9 ]{0,20}",
        "[A-Z]{2}:[0-9A-Z]{0,34}",
        "[0-9]{0,45}",
        "0x[0-9a-fA-F]{0,44}",
        "[\\x00-\\x1f\\x7f]{1,4}[a-z]{0,4}",
        Just(String::new()),
    ]
}

fn value() -> impl Strategy<Value = prost_types::Value> {
    let leaf = prop_oneof![
        Just(Kind::NullValue(0)),
        any::<bool>().prop_map(Kind::BoolValue),
        any::<f64>().prop_map(Kind::NumberValue),
        prop_oneof![
            Just(f64::NAN),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
            Just(1e300)
        ]
        .prop_map(Kind::NumberValue),
        text().prop_map(Kind::StringValue),
    ];
    leaf.prop_map(|k| prost_types::Value { kind: Some(k) })
        .prop_recursive(24, 64, 4, |inner| {
            prop_oneof![
                prop::collection::btree_map(text(), inner.clone(), 0..4)
                    .prop_map(|fields| Kind::StructValue(prost_types::Struct { fields })),
                prop::collection::vec(inner, 0..4)
                    .prop_map(|values| Kind::ListValue(prost_types::ListValue { values })),
            ]
            .prop_map(|k| prost_types::Value { kind: Some(k) })
        })
}

fn object() -> impl Strategy<Value = Option<prost_types::Struct>> {
    prop::option::of(
        prop::collection::btree_map(text(), value(), 0..5).prop_map(
            |fields: BTreeMap<String, prost_types::Value>| prost_types::Struct { fields },
        ),
    )
}

fn timestamp() -> impl Strategy<Value = Option<prost_types::Timestamp>> {
    prop::option::of(
        (any::<i64>(), any::<i32>())
            .prop_map(|(seconds, nanos)| prost_types::Timestamp { seconds, nanos }),
    )
}

fn user_input() -> impl Strategy<Value = pb::UserInput> {
    (
        (text(), text(), text()),
        (text(), text(), text()),
        object(),
        object(),
    )
        .prop_map(
            |((email, phone, external_id), (first_name, last_name, locale), custom, public)| {
                pb::UserInput {
                    email,
                    phone,
                    external_id,
                    first_name,
                    last_name,
                    locale,
                    custom_data: custom,
                    public_profile: public,
                    active: None,
                    details: None,
                }
            },
        )
}

/// Fails unless the answer is a success or the caller's own error, explained.
fn acceptable<T>(rpc: &str, result: Result<T, tonic::Status>) -> Result<(), TestCaseError> {
    let Err(status) = result else {
        return Ok(());
    };
    prop_assert!(
        !matches!(
            status.code(),
            Code::Internal | Code::Unknown | Code::DataLoss | Code::Unavailable
        ),
        "{rpc}: {status:?}"
    );
    let details = status.get_error_details();
    prop_assert!(
        details.error_info().is_some() || details.bad_request().is_some(),
        "{rpc}: an error without details: {status:?}"
    );
    Ok(())
}

fn runner() -> TestRunner {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(64);
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
}

#[test]
fn arbitrary_requests_never_crash_the_server_or_corrupt_an_answer() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let app = rt.block_on(spawn_app(Store::Sqlite));
    let user = rt.block_on(app.register("acme", "fuzz@example.com"));
    let wallet = rt.block_on(app.active_wallet("acme", &user));

    runner()
        .run(&user_input(), |input| {
            let mut users = app.users();
            let r = rt.block_on(
                users.register_user(req("acme", pb::RegisterUserRequest { user: Some(input) })),
            );
            acceptable("RegisterUser", r)
        })
        .expect("RegisterUser");

    let known = user.clone();
    runner()
        .run(
            &(
                prop_oneof![Just(known), text()],
                user_input(),
                prop::collection::vec(text(), 0..3),
            ),
            |(user_id, p, paths)| {
                let mut users = app.users();
                let profile = p;
                let r = rt.block_on(users.update_user_profile(req(
                    "acme",
                    pb::UpdateUserProfileRequest {
                        user_id,
                        profile: Some(profile),
                        update_mask: Some(prost_types::FieldMask { paths }),
                    },
                )));
                acceptable("UpdateUserProfile", r)
            },
        )
        .expect("UpdateUserProfile");

    let known = wallet.clone();
    runner()
        .run(
            &(prop_oneof![Just(known), text()], text(), text(), text()),
            |(wallet_id, token, amount, idempotency_key)| {
                let mut wallets = app.wallets();
                let r = rt.block_on(wallets.credit_tokens(req(
                    "acme",
                    pb::CreditTokensRequest {
                        wallet_id,
                        token,
                        amount,
                        idempotency_key,
                    },
                )));
                acceptable("CreditTokens", r)
            },
        )
        .expect("CreditTokens");

    let known = user.clone();
    runner()
        .run(
            &(
                prop_oneof![Just(known), text()],
                (text(), text(), text(), text(), text()),
            ),
            |(user_id, (first_name, surname, nationality, person_code, date_of_birth))| {
                let mut kyc = app.identification();
                let r = rt.block_on(kyc.submit_identity(req(
                    "acme",
                    pb::SubmitIdentityRequest {
                        user_id,
                        identity: Some(pb::Identity {
                            first_name,
                            surname,
                            nationality,
                            person_code,
                            date_of_birth,
                            ..Default::default()
                        }),
                    },
                )));
                acceptable("SubmitIdentity", r)
            },
        )
        .expect("SubmitIdentity");

    runner()
        .run(
            &(text(), text(), any::<u32>(), any::<i32>()),
            |(search, cursor, limit, sort_by)| {
                let mut users = app.users();
                let r = rt.block_on(users.list_users(req(
                    "acme",
                    pb::ListUsersRequest {
                        search,
                        cursor,
                        limit,
                        sort_by,
                        ..Default::default()
                    },
                )));
                acceptable("ListUsers", r)
            },
        )
        .expect("ListUsers");

    runner()
        .run(
            &((text(), text(), text()), (timestamp(), timestamp()), text()),
            |((aggregate_type, aggregate_id, event_type), (from_time, to_time), page_token)| {
                let mut audit = AuditServiceClient::new(app.channel());
                let r = rt.block_on(audit.list_events(req(
                    "acme",
                    pb::ListEventsRequest {
                        filter: Some(pb::EventFilter {
                            aggregate_type,
                            aggregate_id,
                            event_type,
                            from_time,
                            to_time,
                            ..Default::default()
                        }),
                        page_token,
                        ..Default::default()
                    },
                )));
                acceptable("ListEvents", r)
            },
        )
        .expect("ListEvents");

    runner()
        .run(
            &(text(), prop_oneof![Just(user.clone()), text()], timestamp()),
            |(aggregate_type, aggregate_id, time)| {
                let mut audit = AuditServiceClient::new(app.channel());
                let r = rt.block_on(audit.get_aggregate_state_at(req(
                    "acme",
                    pb::GetAggregateStateAtRequest {
                        aggregate_type,
                        aggregate_id,
                        at: time.map(pb::get_aggregate_state_at_request::At::Time),
                    },
                )));
                acceptable("GetAggregateStateAt", r)
            },
        )
        .expect("GetAggregateStateAt");

    // After all that, the server still serves, and what was stored still reads back.
    let got = rt
        .block_on(app.users().get_user(req("acme", ask::get_user(&user))))
        .expect("the server still answers")
        .into_inner();
    assert_eq!(got.user.expect("user").email, "fuzz@example.com");
    drop(app);
}
