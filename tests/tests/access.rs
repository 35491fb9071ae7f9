//! Callers prove who they are: every RPC refuses a missing or forged credential, tenants come
//! from the credential, project keys are revoked everywhere, and the recorded actor is the
//! token's subject. Roles are in `access_roles.rs`, TLS and keys in `access_tls.rs`. Each test
//! tries the attack and asserts it is refused.

#[macro_use]
mod common;
mod access_support;

use std::time::{Duration, Instant};

use access_support::*;
use common::*;
use identity_proto::v1 as pb;
use identity_proto::v1::tenant_service_client::TenantServiceClient;
use tonic::{Code, Request};

on_both_stores!(
    every_rpc_refuses_a_missing_or_forged_credential,
    tenants_come_from_the_credential,
    a_project_key_reads_public_data_only_until_revoked_everywhere,
    the_recorded_actor_is_the_token_subject,
);

mod scenarios {
    use super::*;

    pub(super) async fn every_rpc_refuses_a_missing_or_forged_credential(store: Store) {
        let app = spawn_app(store).await;
        let forged = forged_tokens();
        for path in every_rpc() {
            let none = raw_call(app.channel(), &path, Request::new(())).await;
            let status = none.expect_err(&format!("{path} answered without a credential"));
            assert_eq!(status.code(), Code::Unauthenticated, "{path}: {status:?}");
            assert_eq!(reason(&status), "UNAUTHENTICATED", "{path}");
            let spoofed = with_header(
                with_header(Request::new(()), "x-tenant-id", "acme"),
                "x-actor",
                "root",
            );
            let status = raw_call(app.channel(), &path, spoofed)
                .await
                .expect_err(&format!("{path} believed x-tenant-id alone"));
            assert_eq!(status.code(), Code::Unauthenticated, "{path}: {status:?}");
        }
        // Every forgery, on a read and a write.
        for path in [
            "/identity.v1.UserService/GetUser",
            "/identity.v1.WalletService/CreditTokens",
            "/identity.v1.ProjectionService/RebuildProjection",
        ] {
            for (what, token) in &forged {
                let r = with_token(token, Some("acme"), ());
                let status = raw_call(app.channel(), path, r)
                    .await
                    .expect_err(&format!("{path} accepted a token that is {what}"));
                assert_eq!(
                    status.code(),
                    Code::Unauthenticated,
                    "{what} on {path}: {status:?}"
                );
            }
        }
        // The genuine token passes the gate (and then fails validation of the empty message).
        let ok = raw_call(
            app.channel(),
            "/identity.v1.UserService/GetUser",
            with_token(&mint_claims(claims("acme")), None, ()),
        )
        .await
        .expect_err("an empty GetUser is invalid");
        assert_eq!(ok.code(), Code::InvalidArgument, "{ok:?}");
        // Health answers anyone.
        let health = raw_call(
            app.channel(),
            "/grpc.health.v1.Health/Check",
            Request::new(()),
        )
        .await;
        assert!(health.is_ok(), "{health:?}");
    }

    pub(super) async fn tenants_come_from_the_credential(store: Store) {
        let app = spawn_app(store).await;
        let user = app.register("tenant-b", "bee@example.com").await;
        let token = mint("service", "billing", Some("tenant-a"), &["read:users"]);
        // Naming another tenant than the token's is refused.
        let other = app
            .users()
            .get_user(with_token(&token, Some("tenant-b"), ask::get_user(&user)))
            .await;
        assert_error(other, Code::PermissionDenied, "TENANT_NOT_ALLOWED");
        let get = |token: String| {
            let mut users = app.users();
            let r = with_token(&token, None, ask::get_user(&user));
            async move { users.get_user(r).await }
        };
        // Its own tenant does not hold the other's user.
        fails!(get(token.clone()), Code::NotFound, "USER_NOT_FOUND");
        // A token for a tenant that does not exist gets nothing.
        let ghost = mint("service", "billing", Some("ghost"), &["read:users"]);
        fails!(get(ghost), Code::NotFound, "TENANT_NOT_FOUND");
        // A service without the permission is told which one it lacks.
        let reader = mint("service", "billing", Some("tenant-b"), &["read:users"]);
        let status = app
            .wallets()
            .credit_tokens(with_token(
                &reader,
                None,
                credit("w", "340282366920938463463374607431768211455", "k"),
            ))
            .await
            .expect_err("credit refused");
        assert_eq!(status.code(), Code::PermissionDenied);
        assert_eq!(reason(&status), "PERMISSION_DENIED");
        assert_eq!(
            detail(&status, "permission").as_deref(),
            Some("credit:wallets")
        );
        // Creating tenants is a SUPER_ADMIN's: a tenant-wide service cannot.
        let everything = mint(
            "service",
            "ops",
            Some("acme"),
            &["create:users", "manage:admins"],
        );
        let status = TenantServiceClient::new(app.channel())
            .create_tenant(with_token(
                &everything,
                None,
                pb::CreateTenantRequest {
                    tenant_id: "mine".into(),
                    name: String::new(),
                },
            ))
            .await;
        assert_error(status, Code::PermissionDenied, "PERMISSION_DENIED");
    }

    pub(super) async fn a_project_key_reads_public_data_only_until_revoked_everywhere(
        store: Store,
    ) {
        let app = spawn_app(store).await;
        // A second replica on the same store.
        let (addr2, _stop2, _server2) = start_server(app.db.url()).await;
        let replica = connect(addr2).await;
        let user = app.register("acme", "pk@example.com").await;
        let issued = ok!(
            TenantServiceClient::new(app.channel()).issue_project_key(req(
                "acme",
                pb::IssueProjectKeyRequest {
                    name: "web shop".into(),
                },
            ))
        );
        let secret = issued.secret.clone();
        let key_id = issued.key.expect("key").key_id;
        let with_key = |msg| with_header(Request::new(msg), "x-project-key", &secret);
        // Public data: yes.
        let exists = app
            .users()
            .user_exists(with_key(pb::UserExistsRequest {
                email: "pk@example.com".into(),
                ..Default::default()
            }))
            .await;
        assert!(exists.is_ok(), "{exists:?}");
        // Personal data and writes: never.
        let personal = app
            .users()
            .get_user(with_header(
                Request::new(ask::get_user(&user)),
                "x-project-key",
                &secret,
            ))
            .await;
        assert_error(personal, Code::PermissionDenied, "PERMISSION_DENIED");
        let email = app
            .users()
            .request_email_change(with_header(
                Request::new(ask::email_change(&user, "evil@example.com")),
                "x-project-key",
                &secret,
            ))
            .await;
        assert_error(email, Code::PermissionDenied, "PERMISSION_DENIED");
        // Its tenant only.
        let elsewhere = app
            .users()
            .user_exists(with_header(
                with_header(
                    Request::new(pb::UserExistsRequest {
                        email: "pk@example.com".into(),
                        ..Default::default()
                    }),
                    "x-project-key",
                    &secret,
                ),
                "x-tenant-id",
                "tenant-b",
            ))
            .await;
        assert_error(elsewhere, Code::PermissionDenied, "TENANT_NOT_ALLOWED");
        // The second replica knows the key within a second too.
        let exists_on_replica = || {
            let mut users =
                identity_proto::v1::user_service_client::UserServiceClient::new(replica.clone());
            let r = with_header(
                Request::new(pb::UserExistsRequest {
                    email: "pk@example.com".into(),
                    ..Default::default()
                }),
                "x-project-key",
                &secret,
            );
            async move { users.user_exists(r).await }
        };
        soon("the second replica never accepted the new key", || async {
            exists_on_replica().await.is_ok()
        })
        .await;
        // Revoked on the first replica: refused there at once, and on the second within 1 s.
        TenantServiceClient::new(app.channel())
            .revoke_project_key(req(
                "acme",
                pb::RevokeProjectKeyRequest {
                    key_id: key_id.clone(),
                },
            ))
            .await
            .expect("revokes");
        let revoked_at = Instant::now();
        let here = app
            .users()
            .user_exists(with_key(pb::UserExistsRequest {
                email: "pk@example.com".into(),
                ..Default::default()
            }))
            .await;
        assert_error(here, Code::Unauthenticated, "UNAUTHENTICATED");
        let took = within(
            revoked_at,
            Duration::from_secs(1),
            "the second replica still accepts a revoked key",
            || async {
                matches!(exists_on_replica().await, Err(s) if s.code() == Code::Unauthenticated)
            },
        )
        .await;
        eprintln!("a revoked key reached the second replica after {took:?}");
        // The listing shows the revocation; the secret is never shown again.
        let keys = ok!(TenantServiceClient::new(app.channel())
            .list_project_keys(req("acme", pb::ListProjectKeysRequest {})))
        .keys;
        assert!(keys
            .iter()
            .any(|k| k.key_id == key_id && k.revoked_at.is_some()));
    }

    pub(super) async fn the_recorded_actor_is_the_token_subject(store: Store) {
        let app = spawn_app(store).await;
        let user = app.register("acme", "act@example.com").await;
        let wallet = app.active_wallet("acme", &user).await;
        let billing = mint("service", "billing", Some("acme"), &["credit:wallets"]);
        let r = with_header(
            with_token(&billing, None, credit(&wallet, "5", "c1")),
            "x-actor",
            "someone-else",
        );
        app.wallets().credit_tokens(r).await.expect("credits");
        let events = app
            .event_log()
            .events::<identity_domain::wallet::Wallet>(&format!("acme/{wallet}"))
            .await
            .expect("events");
        let last = events.last().expect("the credit");
        assert_eq!(
            last.metadata.get("actor").map(String::as_str),
            Some("service:billing")
        );
        assert_eq!(
            last.metadata.get("principal_kind").map(String::as_str),
            Some("service")
        );
        assert_eq!(
            last.metadata.get("issuer").map(String::as_str),
            Some("identity")
        );
        assert_eq!(
            last.metadata.get("command").map(String::as_str),
            Some("CreditTokens")
        );
    }
}
