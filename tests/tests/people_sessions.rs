//! People's own sessions: sign-in with rotating refresh tokens, "me", sign-out, and an
//! admin's sign-in. Every scenario runs on PostgreSQL and on SQLite.

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
    signing_in_gives_tokens_that_act_as_the_person,
    a_reused_refresh_token_ends_its_session_and_sign_out_ends_the_access_token,
    an_admin_signs_in_and_its_token_lives_as_long_as_its_session,
);

mod scenarios {
    use super::*;

    pub(super) async fn signing_in_gives_tokens_that_act_as_the_person(store: Store) {
        let app = spawn_app(store).await;
        let user = user_with_password(&app, "me@example.com", "my password 1").await;
        let wallet = app.active_wallet("acme", &user).await;
        let credited = ok!(app
            .wallets()
            .credit_tokens(req("acme", credit(&wallet, "42", "me-1"))));
        let key = project_key(&app, "acme").await;
        let mut auth = AuthServiceClient::new(app.channel());
        fails!(
            auth.sign_in(with_key(&key, sign_in("me@example.com", "not my password"))),
            Code::Unauthenticated,
            "INVALID_CREDENTIALS",
        );
        fails!(
            auth.sign_in(with_key(&key, sign_in("nobody@example.com", "whatever 1"))),
            Code::Unauthenticated,
            "INVALID_CREDENTIALS",
        );
        let signed = ok!(auth.sign_in(with_key(&key, sign_in("ME@example.com", "my password 1"))));
        assert_eq!(signed.user_id, user);
        let tokens = signed.tokens.expect("tokens");
        assert_eq!(tokens.token_type, "Bearer");
        assert!(tokens.refresh_token.starts_with("rt1.acme."));
        let mut me = MeServiceClient::new(app.channel());
        let got = ok!(me.get_me(bearer(&tokens.access_token, pb::GetMeRequest::default())));
        assert_eq!(got.user.expect("user").user_id, user);
        assert!(got.permissions.contains(&"read:me".to_string()));
        assert_eq!(got.session_id, tokens.session_id);
        let balances = ok!(me.get_my_balances(bearer(
            &tokens.access_token,
            pb::GetMyBalancesRequest {
                min_position: credited.position,
            },
        )));
        assert_eq!(balances.wallets.len(), 1);
        assert_eq!(balances.wallets[0].balances[0].amount, "42");
        me.get_my_status(bearer(
            &tokens.access_token,
            pb::GetMyStatusRequest {
                min_position: credited.position,
            },
        ))
        .await
        .expect("GetMyStatus");
        let updated = ok!(me.update_me(bearer(
            &tokens.access_token,
            pb::UpdateMeRequest {
                profile: Some(pb::UserInput {
                    first_name: "Ada".into(),
                    ..Default::default()
                }),
                update_mask: Some(identity_proto::prost_types::FieldMask {
                    paths: vec!["first_name".into()],
                }),
            },
        )));
        assert_eq!(updated.user.expect("user").first_name, "Ada");
        // The person's token is theirs alone: no operator calls, no one else's data.
        fails!(
            app.users()
                .get_user(bearer(&tokens.access_token, ask::get_user(&user))),
            Code::PermissionDenied,
            "PERMISSION_DENIED",
        );
        // An admin is not a person: MeService refuses it.
        fails!(
            me.get_my_balances(req("acme", pb::GetMyBalancesRequest::default())),
            Code::PermissionDenied,
            "FORBIDDEN",
        );
        // The access token verifies with the published key alone (JWKS-shaped claims).
        let claims = decode_unverified(&tokens.access_token);
        assert_eq!(claims["sub"], user.as_str());
        assert_eq!(claims["tenant"], "acme");
        assert_eq!(claims["kind"], "user");
        assert_eq!(claims["sid"], tokens.session_id.as_str());
    }

    pub(super) async fn a_reused_refresh_token_ends_its_session_and_sign_out_ends_the_access_token(
        store: Store,
    ) {
        let app = spawn_app(store).await;
        user_with_password(&app, "rotate@example.com", "my password 2").await;
        let key = project_key(&app, "acme").await;
        let mut auth = AuthServiceClient::new(app.channel());
        let mut me = MeServiceClient::new(app.channel());
        let first = session(&mut auth, &key, "rotate@example.com", "my password 2").await;
        let second = ok!(auth.refresh(refreshing(&key, &first.refresh_token)))
            .tokens
            .expect("tokens");
        assert_ne!(second.refresh_token, first.refresh_token, "rotated");
        assert_eq!(second.session_id, first.session_id);
        me.get_me(bearer(&second.access_token, pb::GetMeRequest::default()))
            .await
            .expect("the new access token works");
        // The first refresh token again: a copy is in use, so the session ends.
        refresh_refused(&mut auth, &key, &first.refresh_token).await;
        refresh_refused(&mut auth, &key, &second.refresh_token).await;
        fails!(
            me.get_me(bearer(&second.access_token, pb::GetMeRequest::default())),
            Code::Unauthenticated,
            "UNAUTHENTICATED",
        );
        // A fresh session, signed out: its access token stops at once.
        let third = session(&mut auth, &key, "rotate@example.com", "my password 2").await;
        let listed = ok!(me.list_my_sessions(bearer(
            &third.access_token,
            pb::ListMySessionsRequest::default(),
        )));
        assert_eq!(listed.sessions.len(), 1);
        assert!(listed.sessions[0].current);
        auth.sign_out(with_key(
            &key,
            pb::SignOutRequest {
                refresh_token: third.refresh_token.clone(),
            },
        ))
        .await
        .expect("signs out");
        fails!(
            me.get_me(bearer(&third.access_token, pb::GetMeRequest::default())),
            Code::Unauthenticated,
            "UNAUTHENTICATED",
        );
        // Garbage and other tenants' tokens say nothing more than "invalid".
        for bad in ["", "rt1", "rt1.acme.x.y.z", "rt1.other.a.b.c"] {
            refresh_refused(&mut auth, &key, bad).await;
        }
    }

    pub(super) async fn an_admin_signs_in_and_its_token_lives_as_long_as_its_session(store: Store) {
        use identity_proto::v1::admin_service_client::AdminServiceClient;
        let app = spawn_app(store).await;
        let mut admins = AdminServiceClient::new(app.channel());
        let auditor = app
            .new_admin("audit@acme.example", pb::AdminType::Auditor)
            .await
            .admin_id;
        let ops = app
            .new_admin("ops@acme.example", pb::AdminType::TenantAdmin)
            .await
            .admin_id;
        let set = |admin_id: &str, password: &str| pb::SetAdminPasswordRequest {
            admin_id: admin_id.into(),
            password: password.into(),
        };
        // An auditor sets its own password, never another admin's.
        let as_auditor = mint("admin", &auditor, Some("acme"), &[]);
        admins
            .set_admin_password(with_token(&as_auditor, None, set(&auditor, "auditor pw 1")))
            .await
            .expect("an admin sets its own password");
        fails!(
            admins.set_admin_password(with_token(&as_auditor, None, set(&ops, "hijacked pw"))),
            Code::PermissionDenied,
            "PERMISSION_DENIED",
        );
        admins
            .set_admin_password(req("acme", set(&ops, "ops password 1")))
            .await
            .expect("a SUPER_ADMIN sets it");

        let key = project_key(&app, "acme").await;
        let mut auth = AuthServiceClient::new(app.channel());
        let admin_sign_in = |email: &str, password: &str| pb::SignInRequest {
            identifier: Some(pb::sign_in_request::Identifier::AdminEmail(email.into())),
            password: password.into(),
        };
        fails!(
            auth.sign_in(with_key(
                &key,
                admin_sign_in("ops@acme.example", "wrong password"),
            )),
            Code::Unauthenticated,
            "INVALID_CREDENTIALS",
        );
        // The same answer for an admin that does not act in the key's tenant.
        let other_key = project_key(&app, "other").await;
        fails!(
            auth.sign_in(with_key(
                &other_key,
                admin_sign_in("ops@acme.example", "ops password 1"),
            )),
            Code::Unauthenticated,
            "INVALID_CREDENTIALS",
        );
        let tokens = ok!(auth.sign_in(with_key(
            &key,
            admin_sign_in("ops@acme.example", "ops password 1"),
        )))
        .tokens
        .expect("tokens");
        let claims = decode_unverified(&tokens.access_token);
        assert_eq!(claims["kind"], "admin");
        assert_eq!(claims["sub"], ops.as_str());
        assert_eq!(claims["tenant"], "acme");
        assert_eq!(claims["roles"], serde_json::json!(["TENANT_ADMIN"]));
        assert!(claims["sid"].is_string());
        let list = |token: &str| {
            let token = token.to_string();
            let channel = app.channel();
            async move {
                AdminServiceClient::new(channel)
                    .list_admins(bearer(&token, pb::ListAdminsRequest::default()))
                    .await
            }
        };
        list(&tokens.access_token).await.expect("acts as the admin");

        // Rotation: the new refresh token continues, the old one replayed ends the session.
        let refreshed = ok!(auth.refresh(refreshing(&key, &tokens.refresh_token)))
            .tokens
            .expect("tokens");
        list(&refreshed.access_token)
            .await
            .expect("the refreshed token acts");
        refresh_refused(&mut auth, &key, &tokens.refresh_token).await;
        let ended = list(&refreshed.access_token)
            .await
            .expect_err("the session ended");
        assert_eq!(ended.code(), Code::Unauthenticated, "{ended:?}");

        // Signing out ends the session and its access token at once.
        let again = ok!(auth.sign_in(with_key(
            &key,
            admin_sign_in("ops@acme.example", "ops password 1"),
        )))
        .tokens
        .expect("tokens");
        auth.sign_out(with_key(
            &key,
            pb::SignOutRequest {
                refresh_token: again.refresh_token,
            },
        ))
        .await
        .expect("signs out");
        let ended = list(&again.access_token).await.expect_err("signed out");
        assert_eq!(ended.code(), Code::Unauthenticated, "{ended:?}");
    }
}

/// A JWT's claims, decoded without checking (the signature is checked by the server's own
/// verifier and by the JWKS test in `access.rs`).
fn decode_unverified(token: &str) -> serde_json::Value {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).expect("a JWT");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("json")
}
