//! MergeUsers moves the duplicate's contact values, roles and wallets to the survivor (issue
//! 17, docs/adr/0007-merging-users.md): every lookup by a merged value finds the survivor, the
//! claims move in the merge's own unit (so nobody can take a value in between), the wallets
//! keep their ids, addresses and balances under their new owner, and the duplicate stays
//! readable as merged. On both stores.

#[macro_use]
mod common;

use common::*;
use identity_proto::v1 as pb;
use tonic::Code;

on_both_stores!(
    a_merge_moves_contact_values_and_roles_to_the_survivor,
    likely_duplicates_are_listed_and_merged_on_request,
);

mod scenarios {
    use super::*;

    async fn lookup(app: &TestApp, key: pb::lookup_user_request::Key, position: u64) -> String {
        ok!(app.users().lookup_user(req(
            "acme",
            pb::LookupUserRequest {
                key: Some(key),
                min_position: position,
                read_mask: None,
            },
        )))
        .user
        .expect("user")
        .user_id
    }

    pub(super) async fn a_merge_moves_contact_values_and_roles_to_the_survivor(store: Store) {
        let app = spawn_app(store).await;
        let mut u = app.users();
        let duplicate = registered_id(
            u.register_user(registering(
                "acme",
                pb::UserInput {
                    email: "dup@example.com".into(),
                    phone: "+3725550900".into(),
                    external_id: "crm-dup".into(),
                    ..Default::default()
                },
            ))
            .await
            .expect("registers"),
        );
        let survivor = app.register("acme", "keep@example.com").await;
        ok!(u.set_user_roles(req(
            "acme",
            ask::roles(&duplicate, &["support"], pb::RolesMode::Add)
        )));
        ok!(u.set_user_roles(req(
            "acme",
            ask::roles(&survivor, &["admin"], pb::RolesMode::Add)
        )));
        let tier = ok!(app.tiers().create_status_tier(req(
            "acme",
            pb::CreateStatusTierRequest {
                name: "Silver".into(),
                min_balance: "50".into(),
                discount_percentage: "5".into(),
                eligible_tokens: vec!["PTS".into()],
                ..Default::default()
            },
        )))
        .tier
        .expect("tier")
        .tier_id;
        let mut kyc = app.identification();
        ok!(kyc.submit_identity(req(
            "acme",
            pb::SubmitIdentityRequest {
                user_id: duplicate.clone(),
                identity: Some(pb::Identity {
                    first_name: "Dup".into(),
                    surname: "Licate".into(),
                    nationality: "EE".into(),
                    person_code: "38601010123".into(),
                    person_code_country: String::new(),
                    date_of_birth: "1986-01-01".into(),
                }),
            },
        )));
        ok!(kyc.change_identification_level(req(
            "acme",
            pb::ChangeIdentificationLevelRequest {
                user_id: duplicate.clone(),
                level: pb::IdentificationLevel::SemiIdentified as i32,
                reason: String::new(),
            },
        )));
        let wallet = app.active_wallet("acme", &duplicate).await;
        ok!(app
            .wallets()
            .credit_tokens(req("acme", credit(&wallet, "70", "merge-1"))));

        let merged = ok!(u.merge_users(req(
            "acme",
            pb::MergeUsersRequest {
                source_user_id: duplicate.clone(),
                target_user_id: survivor.clone(),
            },
        )));

        // The survivor keeps its email, takes the phone and external id it lacked, and holds
        // both users' roles.
        let kept = ok!(u.get_user(req("acme", ask::get_user(&survivor))))
            .user
            .expect("user");
        assert_eq!(
            (
                kept.email.as_str(),
                kept.phone.as_str(),
                kept.external_id.as_str()
            ),
            ("keep@example.com", "3725550900", "crm-dup")
        );
        assert_eq!(kept.roles, vec!["admin", "support"]);

        // Every lookup by a value of the duplicate finds the survivor.
        use pb::lookup_user_request::Key;
        for key in [
            Key::Email("dup@example.com".into()),
            Key::Phone("+3725550900".into()),
            Key::ExternalId("crm-dup".into()),
        ] {
            assert_eq!(
                lookup(&app, key.clone(), merged.position).await,
                survivor,
                "{key:?}"
            );
        }
        let exists = ok!(u.user_exists(req(
            "acme",
            pb::UserExistsRequest {
                email: "dup@example.com".into(),
                ..Default::default()
            },
        )));
        assert!(exists.exists);
        assert_eq!(exists.user_id, survivor);

        // The wallet is the survivor's now, with its balance, on every read side.
        let got = ok!(app.wallets().get_wallet(req(
            "acme",
            pb::GetWalletRequest {
                wallet_id: wallet.clone()
            }
        )))
        .wallet
        .expect("wallet");
        assert_eq!(got.owner_id, survivor);
        let balances = ok!(u.get_user_with_balances(req(
            "acme",
            pb::GetUserWithBalancesRequest {
                key: Some(pb::get_user_with_balances_request::Key::UserId(
                    survivor.clone()
                )),
                min_position: merged.position,
            },
        )));
        assert_eq!(
            balances
                .wallets
                .iter()
                .map(|w| w.wallet_id.clone())
                .collect::<Vec<_>>(),
            vec![wallet.clone()]
        );
        assert_eq!(
            balances
                .totals
                .iter()
                .map(|t| (t.token.as_str(), t.amount.as_str()))
                .collect::<Vec<_>>(),
            vec![("PTS", "70")]
        );
        let listed = balances.user.expect("user");
        assert_eq!(listed.wallets.len(), 1);
        assert_eq!(
            lookup(
                &app,
                Key::WalletAddress(got.address.clone()),
                merged.position
            )
            .await,
            survivor
        );
        let left = ok!(u.get_user_with_balances(req(
            "acme",
            pb::GetUserWithBalancesRequest {
                key: Some(pb::get_user_with_balances_request::Key::UserId(
                    duplicate.clone()
                )),
                min_position: merged.position,
            },
        )));
        assert!(
            left.wallets.is_empty() && left.totals.is_empty(),
            "{left:?}"
        );
        // The balance qualifies the survivor for the tier, and no longer the duplicate.
        let status = |user: &str| {
            let mut tiers = app.tiers();
            let request = req(
                "acme",
                pb::GetUserStatusRequest {
                    user_id: user.to_string(),
                    min_position: merged.position,
                },
            );
            async move {
                tiers
                    .get_user_status(request)
                    .await
                    .expect("status")
                    .into_inner()
                    .highest
                    .map(|t| t.tier_id)
            }
        };
        assert_eq!(status(&survivor).await, Some(tier));
        assert_eq!(status(&duplicate).await, None);

        // The survivor had no identity: it has the duplicate's now, with its level, and the
        // person code finds the survivor.
        let received = ok!(kyc.get_identification(req(
            "acme",
            pb::GetIdentificationRequest {
                user_id: survivor.clone()
            }
        )))
        .identification
        .expect("identification");
        assert_eq!(
            received.identity.expect("identity").person_code,
            "38601010123"
        );
        assert_eq!(
            received.level,
            pb::IdentificationLevel::SemiIdentified as i32
        );
        assert_eq!(
            lookup(
                &app,
                Key::PersonCode("EE:38601010123".into()),
                merged.position
            )
            .await,
            survivor
        );

        // The duplicate's values stay taken (by the survivor) ...
        fails!(
            u.register_user(registering("acme", user_input("dup@example.com"))),
            Code::AlreadyExists,
            "EMAIL_ALREADY_ASSIGNED",
        );
        // ... and the duplicate is readable, as merged, and takes no more commands.
        let gone = ok!(u.get_user(req("acme", ask::get_user(&duplicate))))
            .user
            .expect("user");
        assert_eq!(gone.merged_into, survivor);
        fails!(
            u.merge_users(req(
                "acme",
                pb::MergeUsersRequest {
                    source_user_id: duplicate.clone(),
                    target_user_id: survivor.clone(),
                },
            )),
            Code::FailedPrecondition,
            "USER_MERGED",
        );
    }

    pub(super) async fn likely_duplicates_are_listed_and_merged_on_request(store: Store) {
        let app = spawn_app(store).await;
        let mut u = app.users();
        let register = |email: &str, first: &str, last: &str| {
            let input = pb::UserInput {
                email: email.into(),
                first_name: first.into(),
                last_name: last.into(),
                ..Default::default()
            };
            let mut users = app.users();
            async move {
                users
                    .register_user(registering("acme", input))
                    .await
                    .expect("registers")
                    .into_inner()
            }
        };
        let oldest = register("ada.l@example.com", "Ada", "Lovelace").await;
        let twin = register("adal+news@example.com", "ada", " LOVELACE").await;
        let other = register("alan@example.com", "Alan", "Turing").await;
        let (oldest, twin) = (
            oldest.user.expect("user").user_id,
            twin.user.expect("user").user_id,
        );
        let listing = |mode: pb::DuplicateMode| pb::ListUsersRequest {
            min_position: other.position,
            duplicates: mode as i32,
            ..Default::default()
        };

        let soft = ok!(u.list_users(req("acme", listing(pb::DuplicateMode::Soft))));
        assert_eq!(
            soft.duplicate_groups.len(),
            1,
            "{:?}",
            soft.duplicate_groups
        );
        let group = &soft.duplicate_groups[0];
        assert_eq!(group.user_ids, vec![oldest.clone(), twin.clone()]);
        assert_eq!(group.shared_keys, vec!["email", "name"]);
        assert!(soft.merges.is_empty());

        // Merging needs update:users, beside the read:users of a listing.
        let reader = mint("service", "reader", Some("acme"), &["read:users"]);
        fails!(
            u.list_users(with_token(
                &reader,
                Some("acme"),
                listing(pb::DuplicateMode::Hard)
            )),
            Code::PermissionDenied,
            "PERMISSION_DENIED",
        );

        let hard = ok!(u.list_users(req("acme", listing(pb::DuplicateMode::Hard))));
        assert_eq!(hard.merges.len(), 1, "{:?}", hard.merges);
        let merge = &hard.merges[0];
        assert_eq!(
            (
                merge.survivor_user_id.as_str(),
                merge.duplicate_user_id.as_str()
            ),
            (oldest.as_str(), twin.as_str())
        );
        assert!(merge.error.is_none() && merge.position > 0, "{merge:?}");
        use pb::lookup_user_request::Key;
        let found = lookup(
            &app,
            Key::Email("adal+news@example.com".into()),
            merge.position,
        )
        .await;
        assert_eq!(found, oldest);
    }
}
