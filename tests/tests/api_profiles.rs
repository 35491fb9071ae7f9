//! Integration tests of what changes a user: email change by code, passwords, bulk upsert,
//! profile updates, roles, deactivation and merge, on both stores.

#[macro_use]
mod common;

use common::*;
use identity_proto::v1 as pb;
use tonic::Code;

on_both_stores!(
    email_change_is_confirmed_by_code_and_locks_after_five_wrong_codes,
    passwords_are_verified_and_legacy_ones_upgraded,
    bulk_upsert_reports_each_item_on_its_own,
    profile_updates_roles_deactivation_and_merge,
);

mod scenarios {
    use super::*;

    pub(super) async fn email_change_is_confirmed_by_code_and_locks_after_five_wrong_codes(
        store: Store,
    ) {
        let app = spawn_app(store).await;
        let user = app.register("acme", "old@example.com").await;
        let mut u = app.users();
        let requested = ok!(u.request_email_change(codes_req(
            "acme",
            ask::email_change(&user, "new@example.com"),
        )));
        assert_eq!(requested.code.len(), 6);
        let wrong = if requested.code == "000000" {
            "111111"
        } else {
            "000000"
        };
        for attempt in 1..=5 {
            let s = fails!(
                u.confirm_email(req("acme", ask::confirm_email(&user, wrong))),
                Code::InvalidArgument,
                "INVALID_CODE",
            );
            assert!(
                s.message()
                    .contains(&format!("{} attempts left", 5 - attempt)),
                "{s:?}"
            );
        }
        fails!(
            u.confirm_email(req("acme", ask::confirm_email(&user, &requested.code))),
            Code::ResourceExhausted,
            "RATE_LIMIT_EXCEEDED",
        );
        // The defect: a new request reset the five-attempt lock, so asking again and again
        // gave unlimited guesses. Now it is refused, with when to retry.
        let again = fails!(
            u.request_email_change(codes_req(
                "acme",
                ask::email_change(&user, "new@example.com"),
            )),
            Code::ResourceExhausted,
            "RATE_LIMIT_EXCEEDED",
        );
        assert!(retry_after(&again) > 0, "{again:?}");
        // An ordinary caller never sees the code: it goes to the person.
        let other = app.register("acme", "other-old@example.com").await;
        let hidden = ok!(u.request_email_change(req(
            "acme",
            ask::email_change(&other, "other-new@example.com"),
        )));
        assert!(hidden.code.is_empty(), "the code reached the caller");
        // While locked, the new address was not kept: someone else may still take it... until
        // a user confirms it with a code.
        let user = app.register("acme", "old2@example.com").await;
        let fresh = ok!(u.request_email_change(codes_req(
            "acme",
            ask::email_change(&user, "new@example.com"),
        )));
        let confirmed = ok!(u.confirm_email(req("acme", ask::confirm_email(&user, &fresh.code))));
        assert_eq!(confirmed.email, "new@example.com");
        let got = ok!(u.get_user(req("acme", ask::get_user(&user))))
            .user
            .expect("user");
        assert_eq!(got.email, "new@example.com");
        assert!(got.email_confirmed);
        // The old address is free again; the new one is taken.
        app.register("acme", "old2@example.com").await;
        fails!(
            u.register_user(registering("acme", user_input("new@example.com"))),
            Code::AlreadyExists,
            "EMAIL_ALREADY_ASSIGNED",
        );
        fails!(
            u.confirm_phone(req("acme", ask::confirm_phone(&user, "123456"))),
            Code::FailedPrecondition,
            "NO_PENDING_CHANGE",
        );
    }

    pub(super) async fn passwords_are_verified_and_legacy_ones_upgraded(store: Store) {
        let app = spawn_app(store).await;
        let user = app.register("acme", "pw@example.com").await;
        let mut u = app.users();
        fails!(
            u.verify_password(req("acme", ask::verify_password(&user, "whatever1"))),
            Code::FailedPrecondition,
            "NO_CREDENTIAL",
        );
        fails!(
            u.set_password(req("acme", ask::set_password(&user, "short"))),
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        );
        u.set_password(req("acme", ask::set_password(&user, "correct horse")))
            .await
            .expect("sets");
        let ok = ok!(u.verify_password(req("acme", ask::verify_password(&user, "correct horse"))));
        assert!(ok.valid && !ok.upgraded);
        fails!(
            u.verify_password(req("acme", ask::verify_password(&user, "wrong horse"))),
            Code::Unauthenticated,
            "INVALID_CREDENTIALS",
        );
        fails!(
            u.change_password(req(
                "acme",
                pb::ChangePasswordRequest {
                    user_id: user.clone(),
                    old_password: "nope".into(),
                    new_password: "battery staple".into(),
                },
            )),
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
        u.verify_password(req("acme", ask::verify_password(&user, "battery staple")))
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
        let first =
            ok!(u.verify_password(req("acme", ask::verify_password(&legacy, "legacy-pass"))));
        assert!(
            first.upgraded,
            "the legacy credential is upgraded on first success"
        );
        let second =
            ok!(u.verify_password(req("acme", ask::verify_password(&legacy, "legacy-pass"))));
        assert!(!second.upgraded);
    }

    pub(super) async fn bulk_upsert_reports_each_item_on_its_own(store: Store) {
        let app = spawn_app(store).await;
        let existing = app.register("acme", "known@example.com").await;
        let result = ok!(app.users().upsert_users(req(
            "acme",
            pb::UpsertUsersRequest {
                users: vec![
                    pb::UserInput {
                        email: "known@example.com".into(),
                        first_name: "Known".into(),
                        ..Default::default()
                    },
                    user_input("fresh@example.com"),
                    user_input("broken"),
                    pb::UserInput {
                        external_id: "crm-9".into(),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            },
        )))
        .results;
        assert_eq!(result.len(), 4);
        assert_eq!(result[0].user_id, existing);
        assert!(!result[0].created && result[0].error.is_none());
        assert!(result[1].created && result[1].error.is_none());
        let err = result[2].error.as_ref().expect("item 2 fails");
        assert_eq!(err.code, "INVALID_ARGUMENT");
        assert_eq!(err.field_violations[0].field, "users[2].email");
        assert!(result[3].created && result[3].error.is_none());
        let known = ok!(app.users().get_user(req("acme", ask::get_user(&existing))))
            .user
            .expect("user");
        assert_eq!(known.first_name, "Known");
    }

    pub(super) async fn profile_updates_roles_deactivation_and_merge(store: Store) {
        let app = spawn_app(store).await;
        let user = app.register("acme", "p@example.com").await;
        let mut u = app.users();
        let updated = ok!(u.update_user_profile(req(
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
        )))
        .user
        .expect("user");
        assert_eq!(updated.first_name, "Grace");
        assert_eq!(updated.last_name, "");
        fails!(
            u.update_user_profile(req(
                "acme",
                pb::UpdateUserProfileRequest {
                    user_id: user.clone(),
                    profile: None,
                    update_mask: Some(identity_proto::prost_types::FieldMask {
                        paths: vec!["email".into()],
                    }),
                },
            )),
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        );
        let roles = ok!(u.set_user_roles(req(
            "acme",
            ask::roles(&user, &["admin"], pb::RolesMode::Add)
        )));
        assert_eq!(roles.roles, vec!["admin"]);
        let roles = ok!(u.set_user_roles(req(
            "acme",
            ask::roles(&user, &["support"], pb::RolesMode::Add)
        )));
        assert_eq!(roles.roles, vec!["admin", "support"]);
        let roles = ok!(u.set_user_roles(req(
            "acme",
            ask::roles(&user, &["viewer"], pb::RolesMode::Replace)
        )));
        assert_eq!(roles.roles, vec!["viewer"]);

        u.deactivate_user(req("acme", ask::deactivate(&user)))
            .await
            .expect("deactivates");
        fails!(
            u.set_user_roles(req("acme", ask::roles(&user, &["x"], pb::RolesMode::Add))),
            Code::FailedPrecondition,
            "USER_INACTIVE",
        );
        u.reactivate_user(req("acme", ask::reactivate(&user)))
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
        let merged = ok!(u.get_user(req("acme", ask::get_user(&user))))
            .user
            .expect("user");
        assert_eq!(merged.merged_into, survivor);
        fails!(
            u.deactivate_user(req("acme", pb::DeactivateUserRequest { user_id: user })),
            Code::FailedPrecondition,
            "USER_MERGED",
        );
    }
}
