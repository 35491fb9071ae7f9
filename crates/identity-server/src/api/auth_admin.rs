//! Admins sign in through AuthService too (`admin_email`): the same lockout and rotating
//! sessions as people (the rules are the domain's `SignInState`), ending in an admin token
//! for the tenant of the app's key, which the admin must act in.

use identity_domain::admin::{admin_aggregate_id, admin_id, Admin, AdminCommand};
use identity_domain::user::{CredentialVerifier as _, Secret};
use identity_domain::values::Email;
use identity_domain::DomainError;
use identity_proto::v1 as pb;
use uuid::Uuid;

use super::auth::{opening, sign_tokens, Account, RefreshToken, SessionRefresh, Subject};
use crate::context::RequestContext;
use crate::core::Core;
use crate::error::{ApiError, ApiResult};

async fn run(
    core: &Core,
    ctx: &RequestContext,
    admin: Uuid,
    command: AdminCommand,
) -> ApiResult<identity_store::Executed<Admin>> {
    core.execute_as::<Admin>(
        ctx.event_metadata(),
        &admin_aggregate_id(&admin),
        command,
        &core.user_services,
    )
    .await
}

fn tokens(
    core: &Core,
    ctx: &RequestContext,
    admin: &Admin,
    refresh: SessionRefresh,
) -> ApiResult<pb::Tokens> {
    let (Some(id), Some(admin_type)) = (admin.id, admin.admin_type) else {
        return Err(DomainError::AdminNotFound.into());
    };
    let subject = Subject {
        sub: id.to_string(),
        kind: "admin",
        permissions: crate::access::permission::of_admin(admin_type),
        roles: vec![admin_type.as_str().to_string()],
    };
    sign_tokens(core, ctx, subject, refresh)
}

/// Signs an admin in. An unknown admin, or one that does not act in the key's tenant, costs
/// the same hash as a wrong password and gets the same answer.
pub(super) async fn sign_in(
    core: &Core,
    ctx: &RequestContext,
    email: &Email,
    password: Secret,
) -> ApiResult<pb::SignInResponse> {
    let id = admin_id(email);
    let acts = core
        .access
        .directory
        .snapshot()
        .admins
        .get(&id)
        .is_some_and(|a| a.acts_in(&ctx.tenant) && a.credential.is_some());
    if !acts {
        core.passwords
            .verify(super::auth::decoy(), &password)
            .await
            .map_err(ApiError::from)?;
        return Err(DomainError::InvalidCredentials.into());
    }
    let (refresh, attempt) = opening(ctx, core, Account::Admin(id), password);
    let executed = run(core, ctx, id, AdminCommand::SignIn(attempt))
        .await
        .map_err(|e| match e {
            ApiError::Domain(DomainError::AdminRemoved | DomainError::NoCredential) => {
                DomainError::InvalidCredentials.into()
            }
            e => e,
        })?;
    let tokens = tokens(core, ctx, &executed.aggregate, refresh)?;
    Ok(pb::SignInResponse {
        tokens: Some(tokens),
        user_id: String::new(),
        position: executed.position,
    })
}

/// Continues an admin's session with a new refresh token.
pub(super) async fn refresh(
    core: &Core,
    ctx: &RequestContext,
    admin: Uuid,
    presented: RefreshToken,
) -> ApiResult<pb::RefreshResponse> {
    let renewal = presented.renewal(ctx, core);
    let executed = run(core, ctx, admin, AdminCommand::Sessions(renewal.command))
        .await
        .map_err(|e| match e {
            ApiError::Domain(DomainError::AdminNotFound | DomainError::AdminRemoved) => {
                DomainError::InvalidRefreshToken.into()
            }
            e => e,
        })?;
    if !executed.aggregate.acts_in(&ctx.tenant) {
        return Err(DomainError::InvalidRefreshToken.into());
    }
    let tokens = tokens(core, ctx, &executed.aggregate, renewal.refresh)?;
    Ok(pb::RefreshResponse {
        tokens: Some(tokens),
        position: executed.position,
    })
}

/// Ends the admin session the presented (current) refresh token continues.
pub(super) async fn sign_out(
    core: &Core,
    ctx: &RequestContext,
    admin: Uuid,
    presented: RefreshToken,
) -> ApiResult<pb::SignOutResponse> {
    let invalid = || ApiError::from(DomainError::InvalidRefreshToken);
    let loaded = core
        .log
        .load::<Admin>(&admin_aggregate_id(&admin))
        .await?
        .ok_or_else(invalid)?;
    let end = presented
        .sign_out(&loaded.aggregate.sign_in)
        .ok_or_else(invalid)?;
    let executed = run(core, ctx, admin, AdminCommand::Sessions(end)).await?;
    Ok(pb::SignOutResponse {
        position: executed.position,
    })
}
