//! The directory read model: users listed, searched, sorted and paged, looked up by every
//! key, and never across tenants, on both stores.

#[macro_use]
mod common;

use common::*;
use identity_proto::v1 as pb;
use tonic::Code;

on_both_stores!(
    users_are_listed_searched_sorted_and_paged,
    users_are_looked_up_by_every_key,
    user_exists_answers_by_user_id,
    queries_never_cross_tenants,
);

mod scenarios {
    use super::*;

    pub(super) async fn users_are_listed_searched_sorted_and_paged(store: Store) {
        let app = spawn_app(store).await;
        let mut last = 0;
        let mut ids = Vec::new();
        for i in 0..23 {
            let r = ok!(app.users().register_user(registering(
                "acme",
                pb::UserInput {
                    email: format!("member{i:02}@example.com"),
                    first_name: if i % 2 == 0 {
                        "Alice".into()
                    } else {
                        "Bob".into()
                    },
                    last_name: format!("Zed{i:02}"),
                    external_id: format!("EXT-{i:02}"),
                    ..Default::default()
                },
            )));
            last = r.position;
            ids.push(r.user.expect("user").user_id);
        }
        app.users()
            .deactivate_user(req("acme", ask::deactivate(&ids[0])))
            .await
            .expect("deactivates");
        let last = ok!(app
            .users()
            .deactivate_user(req("acme", ask::deactivate(&ids[1]))))
        .position
        .max(last);
        let list = |q: pb::ListUsersRequest| {
            let mut c = app.users();
            async move { ok!(c.list_users(req("acme", q))) }
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
        fails!(
            app.users().list_users(req(
                "acme",
                pb::ListUsersRequest {
                    cursor: "garbage".into(),
                    ..Default::default()
                },
            )),
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        );
    }

    pub(super) async fn users_are_looked_up_by_every_key(store: Store) {
        let app = spawn_app(store).await;
        let r = ok!(app.users().register_user(registering(
            "acme",
            pb::UserInput {
                email: "look@example.com".into(),
                phone: "+372 5555 0000".into(),
                external_id: "crm-7".into(),
                public_profile: Some(identity_proto::prost_types::Struct {
                    fields: [(
                        "nick".to_string(),
                        identity_proto::prost_types::Value {
                            kind: Some(identity_proto::prost_types::value::Kind::StringValue(
                                "ada".into(),
                            )),
                        },
                    )]
                    .into(),
                }),
                ..Default::default()
            },
        )));
        let user = r.user.expect("user").user_id;
        let wallet = app.active_wallet("acme", &user).await;
        let address = ok!(app
            .wallets()
            .get_wallet(req("acme", pb::GetWalletRequest { wallet_id: wallet })))
        .wallet
        .expect("wallet")
        .address;
        let position = ok!(app.identification().submit_identity(req(
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
        )))
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
        fails!(
            app.users().lookup_user(req(
                "acme",
                pb::LookupUserRequest {
                    key: Some(Key::Email("nobody@example.com".into())),
                    min_position: 0,
                    read_mask: None,
                },
            )),
            Code::NotFound,
            "USER_NOT_FOUND",
        );
        let exists = ok!(app.users().user_exists(req(
            "acme",
            pb::UserExistsRequest {
                email: "other@example.com".into(),
                external_id: "crm-7".into(),
                min_position: position,
                ..Default::default()
            },
        )));
        assert!(exists.exists);
        assert_eq!(exists.matched_key, "external_id");
        assert_eq!(exists.user_id, user);
        let missing = ok!(app.users().user_exists(req(
            "acme",
            pb::UserExistsRequest {
                email: "other@example.com".into(),
                min_position: position,
                ..Default::default()
            },
        )));
        assert!(!missing.exists);
        let profile = ok!(app.users().get_public_profile(req(
            "acme",
            pb::GetPublicProfileRequest {
                user_id: user.clone(),
                min_position: position,
            },
        )))
        .profile
        .expect("profile");
        assert_eq!(profile.user_id, user);
        assert!(profile
            .public_profile
            .expect("struct")
            .fields
            .contains_key("nick"));
        let profiles = ok!(app.users().list_public_profiles(req(
            "acme",
            pb::ListPublicProfilesRequest {
                user_ids: vec![user.clone(), uuid::Uuid::new_v4().to_string()],
                min_position: position,
                ..Default::default()
            },
        )))
        .profiles;
        assert_eq!(profiles.len(), 1);
    }

    pub(super) async fn queries_never_cross_tenants(store: Store) {
        let app = spawn_app(store).await;
        let user = app.register("tenant-a", "cross@example.com").await;
        let position = ok!(app
            .users()
            .deactivate_user(req("tenant-a", ask::deactivate(&user))))
        .position;
        let listed = ok!(app.users().list_users(req(
            "tenant-b",
            pb::ListUsersRequest {
                min_position: position,
                ..Default::default()
            },
        )));
        assert_eq!(listed.total, 0);
        fails!(
            app.users().lookup_user(req(
                "tenant-b",
                pb::LookupUserRequest {
                    key: Some(pb::lookup_user_request::Key::Email(
                        "cross@example.com".into(),
                    )),
                    min_position: position,
                    read_mask: None,
                },
            )),
            Code::NotFound,
            "USER_NOT_FOUND",
        );
        fails!(
            app.users().get_public_profile(req(
                "tenant-b",
                pb::GetPublicProfileRequest {
                    user_id: user,
                    min_position: position,
                },
            )),
            Code::NotFound,
            "USER_NOT_FOUND",
        );
    }

    /// UserExists takes a user id too (issue 17): the upstream's callers ask by id.
    pub(super) async fn user_exists_answers_by_user_id(store: Store) {
        let app = spawn_app(store).await;
        let registered = ok!(app
            .users()
            .register_user(registering("acme", user_input("known@example.com"))));
        let (user, position) = (registered.user.expect("user").user_id, registered.position);
        let by_id = |user_id: &str| {
            req(
                "acme",
                pb::UserExistsRequest {
                    user_id: user_id.into(),
                    min_position: position,
                    ..Default::default()
                },
            )
        };
        let found = ok!(app.users().user_exists(by_id(&user)));
        assert!(found.exists);
        assert_eq!(found.matched_key, "user_id");
        assert_eq!(found.user_id, user);
        let unknown = ok!(app
            .users()
            .user_exists(by_id("5a0e8f2c-51c5-4d1e-9f3b-6b7c2d9e0a11")));
        assert!(!unknown.exists);
        assert_eq!(unknown.user_id, "");
        // Another tenant's id is not a user of this one.
        let other = ok!(app.users().user_exists(req(
            "other",
            pb::UserExistsRequest {
                user_id: user.clone(),
                min_position: position,
                ..Default::default()
            },
        )));
        assert!(!other.exists);
        // A malformed id is the caller's mistake, named as such.
        fails!(
            app.users().user_exists(by_id("not-a-uuid")),
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        );
    }
}
