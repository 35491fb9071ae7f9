//! UpsertUsers as the upstream means it (issue 17): a matched user's contact values and
//! active flag change too, through their claims; an update mask clears fields; the caller
//! picks the key that matches; concurrent upserts of one new key end with one user, every
//! call succeeding. On both stores.

#[macro_use]
mod common;

use common::*;
use identity_proto::v1 as pb;
use tonic::Code;

on_both_stores!(
    a_matched_user_changes_contacts_and_active_through_their_claims,
    the_update_mask_clears_fields,
    the_match_key_decides_which_user_an_item_updates,
    concurrent_upserts_of_one_new_key_end_with_one_user,
    users_are_registered_inactive_when_asked,
);

fn upsert(
    users: Vec<pb::UserInput>,
    match_key: pb::UpsertMatchKey,
    mask: &[&str],
) -> pb::UpsertUsersRequest {
    pb::UpsertUsersRequest {
        users,
        match_key: match_key as i32,
        update_mask: (!mask.is_empty()).then(|| identity_proto::prost_types::FieldMask {
            paths: mask.iter().map(|p| (*p).to_string()).collect(),
        }),
    }
}

fn item(external_id: &str, email: &str, phone: &str) -> pb::UserInput {
    pb::UserInput {
        external_id: external_id.into(),
        email: email.into(),
        phone: phone.into(),
        ..Default::default()
    }
}

/// The one result of a one-item upsert.
async fn upsert_one(app: &TestApp, request: pb::UpsertUsersRequest) -> pb::UpsertUserResult {
    let mut results = ok!(app.users().upsert_users(req("acme", request))).results;
    assert_eq!(results.len(), 1);
    results.remove(0)
}

async fn user(app: &TestApp, id: &str) -> pb::User {
    ok!(app.users().get_user(req("acme", ask::get_user(id))))
        .user
        .expect("user")
}

/// Whether registering someone new with `input` is refused as already assigned.
async fn taken(app: &TestApp, input: pb::UserInput) -> bool {
    match app.users().register_user(registering("acme", input)).await {
        Ok(_) => false,
        Err(s) if s.code() == Code::AlreadyExists => true,
        Err(s) => panic!("unexpected: {s:?}"),
    }
}

mod scenarios {
    use super::*;

    pub(super) async fn a_matched_user_changes_contacts_and_active_through_their_claims(
        store: Store,
    ) {
        let app = spawn_app(store).await;
        let none = pb::UpsertMatchKey::Unspecified;
        let created = upsert_one(
            &app,
            upsert(
                vec![item("crm-9", "first@example.com", "+3725550001")],
                none,
                &[],
            ),
        )
        .await;
        assert!(created.created && created.error.is_none(), "{created:?}");
        let id = created.user_id;

        let mut change = item("crm-9", "second@example.com", "+3725550002");
        change.active = Some(false);
        let updated = upsert_one(&app, upsert(vec![change], none, &[])).await;
        assert!(!updated.created && updated.error.is_none(), "{updated:?}");
        assert_eq!(updated.user_id, id);
        let got = user(&app, &id).await;
        assert_eq!(
            (got.email.as_str(), got.phone.as_str(), got.active),
            ("second@example.com", "3725550002", false)
        );
        // The claims moved with the values: the old ones are free, the new ones taken.
        assert!(!taken(&app, user_input("first@example.com")).await);
        assert!(taken(&app, user_input("second@example.com")).await);

        // A value someone else holds is refused for this item, and changes nothing.
        let mut clash = item("crm-9", "first@example.com", "");
        clash.active = Some(true);
        let refused = upsert_one(&app, upsert(vec![clash], none, &[])).await;
        let error = refused.error.expect("the email is someone else's");
        assert_eq!(error.reason, "EMAIL_ALREADY_ASSIGNED");
        let got = user(&app, &id).await;
        assert_eq!(
            (got.email.as_str(), got.active),
            ("second@example.com", false)
        );

        // Reactivation on its own.
        let mut back = item("crm-9", "", "");
        back.active = Some(true);
        assert!(upsert_one(&app, upsert(vec![back], none, &[]))
            .await
            .error
            .is_none());
        assert!(user(&app, &id).await.active);
    }

    pub(super) async fn the_update_mask_clears_fields(store: Store) {
        let app = spawn_app(store).await;
        let none = pb::UpsertMatchKey::Unspecified;
        let mut first = item("crm-m", "mask@example.com", "+3725550003");
        first.first_name = "Masha".into();
        first.locale = "et".into();
        let id = upsert_one(&app, upsert(vec![first], none, &[]))
            .await
            .user_id;

        // Listed and empty: cleared. Not listed: kept, even when the item has a value.
        let mut clearing = item("crm-m", "", "");
        clearing.last_name = "Ignored".into();
        let cleared = upsert_one(
            &app,
            upsert(vec![clearing], none, &["first_name", "phone", "locale"]),
        )
        .await;
        assert!(cleared.error.is_none(), "{cleared:?}");
        let got = user(&app, &id).await;
        assert_eq!(
            (
                got.first_name.as_str(),
                got.phone.as_str(),
                got.locale.as_str()
            ),
            ("", "", "")
        );
        assert_eq!(
            (got.email.as_str(), got.last_name.as_str()),
            ("mask@example.com", "")
        );
        assert!(
            !taken(
                &app,
                pb::UserInput {
                    phone: "+3725550003".into(),
                    ..Default::default()
                }
            )
            .await
        );

        // Matched by email, the external id is cleared, and its claim freed.
        let by_email = upsert_one(
            &app,
            upsert(
                vec![item("", "mask@example.com", "")],
                pb::UpsertMatchKey::Email,
                &["external_id"],
            ),
        )
        .await;
        assert!(by_email.error.is_none(), "{by_email:?}");
        assert_eq!(user(&app, &id).await.external_id, "");
        assert!(!taken(&app, item("crm-m", "", "")).await);
    }

    pub(super) async fn the_match_key_decides_which_user_an_item_updates(store: Store) {
        let app = spawn_app(store).await;
        let holder = upsert_one(
            &app,
            upsert(
                vec![item("x-1", "", "")],
                pb::UpsertMatchKey::Unspecified,
                &[],
            ),
        )
        .await
        .user_id;
        let wanted = || item("x-1", "matched@example.com", "");

        // Matched by email, nobody has it: a new user, whose external id is taken.
        let by_email =
            upsert_one(&app, upsert(vec![wanted()], pb::UpsertMatchKey::Email, &[])).await;
        assert_eq!(
            by_email.error.expect("x-1 is taken").reason,
            "EXTERNAL_ID_ALREADY_ASSIGNED"
        );
        // Matched by external id: the holder, who gets the email.
        let by_id = upsert_one(
            &app,
            upsert(vec![wanted()], pb::UpsertMatchKey::ExternalId, &[]),
        )
        .await;
        assert!(by_id.error.is_none() && !by_id.created, "{by_id:?}");
        assert_eq!(by_id.user_id, holder);
        assert_eq!(user(&app, &holder).await.email, "matched@example.com");
        // An item without its match key's value is refused.
        let missing = upsert_one(
            &app,
            upsert(vec![item("x-1", "", "")], pb::UpsertMatchKey::Phone, &[]),
        )
        .await;
        let error = missing.error.expect("no phone to match by");
        assert_eq!(error.code, "INVALID_ARGUMENT");
        assert_eq!(error.field_violations[0].field, "users[0].phone");
    }

    pub(super) async fn concurrent_upserts_of_one_new_key_end_with_one_user(store: Store) {
        let app = spawn_app(store).await;
        let calls = (0..8).map(|i| {
            let mut users = app.users();
            let mut input = item("race-1", "", "");
            input.first_name = format!("Racer{i}");
            async move {
                users
                    .upsert_users(req(
                        "acme",
                        upsert(vec![input], pb::UpsertMatchKey::ExternalId, &[]),
                    ))
                    .await
            }
        });
        let answers = futures::future::join_all(calls).await;
        let mut ids = std::collections::BTreeSet::new();
        let mut created = 0;
        for answer in answers {
            let result = answer
                .expect("the call succeeds")
                .into_inner()
                .results
                .remove(0);
            assert!(result.error.is_none(), "{result:?}");
            created += usize::from(result.created);
            ids.insert(result.user_id);
        }
        assert_eq!(ids.len(), 1, "one user: {ids:?}");
        assert_eq!(created, 1);
    }

    pub(super) async fn users_are_registered_inactive_when_asked(store: Store) {
        let app = spawn_app(store).await;
        let mut input = user_input("sleeping@example.com");
        input.active = Some(false);
        let registered = ok!(app.users().register_user(registering("acme", input)))
            .user
            .expect("user");
        assert!(!registered.active);
        assert!(!user(&app, &registered.user_id).await.active);
        let mut item = item("crm-sleep", "", "");
        item.active = Some(false);
        let created = upsert_one(
            &app,
            upsert(vec![item], pb::UpsertMatchKey::Unspecified, &[]),
        )
        .await;
        assert!(created.created && created.error.is_none(), "{created:?}");
        assert!(!user(&app, &created.user_id).await.active);
    }
}
