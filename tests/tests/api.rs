//! Integration tests: the real server on port 0, a fresh database per test, real tonic
//! clients. Every scenario runs on PostgreSQL and on the embedded SQLite store.

#[macro_use]
mod common;

use common::*;
use identity_proto::v1 as pb;
use tonic::Code;

on_both_stores!(
    registering_and_reading_a_user,
    invalid_input_is_rejected_with_field_violations,
    a_call_without_a_tenant_is_rejected,
    tenants_never_see_each_other,
    concurrent_registrations_of_one_email_let_exactly_one_win,
    concurrent_registrations_of_one_external_id_let_exactly_one_win,
    two_servers_on_one_store_never_both_take_an_email,
    wallet_credits_and_debits_are_idempotent_and_never_negative,
    concurrent_credits_to_one_wallet_are_all_counted,
    email_change_is_confirmed_by_code_and_locks_after_five_wrong_codes,
    passwords_are_verified_and_legacy_ones_upgraded,
    bulk_upsert_reports_each_item_on_its_own,
    profile_updates_roles_deactivation_and_merge,
    status_tiers_are_managed,
    identification_levels_follow_the_rules,
    events_record_who_did_what,
);

mod scenarios {
    use super::*;

    fn user_input(email: &str) -> pb::UserInput {
        pb::UserInput {
            email: email.into(),
            ..Default::default()
        }
    }

    pub(super) async fn registering_and_reading_a_user(store: Store) {
        let app = spawn_app(store).await;
        let registered = app
            .users()
            .register_user(req(
                "acme",
                pb::RegisterUserRequest {
                    user: Some(pb::UserInput {
                        email: "Ada@Example.COM".into(),
                        phone: "+372 5555 1234".into(),
                        external_id: "crm-1".into(),
                        first_name: "Ada".into(),
                        last_name: "Lovelace".into(),
                        locale: "en".into(),
                        ..Default::default()
                    }),
                },
            ))
            .await
            .expect("registers")
            .into_inner();
        assert!(registered.position > 0);
        let user = registered.user.expect("user");
        assert_eq!(user.email, "ada@example.com");
        assert_eq!(user.phone, "37255551234");
        assert!(user.identifier_email.ends_with("@acme.id"));
        assert!(user.active);

        let fetched = app
            .users()
            .get_user(req(
                "acme",
                pb::GetUserRequest {
                    user_id: user.user_id.clone(),
                    read_mask: None,
                },
            ))
            .await
            .expect("reads")
            .into_inner()
            .user
            .expect("user");
        assert_eq!(fetched, user);

        let duplicate = app
            .users()
            .register_user(req(
                "acme",
                pb::RegisterUserRequest {
                    user: Some(user_input("ADA@example.com")),
                },
            ))
            .await;
        assert_error(duplicate, Code::AlreadyExists, "EMAIL_ALREADY_ASSIGNED");

        let unknown = app
            .users()
            .get_user(req(
                "acme",
                pb::GetUserRequest {
                    user_id: uuid::Uuid::new_v4().to_string(),
                    read_mask: None,
                },
            ))
            .await;
        assert_error(unknown, Code::NotFound, "USER_NOT_FOUND");
    }

    pub(super) async fn invalid_input_is_rejected_with_field_violations(store: Store) {
        let app = spawn_app(store).await;
        let status = assert_error(
            app.users()
                .register_user(req(
                    "acme",
                    pb::RegisterUserRequest {
                        user: Some(pb::UserInput {
                            email: "not-an-email".into(),
                            phone: "12".into(),
                            ..Default::default()
                        }),
                    },
                ))
                .await,
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        );
        use tonic_types::StatusExt;
        let details = status.get_error_details();
        let fields: Vec<String> = details
            .bad_request()
            .expect("bad request details")
            .field_violations
            .iter()
            .map(|v| v.field.clone())
            .collect();
        assert_eq!(fields, vec!["user.email", "user.phone"]);

        assert_error(
            app.users()
                .register_user(req(
                    "acme",
                    pb::RegisterUserRequest {
                        user: Some(pb::UserInput::default()),
                    },
                ))
                .await,
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        );
        assert_error(
            app.users()
                .get_user(req(
                    "acme",
                    pb::GetUserRequest {
                        user_id: "nope".into(),
                        read_mask: None,
                    },
                ))
                .await,
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        );
        let huge = "x".repeat(20 * 1024);
        let mut custom = identity_proto::prost_types::Struct::default();
        custom.fields.insert(
            "blob".into(),
            identity_proto::prost_types::Value {
                kind: Some(identity_proto::prost_types::value::Kind::StringValue(huge)),
            },
        );
        assert_error(
            app.users()
                .register_user(req(
                    "acme",
                    pb::RegisterUserRequest {
                        user: Some(pb::UserInput {
                            email: "big@example.com".into(),
                            custom_data: Some(custom),
                            ..Default::default()
                        }),
                    },
                ))
                .await,
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        );
        // Nothing of the refused requests was stored: the email is still free.
        app.register("acme", "big@example.com").await;
    }

    pub(super) async fn a_call_without_a_tenant_is_rejected(store: Store) {
        let app = spawn_app(store).await;
        let result = app
            .users()
            .register_user(tonic::Request::new(pb::RegisterUserRequest {
                user: Some(user_input("a@example.com")),
            }))
            .await;
        assert_error(result, Code::Unauthenticated, "UNAUTHENTICATED");
        // Naming a tenant never creates it.
        let unknown = app
            .users()
            .register_user(req(
                "no-such-tenant",
                pb::RegisterUserRequest {
                    user: Some(user_input("a@example.com")),
                },
            ))
            .await;
        assert_error(unknown, Code::NotFound, "TENANT_NOT_FOUND");
        let bad = app
            .users()
            .register_user(req(
                "Not A Tenant!",
                pb::RegisterUserRequest {
                    user: Some(user_input("a@example.com")),
                },
            ))
            .await;
        assert_error(bad, Code::InvalidArgument, "INVALID_METADATA");
    }

    pub(super) async fn tenants_never_see_each_other(store: Store) {
        let app = spawn_app(store).await;
        let a = app.register("tenant-a", "shared@example.com").await;
        // The same email is free in another tenant.
        let b = app.register("tenant-b", "shared@example.com").await;
        assert_ne!(a, b);
        let across = app
            .users()
            .get_user(req(
                "tenant-b",
                pb::GetUserRequest {
                    user_id: a.clone(),
                    read_mask: None,
                },
            ))
            .await;
        assert_error(across, Code::NotFound, "USER_NOT_FOUND");
        let wallet = app.active_wallet("tenant-a", &a).await;
        let wallet_across = app
            .wallets()
            .get_wallet(req(
                "tenant-b",
                pb::GetWalletRequest {
                    wallet_id: wallet.clone(),
                },
            ))
            .await;
        assert_error(wallet_across, Code::NotFound, "WALLET_NOT_FOUND");
        let credit_across = app
            .wallets()
            .credit_tokens(req(
                "tenant-b",
                pb::CreditTokensRequest {
                    wallet_id: wallet,
                    token: "PTS".into(),
                    amount: "5".into(),
                    idempotency_key: "k".into(),
                },
            ))
            .await;
        assert_error(credit_across, Code::NotFound, "WALLET_NOT_FOUND");
    }

    async fn race(
        app: &TestApp,
        n: usize,
        make: impl Fn(usize) -> pb::UserInput,
    ) -> (usize, Vec<tonic::Status>) {
        let calls = (0..n).map(|i| {
            let mut client = app.users();
            let input = make(i);
            async move {
                client
                    .register_user(req("acme", pb::RegisterUserRequest { user: Some(input) }))
                    .await
            }
        });
        let results = futures::future::join_all(calls).await;
        let ok = results.iter().filter(|r| r.is_ok()).count();
        let errors = results.into_iter().filter_map(Result::err).collect();
        (ok, errors)
    }

    pub(super) async fn concurrent_registrations_of_one_email_let_exactly_one_win(store: Store) {
        let app = spawn_app(store).await;
        let (ok, errors) = race(&app, 24, |i| pb::UserInput {
            email: "race@example.com".into(),
            external_id: format!("ext-{i}"),
            ..Default::default()
        })
        .await;
        assert_eq!(ok, 1, "exactly one registration wins: {errors:?}");
        assert_eq!(errors.len(), 23);
        for e in &errors {
            assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");
            assert_eq!(reason(e), "EMAIL_ALREADY_ASSIGNED");
        }
        // The losers released their external ids: each can still register.
        app.users()
            .register_user(req(
                "acme",
                pb::RegisterUserRequest {
                    user: Some(pb::UserInput {
                        external_id: "ext-3".into(),
                        ..Default::default()
                    }),
                },
            ))
            .await
            .map(|_| ())
            .or_else(|e| {
                if reason(&e) == "EXTERNAL_ID_ALREADY_ASSIGNED" {
                    Ok(())
                } else {
                    Err(e)
                }
            })
            .expect("ext-3 is free, or it belonged to the winner");
    }

    pub(super) async fn concurrent_registrations_of_one_external_id_let_exactly_one_win(
        store: Store,
    ) {
        let app = spawn_app(store).await;
        let (ok, errors) = race(&app, 24, |i| pb::UserInput {
            email: format!("u{i}@example.com"),
            external_id: "crm-42".into(),
            ..Default::default()
        })
        .await;
        assert_eq!(ok, 1, "exactly one registration wins: {errors:?}");
        for e in &errors {
            assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");
            assert_eq!(reason(e), "EXTERNAL_ID_ALREADY_ASSIGNED");
        }
    }

    /// Each server serializes commands per aggregate in-process; across servers only the
    /// store's primary key decides. Race registrations through two servers on one store.
    pub(super) async fn two_servers_on_one_store_never_both_take_an_email(store: Store) {
        let app = spawn_app(store).await;
        let (addr2, _stop2, _server2) = start_server(app.db.url()).await;
        let channel2 = tonic::transport::Channel::from_shared(format!("http://{addr2}"))
            .expect("uri")
            .connect()
            .await
            .expect("connect");
        for round in 0..5 {
            let email = format!("twin{round}@example.com");
            let calls = (0..16).map(|i| {
                let mut client = if i % 2 == 0 {
                    app.users()
                } else {
                    identity_proto::v1::user_service_client::UserServiceClient::new(
                        channel2.clone(),
                    )
                };
                let input = pb::UserInput {
                    email: email.clone(),
                    ..Default::default()
                };
                async move {
                    client
                        .register_user(req("acme", pb::RegisterUserRequest { user: Some(input) }))
                        .await
                }
            });
            let results = futures::future::join_all(calls).await;
            let ok = results.iter().filter(|r| r.is_ok()).count();
            assert_eq!(ok, 1, "round {round}: {results:?}");
            for e in results.iter().filter_map(|r| r.as_ref().err()) {
                assert_eq!(reason(e), "EMAIL_ALREADY_ASSIGNED", "{e:?}");
            }
        }
    }

    pub(super) async fn wallet_credits_and_debits_are_idempotent_and_never_negative(store: Store) {
        let app = spawn_app(store).await;
        let user = app.register("acme", "w@example.com").await;
        let wallet = app.active_wallet("acme", &user).await;
        let mut w = app.wallets();

        let first = w
            .credit_tokens(req("acme", credit(&wallet, "100", "c1")))
            .await
            .expect("credits")
            .into_inner();
        assert_eq!(first.balance, "100");
        assert!(!first.replayed);
        let retry = w
            .credit_tokens(req("acme", credit(&wallet, "100", "c1")))
            .await
            .expect("retry")
            .into_inner();
        assert_eq!(retry.balance, "100");
        assert!(retry.replayed);
        assert_eq!(
            retry.position, first.position,
            "a retry reports the original outcome"
        );
        assert_error(
            w.credit_tokens(req("acme", credit(&wallet, "101", "c1")))
                .await,
            Code::FailedPrecondition,
            "IDEMPOTENCY_KEY_REUSED",
        );
        let status = assert_error(
            w.debit_tokens(req("acme", debit(&wallet, "150", "d1")))
                .await,
            Code::FailedPrecondition,
            "INSUFFICIENT_BALANCE",
        );
        use tonic_types::StatusExt;
        let info = status
            .get_error_details()
            .error_info()
            .cloned()
            .expect("info");
        assert_eq!(
            info.metadata.get("available").map(String::as_str),
            Some("100")
        );
        let debited = w
            .debit_tokens(req("acme", debit(&wallet, "40", "d2")))
            .await
            .expect("debits")
            .into_inner();
        assert_eq!(debited.balance, "60");
        assert_error(
            w.credit_tokens(req("acme", credit(&wallet, "-5", "c9")))
                .await,
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        );
        assert_error(
            w.credit_tokens(req("acme", credit(&wallet, "1.5", "c9")))
                .await,
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        );

        w.suspend_wallet(req(
            "acme",
            pb::SuspendWalletRequest {
                wallet_id: wallet.clone(),
            },
        ))
        .await
        .expect("suspends");
        assert_error(
            w.debit_tokens(req("acme", debit(&wallet, "1", "d3"))).await,
            Code::FailedPrecondition,
            "WALLET_NOT_USABLE",
        );
        let got = w
            .get_wallet(req(
                "acme",
                pb::GetWalletRequest {
                    wallet_id: wallet.clone(),
                },
            ))
            .await
            .expect("reads")
            .into_inner()
            .wallet
            .expect("wallet");
        assert_eq!(got.status, pb::WalletStatus::Suspended as i32);
        assert_eq!(
            got.balances,
            vec![pb::TokenBalance {
                token: "PTS".into(),
                amount: "60".into()
            }]
        );
        assert!(got.address.starts_with("0x") && got.address.len() == 42);

        // Opening the same wallet again is refused; the address is the same forever.
        let again = w
            .open_wallet(req(
                "acme",
                pb::OpenWalletRequest {
                    owner_type: pb::OwnerType::User as i32,
                    owner_id: user.clone(),
                    wallet_type: pb::WalletType::Internal as i32,
                    network: "polygon".into(),
                    address: String::new(),
                },
            ))
            .await;
        assert_error(again, Code::AlreadyExists, "WALLET_ALREADY_EXISTS");
    }

    pub(super) async fn concurrent_credits_to_one_wallet_are_all_counted(store: Store) {
        let app = spawn_app(store).await;
        let user = app.register("acme", "hot@example.com").await;
        let wallet = app.active_wallet("acme", &user).await;
        let calls = (0..32).map(|i| {
            let mut w = app.wallets();
            let wallet = wallet.clone();
            async move {
                w.credit_tokens(req("acme", credit(&wallet, "3", &format!("k{i}"))))
                    .await
            }
        });
        let results = futures::future::join_all(calls).await;
        for r in &results {
            assert!(r.is_ok(), "every credit lands: {r:?}");
        }
        let got = app
            .wallets()
            .get_wallet(req("acme", pb::GetWalletRequest { wallet_id: wallet }))
            .await
            .expect("reads")
            .into_inner()
            .wallet
            .expect("wallet");
        assert_eq!(got.balances[0].amount, "96");
    }

    pub(super) async fn email_change_is_confirmed_by_code_and_locks_after_five_wrong_codes(
        store: Store,
    ) {
        let app = spawn_app(store).await;
        let user = app.register("acme", "old@example.com").await;
        let mut u = app.users();
        let requested = u
            .request_email_change(codes_req(
                "acme",
                pb::RequestEmailChangeRequest {
                    user_id: user.clone(),
                    email: "new@example.com".into(),
                },
            ))
            .await
            .expect("requests")
            .into_inner();
        assert_eq!(requested.code.len(), 6);
        let wrong = if requested.code == "000000" {
            "111111"
        } else {
            "000000"
        };
        for attempt in 1..=5 {
            let s = assert_error(
                u.confirm_email(req(
                    "acme",
                    pb::ConfirmEmailRequest {
                        user_id: user.clone(),
                        code: wrong.into(),
                    },
                ))
                .await,
                Code::InvalidArgument,
                "INVALID_CODE",
            );
            assert!(
                s.message()
                    .contains(&format!("{} attempts left", 5 - attempt)),
                "{s:?}"
            );
        }
        assert_error(
            u.confirm_email(req(
                "acme",
                pb::ConfirmEmailRequest {
                    user_id: user.clone(),
                    code: requested.code.clone(),
                },
            ))
            .await,
            Code::ResourceExhausted,
            "RATE_LIMIT_EXCEEDED",
        );
        // The defect: a new request reset the five-attempt lock, so asking again and again
        // gave unlimited guesses. Now it is refused, with when to retry.
        let again = assert_error(
            u.request_email_change(codes_req(
                "acme",
                pb::RequestEmailChangeRequest {
                    user_id: user.clone(),
                    email: "new@example.com".into(),
                },
            ))
            .await,
            Code::ResourceExhausted,
            "RATE_LIMIT_EXCEEDED",
        );
        assert!(retry_after(&again) > 0, "{again:?}");
        // An ordinary caller never sees the code: it goes to the person.
        let other = app.register("acme", "other-old@example.com").await;
        let hidden = u
            .request_email_change(req(
                "acme",
                pb::RequestEmailChangeRequest {
                    user_id: other,
                    email: "other-new@example.com".into(),
                },
            ))
            .await
            .expect("requests")
            .into_inner();
        assert!(hidden.code.is_empty(), "the code reached the caller");
        // While locked, the new address was not kept: someone else may still take it... until
        // a user confirms it with a code.
        let user = app.register("acme", "old2@example.com").await;
        let fresh = u
            .request_email_change(codes_req(
                "acme",
                pb::RequestEmailChangeRequest {
                    user_id: user.clone(),
                    email: "new@example.com".into(),
                },
            ))
            .await
            .expect("requests")
            .into_inner();
        let confirmed = u
            .confirm_email(req(
                "acme",
                pb::ConfirmEmailRequest {
                    user_id: user.clone(),
                    code: fresh.code,
                },
            ))
            .await
            .expect("confirms")
            .into_inner();
        assert_eq!(confirmed.email, "new@example.com");
        let got = u
            .get_user(req(
                "acme",
                pb::GetUserRequest {
                    user_id: user.clone(),
                    read_mask: None,
                },
            ))
            .await
            .expect("reads")
            .into_inner()
            .user
            .expect("user");
        assert_eq!(got.email, "new@example.com");
        assert!(got.email_confirmed);
        // The old address is free again; the new one is taken.
        app.register("acme", "old2@example.com").await;
        assert_error(
            u.register_user(req(
                "acme",
                pb::RegisterUserRequest {
                    user: Some(user_input("new@example.com")),
                },
            ))
            .await,
            Code::AlreadyExists,
            "EMAIL_ALREADY_ASSIGNED",
        );
        assert_error(
            u.confirm_phone(req(
                "acme",
                pb::ConfirmPhoneRequest {
                    user_id: user,
                    code: "123456".into(),
                },
            ))
            .await,
            Code::FailedPrecondition,
            "NO_PENDING_CHANGE",
        );
    }

    pub(super) async fn passwords_are_verified_and_legacy_ones_upgraded(store: Store) {
        let app = spawn_app(store).await;
        let user = app.register("acme", "pw@example.com").await;
        let mut u = app.users();
        assert_error(
            u.verify_password(req(
                "acme",
                pb::VerifyPasswordRequest {
                    user_id: user.clone(),
                    password: "whatever1".into(),
                },
            ))
            .await,
            Code::FailedPrecondition,
            "NO_CREDENTIAL",
        );
        assert_error(
            u.set_password(req(
                "acme",
                pb::SetPasswordRequest {
                    user_id: user.clone(),
                    password: "short".into(),
                },
            ))
            .await,
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        );
        u.set_password(req(
            "acme",
            pb::SetPasswordRequest {
                user_id: user.clone(),
                password: "correct horse".into(),
            },
        ))
        .await
        .expect("sets");
        let ok = u
            .verify_password(req(
                "acme",
                pb::VerifyPasswordRequest {
                    user_id: user.clone(),
                    password: "correct horse".into(),
                },
            ))
            .await
            .expect("verifies")
            .into_inner();
        assert!(ok.valid && !ok.upgraded);
        assert_error(
            u.verify_password(req(
                "acme",
                pb::VerifyPasswordRequest {
                    user_id: user.clone(),
                    password: "wrong horse".into(),
                },
            ))
            .await,
            Code::Unauthenticated,
            "INVALID_CREDENTIALS",
        );
        assert_error(
            u.change_password(req(
                "acme",
                pb::ChangePasswordRequest {
                    user_id: user.clone(),
                    old_password: "nope".into(),
                    new_password: "battery staple".into(),
                },
            ))
            .await,
            Code::Unauthenticated,
            "INVALID_CREDENTIALS",
        );
        u.change_password(req(
            "acme",
            pb::ChangePasswordRequest {
                user_id: user.clone(),
                old_password: "correct horse".into(),
                new_password: "battery staple".into(),
            },
        ))
        .await
        .expect("changes");
        u.verify_password(req(
            "acme",
            pb::VerifyPasswordRequest {
                user_id: user.clone(),
                password: "battery staple".into(),
            },
        ))
        .await
        .expect("new password works");

        // A migrated credential: base64(sha1("s4lt" + "legacy-pass")).
        let legacy = app.register("acme", "legacy@example.com").await;
        u.import_legacy_password(req(
            "acme",
            pb::ImportLegacyPasswordRequest {
                user_id: legacy.clone(),
                salt: "s4lt".into(),
                sha1_base64: "+nZmB2ryNpTA6hMngzCgCPVJ16I=".into(),
            },
        ))
        .await
        .expect("imports");
        let first = u
            .verify_password(req(
                "acme",
                pb::VerifyPasswordRequest {
                    user_id: legacy.clone(),
                    password: "legacy-pass".into(),
                },
            ))
            .await
            .expect("verifies")
            .into_inner();
        assert!(
            first.upgraded,
            "the legacy credential is upgraded on first success"
        );
        let second = u
            .verify_password(req(
                "acme",
                pb::VerifyPasswordRequest {
                    user_id: legacy,
                    password: "legacy-pass".into(),
                },
            ))
            .await
            .expect("verifies")
            .into_inner();
        assert!(!second.upgraded);
    }

    pub(super) async fn bulk_upsert_reports_each_item_on_its_own(store: Store) {
        let app = spawn_app(store).await;
        let existing = app.register("acme", "known@example.com").await;
        let result = app
            .users()
            .upsert_users(req(
                "acme",
                pb::UpsertUsersRequest {
                    users: vec![
                        pb::UserInput {
                            email: "known@example.com".into(),
                            first_name: "Known".into(),
                            ..Default::default()
                        },
                        pb::UserInput {
                            email: "fresh@example.com".into(),
                            ..Default::default()
                        },
                        pb::UserInput {
                            email: "broken".into(),
                            ..Default::default()
                        },
                        pb::UserInput {
                            external_id: "crm-9".into(),
                            ..Default::default()
                        },
                    ],
                },
            ))
            .await
            .expect("the call succeeds")
            .into_inner()
            .results;
        assert_eq!(result.len(), 4);
        assert_eq!(result[0].user_id, existing);
        assert!(!result[0].created && result[0].error.is_none());
        assert!(result[1].created && result[1].error.is_none());
        let err = result[2].error.as_ref().expect("item 2 fails");
        assert_eq!(err.code, "INVALID_ARGUMENT");
        assert_eq!(err.field_violations[0].field, "users[2].email");
        assert!(result[3].created && result[3].error.is_none());
        let known = app
            .users()
            .get_user(req(
                "acme",
                pb::GetUserRequest {
                    user_id: existing,
                    read_mask: None,
                },
            ))
            .await
            .expect("reads")
            .into_inner()
            .user
            .expect("user");
        assert_eq!(known.first_name, "Known");
    }

    pub(super) async fn profile_updates_roles_deactivation_and_merge(store: Store) {
        let app = spawn_app(store).await;
        let user = app.register("acme", "p@example.com").await;
        let mut u = app.users();
        let updated = u
            .update_user_profile(req(
                "acme",
                pb::UpdateUserProfileRequest {
                    user_id: user.clone(),
                    profile: Some(pb::UserInput {
                        first_name: "Grace".into(),
                        last_name: "Ignored".into(),
                        ..Default::default()
                    }),
                    update_mask: Some(identity_proto::prost_types::FieldMask {
                        paths: vec!["first_name".into()],
                    }),
                },
            ))
            .await
            .expect("updates")
            .into_inner()
            .user
            .expect("user");
        assert_eq!(updated.first_name, "Grace");
        assert_eq!(updated.last_name, "");
        assert_error(
            u.update_user_profile(req(
                "acme",
                pb::UpdateUserProfileRequest {
                    user_id: user.clone(),
                    profile: None,
                    update_mask: Some(identity_proto::prost_types::FieldMask {
                        paths: vec!["email".into()],
                    }),
                },
            ))
            .await,
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        );
        let roles = u
            .set_user_roles(req(
                "acme",
                pb::SetUserRolesRequest {
                    user_id: user.clone(),
                    roles: vec!["admin".into()],
                    replace: false,
                },
            ))
            .await
            .expect("roles")
            .into_inner();
        assert_eq!(roles.roles, vec!["admin"]);
        let roles = u
            .set_user_roles(req(
                "acme",
                pb::SetUserRolesRequest {
                    user_id: user.clone(),
                    roles: vec!["support".into()],
                    replace: false,
                },
            ))
            .await
            .expect("roles")
            .into_inner();
        assert_eq!(roles.roles, vec!["admin", "support"]);
        let roles = u
            .set_user_roles(req(
                "acme",
                pb::SetUserRolesRequest {
                    user_id: user.clone(),
                    roles: vec!["viewer".into()],
                    replace: true,
                },
            ))
            .await
            .expect("roles")
            .into_inner();
        assert_eq!(roles.roles, vec!["viewer"]);

        u.deactivate_user(req(
            "acme",
            pb::DeactivateUserRequest {
                user_id: user.clone(),
            },
        ))
        .await
        .expect("deactivates");
        assert_error(
            u.set_user_roles(req(
                "acme",
                pb::SetUserRolesRequest {
                    user_id: user.clone(),
                    roles: vec!["x".into()],
                    replace: false,
                },
            ))
            .await,
            Code::FailedPrecondition,
            "USER_INACTIVE",
        );
        u.reactivate_user(req(
            "acme",
            pb::ReactivateUserRequest {
                user_id: user.clone(),
            },
        ))
        .await
        .expect("reactivates");

        let survivor = app.register("acme", "s@example.com").await;
        u.merge_users(req(
            "acme",
            pb::MergeUsersRequest {
                source_user_id: user.clone(),
                target_user_id: survivor.clone(),
            },
        ))
        .await
        .expect("merges");
        let merged = u
            .get_user(req(
                "acme",
                pb::GetUserRequest {
                    user_id: user.clone(),
                    read_mask: None,
                },
            ))
            .await
            .expect("reads")
            .into_inner()
            .user
            .expect("user");
        assert_eq!(merged.merged_into, survivor);
        assert_error(
            u.deactivate_user(req("acme", pb::DeactivateUserRequest { user_id: user }))
                .await,
            Code::FailedPrecondition,
            "USER_MERGED",
        );
    }

    pub(super) async fn status_tiers_are_managed(store: Store) {
        let app = spawn_app(store).await;
        let mut t = app.tiers();
        let created = t
            .create_status_tier(req(
                "acme",
                pb::CreateStatusTierRequest {
                    name: "Gold".into(),
                    description: "For regulars".into(),
                    min_balance: "1000".into(),
                    discount_percentage: "12.5".into(),
                    image_url: "https://cdn.example.com/gold.png".into(),
                    eligible_tokens: vec!["pts".into()],
                },
            ))
            .await
            .expect("creates")
            .into_inner()
            .tier
            .expect("tier");
        assert_eq!(created.discount_percentage, "12.5");
        assert_eq!(created.eligible_tokens, vec!["PTS"]);
        assert_error(
            t.create_status_tier(req(
                "acme",
                pb::CreateStatusTierRequest {
                    name: "Bad".into(),
                    min_balance: "10".into(),
                    discount_percentage: "101".into(),
                    ..Default::default()
                },
            ))
            .await,
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        );
        let updated = t
            .update_status_tier(req(
                "acme",
                pb::UpdateStatusTierRequest {
                    tier_id: created.tier_id.clone(),
                    min_balance: Some("2000".into()),
                    ..Default::default()
                },
            ))
            .await
            .expect("updates")
            .into_inner()
            .tier
            .expect("tier");
        assert_eq!(updated.min_balance, "2000");
        assert_eq!(updated.name, "Gold");
        let tokens = t
            .add_eligible_token(req(
                "acme",
                pb::AddEligibleTokenRequest {
                    tier_id: created.tier_id.clone(),
                    token: "USDC".into(),
                },
            ))
            .await
            .expect("adds")
            .into_inner();
        assert_eq!(tokens.eligible_tokens, vec!["PTS", "USDC"]);
        let tokens = t
            .remove_eligible_token(req(
                "acme",
                pb::RemoveEligibleTokenRequest {
                    tier_id: created.tier_id.clone(),
                    token: "PTS".into(),
                },
            ))
            .await
            .expect("removes")
            .into_inner();
        assert_eq!(tokens.eligible_tokens, vec!["USDC"]);
        t.retire_status_tier(req(
            "acme",
            pb::RetireStatusTierRequest {
                tier_id: created.tier_id.clone(),
            },
        ))
        .await
        .expect("retires");
        assert_error(
            t.add_eligible_token(req(
                "acme",
                pb::AddEligibleTokenRequest {
                    tier_id: created.tier_id.clone(),
                    token: "EUR".into(),
                },
            ))
            .await,
            Code::FailedPrecondition,
            "TIER_RETIRED",
        );
        let got = t
            .get_status_tier(req(
                "acme",
                pb::GetStatusTierRequest {
                    tier_id: created.tier_id,
                },
            ))
            .await
            .expect("reads")
            .into_inner()
            .tier
            .expect("tier");
        assert!(got.retired);
    }

    pub(super) async fn identification_levels_follow_the_rules(store: Store) {
        let app = spawn_app(store).await;
        let user = app.register("acme", "kyc@example.com").await;
        let other = app.register("acme", "kyc2@example.com").await;
        let mut k = app.identification();
        let level = |l: pb::IdentificationLevel, reason: &str, user: &str| {
            pb::ChangeIdentificationLevelRequest {
                user_id: user.into(),
                level: l as i32,
                reason: reason.into(),
            }
        };
        assert_error(
            k.change_identification_level(req(
                "acme",
                level(pb::IdentificationLevel::Identified, "", &user),
            ))
            .await,
            Code::FailedPrecondition,
            "IDENTITY_REQUIRED",
        );
        let identity = pb::Identity {
            first_name: "Ada".into(),
            surname: "Lovelace".into(),
            nationality: "EE".into(),
            person_code: "38601010123".into(),
            person_code_country: String::new(),
            date_of_birth: "1986-01-01".into(),
        };
        k.submit_identity(req(
            "acme",
            pb::SubmitIdentityRequest {
                user_id: user.clone(),
                identity: Some(identity.clone()),
            },
        ))
        .await
        .expect("submits");
        assert_error(
            k.submit_identity(req(
                "acme",
                pb::SubmitIdentityRequest {
                    user_id: other,
                    identity: Some(identity),
                },
            ))
            .await,
            Code::AlreadyExists,
            "PERSON_CODE_ALREADY_ASSIGNED",
        );
        assert_error(
            k.change_identification_level(req(
                "acme",
                level(pb::IdentificationLevel::Identified, "", &user),
            ))
            .await,
            Code::FailedPrecondition,
            "DOCUMENT_REQUIRED",
        );
        k.attach_document(req(
            "acme",
            pb::AttachDocumentRequest {
                user_id: user.clone(),
                kind: pb::DocumentKind::Passport as i32,
                number: "K1234567".into(),
                issue_date: "2020-01-01".into(),
                expiry_date: "2099-01-01".into(),
            },
        ))
        .await
        .expect("attaches");
        let changed = k
            .change_identification_level(req(
                "acme",
                level(
                    pb::IdentificationLevel::Identified,
                    "passport checked",
                    &user,
                ),
            ))
            .await
            .expect("raises")
            .into_inner();
        assert_eq!(changed.level, pb::IdentificationLevel::Identified as i32);
        let refused = assert_error(
            k.change_identification_level(req(
                "acme",
                level(pb::IdentificationLevel::BasicIdentified, "", &user),
            ))
            .await,
            Code::InvalidArgument,
            "REASON_REQUIRED",
        );
        let violations = tonic_types::StatusExt::get_error_details(&refused)
            .bad_request()
            .map(|b| b.field_violations.clone())
            .unwrap_or_default();
        assert!(
            violations.iter().any(|v| v.field == "reason"),
            "{violations:?}"
        );
        k.set_pep_status(req(
            "acme",
            pb::SetPepStatusRequest {
                user_id: user.clone(),
                pep: true,
                reason: "minister".into(),
            },
        ))
        .await
        .expect("sets pep");
        let got = k
            .get_identification(req("acme", pb::GetIdentificationRequest { user_id: user }))
            .await
            .expect("reads")
            .into_inner()
            .identification
            .expect("identification");
        assert!(got.pep);
        assert_eq!(got.documents.len(), 1);
        assert_eq!(got.identity.expect("identity").person_code_country, "EE");
    }

    pub(super) async fn events_record_who_did_what(store: Store) {
        let app = spawn_app(store).await;
        let mut request = req(
            "acme",
            pb::RegisterUserRequest {
                user: Some(user_input("meta@example.com")),
            },
        );
        request
            .metadata_mut()
            .insert("x-request-id", "req-123".parse().expect("ascii"));
        // Whatever a caller claims to be, the store records who its credential says it is.
        request
            .metadata_mut()
            .insert("x-actor", "mallory".parse().expect("ascii"));
        let user = app
            .users()
            .register_user(request)
            .await
            .expect("registers")
            .into_inner();
        let position = user.position as i64;
        let metadata: String = match &app.db {
            TestDb::Postgres(identity_testkit::PgDatabase { url, .. }) => {
                let pool = sqlx::PgPool::connect(url).await.expect("connect");
                let m: serde_json::Value =
                    sqlx::query_scalar("SELECT metadata FROM events WHERE global_position = $1")
                        .bind(position)
                        .fetch_one(&pool)
                        .await
                        .expect("event row");
                m.to_string()
            }
            TestDb::Sqlite { .. } => {
                // Read through the store API for SQLite: the events of the user aggregate.
                let log = identity_store::EventLog::open(&identity_store::StoreConfig {
                    url: app.db.url().to_string(),
                    max_connections: 1,
                    cache_capacity: 0,
                })
                .await
                .expect("open");
                let id = format!("acme/{}", user.user.expect("user").user_id);
                let events = log
                    .events::<identity_domain::user::User>(&id)
                    .await
                    .expect("events");
                serde_json::to_string(&events[0].metadata).expect("json")
            }
        };
        let actor = format!(r#""actor":"{}""#, kit_actor());
        let admin_id = format!(
            r#""admin_id":"{}""#,
            identity_server::access::bootstrap::dev_admin_id()
        );
        for expected in [
            r#""tenant":"acme""#,
            actor.as_str(),
            r#""principal_kind":"admin""#,
            admin_id.as_str(),
            r#""request_id":"req-123""#,
            r#""command":"RegisterUser""#,
        ] {
            assert!(
                metadata.contains(expected),
                "{expected} missing from {metadata}"
            );
        }
        assert!(
            !metadata.contains("mallory"),
            "x-actor was believed: {metadata}"
        );
    }
}
