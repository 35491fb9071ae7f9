//! MergeUsers moves the duplicate's contact values and roles to the survivor (issue 17,
//! docs/adr/0007-merging-users.md): every lookup by a merged value finds the survivor, the
//! claims move in the merge's own unit (so nobody can take a value in between), and the
//! duplicate stays readable as merged. On both stores.

#[macro_use]
mod common;

use common::*;
use identity_proto::v1 as pb;
use tonic::Code;

on_both_stores!(a_merge_moves_contact_values_and_roles_to_the_survivor,);

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
}
