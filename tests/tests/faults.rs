//! Trust under faults and hostile load: two replicas on one store, poisoned requests beside
//! good ones, callers that give up early. Each scenario is what a caller sees.

#[macro_use]
mod common;

use std::time::Duration;

use common::*;
use identity_proto::v1 as pb;
use identity_proto::v1::user_service_client::UserServiceClient;
use identity_proto::v1::wallet_service_client::WalletServiceClient;
use tonic::transport::Channel;
use tonic::Code;
use tonic_types::StatusExt;

on_both_stores!(
    a_replica_never_answers_from_state_another_replica_changed,
    bad_registrations_beside_good_ones_fail_alone,
    callers_that_give_up_early_leave_no_orphan_claims,
    bad_input_gets_the_codes_of_grpcs_status_table,
);

/// A second server process on the same store, with its own caches.
pub(crate) struct Replica {
    channel: Channel,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Replica {
    pub(crate) async fn start(app: &TestApp) -> Self {
        let (addr, stop, _server) = start_server(app.db.url()).await;
        let channel = connect(addr).await;
        Self {
            channel,
            _stop: stop,
        }
    }
    pub(crate) fn users(&self) -> UserServiceClient<Channel> {
        UserServiceClient::new(self.channel.clone())
    }
    pub(crate) fn wallets(&self) -> WalletServiceClient<Channel> {
        WalletServiceClient::new(self.channel.clone())
    }
}

fn verify(user: &str, password: &str) -> tonic::Request<pb::VerifyPasswordRequest> {
    req("acme", ask::verify_password(user, password))
}

/// Whether `email` is free: registering it again succeeds (and is then undone by nobody), or
/// it is taken by a user that the directory knows.
async fn assert_not_orphaned(app: &TestApp, email: &str) {
    let again = app
        .users()
        .register_user(registering("acme", user_input(email)))
        .await;
    match again {
        Ok(_) => {}
        Err(status) => {
            assert_eq!(reason(&status), "EMAIL_ALREADY_ASSIGNED", "{status:?}");
            let head = app.head_position().await;
            let exists = ok!(app.users().user_exists(req(
                "acme",
                pb::UserExistsRequest {
                    email: email.into(),
                    min_position: head,
                    ..Default::default()
                },
            )));
            assert!(
                exists.exists,
                "{email} is claimed but no user holds it: an orphan claim"
            );
        }
    }
}

mod scenarios {
    use super::*;

    /// Oversized, too deeply nested and undecodable requests are the caller's bad input, and
    /// a refused lowering of a level names the missing field.
    pub(super) async fn bad_input_gets_the_codes_of_grpcs_status_table(store: Store) {
        let app = spawn_app(store).await;
        let register = |custom_data: prost_types::Struct| {
            req(
                "acme",
                pb::RegisterUserRequest {
                    user: Some(pb::UserInput {
                        email: "deep@example.com".into(),
                        custom_data: Some(custom_data),
                        ..Default::default()
                    }),
                },
            )
        };
        let mut fields = std::collections::BTreeMap::new();
        fields.insert("blob".to_string(), prost_types_value(&"x".repeat(2 << 20)));
        let status = app
            .users()
            .register_user(register(prost_types::Struct { fields }))
            .await
            .expect_err("a 2 MiB message is over the limit");
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        // Past prost's recursion limit: the message cannot even be decoded.
        let status = app
            .users()
            .register_user(register(nested(120)))
            .await
            .expect_err("nested 120 deep");
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        // Decodable, but deeper than custom data may nest.
        let status = app
            .users()
            .register_user(register(nested(20)))
            .await
            .expect_err("nested 20 deep");
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        let violations = status
            .get_error_details()
            .bad_request()
            .map(|b| b.field_violations.clone())
            .unwrap_or_default();
        assert!(
            violations.iter().any(|v| v.field == "user.custom_data"),
            "{violations:?}"
        );
        app.users()
            .register_user(register(nested(8)))
            .await
            .expect("8 levels are fine");
    }

    /// Replica A caches a user and a wallet; replica B changes both; every answer of A
    /// afterwards follows B's changes, including answers that append nothing.
    pub(super) async fn a_replica_never_answers_from_state_another_replica_changed(store: Store) {
        let app = spawn_app(store).await;
        let b = Replica::start(&app).await;
        let user = app.register("acme", "stale@example.com").await;
        let mut a_users = app.users();
        a_users
            .set_password(req("acme", ask::set_password(&user, "old password 1")))
            .await
            .expect("sets on A");
        a_users
            .verify_password(verify(&user, "old password 1"))
            .await
            .expect("A verifies (and caches the user)");
        b.users()
            .change_password(req(
                "acme",
                pb::ChangePasswordRequest {
                    user_id: user.clone(),
                    old_password: "old password 1".into(),
                    new_password: "new password 2".into(),
                },
            ))
            .await
            .expect("changes on B");
        fails!(
            a_users.verify_password(verify(&user, "old password 1")),
            Code::Unauthenticated,
            "INVALID_CREDENTIALS",
        );
        let ok = ok!(a_users.verify_password(verify(&user, "new password 2")));
        assert!(ok.valid);
        // Claims: B releases an email by a confirmed change; A's cached claim must follow.
        let code = ok!(b.users().request_email_change(codes_req(
            "acme",
            ask::email_change(&user, "moved@example.com"),
        )))
        .code;
        b.users()
            .confirm_email(req(
                "acme",
                pb::ConfirmEmailRequest {
                    user_id: user.clone(),
                    code,
                },
            ))
            .await
            .expect("confirms on B");
        let fresh = app.register("acme", "stale@example.com").await;
        assert_ne!(fresh, user, "the old address is free again, seen from A");

        b.users()
            .deactivate_user(req("acme", ask::deactivate(&user)))
            .await
            .expect("deactivates on B");
        let after = a_users
            .verify_password(verify(&user, "new password 2"))
            .await;
        let status = after.expect_err("A must not accept a login of a user B deactivated");
        assert_eq!(reason(&status), "USER_INACTIVE", "{status:?}");

        // Wallets: idempotent retries and refusals on A follow B's movements.
        let holder = app.register("acme", "holder@example.com").await;
        let wallet = app.active_wallet("acme", &holder).await;
        let mut a_wallets = app.wallets();
        a_wallets
            .credit_tokens(req("acme", credit(&wallet, "5", "c1")))
            .await
            .expect("credit on A");
        b.wallets()
            .credit_tokens(req("acme", credit(&wallet, "10", "c2")))
            .await
            .expect("credit on B");
        let spent = ok!(a_wallets.debit_tokens(req("acme", debit(&wallet, "12", "d1"))));
        assert_eq!(spent.balance, "3");
        b.wallets()
            .debit_tokens(req("acme", debit(&wallet, "3", "d2")))
            .await
            .expect("debit on B");
        b.wallets()
            .credit_tokens(req("acme", credit(&wallet, "7", "c3")))
            .await
            .expect("credit on B");
        let retry = ok!(a_wallets.credit_tokens(req("acme", credit(&wallet, "5", "c1"))));
        assert!(retry.replayed);
        let spent = ok!(a_wallets.debit_tokens(req("acme", debit(&wallet, "7", "d3"))));
        assert_eq!(spent.balance, "0");
    }

    /// Hostile callers send NUL characters (which PostgreSQL's jsonb cannot store) beside
    /// ordinary registrations: every ordinary one succeeds, every bad one is refused as
    /// invalid input with a field violation.
    pub(super) async fn bad_registrations_beside_good_ones_fail_alone(store: Store) {
        let app = spawn_app(store).await;
        let calls = (0..40).map(|i| {
            let mut users = app.users();
            async move {
                let bad = i % 2 == 1;
                let mut input = pb::UserInput {
                    email: format!("batch{i}@example.com"),
                    ..Default::default()
                };
                if bad {
                    let text = |s: &str| prost_types_value(s);
                    let mut fields = std::collections::BTreeMap::new();
                    match i % 3 {
                        0 => {
                            fields.insert("note".to_string(), text("a\u{0}b"));
                        }
                        1 => {
                            fields.insert("k\u{0}ey".to_string(), text("fine"));
                        }
                        _ => {
                            fields.insert("bell".to_string(), text("ring\u{7}"));
                        }
                    }
                    input.custom_data = Some(prost_types::Struct { fields });
                }
                let result = users
                    .register_user(req("acme", pb::RegisterUserRequest { user: Some(input) }))
                    .await;
                (bad, result)
            }
        });
        let results = futures::future::join_all(calls).await;
        for (i, (bad, result)) in results.into_iter().enumerate() {
            if bad {
                let status = result.expect_err("a NUL in custom_data is refused");
                assert_eq!(status.code(), Code::InvalidArgument, "{i}: {status:?}");
                let details = status.get_error_details();
                let violations = details
                    .bad_request()
                    .map(|b| b.field_violations.clone())
                    .unwrap_or_default();
                assert!(
                    violations.iter().any(|v| v.field == "user.custom_data"),
                    "{i}: {violations:?}"
                );
            } else {
                result.unwrap_or_else(|e| panic!("{i}: a good registration failed: {e:?}"));
            }
        }
    }

    /// Registrations and confirmations whose callers give up after 0.5 ms, 1 ms, … : each
    /// either took effect whole or not at all. No value stays claimed without its user.
    pub(super) async fn callers_that_give_up_early_leave_no_orphan_claims(store: Store) {
        let app = spawn_app(store).await;
        let mut timed_out = 0;
        for i in 0..40u64 {
            let email = format!("hasty{i}@example.com");
            let mut request = req(
                "acme",
                pb::RegisterUserRequest {
                    user: Some(pb::UserInput {
                        email: email.clone(),
                        phone: format!("+3725{:07}", 1000 + i),
                        external_id: format!("ext-{i}"),
                        ..Default::default()
                    }),
                },
            );
            request.set_timeout(Duration::from_micros(500 + i * 500));
            if app.users().register_user(request).await.is_err() {
                timed_out += 1;
            }
        }
        for i in 0..40u64 {
            assert_not_orphaned(&app, &format!("hasty{i}@example.com")).await;
        }
        // Email changes confirmed by hasty callers: the new address is either confirmed or
        // still free, and the old one is released exactly when the new one is confirmed.
        for i in 0..20u64 {
            let user = app
                .register("acme", &format!("before{i}@example.com"))
                .await;
            let code = ok!(app.users().request_email_change(codes_req(
                "acme",
                ask::email_change(&user, &format!("after{i}@example.com")),
            )))
            .code;
            let mut confirm = req(
                "acme",
                pb::ConfirmEmailRequest {
                    user_id: user.clone(),
                    code,
                },
            );
            confirm.set_timeout(Duration::from_micros(500 + i * 500));
            if app.users().confirm_email(confirm).await.is_err() {
                timed_out += 1;
            }
            assert_not_orphaned(&app, &format!("after{i}@example.com")).await;
            assert_not_orphaned(&app, &format!("before{i}@example.com")).await;
        }
        assert!(timed_out > 0, "no call timed out: the sweep tested nothing");
    }
}

/// A Struct whose one field holds a Struct, `depth` levels down.
fn nested(depth: usize) -> prost_types::Struct {
    let mut inner = prost_types::Struct::default();
    for _ in 0..depth {
        let mut fields = std::collections::BTreeMap::new();
        fields.insert(
            "x".to_string(),
            prost_types::Value {
                kind: Some(prost_types::value::Kind::StructValue(inner)),
            },
        );
        inner = prost_types::Struct { fields };
    }
    inner
}

fn prost_types_value(s: &str) -> prost_types::Value {
    prost_types::Value {
        kind: Some(prost_types::value::Kind::StringValue(s.to_string())),
    }
}
