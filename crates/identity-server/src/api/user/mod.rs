//! `identity.v1.UserService`.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use identity_domain::user::{
    RegisterUser, RolesMode, Secret, UpdateProfile, User, UserCommand, UserEvent,
};
use identity_domain::values::{Email, ExternalId, JsonObject, Locale, Name, Phone, Role, UserId};
use identity_domain::{ClaimKind, DomainError, Violations};
use identity_proto::v1 as pb;
use identity_proto::v1::user_service_server::UserService;
use identity_store::Executed;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::access::{scope, Permission};
use crate::context::RequestContext;
use crate::convert::{
    directory_user_to_pb, field, json_object, json_to_struct, optional, parse_fields, required,
    timestamp, totals, user_to_pb, wallet_balances_to_pb, Refused,
};
use crate::core::{deadline_of, Core};
use crate::delivery::{Code, Purpose};
use crate::error::{code_name, ApiError, ApiResult};
use identity_domain::values::PersonCode;
use identity_projections::queries::{ListUsers, ProfileFilter, SortField, UserKey};
use identity_projections::Projection;

/// Most items one UpsertUsers call takes.
pub const MAX_UPSERT_ITEMS: usize = 500;
const MAX_ROLES: usize = 64;

#[derive(Debug, Clone)]
pub struct UserApi {
    core: Core,
}

impl UserApi {
    pub fn new(core: Core) -> Self {
        Self { core }
    }
}

mod details;
mod duplicates;
mod erasure;
mod flows;
mod input;
mod merge;
mod passwords;
mod queries;
mod upsert;

pub(crate) use details::details_to_pb;
pub(crate) use input::scoped_user;
use input::*;

type Rpc<T> = Result<Response<T>, Status>;

/// RequestEmailChange and RequestPhoneChange: parse the user and the new value, then start
/// the change through the value's claim.
macro_rules! contact_change {
    ($self:ident, $request:ident, $field:ident: $Value:ident, $kind:expr, $Command:ident => $Answer:ident) => {{
        let ctx = RequestContext::from_request(&$request)?;
        let req = $request.into_inner();
        parse_fields! {
            user = field("user_id", &req.user_id, UserId::parse),
            $field = field(stringify!($field), &req.$field, $Value::parse),
        }
        let value = $field.to_string();
        let (code, expires, position) = $self
            .request_contact(&ctx, user, $kind, &value, |code_hash, expires_at, at| {
                UserCommand::$Command {
                    $field,
                    code_hash,
                    expires_at,
                    at,
                }
            })
            .await?;
        Ok(Response::new(pb::$Answer {
            code,
            expires_at: timestamp(Some(expires)),
            position,
        }))
    }};
}

#[tonic::async_trait]
impl UserService for UserApi {
    async fn register_user(
        &self,
        request: Request<pb::RegisterUserRequest>,
    ) -> Rpc<pb::RegisterUserResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let input = request.into_inner().user.unwrap_or_default();
        let active = input.active;
        let id_key = self.core.id_key(&ctx).await?;
        let cmd = parse_input(input, "user.", UserId(Uuid::new_v4()), &ctx, id_key)?;
        let executed = self.register(&ctx, cmd, active).await?;
        let (user, withheld_fields) =
            scoped_user(&self.core, &ctx, &executed.aggregate, executed.sequence).await?;
        Ok(Response::new(pb::RegisterUserResponse {
            user: Some(user),
            position: executed.position,
            withheld_fields,
        }))
    }

    async fn upsert_users(
        &self,
        request: Request<pb::UpsertUsersRequest>,
    ) -> Rpc<pb::UpsertUsersResponse> {
        self.answer_upsert_users(request).await
    }

    async fn update_user_profile(
        &self,
        request: Request<pb::UpdateUserProfileRequest>,
    ) -> Rpc<pb::UpdateUserProfileResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let req = request.into_inner();
        let mut v = Violations::new();
        let p = req.profile.unwrap_or_default();
        let paths: Vec<String> = req.update_mask.map(|m| m.paths).unwrap_or_default();
        const ALLOWED: [&str; 6] = [
            "first_name",
            "last_name",
            "locale",
            "custom_data",
            "public_profile",
            "details",
        ];
        for path in &paths {
            if !ALLOWED.contains(&path.as_str()) {
                v.push(
                    "update_mask",
                    format!("unknown path {path:?}; allowed: {}", ALLOWED.join(", ")),
                );
            }
        }
        // An empty mask updates every field the request sets.
        let wants = |name: &str| paths.is_empty() || paths.iter().any(|p| p == name);
        let update = UpdateProfile {
            first_name: if wants("first_name") {
                optional(&mut v, "profile.first_name", &p.first_name, Name::parse)
            } else {
                None
            },
            last_name: if wants("last_name") {
                optional(&mut v, "profile.last_name", &p.last_name, Name::parse)
            } else {
                None
            },
            locale: if wants("locale") {
                optional(&mut v, "profile.locale", &p.locale, Locale::parse)
            } else {
                None
            },
            custom_data: if wants("custom_data") {
                json_object(&mut v, "profile.custom_data", p.custom_data)
                    .or_else(|| (!paths.is_empty()).then(JsonObject::default))
            } else {
                None
            },
            public_profile: if wants("public_profile") {
                json_object(&mut v, "profile.public_profile", p.public_profile)
                    .or_else(|| (!paths.is_empty()).then(JsonObject::default))
            } else {
                None
            },
            // Replaced whole: set when given, or cleared when the mask lists it without them.
            details: if wants("details") {
                let today = Utc::now().date_naive();
                p.details
                    .map(|d| details::parse_details(&mut v, "profile.details.", d, today))
                    .or_else(|| (!paths.is_empty()).then(Default::default))
            } else {
                None
            },
        };
        parse_fields! { v;
            user = field("user_id", &req.user_id, UserId::parse),
        }
        let executed = self
            .run(
                &ctx,
                user,
                UserCommand::UpdateProfile(Box::new(update), Utc::now()),
            )
            .await?;
        let (user, withheld_fields) =
            scoped_user(&self.core, &ctx, &executed.aggregate, executed.sequence).await?;
        Ok(Response::new(pb::UpdateUserProfileResponse {
            user: Some(user),
            position: executed.position,
            withheld_fields,
        }))
    }

    async fn deactivate_user(
        &self,
        request: Request<pb::DeactivateUserRequest>,
    ) -> Rpc<pb::DeactivateUserResponse> {
        let user_id = &request.get_ref().user_id;
        let position = self.on_user(&request, user_id, |at| UserCommand::Deactivate { at });
        Ok(Response::new(pb::DeactivateUserResponse {
            position: position.await?,
        }))
    }

    async fn reactivate_user(
        &self,
        request: Request<pb::ReactivateUserRequest>,
    ) -> Rpc<pb::ReactivateUserResponse> {
        let user_id = &request.get_ref().user_id;
        let position = self.on_user(&request, user_id, |at| UserCommand::Reactivate { at });
        Ok(Response::new(pb::ReactivateUserResponse {
            position: position.await?,
        }))
    }

    async fn request_email_change(
        &self,
        request: Request<pb::RequestEmailChangeRequest>,
    ) -> Rpc<pb::RequestEmailChangeResponse> {
        let kind = ClaimKind::Email;
        contact_change!(
            self, request, email: Email, kind, RequestEmailChange => RequestEmailChangeResponse
        )
    }

    async fn confirm_email(
        &self,
        request: Request<pb::ConfirmEmailRequest>,
    ) -> Rpc<pb::ConfirmEmailResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let req = request.into_inner();
        let user = parse_user_id("user_id", &req.user_id)?;
        let (email, position) = self
            .confirm_contact(&ctx, user, ClaimKind::Email, &req.code)
            .await?;
        Ok(Response::new(pb::ConfirmEmailResponse { email, position }))
    }

    async fn request_phone_change(
        &self,
        request: Request<pb::RequestPhoneChangeRequest>,
    ) -> Rpc<pb::RequestPhoneChangeResponse> {
        let kind = ClaimKind::Phone;
        contact_change!(
            self, request, phone: Phone, kind, RequestPhoneChange => RequestPhoneChangeResponse
        )
    }

    async fn confirm_phone(
        &self,
        request: Request<pb::ConfirmPhoneRequest>,
    ) -> Rpc<pb::ConfirmPhoneResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let req = request.into_inner();
        let user = parse_user_id("user_id", &req.user_id)?;
        let (phone, position) = self
            .confirm_contact(&ctx, user, ClaimKind::Phone, &req.code)
            .await?;
        Ok(Response::new(pb::ConfirmPhoneResponse { phone, position }))
    }

    async fn set_user_roles(
        &self,
        request: Request<pb::SetUserRolesRequest>,
    ) -> Rpc<pb::SetUserRolesResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let req = request.into_inner();
        let mut v = Violations::new();
        if req.roles.len() > MAX_ROLES {
            v.push("roles", format!("at most {MAX_ROLES} roles"));
        }
        let roles: BTreeSet<Role> = req
            .roles
            .iter()
            .enumerate()
            .filter_map(|(i, r)| required(&mut v, &format!("roles[{i}]"), r, Role::parse))
            .collect();
        parse_fields! { v;
            user = field("user_id", &req.user_id, UserId::parse),
            mode = crate::convert::checked("mode", roles_mode(req.mode)),
        }
        let executed = self
            .run(&ctx, user, UserCommand::SetRoles { roles, mode })
            .await?;
        Ok(Response::new(pb::SetUserRolesResponse {
            roles: executed
                .aggregate
                .roles
                .iter()
                .map(ToString::to_string)
                .collect(),
            position: executed.position,
        }))
    }

    async fn set_password(
        &self,
        request: Request<pb::SetPasswordRequest>,
    ) -> Rpc<pb::SetPasswordResponse> {
        self.answer_set_password(request).await
    }

    async fn change_password(
        &self,
        request: Request<pb::ChangePasswordRequest>,
    ) -> Rpc<pb::ChangePasswordResponse> {
        self.answer_change_password(request).await
    }

    async fn import_legacy_password(
        &self,
        request: Request<pb::ImportLegacyPasswordRequest>,
    ) -> Rpc<pb::ImportLegacyPasswordResponse> {
        self.answer_import_legacy_password(request).await
    }

    async fn verify_password(
        &self,
        request: Request<pb::VerifyPasswordRequest>,
    ) -> Rpc<pb::VerifyPasswordResponse> {
        self.answer_verify_password(request).await
    }

    async fn merge_users(
        &self,
        request: Request<pb::MergeUsersRequest>,
    ) -> Rpc<pb::MergeUsersResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let wait = deadline_of(&request);
        let req = request.into_inner();
        parse_fields! {
            source = field("source_user_id", &req.source_user_id, UserId::parse),
            target = field("target_user_id", &req.target_user_id, UserId::parse),
        }
        let executed = self.merge(&ctx, source, target, wait).await?;
        Ok(Response::new(pb::MergeUsersResponse {
            position: executed.position,
        }))
    }

    async fn erase_user(
        &self,
        request: Request<pb::EraseUserRequest>,
    ) -> Rpc<pb::EraseUserResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let req = request.into_inner();
        parse_fields! {
            user = field("user_id", &req.user_id, UserId::parse),
            basis = field("basis", &req.basis, identity_domain::values::Text::parse),
        }
        let executed = self.erase(&ctx, user, basis).await?;
        Ok(Response::new(pb::EraseUserResponse {
            position: executed.position,
        }))
    }

    async fn get_user(&self, request: Request<pb::GetUserRequest>) -> Rpc<pb::GetUserResponse> {
        self.answer_get_user(request).await
    }

    async fn get_user_with_balances(
        &self,
        request: Request<pb::GetUserWithBalancesRequest>,
    ) -> Rpc<pb::GetUserWithBalancesResponse> {
        self.answer_get_user_with_balances(request).await
    }

    async fn lookup_user(
        &self,
        request: Request<pb::LookupUserRequest>,
    ) -> Rpc<pb::LookupUserResponse> {
        self.answer_lookup_user(request).await
    }

    async fn user_exists(
        &self,
        request: Request<pb::UserExistsRequest>,
    ) -> Rpc<pb::UserExistsResponse> {
        self.answer_user_exists(request).await
    }

    async fn list_users(
        &self,
        request: Request<pb::ListUsersRequest>,
    ) -> Rpc<pb::ListUsersResponse> {
        self.answer_list_users(request).await
    }

    async fn get_public_profile(
        &self,
        request: Request<pb::GetPublicProfileRequest>,
    ) -> Rpc<pb::GetPublicProfileResponse> {
        self.answer_get_public_profile(request).await
    }

    async fn list_public_profiles(
        &self,
        request: Request<pb::ListPublicProfilesRequest>,
    ) -> Rpc<pb::ListPublicProfilesResponse> {
        self.answer_list_public_profiles(request).await
    }
}

/// The required mode of SetUserRoles: there is no default.
fn roles_mode(raw: i32) -> Result<RolesMode, identity_domain::ValueError> {
    match pb::RolesMode::try_from(raw) {
        Ok(pb::RolesMode::Add) => Ok(RolesMode::Add),
        Ok(pb::RolesMode::Replace) => Ok(RolesMode::Replace),
        _ => Err(identity_domain::ValueError::new(
            "mode is required: ROLES_MODE_ADD or ROLES_MODE_REPLACE",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_claims_external_id_then_email_then_phone() {
        let ctx = RequestContext {
            tenant: identity_domain::values::TenantId::parse("t").unwrap(),
            caller: std::sync::Arc::new(crate::access::Caller {
                principal: crate::access::Principal::ProjectKey { key_id: "k".into() },
                tenant: None,
                permissions: crate::access::Permissions::default(),
                method: "RegisterUser",
                request_id: "r".into(),
                correlation_id: "r".into(),
                client: None,
                scopes: crate::access::scope::Scopes::all(),
            }),
            rpc: "RegisterUser",
        };
        let input = pb::UserInput {
            email: "A@x.io".into(),
            phone: "+3725555123".into(),
            external_id: "e1".into(),
            ..Default::default()
        };
        let key = identity_domain::derive::IdKey::from_bytes([0; 32]);
        let cmd = parse_input(input, "", UserId(Uuid::nil()), &ctx, key).unwrap();
        let kinds: Vec<ClaimKind> = claims_of(&cmd).into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            kinds,
            vec![ClaimKind::ExternalId, ClaimKind::Email, ClaimKind::Phone]
        );
    }
}
