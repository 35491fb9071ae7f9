//! Permissions: admins act in their tenants with their type's permissions, and users hold
//! what their roles grant and never more. Each test tries the attack and asserts it is
//! refused.

#[macro_use]
mod common;
mod access_support;

use std::time::{Duration, Instant};

use access_support::*;
use common::*;
use identity_proto::v1 as pb;
use identity_proto::v1::admin_service_client::AdminServiceClient;
use identity_proto::v1::tenant_service_client::TenantServiceClient;
use tonic::Code;

on_both_stores!(
    admins_act_in_their_tenants_with_their_types_permissions,
    users_hold_what_their_roles_grant_and_never_more,
);

mod scenarios {
    use super::*;

    pub(super) async fn admins_act_in_their_tenants_with_their_types_permissions(store: Store) {
        let app = spawn_app(store).await;
        let (addr2, _stop2, _server2) = start_server(app.db.url()).await;
        let replica = connect(addr2).await;
        let mut admins = AdminServiceClient::new(app.channel());
        let tenant_admin = app
            .new_admin("ta@example.com", pb::AdminType::TenantAdmin)
            .await;
        let auditor = app
            .new_admin("au@example.com", pb::AdminType::Auditor)
            .await;
        let ta = mint("admin", &tenant_admin.admin_id, None, &[]);
        let au = mint("admin", &auditor.admin_id, None, &[]);
        let user = app.register("acme", "who@example.com").await;
        // The tenant admin works in acme (its only tenant, so no header is needed)…
        let got = app
            .users()
            .get_user(with_token(&ta, None, ask::get_user(&user)))
            .await;
        assert!(got.is_ok(), "{got:?}");
        // …but not in another tenant, and cannot climb to SUPER_ADMIN or rebuild read models.
        let other = app
            .users()
            .get_user(with_token(&ta, Some("tenant-b"), ask::get_user(&user)))
            .await;
        assert_error(other, Code::PermissionDenied, "TENANT_NOT_ALLOWED");
        let climb = admins
            .create_admin(with_token(
                &ta,
                None,
                ask::new_admin("boss@example.com", pb::AdminType::SuperAdmin),
            ))
            .await;
        assert_error(climb, Code::PermissionDenied, "FORBIDDEN");
        let rebuild = app
            .projection_admin()
            .rebuild_projection(with_token(
                &ta,
                None,
                pb::RebuildProjectionRequest {
                    name: "directory".into(),
                },
            ))
            .await;
        assert_error(rebuild, Code::PermissionDenied, "PERMISSION_DENIED");
        // The auditor reads the trail but never writes.
        let wallet = app.active_wallet("acme", &user).await;
        let credit = app
            .wallets()
            .credit_tokens(with_token(
                &au,
                None,
                credit(&wallet, "340282366920938463463374607431768211455", "k1"),
            ))
            .await;
        assert_error(credit, Code::PermissionDenied, "PERMISSION_DENIED");
        let pep = app
            .identification()
            .set_pep_status(with_token(
                &au,
                None,
                pb::SetPepStatusRequest {
                    user_id: user.clone(),
                    ..Default::default()
                },
            ))
            .await;
        assert_error(pep, Code::PermissionDenied, "PERMISSION_DENIED");
        let trail =
            identity_proto::v1::audit_service_client::AuditServiceClient::new(app.channel())
                .verify_chain(with_token(&au, None, pb::VerifyChainRequest {}))
                .await;
        assert!(trail.is_ok(), "{trail:?}");
        // ListAdmins shows acme's admins.
        let listed = ok!(admins.list_admins(req("acme", pb::ListAdminsRequest {}))).admins;
        assert!(listed.iter().any(|a| a.email == "au@example.com"));
        // Detached on the first replica: refused on the second within a second.
        let on_replica = || {
            let mut users =
                identity_proto::v1::user_service_client::UserServiceClient::new(replica.clone());
            let r = with_token(&ta, Some("acme"), ask::get_user(&user));
            async move { users.get_user(r).await }
        };
        soon("the second replica never knew the admin", || async {
            on_replica().await.is_ok()
        })
        .await;
        admins
            .remove_admin_from_tenant(req(
                "acme",
                pb::RemoveAdminFromTenantRequest {
                    admin_id: tenant_admin.admin_id.clone(),
                    tenant_id: "acme".into(),
                },
            ))
            .await
            .expect("detaches");
        let detached_at = Instant::now();
        let took = within(
            detached_at,
            Duration::from_secs(1),
            "the second replica still lets a detached admin act",
            || async {
                matches!(on_replica().await, Err(s)
                    if s.code() == Code::PermissionDenied && reason(&s) == "TENANT_NOT_ALLOWED")
            },
        )
        .await;
        eprintln!("a detached admin reached the second replica after {took:?}");
        // A removed admin is refused everywhere.
        admins
            .remove_admin(req(
                "acme",
                pb::RemoveAdminRequest {
                    admin_id: auditor.admin_id.clone(),
                },
            ))
            .await
            .expect("removes");
        let gone = app
            .users()
            .get_user(with_token(&au, None, ask::get_user(&user)))
            .await;
        assert_error(gone, Code::Unauthenticated, "UNAUTHENTICATED");
    }

    pub(super) async fn users_hold_what_their_roles_grant_and_never_more(store: Store) {
        let app = spawn_app(store).await;
        let support = app.register("acme", "support@example.com").await;
        let member = app.register("acme", "member@example.com").await;
        for (user, role) in [(&support, "support"), (&member, "member")] {
            app.users()
                .set_user_roles(req(
                    "acme",
                    pb::SetUserRolesRequest {
                        user_id: user.clone(),
                        roles: vec![role.into()],
                        mode: pb::RolesMode::Replace as i32,
                    },
                ))
                .await
                .expect("sets roles");
        }
        let support_token = mint("user", &support, Some("acme"), &[]);
        let member_token = mint("user", &member, Some("acme"), &[]);
        let read = app
            .users()
            .get_user(with_token(&support_token, None, ask::get_user(&member)))
            .await;
        assert!(read.is_ok(), "{read:?}");
        let denied = app
            .users()
            .get_user(with_token(&member_token, None, ask::get_user(&support)))
            .await;
        assert_error(denied, Code::PermissionDenied, "PERMISSION_DENIED");
        // A user-level caller never reaches the operators' RPCs, whatever its token claims.
        let rebuild = app
            .projection_admin()
            .rebuild_projection(with_token(
                &support_token,
                None,
                pb::RebuildProjectionRequest {
                    name: "directory".into(),
                },
            ))
            .await;
        assert_error(rebuild, Code::PermissionDenied, "PERMISSION_DENIED");
        // The tenant's role table decides: give members read:users, and they read.
        TenantServiceClient::new(app.channel())
            .set_role_permissions(req(
                "acme",
                pb::SetRolePermissionsRequest {
                    role: "member".into(),
                    permissions: vec!["read:public".into(), "read:users".into()],
                },
            ))
            .await
            .expect("sets the role");
        let now_allowed = app
            .users()
            .get_user(with_token(&member_token, None, ask::get_user(&support)))
            .await;
        assert!(now_allowed.is_ok(), "{now_allowed:?}");
        let global = TenantServiceClient::new(app.channel())
            .set_role_permissions(req(
                "acme",
                pb::SetRolePermissionsRequest {
                    role: "member".into(),
                    permissions: vec!["manage:projections".into()],
                },
            ))
            .await;
        assert_error(global, Code::InvalidArgument, "INVALID_ARGUMENT");
    }
}
