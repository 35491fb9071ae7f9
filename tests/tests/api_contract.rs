//! Where the contract matched the upstream APIs too loosely (issue 17, "small contract
//! mismatches"): role ids keep their case, SetUserRoles needs an explicit mode, ListUsers
//! sorts by active, locale and account address, ListStatusTiers pages, ListPublicProfiles
//! filters by a profile field and pages, on both stores.

#[macro_use]
mod common;

use common::*;
use identity_proto::v1 as pb;
use tonic::Code;

on_both_stores!(
    role_ids_keep_their_case_and_roles_need_an_explicit_mode,
    users_sort_by_active_locale_and_account_address,
    status_tiers_come_in_pages,
    public_profiles_are_filtered_and_paged,
);

mod scenarios {
    use super::*;

    pub(super) async fn role_ids_keep_their_case_and_roles_need_an_explicit_mode(store: Store) {
        let app = spawn_app(store).await;
        let user = app.register("acme", "roles@example.com").await;
        let mut u = app.users();

        // An upstream role id comes back as it was given.
        let set = ok!(u.set_user_roles(req(
            "acme",
            ask::roles(&user, &["rol_abCdeFghIjklMnmP"], pb::RolesMode::Add)
        )));
        assert_eq!(set.roles, vec!["rol_abCdeFghIjklMnmP"]);
        let got = ok!(u.get_user(req("acme", ask::get_user(&user))))
            .user
            .expect("user");
        assert_eq!(got.roles, vec!["rol_abCdeFghIjklMnmP"]);
        // Ids differing in case are different roles.
        let set = ok!(u.set_user_roles(req(
            "acme",
            ask::roles(&user, &["rol_ABCDEFGHIJKLMNMP"], pb::RolesMode::Add)
        )));
        assert_eq!(set.roles.len(), 2, "{:?}", set.roles);

        // No mode, no default: the call is refused and names the field.
        let refused = fails!(
            u.set_user_roles(req(
                "acme",
                ask::roles(&user, &["viewer"], pb::RolesMode::Unspecified)
            )),
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        );
        assert!(refused.message().contains("mode"), "{refused:?}");
        let got = ok!(u.get_user(req("acme", ask::get_user(&user))))
            .user
            .expect("user");
        assert_eq!(got.roles.len(), 2, "a refused call changed the roles");

        // REPLACE makes the list the whole set; an empty one clears it.
        let set = ok!(u.set_user_roles(req(
            "acme",
            ask::roles(&user, &["viewer"], pb::RolesMode::Replace)
        )));
        assert_eq!(set.roles, vec!["viewer"]);
        let set =
            ok!(u.set_user_roles(req("acme", ask::roles(&user, &[], pb::RolesMode::Replace))));
        assert!(set.roles.is_empty(), "{:?}", set.roles);
    }

    /// Every user, walking ListUsers one user per page with its cursor.
    async fn walk(
        app: &TestApp,
        sort: pb::UserSortField,
        min_position: u64,
    ) -> Vec<pb::DirectoryUser> {
        let mut seen = Vec::new();
        let mut cursor = String::new();
        loop {
            let page = ok!(app.users().list_users(req(
                "acme",
                pb::ListUsersRequest {
                    sort_by: sort as i32,
                    limit: 1,
                    cursor: cursor.clone(),
                    min_position,
                    ..Default::default()
                }
            )));
            seen.extend(page.users);
            if page.next_cursor.is_empty() {
                return seen;
            }
            cursor = page.next_cursor;
        }
    }

    pub(super) async fn users_sort_by_active_locale_and_account_address(store: Store) {
        let app = spawn_app(store).await;
        let mut ids = Vec::new();
        for (email, locale) in [
            ("a@example.com", "pt-BR"),
            ("b@example.com", "de"),
            ("c@example.com", "fr"),
            ("d@example.com", "en"),
        ] {
            let input = pb::UserInput {
                email: email.into(),
                locale: locale.into(),
                ..Default::default()
            };
            ids.push(registered_id(
                app.users()
                    .register_user(registering("acme", input))
                    .await
                    .expect("registers"),
            ));
        }
        let deactivated = ok!(app
            .users()
            .deactivate_user(req("acme", ask::deactivate(&ids[2]))));
        for user in &ids[..2] {
            app.active_wallet("acme", user).await;
        }
        let last = app.head_position().await.max(deactivated.position);

        let by_active = walk(&app, pb::UserSortField::Active, last).await;
        assert_eq!(by_active.len(), 4);
        assert_eq!(
            by_active[0].user_id, ids[2],
            "the inactive user comes first"
        );
        assert!(by_active[1..].iter().all(|u| u.active));

        let locales: Vec<String> = walk(&app, pb::UserSortField::Locale, last)
            .await
            .into_iter()
            .map(|u| u.locale)
            .collect();
        assert_eq!(locales, vec!["de", "en", "fr", "pt-BR"]);

        let by_address = walk(&app, pb::UserSortField::AccountAddress, last).await;
        let addresses: Vec<String> = by_address
            .iter()
            .map(|u| u.wallet_addresses.first().cloned().unwrap_or_default())
            .collect();
        let mut expected = addresses.clone();
        expected.sort();
        assert_eq!(addresses, expected);
        assert!(addresses[..2].iter().all(String::is_empty), "{addresses:?}");
        assert!(
            addresses[2..].iter().all(|a| a.starts_with("0x")),
            "{addresses:?}"
        );
    }

    pub(super) async fn status_tiers_come_in_pages(store: Store) {
        let app = spawn_app(store).await;
        let mut last = 0;
        for (name, min) in [
            ("e", "5000"),
            ("a", "0"),
            ("c", "200"),
            ("b", "50"),
            ("d", "1000"),
        ] {
            last = ok!(app.tiers().create_status_tier(req(
                "acme",
                pb::CreateStatusTierRequest {
                    name: name.into(),
                    min_balance: min.into(),
                    discount_percentage: "5".into(),
                    eligible_tokens: vec!["PTS".into()],
                    ..Default::default()
                },
            )))
            .position;
        }
        let page = |token: String| pb::ListStatusTiersRequest {
            min_position: last,
            page_size: 2,
            page_token: token,
            ..Default::default()
        };
        let mut names = Vec::new();
        let mut sizes = Vec::new();
        let mut token = String::new();
        loop {
            let got = ok!(app.tiers().list_status_tiers(req("acme", page(token))));
            sizes.push(got.tiers.len());
            names.extend(got.tiers.into_iter().map(|t| t.name));
            if got.next_page_token.is_empty() {
                break;
            }
            token = got.next_page_token;
        }
        assert_eq!(sizes, vec![2, 2, 1]);
        assert_eq!(names, vec!["a", "b", "c", "d", "e"]);

        let refused = fails!(
            app.tiers()
                .list_status_tiers(req("acme", page("not-a-token".into()))),
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        );
        assert!(refused.message().contains("page_token"), "{refused:?}");
    }

    pub(super) async fn public_profiles_are_filtered_and_paged(store: Store) {
        let app = spawn_app(store).await;
        let profile = |team: &str, level: f64| prost_types::Struct {
            fields: [
                ("team".to_string(), string_value(team)),
                (
                    "level".to_string(),
                    prost_types::Value {
                        kind: Some(prost_types::value::Kind::NumberValue(level)),
                    },
                ),
            ]
            .into(),
        };
        let mut reds = Vec::new();
        let mut last = 0;
        for i in 0..7u32 {
            let team = if i % 2 == 0 { "red" } else { "blue" };
            let registered = ok!(app.users().register_user(registering(
                "acme",
                pb::UserInput {
                    email: format!("p{i}@example.com"),
                    public_profile: Some(profile(team, f64::from(i))),
                    ..Default::default()
                },
            )));
            last = registered.position;
            if team == "red" {
                reds.push(registered.user.expect("user").user_id);
            }
        }
        reds.sort();
        let ask =
            |key: &str, value: &str, size: u32, token: String| pb::ListPublicProfilesRequest {
                min_position: last,
                filter_key: key.into(),
                filter_value: value.into(),
                page_size: size,
                page_token: token,
                ..Default::default()
            };

        // The red team, two per page, by user id.
        let mut seen = Vec::new();
        let mut pages = 0;
        let mut token = String::new();
        loop {
            let page = ok!(app
                .users()
                .list_public_profiles(req("acme", ask("team", "red", 2, token))));
            pages += 1;
            seen.extend(page.profiles.into_iter().map(|p| p.user_id));
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        assert_eq!(seen, reds);
        assert_eq!(pages, 2);

        // A number matches as JSON writes it; no filter lists everyone.
        let third = ok!(app
            .users()
            .list_public_profiles(req("acme", ask("level", "3", 0, String::new()))));
        assert_eq!(third.profiles.len(), 1);
        let everyone = ok!(app
            .users()
            .list_public_profiles(req("acme", ask("", "", 0, String::new()))));
        assert_eq!(everyone.profiles.len(), 7);
        assert!(everyone.next_page_token.is_empty());

        // A value without its key, and a token from nowhere, are refused.
        fails!(
            app.users()
                .list_public_profiles(req("acme", ask("", "red", 0, String::new()))),
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        );
        fails!(
            app.users()
                .list_public_profiles(req("acme", ask("team", "red", 2, "bogus".into()))),
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        );
    }

    fn string_value(s: &str) -> prost_types::Value {
        prost_types::Value {
            kind: Some(prost_types::value::Kind::StringValue(s.into())),
        }
    }
}
