//! People's own passwords and data: bounded guessing, a wrong old password, reset by code,
//! legacy import as a migration tool, and field scopes that keep an email from a token
//! without the scope. Sessions and tokens are in `people_sessions.rs`. Every scenario
//! runs on PostgreSQL and on SQLite.

#[macro_use]
mod common;
mod people_support;

use common::*;
use identity_proto::v1 as pb;
use identity_proto::v1::auth_service_client::AuthServiceClient;
use identity_proto::v1::me_service_client::MeServiceClient;
use people_support::*;
use tonic::Code;

on_both_stores!(
    a_token_without_the_email_scope_gets_users_without_their_email,
    twenty_wrong_passwords_lock_the_account_and_a_locked_attempt_costs_no_hash,
    a_wrong_old_password_costs_one_hash_and_changes_nothing,
    a_password_is_reset_by_code_and_the_sessions_end,
    legacy_import_refuses_a_modern_credential_and_can_be_turned_off,
);

mod scenarios {
    use super::*;

    /// The defect: VerifyPassword answered any number of wrong guesses (12 in a row, then
    /// the right one was accepted).
    pub(super) async fn twenty_wrong_passwords_lock_the_account_and_a_locked_attempt_costs_no_hash(
        store: Store,
    ) {
        let app = spawn_app(store).await;
        let user = user_with_password(&app, "guessed@example.com", "right password").await;
        let mut users = app.users();
        for n in 1..=20 {
            let s = fails!(
                users.verify_password(verify(&user, &format!("guess {n}"))),
                Code::Unauthenticated,
                "INVALID_CREDENTIALS",
            );
            assert_eq!(retry_after(&s), 0);
        }
        let before = app.passwords.computed();
        let locked = fails!(
            users.verify_password(verify(&user, "right password")),
            Code::ResourceExhausted,
            "ACCOUNT_LOCKED",
        );
        let wait = retry_after(&locked);
        assert!((1..=60).contains(&wait), "retry after {wait} s");
        assert_eq!(
            app.passwords.computed(),
            before,
            "a locked attempt must not hash"
        );
        // SignIn is locked the same way, and costs nothing either.
        let key = project_key(&app, "acme").await;
        let s = fails!(
            AuthServiceClient::new(app.channel()).sign_in(with_key(
                &key,
                sign_in("guessed@example.com", "right password"),
            )),
            Code::ResourceExhausted,
            "ACCOUNT_LOCKED",
        );
        assert!(retry_after(&s) > 0);
        assert_eq!(app.passwords.computed(), before);
        // Another user is not affected.
        let other = user_with_password(&app, "bystander@example.com", "their password").await;
        users
            .verify_password(verify(&other, "their password"))
            .await
            .expect("another account still works");
    }

    /// The old password is checked before the new one is hashed: a wrong guess costs one
    /// hash, not two, and counts toward the lock.
    pub(super) async fn a_wrong_old_password_costs_one_hash_and_changes_nothing(store: Store) {
        let app = spawn_app(store).await;
        let user = user_with_password(&app, "changer@example.com", "old password").await;
        let before = app.passwords.computed();
        fails!(
            app.users().change_password(req(
                "acme",
                pb::ChangePasswordRequest {
                    user_id: user.clone(),
                    old_password: "not it at all".into(),
                    new_password: "new password".into(),
                },
            )),
            Code::Unauthenticated,
            "INVALID_CREDENTIALS",
        );
        assert_eq!(app.passwords.computed() - before, 1);
        app.users()
            .verify_password(verify(&user, "old password"))
            .await
            .expect("the old password still works");
    }

    pub(super) async fn a_password_is_reset_by_code_and_the_sessions_end(store: Store) {
        let app = spawn_app(store).await;
        user_with_password(&app, "forgot@example.com", "forgotten pw").await;
        let key = project_key(&app, "acme").await;
        let mut auth = AuthServiceClient::new(app.channel());
        let first_session = session(&mut auth, &key, "forgot@example.com", "forgotten pw").await;
        let by_email = || {
            Some(pb::request_password_reset_request::Identifier::Email(
                "forgot@example.com".into(),
            ))
        };
        // The app (a project key) never sees the code.
        let asked = ok!(auth.request_password_reset(with_key(
            &key,
            pb::RequestPasswordResetRequest {
                identifier: by_email(),
                person_code: String::new(),
            },
        )));
        assert!(asked.code.is_empty(), "the code reached an ordinary caller");
        // Nor does it learn who is registered.
        let unknown = ok!(auth.request_password_reset(with_key(
            &key,
            pb::RequestPasswordResetRequest {
                identifier: Some(pb::request_password_reset_request::Identifier::Email(
                    "stranger@example.com".into(),
                )),
                person_code: String::new(),
            },
        )));
        assert!(unknown.code.is_empty() && unknown.expires_at.is_some());
        // Too soon for another code.
        fails!(
            auth.request_password_reset(codes_req(
                "acme",
                pb::RequestPasswordResetRequest {
                    identifier: by_email(),
                    person_code: String::new(),
                },
            )),
            Code::ResourceExhausted,
            "RATE_LIMIT_EXCEEDED",
        );
        let user = app.register("acme", "forgot2@example.com").await;
        app.users()
            .set_password(req("acme", ask::set_password(&user, "forgotten pw")))
            .await
            .expect("sets");
        let by_email2 = || {
            Some(pb::reset_password_request::Identifier::Email(
                "forgot2@example.com".into(),
            ))
        };
        let code = ok!(auth.request_password_reset(codes_req(
            "acme",
            pb::RequestPasswordResetRequest {
                identifier: Some(pb::request_password_reset_request::Identifier::Email(
                    "forgot2@example.com".into(),
                )),
                person_code: String::new(),
            },
        )))
        .code;
        assert_eq!(code.len(), 6, "a read:codes holder gets the code");
        let s = fails!(
            auth.reset_password(with_key(
                &key,
                pb::ResetPasswordRequest {
                    identifier: by_email2(),
                    code: code.clone(),
                    new_password: "short".into(),
                },
            )),
            Code::InvalidArgument,
            "INVALID_PASSWORD",
        );
        {
            use tonic_types::StatusExt as _;
            let violations = s.get_error_details().bad_request().cloned();
            assert!(
                violations.is_some_and(|b| b.field_violations[0].field == "new_password"),
                "{s:?}"
            );
        }
        let wrong = if code == "000000" { "111111" } else { "000000" };
        fails!(
            auth.reset_password(with_key(
                &key,
                pb::ResetPasswordRequest {
                    identifier: by_email2(),
                    code: wrong.into(),
                    new_password: "brand new pw".into(),
                },
            )),
            Code::InvalidArgument,
            "INVALID_CODE",
        );
        let second_session = session(&mut auth, &key, "forgot2@example.com", "forgotten pw").await;
        auth.reset_password(with_key(
            &key,
            pb::ResetPasswordRequest {
                identifier: by_email2(),
                code: code.clone(),
                new_password: "brand new pw".into(),
            },
        ))
        .await
        .expect("resets");
        fails!(
            MeServiceClient::new(app.channel()).get_me(bearer(
                &second_session.access_token,
                pb::GetMeRequest::default(),
            )),
            Code::Unauthenticated,
            "UNAUTHENTICATED",
        );
        fails!(
            auth.sign_in(with_key(
                &key,
                sign_in("forgot2@example.com", "forgotten pw"),
            )),
            Code::Unauthenticated,
            "INVALID_CREDENTIALS",
        );
        auth.sign_in(with_key(
            &key,
            sign_in("forgot2@example.com", "brand new pw"),
        ))
        .await
        .expect("the new password signs in");
        // A used code is spent.
        fails!(
            auth.reset_password(with_key(
                &key,
                pb::ResetPasswordRequest {
                    identifier: by_email2(),
                    code,
                    new_password: "another pw 1".into(),
                },
            )),
            Code::InvalidArgument,
            "INVALID_CODE",
        );
        // The first user's session is untouched by the second user's reset.
        MeServiceClient::new(app.channel())
            .get_me(bearer(
                &first_session.access_token,
                pb::GetMeRequest::default(),
            ))
            .await
            .expect("still signed in");
    }

    pub(super) async fn legacy_import_refuses_a_modern_credential_and_can_be_turned_off(
        store: Store,
    ) {
        let app = spawn_app(store).await;
        let user = user_with_password(&app, "modern@example.com", "modern password").await;
        let import = |user: &str| {
            req(
                "acme",
                pb::ImportLegacyPasswordRequest {
                    user_id: user.into(),
                    salt: "s4lt".into(),
                    sha1_base64: "+nZmB2ryNpTA6hMngzCgCPVJ16I=".into(),
                },
            )
        };
        fails!(
            app.users().import_legacy_password(import(&user)),
            Code::FailedPrecondition,
            "CREDENTIAL_EXISTS",
        );
        app.users()
            .verify_password(verify(&user, "modern password"))
            .await
            .expect("the modern password is intact");
        let off = spawn_app_with(Store::Sqlite, |s| s.legacy_import = false).await;
        let fresh = off.register("acme", "late@example.com").await;
        fails!(
            off.users().import_legacy_password(import(&fresh)),
            Code::FailedPrecondition,
            "LEGACY_IMPORT_DISABLED",
        );
    }
    pub(super) async fn a_token_without_the_email_scope_gets_users_without_their_email(
        store: Store,
    ) {
        let app = spawn_app(store).await;
        let registered = ok!(app.users().register_user(registering(
            "acme",
            pb::UserInput {
                email: "scoped@example.com".into(),
                phone: "+372 5555 0001".into(),
                first_name: "Grace".into(),
                ..Default::default()
            },
        )));
        let user = registered.user.expect("user").user_id;
        let token = scoped_token(&["read:users"], Some(&["name", "phone"]));
        let mut users = app.users();
        let got = ok!(users.get_user(bearer(&token, ask::get_user(&user))));
        let u = got.user.expect("user");
        assert_eq!(u.email, "", "the email is withheld");
        assert_eq!(u.first_name, "Grace");
        assert_eq!(u.phone, "37255550001");
        assert!(
            got.withheld_fields.contains(&"email".to_string()),
            "{:?}",
            got.withheld_fields
        );
        assert!(!got.withheld_fields.contains(&"phone".to_string()));
        // Asking for it outright is refused, naming the field.
        let s = fails!(
            users.get_user(bearer(
                &token,
                pb::GetUserRequest {
                    user_id: user.clone(),
                    read_mask: Some(identity_proto::prost_types::FieldMask {
                        paths: vec!["first_name".into(), "email".into()],
                    }),
                },
            )),
            Code::PermissionDenied,
            "FIELD_OUT_OF_SCOPE",
        );
        assert_eq!(detail(&s, "field").as_deref(), Some("email"));
        // The directory answers follow the same table.
        let listed = ok!(users.list_users(bearer(
            &token,
            pb::ListUsersRequest {
                search: "grace".into(),
                min_position: registered.position,
                ..Default::default()
            },
        )));
        assert_eq!(listed.users.len(), 1);
        assert_eq!(listed.users[0].email, "");
        assert!(listed.withheld_fields.contains(&"email".to_string()));
        let found = ok!(users.lookup_user(bearer(
            &token,
            pb::LookupUserRequest {
                key: Some(pb::lookup_user_request::Key::Phone("+372 5555 0001".into())),
                min_position: registered.position,
                read_mask: None,
            },
        )));
        assert_eq!(found.user.expect("user").email, "");
        // Lookup by national person code is its own permission.
        let s = fails!(
            users.lookup_user(bearer(
                &token,
                pb::LookupUserRequest {
                    key: Some(pb::lookup_user_request::Key::PersonCode(
                        "EE:38601010123".into(),
                    )),
                    ..Default::default()
                },
            )),
            Code::PermissionDenied,
            "PERMISSION_DENIED",
        );
        assert!(s.message().contains("lookup:person_code"), "{s:?}");
        // Without a scopes claim, every field the permissions reach.
        let full = ok!(users.get_user(bearer(
            &scoped_token(&["read:users"], None),
            ask::get_user(&user),
        )));
        assert_eq!(full.user.expect("user").email, "scoped@example.com");
        assert!(full.withheld_fields.is_empty());
        // The audit trail shows payloads and states cut by the same scopes, and says what.
        let auditor = scoped_token(&["read:audit"], Some(&["name", "phone"]));
        let history = ok!(
            identity_proto::v1::audit_service_client::AuditServiceClient::new(app.channel())
                .get_aggregate_history(bearer(
                    &auditor,
                    pb::GetAggregateHistoryRequest {
                        aggregate_type: "User".into(),
                        aggregate_id: user.clone(),
                        ..Default::default()
                    },
                ))
        );
        let first = &history.entries[0];
        let event = first.event.as_ref().expect("event");
        let text = format!("{:?} {:?}", event.payload, first.state);
        assert!(!text.contains("scoped@example.com"), "{text}");
        assert!(text.contains("Grace"), "{text}");
        assert!(
            event.withheld_fields.contains(&"email".to_string()),
            "{event:?}"
        );
        assert!(
            first.withheld_fields.contains(&"email".to_string()),
            "{first:?}"
        );
        let unscoped = ok!(
            identity_proto::v1::audit_service_client::AuditServiceClient::new(app.channel())
                .get_aggregate_history(bearer(
                    &scoped_token(&["read:audit"], None),
                    pb::GetAggregateHistoryRequest {
                        aggregate_type: "User".into(),
                        aggregate_id: user.clone(),
                        ..Default::default()
                    },
                ))
        );
        let event = unscoped.entries[0].event.as_ref().expect("event");
        assert!(format!("{:?}", event.payload).contains("scoped@example.com"));
        assert!(event.withheld_fields.is_empty());
        // An unknown scope is not quietly ignored.
        fails!(
            users.get_user(bearer(
                &scoped_token(&["read:users"], Some(&["emails"])),
                ask::get_user(&user),
            )),
            Code::Unauthenticated,
            "UNAUTHENTICATED",
        );
    }
}
