//! Read models: read-your-writes, status recomputation, directory queries, rebuild and
//! verification against a replay. Every scenario runs on PostgreSQL and SQLite.

#[macro_use]
mod common;

use std::time::Duration;

use common::*;
use identity_proto::v1 as pb;
use tonic::Code;

on_both_stores!(
    a_caller_reads_its_own_writes_with_min_position,
    cached_balances_follow_every_change,
    a_read_model_that_cannot_reach_min_position_answers_unavailable,
    tier_changes_move_users_between_tiers,
    users_are_listed_searched_sorted_and_paged,
    users_are_looked_up_by_every_key,
    queries_never_cross_tenants,
    a_long_random_workload_leaves_read_models_equal_to_a_replay,
    an_event_a_projector_cannot_apply_is_reported,
    a_read_model_row_no_event_could_write_is_an_error_not_a_default,
);

fn deadline<T>(mut r: tonic::Request<T>, d: Duration) -> tonic::Request<T> {
    r.set_timeout(d);
    r
}

mod scenarios {
    use super::*;

    /// The house issue's finding: a bad stored balance read as zero. Text in a read-model row
    /// that no event writes (an amount that is not a number, an unknown status) now fails the
    /// query (INTERNAL, logged) instead of answering a default.
    pub(super) async fn a_read_model_row_no_event_could_write_is_an_error_not_a_default(
        store: Store,
    ) {
        let app = spawn_app(store).await;
        let user = app.register("acme", "corrupt@example.com").await;
        let wallet = app.active_wallet("acme", &user).await;
        let position = credit(&app, &wallet, "5", "c-1").await;
        let applied = app
            .read_models()
            .await
            .wait_for(
                identity_projections::Projection::Balances,
                position,
                Duration::from_secs(10),
            )
            .await
            .expect("waits");
        assert!(applied, "the balances read model caught up");
        let read = || {
            let mut users = app.users();
            let user = user.clone();
            async move {
                users
                    .get_user_with_balances(req(
                        "acme",
                        pb::GetUserWithBalancesRequest {
                            key: Some(pb::get_user_with_balances_request::Key::UserId(user)),
                            min_position: position,
                        },
                    ))
                    .await
            }
        };
        // Nothing was read before: no cached answer hides the rows (errors are never cached).
        for corruption in [
            "UPDATE rm_balances SET amount = 'lots'",
            "UPDATE rm_balances SET amount = '5'; UPDATE rm_wallets SET status = 'weird'",
        ] {
            app.db.sql(corruption).await.expect("corrupts");
            let refused = read().await.expect_err("a corrupt row is not answered");
            assert_eq!(refused.code(), Code::Internal, "{refused:?}");
        }
        app.db
            .sql("UPDATE rm_wallets SET status = 'active'")
            .await
            .expect("repairs");
        let fine = read().await.expect("a sound row answers").into_inner();
        assert_eq!(fine.totals[0].amount, "5");
    }

    /// An event the projectors cannot read (written behind the service's back) is retried,
    /// and reported where operators look: ListProjections and the failure count.
    pub(super) async fn an_event_a_projector_cannot_apply_is_reported(store: Store) {
        let app = spawn_app(store).await;
        app.register("acme", "before@example.com").await;
        let bogus = "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, hash) VALUES ('Wallet', 'acme/00000000-0000-0000-0000-000000000001', 1, 'TokensCredited', '1.0', '{\"Nonsense\": 1}', '{}', '')";
        app.db.sql(bogus).await.expect("insert");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let balances = app
                .projection_admin()
                .list_projections(operator(pb::ListProjectionsRequest {}))
                .await
                .expect("lists")
                .into_inner()
                .projections
                .into_iter()
                .find(|p| p.name == "balances")
                .expect("balances");
            if balances.consecutive_failures > 0 {
                assert!(
                    balances.last_error.contains("cannot read TokensCredited"),
                    "{}",
                    balances.last_error
                );
                assert!(balances.lag > 0, "the projector is stuck before the event");
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the failure was never reported: {balances:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn credit(app: &TestApp, wallet: &str, amount: &str, key: &str) -> u64 {
        app.wallets()
            .credit_tokens(req(
                "acme",
                pb::CreditTokensRequest {
                    wallet_id: wallet.into(),
                    token: "PTS".into(),
                    amount: amount.into(),
                    idempotency_key: key.into(),
                },
            ))
            .await
            .expect("credits")
            .into_inner()
            .position
    }

    async fn tier(app: &TestApp, name: &str, min: &str) -> (String, u64) {
        let r = app
            .tiers()
            .create_status_tier(req(
                "acme",
                pb::CreateStatusTierRequest {
                    name: name.into(),
                    min_balance: min.into(),
                    discount_percentage: "5".into(),
                    eligible_tokens: vec!["PTS".into()],
                    ..Default::default()
                },
            ))
            .await
            .expect("creates tier")
            .into_inner();
        (r.tier.expect("tier").tier_id, r.position)
    }

    async fn status(app: &TestApp, user: &str, min_position: u64) -> (Vec<String>, String) {
        let s = app
            .tiers()
            .get_user_status(req(
                "acme",
                pb::GetUserStatusRequest {
                    user_id: user.into(),
                    min_position,
                },
            ))
            .await
            .expect("status")
            .into_inner();
        (
            s.qualifying.into_iter().map(|t| t.name).collect(),
            s.highest.map(|t| t.name).unwrap_or_default(),
        )
    }

    async fn balances_of(app: &TestApp, key: pb::get_balances_request::Key, at: u64) -> String {
        let got = app
            .wallets()
            .get_balances(req(
                "acme",
                pb::GetBalancesRequest {
                    key: Some(key),
                    min_position: at,
                },
            ))
            .await
            .expect("balances")
            .into_inner();
        got.balances
            .iter()
            .map(|b| format!("{}={}", b.token, b.amount))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Balance answers are served from memory between changes; every change a reader waits
    /// for shows: a credit on a cached wallet, and a new wallet of a cached owner.
    pub(super) async fn cached_balances_follow_every_change(store: Store) {
        use pb::get_balances_request::Key;
        let app = spawn_app(store).await;
        let ann = app.register("acme", "ann@example.com").await;
        let bob = app.register("acme", "bob@example.com").await;
        let first = app.active_wallet("acme", &ann).await;
        let bobs = app.active_wallet("acme", &bob).await;
        let at = credit(&app, &first, "100", "a1").await;
        let at = at.max(credit(&app, &bobs, "7", "b1").await);
        for _ in 0..2 {
            assert_eq!(
                balances_of(&app, Key::UserId(ann.clone()), at).await,
                "PTS=100"
            );
            assert_eq!(
                balances_of(&app, Key::WalletId(first.clone()), at).await,
                "PTS=100"
            );
            assert_eq!(
                balances_of(&app, Key::UserId(bob.clone()), at).await,
                "PTS=7"
            );
        }
        // A credit on a wallet whose answers are cached.
        let at = credit(&app, &first, "20", "a2").await;
        assert_eq!(
            balances_of(&app, Key::UserId(ann.clone()), at).await,
            "PTS=120"
        );
        assert_eq!(
            balances_of(&app, Key::WalletId(first.clone()), at).await,
            "PTS=120"
        );
        assert_eq!(
            balances_of(&app, Key::UserId(bob.clone()), at).await,
            "PTS=7"
        );
        // A second wallet for an owner whose answer is cached: its totals take it in.
        let second = app
            .wallets()
            .open_wallet(req(
                "acme",
                pb::OpenWalletRequest {
                    owner_type: pb::OwnerType::User as i32,
                    owner_id: ann.clone(),
                    wallet_type: pb::WalletType::Internal as i32,
                    network: "evm:8453".into(),
                    address: String::new(),
                },
            ))
            .await
            .expect("opens a second wallet")
            .into_inner()
            .wallet
            .expect("wallet")
            .wallet_id;
        app.wallets()
            .activate_wallet(req(
                "acme",
                pb::ActivateWalletRequest {
                    wallet_id: second.clone(),
                },
            ))
            .await
            .expect("activates");
        let at = credit(&app, &second, "5", "a3").await;
        assert_eq!(
            balances_of(&app, Key::UserId(ann.clone()), at).await,
            "PTS=125"
        );
        assert_eq!(
            balances_of(&app, Key::WalletId(second.clone()), at).await,
            "PTS=5"
        );
        assert_eq!(
            balances_of(&app, Key::UserId(bob.clone()), at).await,
            "PTS=7"
        );
    }

    pub(super) async fn a_caller_reads_its_own_writes_with_min_position(store: Store) {
        let app = spawn_app(store).await;
        let user = app.register("acme", "ryw@example.com").await;
        let wallet = app.active_wallet("acme", &user).await;
        let (_, _) = tier(&app, "Silver", "100").await;
        let (_, _) = tier(&app, "Gold", "1000").await;
        for round in 1..=5u32 {
            let position = credit(&app, &wallet, "250", &format!("k{round}")).await;
            let got = app
                .users()
                .get_user_with_balances(req(
                    "acme",
                    pb::GetUserWithBalancesRequest {
                        key: Some(pb::get_user_with_balances_request::Key::Email(
                            "RYW@example.com".into(),
                        )),
                        min_position: position,
                    },
                ))
                .await
                .expect("reads")
                .into_inner();
            let expected = (250 * round).to_string();
            assert_eq!(
                got.totals,
                vec![pb::TokenBalance {
                    token: "PTS".into(),
                    amount: expected.clone()
                }],
                "round {round}"
            );
            assert_eq!(got.wallets[0].balances[0].amount, expected);
            let balances = app
                .wallets()
                .get_balances(req(
                    "acme",
                    pb::GetBalancesRequest {
                        key: Some(pb::get_balances_request::Key::UserId(user.clone())),
                        min_position: position,
                    },
                ))
                .await
                .expect("balances")
                .into_inner();
            assert_eq!(balances.balances[0].amount, expected);
            let (qualifying, highest) = status(&app, &user, position).await;
            let want: Vec<&str> = match round {
                1..=3 => vec!["Silver"],
                _ => vec!["Silver", "Gold"],
            };
            assert_eq!(qualifying, want, "round {round}");
            assert_eq!(highest, *want.last().expect("a tier"));
        }
        let wallets = app
            .wallets()
            .list_wallets(req(
                "acme",
                pb::ListWalletsRequest {
                    owner_type: pb::OwnerType::User as i32,
                    owner_id: user.clone(),
                    min_position: 0,
                },
            ))
            .await
            .expect("lists")
            .into_inner()
            .wallets;
        assert_eq!(wallets.len(), 1);
        assert_eq!(wallets[0].status, pb::WalletStatus::Active as i32);
    }

    pub(super) async fn a_read_model_that_cannot_reach_min_position_answers_unavailable(
        store: Store,
    ) {
        let app = spawn_app(store).await;
        let registered = app
            .users()
            .register_user(req(
                "acme",
                pb::RegisterUserRequest {
                    user: Some(pb::UserInput {
                        email: "lag@example.com".into(),
                        ..Default::default()
                    }),
                },
            ))
            .await
            .expect("registers")
            .into_inner();
        let user = registered.user.expect("user").user_id;
        let far = 1_000_000;
        let result = app
            .users()
            .lookup_user(deadline(
                req(
                    "acme",
                    pb::LookupUserRequest {
                        key: Some(pb::lookup_user_request::Key::Email(
                            "lag@example.com".into(),
                        )),
                        min_position: far,
                        read_mask: None,
                    },
                ),
                Duration::from_millis(300),
            ))
            .await;
        let status = assert_error(result, Code::Unavailable, "READ_MODEL_BEHIND");
        use tonic_types::StatusExt;
        let info = status
            .get_error_details()
            .error_info()
            .cloned()
            .expect("info");
        assert_eq!(
            info.metadata.get("projection").map(String::as_str),
            Some("directory")
        );
        assert_eq!(
            info.metadata.get("requested_position").map(String::as_str),
            Some("1000000")
        );
        assert!(info.metadata.contains_key("applied_position"));
        // With the registration's own position the read model answers at once.
        let found = app
            .users()
            .lookup_user(req(
                "acme",
                pb::LookupUserRequest {
                    key: Some(pb::lookup_user_request::Key::Email(
                        "lag@example.com".into(),
                    )),
                    min_position: registered.position,
                    read_mask: None,
                },
            ))
            .await
            .expect("found")
            .into_inner()
            .user
            .expect("user");
        assert_eq!(found.user_id, user);
    }

    pub(super) async fn tier_changes_move_users_between_tiers(store: Store) {
        let app = spawn_app(store).await;
        let poor = app.register("acme", "poor@example.com").await;
        let rich = app.register("acme", "rich@example.com").await;
        let pw = app.active_wallet("acme", &poor).await;
        let rw = app.active_wallet("acme", &rich).await;
        credit(&app, &pw, "50", "p1").await;
        credit(&app, &rw, "150", "r1").await;
        let (gold, position) = tier(&app, "Gold", "100").await;
        assert_eq!(status(&app, &poor, position).await.0, Vec::<String>::new());
        assert_eq!(status(&app, &rich, position).await.0, vec!["Gold"]);

        let lowered = app
            .tiers()
            .update_status_tier(req(
                "acme",
                pb::UpdateStatusTierRequest {
                    tier_id: gold.clone(),
                    min_balance: Some("40".into()),
                    ..Default::default()
                },
            ))
            .await
            .expect("updates")
            .into_inner()
            .position;
        assert_eq!(
            status(&app, &poor, lowered).await.0,
            vec!["Gold"],
            "lowering the minimum lifts the poor user"
        );
        assert_eq!(status(&app, &rich, lowered).await.0, vec!["Gold"]);

        let removed = app
            .tiers()
            .remove_eligible_token(req(
                "acme",
                pb::RemoveEligibleTokenRequest {
                    tier_id: gold.clone(),
                    token: "PTS".into(),
                },
            ))
            .await
            .expect("removes")
            .into_inner()
            .position;
        assert!(
            status(&app, &rich, removed).await.0.is_empty(),
            "no eligible token: nobody qualifies"
        );
        let added = app
            .tiers()
            .add_eligible_token(req(
                "acme",
                pb::AddEligibleTokenRequest {
                    tier_id: gold.clone(),
                    token: "PTS".into(),
                },
            ))
            .await
            .expect("adds")
            .into_inner()
            .position;
        assert_eq!(status(&app, &poor, added).await.0, vec!["Gold"]);
        let retired = app
            .tiers()
            .retire_status_tier(req("acme", pb::RetireStatusTierRequest { tier_id: gold }))
            .await
            .expect("retires")
            .into_inner()
            .position;
        assert!(
            status(&app, &rich, retired).await.0.is_empty(),
            "a retired tier qualifies nobody"
        );
        let tiers = app
            .tiers()
            .list_status_tiers(req(
                "acme",
                pb::ListStatusTiersRequest {
                    include_retired: false,
                    min_position: retired,
                },
            ))
            .await
            .expect("lists")
            .into_inner()
            .tiers;
        assert!(tiers.is_empty());
        let all = app
            .tiers()
            .list_status_tiers(req(
                "acme",
                pb::ListStatusTiersRequest {
                    include_retired: true,
                    min_position: retired,
                },
            ))
            .await
            .expect("lists")
            .into_inner()
            .tiers;
        assert_eq!(all.len(), 1);
        assert!(all[0].retired);
    }

    pub(super) async fn users_are_listed_searched_sorted_and_paged(store: Store) {
        let app = spawn_app(store).await;
        let mut last = 0;
        let mut ids = Vec::new();
        for i in 0..23 {
            let r = app
                .users()
                .register_user(req(
                    "acme",
                    pb::RegisterUserRequest {
                        user: Some(pb::UserInput {
                            email: format!("member{i:02}@example.com"),
                            first_name: if i % 2 == 0 {
                                "Alice".into()
                            } else {
                                "Bob".into()
                            },
                            last_name: format!("Zed{i:02}"),
                            external_id: format!("EXT-{i:02}"),
                            ..Default::default()
                        }),
                    },
                ))
                .await
                .expect("registers")
                .into_inner();
            last = r.position;
            ids.push(r.user.expect("user").user_id);
        }
        app.users()
            .deactivate_user(req(
                "acme",
                pb::DeactivateUserRequest {
                    user_id: ids[0].clone(),
                },
            ))
            .await
            .expect("deactivates");
        let last = app
            .users()
            .deactivate_user(req(
                "acme",
                pb::DeactivateUserRequest {
                    user_id: ids[1].clone(),
                },
            ))
            .await
            .expect("deactivates")
            .into_inner()
            .position
            .max(last);
        let list = |q: pb::ListUsersRequest| {
            let mut c = app.users();
            async move {
                c.list_users(req("acme", q))
                    .await
                    .expect("lists")
                    .into_inner()
            }
        };
        // Search: partial and case-insensitive, over names and ids.
        let found = list(pb::ListUsersRequest {
            search: "aLiCe".into(),
            min_position: last,
            limit: 200,
            ..Default::default()
        })
        .await;
        assert_eq!(found.total, 12);
        let found = list(pb::ListUsersRequest {
            search: "ext-0".into(),
            min_position: last,
            ..Default::default()
        })
        .await;
        assert_eq!(found.total, 10);
        // Filter by active.
        let inactive = list(pb::ListUsersRequest {
            active: Some(false),
            min_position: last,
            ..Default::default()
        })
        .await;
        assert_eq!(inactive.total, 2);
        // Sort descending by email.
        let sorted = list(pb::ListUsersRequest {
            sort_by: pb::UserSortField::Email as i32,
            descending: true,
            limit: 3,
            min_position: last,
            ..Default::default()
        })
        .await;
        let emails: Vec<String> = sorted.users.iter().map(|u| u.email.clone()).collect();
        assert_eq!(
            emails,
            vec![
                "member22@example.com",
                "member21@example.com",
                "member20@example.com"
            ]
        );
        // A cursor walks every user exactly once.
        let mut seen = Vec::new();
        let mut cursor = String::new();
        loop {
            let page = list(pb::ListUsersRequest {
                sort_by: pb::UserSortField::LastName as i32,
                limit: 5,
                cursor: cursor.clone(),
                min_position: last,
                ..Default::default()
            })
            .await;
            seen.extend(page.users.iter().map(|u| u.last_name.clone()));
            if page.next_cursor.is_empty() {
                break;
            }
            cursor = page.next_cursor;
        }
        let expected: Vec<String> = (0..23).map(|i| format!("Zed{i:02}")).collect();
        assert_eq!(seen, expected);
        // Pages.
        let page3 = list(pb::ListUsersRequest {
            sort_by: pb::UserSortField::LastName as i32,
            limit: 10,
            page: 3,
            min_position: last,
            ..Default::default()
        })
        .await;
        assert_eq!(page3.users.len(), 3);
        assert_eq!(page3.users[0].last_name, "Zed20");
        // The limit is bounded.
        let capped = list(pb::ListUsersRequest {
            limit: 100_000,
            min_position: last,
            ..Default::default()
        })
        .await;
        assert_eq!(capped.users.len(), 23);
        assert_error(
            app.users()
                .list_users(req(
                    "acme",
                    pb::ListUsersRequest {
                        cursor: "garbage".into(),
                        ..Default::default()
                    },
                ))
                .await,
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        );
    }

    pub(super) async fn users_are_looked_up_by_every_key(store: Store) {
        let app = spawn_app(store).await;
        let r = app
            .users()
            .register_user(req(
                "acme",
                pb::RegisterUserRequest {
                    user: Some(pb::UserInput {
                        email: "look@example.com".into(),
                        phone: "+372 5555 0000".into(),
                        external_id: "crm-7".into(),
                        public_profile: Some(identity_proto::prost_types::Struct {
                            fields: [(
                                "nick".to_string(),
                                identity_proto::prost_types::Value {
                                    kind: Some(
                                        identity_proto::prost_types::value::Kind::StringValue(
                                            "ada".into(),
                                        ),
                                    ),
                                },
                            )]
                            .into(),
                        }),
                        ..Default::default()
                    }),
                },
            ))
            .await
            .expect("registers")
            .into_inner();
        let user = r.user.expect("user").user_id;
        let wallet = app.active_wallet("acme", &user).await;
        let address = app
            .wallets()
            .get_wallet(req("acme", pb::GetWalletRequest { wallet_id: wallet }))
            .await
            .expect("wallet")
            .into_inner()
            .wallet
            .expect("wallet")
            .address;
        let position = app
            .identification()
            .submit_identity(req(
                "acme",
                pb::SubmitIdentityRequest {
                    user_id: user.clone(),
                    identity: Some(pb::Identity {
                        first_name: "Ada".into(),
                        surname: "L".into(),
                        nationality: "EE".into(),
                        person_code: "38601010123".into(),
                        person_code_country: String::new(),
                        date_of_birth: "1986-01-01".into(),
                    }),
                },
            ))
            .await
            .expect("submits")
            .into_inner()
            .position;
        use pb::lookup_user_request::Key;
        for key in [
            Key::Email("LOOK@example.com".into()),
            Key::Phone("37255550000".into()),
            Key::ExternalId("crm-7".into()),
            Key::PersonCode("ee:38601010123".into()),
            Key::WalletAddress(address.to_uppercase().replace("0X", "0x")),
        ] {
            let found = app
                .users()
                .lookup_user(req(
                    "acme",
                    pb::LookupUserRequest {
                        key: Some(key.clone()),
                        min_position: position,
                        read_mask: None,
                    },
                ))
                .await
                .unwrap_or_else(|e| panic!("{key:?}: {e:?}"))
                .into_inner()
                .user
                .expect("user");
            assert_eq!(found.user_id, user, "{key:?}");
            assert_eq!(found.wallet_addresses, vec![address.clone()]);
        }
        assert_error(
            app.users()
                .lookup_user(req(
                    "acme",
                    pb::LookupUserRequest {
                        key: Some(Key::Email("nobody@example.com".into())),
                        min_position: 0,
                        read_mask: None,
                    },
                ))
                .await,
            Code::NotFound,
            "USER_NOT_FOUND",
        );
        let exists = app
            .users()
            .user_exists(req(
                "acme",
                pb::UserExistsRequest {
                    email: "other@example.com".into(),
                    external_id: "crm-7".into(),
                    min_position: position,
                    ..Default::default()
                },
            ))
            .await
            .expect("answers")
            .into_inner();
        assert!(exists.exists);
        assert_eq!(exists.matched_key, "external_id");
        assert_eq!(exists.user_id, user);
        let missing = app
            .users()
            .user_exists(req(
                "acme",
                pb::UserExistsRequest {
                    email: "other@example.com".into(),
                    min_position: position,
                    ..Default::default()
                },
            ))
            .await
            .expect("answers")
            .into_inner();
        assert!(!missing.exists);
        let profile = app
            .users()
            .get_public_profile(req(
                "acme",
                pb::GetPublicProfileRequest {
                    user_id: user.clone(),
                    min_position: position,
                },
            ))
            .await
            .expect("profile")
            .into_inner()
            .profile
            .expect("profile");
        assert_eq!(profile.user_id, user);
        assert!(profile
            .public_profile
            .expect("struct")
            .fields
            .contains_key("nick"));
        let profiles = app
            .users()
            .list_public_profiles(req(
                "acme",
                pb::ListPublicProfilesRequest {
                    user_ids: vec![user.clone(), uuid::Uuid::new_v4().to_string()],
                    min_position: position,
                },
            ))
            .await
            .expect("profiles")
            .into_inner()
            .profiles;
        assert_eq!(profiles.len(), 1);
    }

    pub(super) async fn queries_never_cross_tenants(store: Store) {
        let app = spawn_app(store).await;
        let user = app.register("tenant-a", "cross@example.com").await;
        let position = app
            .users()
            .deactivate_user(req(
                "tenant-a",
                pb::DeactivateUserRequest {
                    user_id: user.clone(),
                },
            ))
            .await
            .expect("deactivates")
            .into_inner()
            .position;
        let listed = app
            .users()
            .list_users(req(
                "tenant-b",
                pb::ListUsersRequest {
                    min_position: position,
                    ..Default::default()
                },
            ))
            .await
            .expect("lists")
            .into_inner();
        assert_eq!(listed.total, 0);
        assert_error(
            app.users()
                .lookup_user(req(
                    "tenant-b",
                    pb::LookupUserRequest {
                        key: Some(pb::lookup_user_request::Key::Email(
                            "cross@example.com".into(),
                        )),
                        min_position: position,
                        read_mask: None,
                    },
                ))
                .await,
            Code::NotFound,
            "USER_NOT_FOUND",
        );
        assert_error(
            app.users()
                .get_public_profile(req(
                    "tenant-b",
                    pb::GetPublicProfileRequest {
                        user_id: user,
                        min_position: position,
                    },
                ))
                .await,
            Code::NotFound,
            "USER_NOT_FOUND",
        );
    }

    /// Thousands of commands across all aggregates, then every read model is compared with a
    /// replay of the whole log from position 0, and rebuilt in place.
    pub(super) async fn a_long_random_workload_leaves_read_models_equal_to_a_replay(store: Store) {
        let app = spawn_app(store).await;
        let commands = if store == Store::Postgres { 2400 } else { 900 };
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        let mut users: Vec<String> = Vec::new();
        let mut wallets: Vec<String> = Vec::new();
        let mut tiers: Vec<String> = Vec::new();
        let mut done = 0;
        let mut i = 0u64;
        while done < commands {
            i += 1;
            let roll = if users.len() < 10 { 0 } else { next(100) };
            let ok = match roll {
                0..=9 => {
                    let r = app
                        .users()
                        .register_user(req(
                            "acme",
                            pb::RegisterUserRequest {
                                user: Some(pb::UserInput {
                                    email: format!("load{i}@example.com"),
                                    first_name: format!("N{}", next(50)),
                                    ..Default::default()
                                }),
                            },
                        ))
                        .await;
                    r.map(|r| users.push(r.into_inner().user.expect("user").user_id))
                        .is_ok()
                }
                10..=17 => {
                    let u = users[next(users.len() as u64) as usize].clone();
                    let r = app
                        .wallets()
                        .open_wallet(req(
                            "acme",
                            pb::OpenWalletRequest {
                                owner_type: pb::OwnerType::User as i32,
                                owner_id: u,
                                wallet_type: pb::WalletType::Internal as i32,
                                network: ["polygon", "solana", "evm:8453"][next(3) as usize].into(),
                                address: String::new(),
                            },
                        ))
                        .await;
                    match r {
                        Ok(w) => {
                            let id = w.into_inner().wallet.expect("wallet").wallet_id;
                            let _ = app
                                .wallets()
                                .activate_wallet(req(
                                    "acme",
                                    pb::ActivateWalletRequest {
                                        wallet_id: id.clone(),
                                    },
                                ))
                                .await;
                            wallets.push(id);
                            true
                        }
                        Err(_) => false,
                    }
                }
                18..=59 if !wallets.is_empty() => {
                    let w = wallets[next(wallets.len() as u64) as usize].clone();
                    let token = ["PTS", "USDC", "EUR"][next(3) as usize];
                    let amount = (1 + next(500)).to_string();
                    if next(3) == 0 {
                        app.wallets()
                            .debit_tokens(req(
                                "acme",
                                pb::DebitTokensRequest {
                                    wallet_id: w,
                                    token: token.into(),
                                    amount,
                                    idempotency_key: format!("d{i}"),
                                },
                            ))
                            .await
                            .is_ok()
                    } else {
                        app.wallets()
                            .credit_tokens(req(
                                "acme",
                                pb::CreditTokensRequest {
                                    wallet_id: w,
                                    token: token.into(),
                                    amount,
                                    idempotency_key: format!("c{i}"),
                                },
                            ))
                            .await
                            .is_ok()
                    }
                }
                60..=64 => {
                    let r = app
                        .tiers()
                        .create_status_tier(req(
                            "acme",
                            pb::CreateStatusTierRequest {
                                name: format!("T{i}"),
                                min_balance: (next(2000)).to_string(),
                                discount_percentage: "1".into(),
                                eligible_tokens: vec![
                                    ["PTS", "USDC", "EUR"][next(3) as usize].into()
                                ],
                                ..Default::default()
                            },
                        ))
                        .await;
                    r.map(|r| tiers.push(r.into_inner().tier.expect("tier").tier_id))
                        .is_ok()
                }
                65..=74 if !tiers.is_empty() => {
                    let t = tiers[next(tiers.len() as u64) as usize].clone();
                    match next(4) {
                        0 => app
                            .tiers()
                            .update_status_tier(req(
                                "acme",
                                pb::UpdateStatusTierRequest {
                                    tier_id: t,
                                    min_balance: Some(next(2000).to_string()),
                                    ..Default::default()
                                },
                            ))
                            .await
                            .is_ok(),
                        1 => app
                            .tiers()
                            .add_eligible_token(req(
                                "acme",
                                pb::AddEligibleTokenRequest {
                                    tier_id: t,
                                    token: ["PTS", "USDC", "EUR"][next(3) as usize].into(),
                                },
                            ))
                            .await
                            .is_ok(),
                        2 => app
                            .tiers()
                            .remove_eligible_token(req(
                                "acme",
                                pb::RemoveEligibleTokenRequest {
                                    tier_id: t,
                                    token: ["PTS", "USDC", "EUR"][next(3) as usize].into(),
                                },
                            ))
                            .await
                            .is_ok(),
                        _ => app
                            .tiers()
                            .retire_status_tier(req(
                                "acme",
                                pb::RetireStatusTierRequest { tier_id: t },
                            ))
                            .await
                            .is_ok(),
                    }
                }
                75..=89 => {
                    let u = users[next(users.len() as u64) as usize].clone();
                    match next(4) {
                        0 => app
                            .users()
                            .update_user_profile(req(
                                "acme",
                                pb::UpdateUserProfileRequest {
                                    user_id: u,
                                    profile: Some(pb::UserInput {
                                        last_name: format!("L{}", next(99)),
                                        ..Default::default()
                                    }),
                                    update_mask: None,
                                },
                            ))
                            .await
                            .is_ok(),
                        1 => app
                            .users()
                            .set_user_roles(req(
                                "acme",
                                pb::SetUserRolesRequest {
                                    user_id: u,
                                    roles: vec![format!("r{}", next(5))],
                                    replace: next(2) == 0,
                                },
                            ))
                            .await
                            .is_ok(),
                        2 => app
                            .users()
                            .deactivate_user(req("acme", pb::DeactivateUserRequest { user_id: u }))
                            .await
                            .is_ok(),
                        _ => app
                            .users()
                            .reactivate_user(req("acme", pb::ReactivateUserRequest { user_id: u }))
                            .await
                            .is_ok(),
                    }
                }
                _ => {
                    let u = users[next(users.len() as u64) as usize].clone();
                    app.identification()
                        .submit_identity(req(
                            "acme",
                            pb::SubmitIdentityRequest {
                                user_id: u,
                                identity: Some(pb::Identity {
                                    first_name: "A".into(),
                                    surname: "B".into(),
                                    nationality: "EE".into(),
                                    person_code: format!("{}", 10_000 + next(100_000)),
                                    person_code_country: String::new(),
                                    date_of_birth: "1990-01-01".into(),
                                }),
                            },
                        ))
                        .await
                        .is_ok()
                }
            };
            let _ = ok;
            done += 1;
        }
        let head = app.head_position().await;
        let projections = app.read_models().await;
        for p in identity_projections::Projection::ALL {
            assert!(
                projections
                    .wait_for(p, head, Duration::from_secs(60))
                    .await
                    .expect("waits"),
                "{} catches up",
                p.name()
            );
            let differences = projections.verify(p).await.expect("verifies");
            assert!(
                differences.is_empty(),
                "{} differs from a replay: {differences:#?}",
                p.name()
            );
        }
        // A rebuild while the service runs swaps in an equal read model.
        let before = app
            .users()
            .list_users(req(
                "acme",
                pb::ListUsersRequest {
                    limit: 200,
                    sort_by: pb::UserSortField::Email as i32,
                    min_position: head,
                    ..Default::default()
                },
            ))
            .await
            .expect("lists")
            .into_inner();
        // The call returns at once with a job; ListProjections reports it to the end.
        let started = app
            .projection_admin()
            .rebuild_projection(operator(pb::RebuildProjectionRequest {
                name: "directory".into(),
            }))
            .await
            .expect("starts a rebuild")
            .into_inner()
            .job
            .expect("a job");
        assert!(!started.job_id.is_empty());
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let job = loop {
            let listed = app
                .projection_admin()
                .list_projections(operator(pb::ListProjectionsRequest {}))
                .await
                .expect("lists")
                .into_inner();
            let directory = listed
                .projections
                .into_iter()
                .find(|p| p.name == "directory")
                .expect("directory");
            let job = directory.rebuild.expect("the job is reported");
            assert_eq!(job.job_id, started.job_id);
            if job.state != "running" {
                break job;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the rebuild never ended"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(job.state, "succeeded", "{job:?}");
        assert!(
            job.events_replayed >= head / 2,
            "replayed {} of {head}",
            job.events_replayed
        );
        // One rebuild per read model at a time.
        let (first, second) = tokio::join!(
            projections.start_rebuild(identity_projections::Projection::Status),
            projections.start_rebuild(identity_projections::Projection::Status),
        );
        assert!(first.is_ok(), "{first:?}");
        assert!(
            matches!(
                second,
                Err(identity_projections::ProjectionError::RebuildRunning(_))
            ),
            "{second:?}"
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while projections
            .rebuild_job(identity_projections::Projection::Status)
            .is_some_and(|j| j.state == identity_projections::JobState::Running)
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the rebuild never ended"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let after = app
            .users()
            .list_users(req(
                "acme",
                pb::ListUsersRequest {
                    limit: 200,
                    sort_by: pb::UserSortField::Email as i32,
                    min_position: head,
                    ..Default::default()
                },
            ))
            .await
            .expect("lists")
            .into_inner();
        assert_eq!(before.users, after.users);
        assert_eq!(before.total, after.total);
        assert!(projections
            .verify(identity_projections::Projection::Directory)
            .await
            .expect("verifies")
            .is_empty());
        // A replay that reads a few events at a time and writes every few rows (so it passes
        // through every write point: size limit, an event applied alone, the end) rebuilds
        // every read model equal to one applied batch by batch.
        let small = projections.clone().with_replay_sizes(7, 40);
        for p in identity_projections::Projection::ALL {
            let replayed = small.rebuild(p).await.expect("rebuilds");
            assert!(replayed >= head / 2, "replayed {replayed} of {head}");
            let differences = projections.verify(p).await.expect("verifies");
            assert!(
                differences.is_empty(),
                "{} rebuilt in small steps differs: {differences:#?}",
                p.name()
            );
        }
        // A rebuild killed midway leaves shadow tables and a checkpoint; the next start
        // drops them.
        let leftover = "CREATE TABLE rm_balances__r123 (x integer); INSERT INTO projection_checkpoints (name, xid, position, updated_at) VALUES ('balances__r123', 0, 0, 'x')";
        let count_leftovers =
            "SELECT COUNT(*) FROM projection_checkpoints WHERE name LIKE 'balances__r%'";
        app.db.sql(leftover).await.expect("leave");
        identity_projections::Projections::open(app.event_log())
            .await
            .expect("a second start");
        let tables = match &app.db {
            TestDb::Postgres(_) => {
                "SELECT COUNT(*) FROM information_schema.tables WHERE table_name = 'rm_balances__r123'"
            }
            TestDb::Sqlite { .. } => {
                "SELECT COUNT(*) FROM sqlite_master WHERE name = 'rm_balances__r123'"
            }
        };
        let remaining = app.db.count(tables).await + app.db.count(count_leftovers).await;
        assert_eq!(
            remaining, 0,
            "a killed rebuild's leftovers survived a start"
        );
        // And verification is not vacuous: a row edited behind the projector's back is found.
        if let TestDb::Postgres(identity_testkit::PgDatabase { url, .. }) = &app.db {
            let pool = sqlx::PgPool::connect(url).await.expect("connect");
            // Swapped-in tables carry their indexes under the live names (a restart looks for
            // them by name), including the trigram index of the directory's search.
            let names: Vec<String> = sqlx::query_scalar(
                r"SELECT indexname::text FROM pg_indexes WHERE tablename LIKE 'rm\_%' AND indexname NOT LIKE '%pkey'",
            )
            .fetch_all(&pool)
            .await
            .expect("indexes");
            assert!(names.iter().all(|n| !n.contains("__r")), "{names:?}");
            assert!(names.iter().any(|n| n == "rm_users_search"), "{names:?}");
            sqlx::query("UPDATE rm_balances SET amount = '424242' WHERE ctid = (SELECT ctid FROM rm_balances LIMIT 1)")
                .execute(&pool)
                .await
                .expect("tamper");
            let differences = projections
                .verify(identity_projections::Projection::Balances)
                .await
                .expect("verifies");
            assert!(
                differences.iter().any(|d| d.contains("424242")),
                "{differences:?}"
            );
        }
    }
}
