//! `identity.v1.UserService`.

use std::collections::BTreeSet;

use chrono::Utc;
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
    directory_user_to_pb, json_object, json_to_struct, optional, required, timestamp, totals,
    user_to_pb, wallet_balances_to_pb,
};
use crate::core::{deadline_of, Core};
use crate::delivery::{Code, Purpose};
use crate::error::{code_name, ApiError, ApiResult};
use identity_domain::values::PersonCode;
use identity_projections::queries::{ListUsers, SortField, UserKey};
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

fn user_id(v: &mut Violations, field: &str, raw: &str) -> Option<UserId> {
    required(v, field, raw, UserId::parse)
}

fn parse_user_id(field: &str, raw: &str) -> ApiResult<UserId> {
    let mut v = Violations::new();
    let id = user_id(&mut v, field, raw);
    v.finish()?;
    id.ok_or_else(|| ApiError::Internal("unparsed id".into()))
}

/// Refuses a caller without `permission` (for a key that needs more than the RPC's own).
fn require(ctx: &RequestContext, permission: Permission) -> ApiResult<()> {
    if ctx.caller.holds(permission) {
        Ok(())
    } else {
        Err(ApiError::PermissionDenied(permission))
    }
}

/// A user cut to the caller's scopes, and the names of what was withheld.
pub(crate) fn scoped_user(
    ctx: &RequestContext,
    user: &User,
    version: usize,
) -> (pb::User, Vec<String>) {
    let mut out = user_to_pb(user, version);
    let mut withheld = Vec::new();
    scope::cut_user(&mut out, ctx.caller.scopes, &mut withheld);
    (out, withheld)
}

/// The password policy: 8 to 256 characters (any characters; no composition rules, after
/// NIST SP 800-63B).
pub(crate) fn password_policy(raw: &str) -> Result<Secret, &'static str> {
    let n = raw.chars().count();
    if !(8..=256).contains(&n) {
        return Err("password must be 8 to 256 characters");
    }
    Ok(Secret::new(raw))
}

fn parse_password(v: &mut Violations, field: &str, raw: &str) -> Option<Secret> {
    password_policy(raw).map_err(|why| v.push(field, why)).ok()
}

/// The parsed fields of a `UserInput`, prefixed for bulk items (`users[3].email`).
fn parse_input(
    input: pb::UserInput,
    prefix: &str,
    user_id: UserId,
    ctx: &RequestContext,
) -> ApiResult<RegisterUser> {
    let mut v = Violations::new();
    let f = |name: &str| format!("{prefix}{name}");
    let email = optional(&mut v, &f("email"), &input.email, Email::parse);
    let phone = optional(&mut v, &f("phone"), &input.phone, Phone::parse);
    let external_id = optional(
        &mut v,
        &f("external_id"),
        &input.external_id,
        ExternalId::parse,
    );
    let first_name = optional(&mut v, &f("first_name"), &input.first_name, Name::parse);
    let last_name = optional(&mut v, &f("last_name"), &input.last_name, Name::parse);
    let locale = optional(&mut v, &f("locale"), &input.locale, Locale::parse);
    let custom_data = json_object(&mut v, &f("custom_data"), input.custom_data);
    let public_profile = json_object(&mut v, &f("public_profile"), input.public_profile);
    if v.is_empty() && email.is_none() && phone.is_none() && external_id.is_none() {
        v.push(
            f("email"),
            "at least one of email, phone or external_id is required",
        );
    }
    v.finish()?;
    Ok(RegisterUser {
        user_id,
        tenant: ctx.tenant.clone(),
        email,
        phone,
        external_id,
        first_name,
        last_name,
        locale,
        custom_data: custom_data.unwrap_or_default(),
        public_profile: public_profile.unwrap_or_default(),
        at: Utc::now(),
    })
}

/// The unique values of a registration, in the order they are claimed.
fn claims_of(cmd: &RegisterUser) -> Vec<(ClaimKind, String)> {
    let mut out = Vec::new();
    if let Some(x) = &cmd.external_id {
        out.push((ClaimKind::ExternalId, x.to_string()));
    }
    if let Some(e) = &cmd.email {
        out.push((ClaimKind::Email, e.to_string()));
    }
    if let Some(p) = &cmd.phone {
        out.push((ClaimKind::Phone, p.to_string()));
    }
    out
}

impl UserApi {
    /// Claims every unique value and registers, in one unit: the claims and the
    /// registration commit together or not at all, whatever the caller does meanwhile.
    async fn register(&self, ctx: &RequestContext, cmd: RegisterUser) -> ApiResult<Executed<User>> {
        let owner = cmd.user_id;
        let claims = claims_of(&cmd);
        let id = ctx.aggregate_id(owner);
        let services = &self.core.user_services;
        self.core
            .transact::<User, _>(ctx, &id, |mut unit| {
                let (claims, cmd, id) = (&claims, cmd.clone(), &id);
                Box::pin(async move {
                    for (kind, value) in claims {
                        Core::claim_in(&mut unit, ctx, *kind, value, owner).await?;
                    }
                    let decided = unit
                        .decide::<User>(id, UserCommand::Register(Box::new(cmd)), services)
                        .await?;
                    Ok((unit, decided))
                })
            })
            .await
    }

    async fn upsert_one(
        &self,
        ctx: &RequestContext,
        index: usize,
        input: pb::UserInput,
    ) -> ApiResult<pb::UpsertUserResult> {
        let prefix = format!("users[{index}].");
        let cmd = parse_input(input, &prefix, UserId(Uuid::new_v4()), ctx)?;
        let mut existing = None;
        for (kind, value) in claims_of(&cmd) {
            if let Some(owner) = self.core.owner_of(ctx, kind, &value).await? {
                existing = Some(owner);
                break;
            }
        }
        let (user_id, executed, created) = match existing {
            Some(owner) => {
                let update = UpdateProfile {
                    first_name: cmd.first_name,
                    last_name: cmd.last_name,
                    locale: cmd.locale,
                    custom_data: (!cmd.custom_data.as_map().is_empty()).then_some(cmd.custom_data),
                    public_profile: (!cmd.public_profile.as_map().is_empty())
                        .then_some(cmd.public_profile),
                };
                let executed = self
                    .core
                    .execute::<User>(
                        ctx,
                        &ctx.aggregate_id(owner),
                        UserCommand::UpdateProfile(Box::new(update), Utc::now()),
                        &self.core.user_services,
                    )
                    .await?;
                (owner, executed, false)
            }
            None => {
                let id = cmd.user_id;
                (id, self.register(ctx, cmd).await?, true)
            }
        };
        Ok(pb::UpsertUserResult {
            index: index as u32,
            user_id: user_id.to_string(),
            created,
            position: executed.position,
            error: None,
        })
    }

    async fn run(
        &self,
        ctx: &RequestContext,
        user: UserId,
        command: UserCommand,
    ) -> ApiResult<Executed<User>> {
        self.core.execute_user(ctx, user, command).await
    }

    /// Confirms a pending email or phone change in one unit: the confirmation, the claim
    /// of the new value (so two users can never confirm the same one) and the release of
    /// the old one commit together. A wrong code commits only its recorded attempt.
    async fn confirm_contact(
        &self,
        ctx: &RequestContext,
        user: UserId,
        kind: ClaimKind,
        code: &str,
    ) -> ApiResult<(String, u64)> {
        let aggregate_id = ctx.aggregate_id(user);
        let code_hash = self.core.hash_code(&aggregate_id, code);
        let services = &self.core.user_services;
        let executed = self
            .core
            .transact::<User, _>(ctx, &aggregate_id, |mut unit| {
                let (id, code_hash) = (&aggregate_id, code_hash.clone());
                Box::pin(async move {
                    let at = Utc::now();
                    let command = match kind {
                        ClaimKind::Phone => UserCommand::ConfirmPhone { code_hash, at },
                        ClaimKind::Email | ClaimKind::ExternalId | ClaimKind::PersonCode => {
                            UserCommand::ConfirmEmail { code_hash, at }
                        }
                    };
                    let decided = unit.decide::<User>(id, command, services).await?;
                    for e in &decided.events {
                        let (new, previous) = match e {
                            UserEvent::EmailConfirmed {
                                email, previous, ..
                            } => (
                                email.to_string(),
                                previous.as_ref().map(ToString::to_string),
                            ),
                            UserEvent::PhoneConfirmed {
                                phone, previous, ..
                            } => (
                                phone.to_string(),
                                previous.as_ref().map(ToString::to_string),
                            ),
                            _ => continue,
                        };
                        Core::claim_in(&mut unit, ctx, kind, &new, user).await?;
                        if let Some(old) = previous.filter(|old| *old != new) {
                            Core::release_in(&mut unit, ctx, kind, &old, user).await?;
                        }
                    }
                    Ok((unit, decided))
                })
            })
            .await?;
        let value = match kind {
            ClaimKind::Phone => executed.aggregate.phone.as_ref().map(ToString::to_string),
            ClaimKind::Email | ClaimKind::ExternalId | ClaimKind::PersonCode => {
                executed.aggregate.email.as_ref().map(ToString::to_string)
            }
        };
        Ok((value.unwrap_or_default(), executed.position))
    }

    /// Starts a contact change after checking (early, not finally) that nobody else holds
    /// the value; the final decision is the claim made at confirmation.
    async fn request_contact(
        &self,
        ctx: &RequestContext,
        user: UserId,
        kind: ClaimKind,
        value: &str,
        command: impl FnOnce(String, chrono::DateTime<Utc>, chrono::DateTime<Utc>) -> UserCommand,
    ) -> ApiResult<(String, chrono::DateTime<Utc>, u64)> {
        self.core.limits.code_request(&ctx.caller_key())?;
        if let Some(owner) = self.core.owner_of(ctx, kind, value).await? {
            if owner != user {
                return Err(ApiError::from(DomainError::AlreadyAssigned(kind)));
            }
        }
        let (code, hash, expires) = self.core.new_code(&ctx.aggregate_id(user));
        let purpose = match kind {
            ClaimKind::Phone => Purpose::PhoneChange,
            ClaimKind::Email | ClaimKind::ExternalId | ClaimKind::PersonCode => {
                Purpose::EmailChange
            }
        };
        let message = Code {
            purpose,
            channel: kind.as_str(),
            destination: value,
            code: &code,
            code_hash: &hash,
            expires_at: expires,
        };
        let (executed, shown) = self
            .core
            .execute_with_code(
                ctx,
                user,
                message,
                command(hash.clone(), expires, Utc::now()),
            )
            .await?;
        Ok((shown, expires, executed.position))
    }
}

/// Parses a lookup value into the normalized form the directory holds.
fn user_key(name: &'static str, raw: &str) -> ApiResult<UserKey> {
    let mut v = Violations::new();
    let key = match name {
        "user_id" => required(&mut v, name, raw, UserId::parse).map(|x| UserKey::Id(x.to_string())),
        "email" => required(&mut v, name, raw, Email::parse).map(|x| UserKey::Email(x.to_string())),
        "phone" => required(&mut v, name, raw, Phone::parse).map(|x| UserKey::Phone(x.to_string())),
        "external_id" => required(&mut v, name, raw, ExternalId::parse)
            .map(|x| UserKey::ExternalId(x.to_string())),
        "person_code" => required(&mut v, name, raw, |s| {
            let (country, code) = s.split_once(':').ok_or_else(|| {
                identity_domain::ValueError::new(
                    "person code must be COUNTRY:CODE, e.g. EE:38601010123",
                )
            })?;
            PersonCode::parse(country, code)
        })
        .map(|x| UserKey::PersonCode(x.key())),
        _ => required(&mut v, name, raw, |s| {
            let s = s.trim();
            Ok(if s.starts_with("0x") || s.starts_with("0X") {
                s.to_ascii_lowercase()
            } else {
                s.to_string()
            })
        })
        .map(UserKey::WalletAddress),
    };
    v.finish()?;
    key.ok_or_else(|| ApiError::Internal("unparsed".into()))
}

fn missing_key(field: &str) -> ApiError {
    DomainError::invalid(field, "one lookup key is required").into()
}

type Rpc<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl UserService for UserApi {
    #[tracing::instrument(
        name = "RegisterUser",
        skip_all,
        fields(tenant, request_id, aggregate_id, outcome)
    )]
    async fn register_user(
        &self,
        request: Request<pb::RegisterUserRequest>,
    ) -> Rpc<pb::RegisterUserResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let input = request.into_inner().user.unwrap_or_default();
        let cmd = parse_input(input, "user.", UserId(Uuid::new_v4()), &ctx)?;
        let executed = self.register(&ctx, cmd).await?;
        let (user, withheld_fields) = scoped_user(&ctx, &executed.aggregate, executed.sequence);
        Ok(Response::new(pb::RegisterUserResponse {
            user: Some(user),
            position: executed.position,
            withheld_fields,
        }))
    }

    #[tracing::instrument(
        name = "UpsertUsers",
        skip_all,
        fields(tenant, request_id, aggregate_id, outcome, items)
    )]
    async fn upsert_users(
        &self,
        request: Request<pb::UpsertUsersRequest>,
    ) -> Rpc<pb::UpsertUsersResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let items = request.into_inner().users;
        tracing::Span::current().record("items", items.len());
        if items.len() > MAX_UPSERT_ITEMS {
            return Err(ApiError::from(DomainError::invalid(
                "users",
                format!("at most {MAX_UPSERT_ITEMS} users per call"),
            ))
            .into());
        }
        let mut results = Vec::with_capacity(items.len());
        for (index, input) in items.into_iter().enumerate() {
            let result = match self.upsert_one(&ctx, index, input).await {
                Ok(r) => r,
                Err(e) => {
                    let (reason, violations) = match &e {
                        ApiError::Domain(d) => (
                            d.reason().to_string(),
                            match d {
                                DomainError::InvalidArgument(v) => v.clone(),
                                _ => vec![],
                            },
                        ),
                        _ => (String::new(), vec![]),
                    };
                    let status = Status::from(e);
                    pb::UpsertUserResult {
                        index: index as u32,
                        user_id: String::new(),
                        created: false,
                        position: 0,
                        error: Some(pb::ItemError {
                            code: code_name(status.code()).to_string(),
                            reason,
                            message: status.message().to_string(),
                            field_violations: violations
                                .into_iter()
                                .map(|v| pb::FieldViolation {
                                    field: v.field,
                                    description: v.description,
                                })
                                .collect(),
                        }),
                    }
                }
            };
            results.push(result);
        }
        Ok(Response::new(pb::UpsertUsersResponse { results }))
    }

    #[tracing::instrument(
        name = "UpdateUserProfile",
        skip_all,
        fields(tenant, request_id, aggregate_id, outcome)
    )]
    async fn update_user_profile(
        &self,
        request: Request<pb::UpdateUserProfileRequest>,
    ) -> Rpc<pb::UpdateUserProfileResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let req = request.into_inner();
        let mut v = Violations::new();
        let user = user_id(&mut v, "user_id", &req.user_id);
        let p = req.profile.unwrap_or_default();
        let paths: Vec<String> = req.update_mask.map(|m| m.paths).unwrap_or_default();
        const ALLOWED: [&str; 5] = [
            "first_name",
            "last_name",
            "locale",
            "custom_data",
            "public_profile",
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
        };
        v.finish().map_err(ApiError::from)?;
        let user = user.ok_or_else(|| ApiError::Internal("unparsed id".into()))?;
        let executed = self
            .run(
                &ctx,
                user,
                UserCommand::UpdateProfile(Box::new(update), Utc::now()),
            )
            .await?;
        let (user, withheld_fields) = scoped_user(&ctx, &executed.aggregate, executed.sequence);
        Ok(Response::new(pb::UpdateUserProfileResponse {
            user: Some(user),
            position: executed.position,
            withheld_fields,
        }))
    }

    #[tracing::instrument(
        name = "DeactivateUser",
        skip_all,
        fields(tenant, request_id, aggregate_id, outcome)
    )]
    async fn deactivate_user(
        &self,
        request: Request<pb::DeactivateUserRequest>,
    ) -> Rpc<pb::DeactivateUserResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let user = parse_user_id("user_id", &request.get_ref().user_id)?;
        let executed = self
            .run(&ctx, user, UserCommand::Deactivate { at: Utc::now() })
            .await?;
        Ok(Response::new(pb::DeactivateUserResponse {
            position: executed.position,
        }))
    }

    #[tracing::instrument(
        name = "ReactivateUser",
        skip_all,
        fields(tenant, request_id, aggregate_id, outcome)
    )]
    async fn reactivate_user(
        &self,
        request: Request<pb::ReactivateUserRequest>,
    ) -> Rpc<pb::ReactivateUserResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let user = parse_user_id("user_id", &request.get_ref().user_id)?;
        let executed = self
            .run(&ctx, user, UserCommand::Reactivate { at: Utc::now() })
            .await?;
        Ok(Response::new(pb::ReactivateUserResponse {
            position: executed.position,
        }))
    }

    #[tracing::instrument(
        name = "RequestEmailChange",
        skip_all,
        fields(tenant, request_id, aggregate_id, outcome)
    )]
    async fn request_email_change(
        &self,
        request: Request<pb::RequestEmailChangeRequest>,
    ) -> Rpc<pb::RequestEmailChangeResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let req = request.into_inner();
        let mut v = Violations::new();
        let user = user_id(&mut v, "user_id", &req.user_id);
        let email = required(&mut v, "email", &req.email, Email::parse);
        v.finish().map_err(ApiError::from)?;
        let (user, email) = user
            .zip(email)
            .ok_or_else(|| ApiError::Internal("unparsed".into()))?;
        let value = email.to_string();
        let (code, expires, position) = self
            .request_contact(
                &ctx,
                user,
                ClaimKind::Email,
                &value,
                |code_hash, expires_at, at| UserCommand::RequestEmailChange {
                    email,
                    code_hash,
                    expires_at,
                    at,
                },
            )
            .await?;
        Ok(Response::new(pb::RequestEmailChangeResponse {
            code,
            expires_at: timestamp(Some(expires)),
            position,
        }))
    }

    #[tracing::instrument(
        name = "ConfirmEmail",
        skip_all,
        fields(tenant, request_id, aggregate_id, outcome)
    )]
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

    #[tracing::instrument(
        name = "RequestPhoneChange",
        skip_all,
        fields(tenant, request_id, aggregate_id, outcome)
    )]
    async fn request_phone_change(
        &self,
        request: Request<pb::RequestPhoneChangeRequest>,
    ) -> Rpc<pb::RequestPhoneChangeResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let req = request.into_inner();
        let mut v = Violations::new();
        let user = user_id(&mut v, "user_id", &req.user_id);
        let phone = required(&mut v, "phone", &req.phone, Phone::parse);
        v.finish().map_err(ApiError::from)?;
        let (user, phone) = user
            .zip(phone)
            .ok_or_else(|| ApiError::Internal("unparsed".into()))?;
        let value = phone.to_string();
        let (code, expires, position) = self
            .request_contact(
                &ctx,
                user,
                ClaimKind::Phone,
                &value,
                |code_hash, expires_at, at| UserCommand::RequestPhoneChange {
                    phone,
                    code_hash,
                    expires_at,
                    at,
                },
            )
            .await?;
        Ok(Response::new(pb::RequestPhoneChangeResponse {
            code,
            expires_at: timestamp(Some(expires)),
            position,
        }))
    }

    #[tracing::instrument(
        name = "ConfirmPhone",
        skip_all,
        fields(tenant, request_id, aggregate_id, outcome)
    )]
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

    #[tracing::instrument(
        name = "SetUserRoles",
        skip_all,
        fields(tenant, request_id, aggregate_id, outcome)
    )]
    async fn set_user_roles(
        &self,
        request: Request<pb::SetUserRolesRequest>,
    ) -> Rpc<pb::SetUserRolesResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let req = request.into_inner();
        let mut v = Violations::new();
        let user = user_id(&mut v, "user_id", &req.user_id);
        if req.roles.len() > MAX_ROLES {
            v.push("roles", format!("at most {MAX_ROLES} roles"));
        }
        let roles: BTreeSet<Role> = req
            .roles
            .iter()
            .enumerate()
            .filter_map(|(i, r)| required(&mut v, &format!("roles[{i}]"), r, Role::parse))
            .collect();
        v.finish().map_err(ApiError::from)?;
        let user = user.ok_or_else(|| ApiError::Internal("unparsed id".into()))?;
        let mode = if req.replace {
            RolesMode::Replace
        } else {
            RolesMode::Add
        };
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

    #[tracing::instrument(
        name = "SetPassword",
        skip_all,
        fields(tenant, request_id, aggregate_id, outcome)
    )]
    async fn set_password(
        &self,
        request: Request<pb::SetPasswordRequest>,
    ) -> Rpc<pb::SetPasswordResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let req = request.into_inner();
        let mut v = Violations::new();
        let user = user_id(&mut v, "user_id", &req.user_id);
        let password = parse_password(&mut v, "password", &req.password);
        v.finish().map_err(ApiError::from)?;
        let (user, password) = user
            .zip(password)
            .ok_or_else(|| ApiError::Internal("unparsed".into()))?;
        // Fail fast on an unknown user before spending a hash on it.
        self.core.load_user(&ctx, user).await?;
        let phc = self.core.passwords.hash(&password).await?;
        let executed = self
            .run(&ctx, user, UserCommand::SetPassword { phc })
            .await?;
        Ok(Response::new(pb::SetPasswordResponse {
            position: executed.position,
        }))
    }

    #[tracing::instrument(
        name = "ChangePassword",
        skip_all,
        fields(tenant, request_id, aggregate_id, outcome)
    )]
    async fn change_password(
        &self,
        request: Request<pb::ChangePasswordRequest>,
    ) -> Rpc<pb::ChangePasswordResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let req = request.into_inner();
        let mut v = Violations::new();
        let user = user_id(&mut v, "user_id", &req.user_id);
        let new = parse_password(&mut v, "new_password", &req.new_password);
        if req.old_password.is_empty() {
            v.push("old_password", "is required");
        }
        v.finish().map_err(ApiError::from)?;
        let (user, new) = user
            .zip(new)
            .ok_or_else(|| ApiError::Internal("unparsed".into()))?;
        // The aggregate checks the old password (counted, refused at once while locked)
        // before it spends a hash on the new one.
        let command = UserCommand::ChangePassword {
            old_password: Secret::new(req.old_password),
            new_password: new,
            at: Utc::now(),
        };
        let executed = self.run(&ctx, user, command).await?;
        Ok(Response::new(pb::ChangePasswordResponse {
            position: executed.position,
        }))
    }

    #[tracing::instrument(
        name = "ImportLegacyPassword",
        skip_all,
        fields(tenant, request_id, aggregate_id, outcome)
    )]
    async fn import_legacy_password(
        &self,
        request: Request<pb::ImportLegacyPasswordRequest>,
    ) -> Rpc<pb::ImportLegacyPasswordResponse> {
        use base64::Engine as _;
        let ctx = RequestContext::from_request(&request)?;
        let req = request.into_inner();
        let mut v = Violations::new();
        let user = user_id(&mut v, "user_id", &req.user_id);
        if req.salt.is_empty() || req.salt.len() > 256 {
            v.push("salt", "salt must be 1 to 256 bytes");
        }
        match base64::engine::general_purpose::STANDARD.decode(req.sha1_base64.trim()) {
            Ok(bytes) if bytes.len() == 20 => {}
            _ => v.push(
                "sha1_base64",
                "must be the base64 of a 20-byte SHA-1 digest",
            ),
        }
        v.finish().map_err(ApiError::from)?;
        if !self.core.settings.legacy_import {
            return Err(ApiError::from(DomainError::LegacyImportDisabled).into());
        }
        let user = user.ok_or_else(|| ApiError::Internal("unparsed id".into()))?;
        let command = UserCommand::ImportLegacyCredential {
            salt: req.salt,
            digest: req.sha1_base64.trim().to_string(),
        };
        let executed = self.run(&ctx, user, command).await?;
        Ok(Response::new(pb::ImportLegacyPasswordResponse {
            position: executed.position,
        }))
    }

    #[tracing::instrument(
        name = "VerifyPassword",
        skip_all,
        fields(tenant, request_id, aggregate_id, outcome)
    )]
    async fn verify_password(
        &self,
        request: Request<pb::VerifyPasswordRequest>,
    ) -> Rpc<pb::VerifyPasswordResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let req = request.into_inner();
        let user = parse_user_id("user_id", &req.user_id)?;
        if req.password.is_empty() || req.password.len() > 1024 {
            return Err(ApiError::from(DomainError::invalid(
                "password",
                "password must be 1 to 1024 bytes",
            ))
            .into());
        }
        let password = Secret::new(req.password);
        let executed = self
            .run(
                &ctx,
                user,
                UserCommand::VerifyPassword {
                    password,
                    at: Utc::now(),
                },
            )
            .await?;
        let upgraded = executed
            .events
            .iter()
            .any(|e| matches!(e, UserEvent::LegacyCredentialUpgraded { .. }));
        Ok(Response::new(pb::VerifyPasswordResponse {
            valid: true,
            upgraded,
            position: executed.position,
        }))
    }

    #[tracing::instrument(
        name = "MergeUsers",
        skip_all,
        fields(tenant, request_id, aggregate_id, outcome)
    )]
    async fn merge_users(
        &self,
        request: Request<pb::MergeUsersRequest>,
    ) -> Rpc<pb::MergeUsersResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let req = request.into_inner();
        let mut v = Violations::new();
        let source = user_id(&mut v, "source_user_id", &req.source_user_id);
        let target = user_id(&mut v, "target_user_id", &req.target_user_id);
        v.finish().map_err(ApiError::from)?;
        let (source, target) = source
            .zip(target)
            .ok_or_else(|| ApiError::Internal("unparsed".into()))?;
        let survivor = self.core.load_user(&ctx, target).await?;
        if let Some(into) = survivor.aggregate.merged_into {
            return Err(ApiError::from(DomainError::UserMerged {
                into: into.to_string(),
            })
            .into());
        }
        let executed = self
            .run(
                &ctx,
                source,
                UserCommand::MergeInto {
                    survivor: target,
                    at: Utc::now(),
                },
            )
            .await?;
        Ok(Response::new(pb::MergeUsersResponse {
            position: executed.position,
        }))
    }

    #[tracing::instrument(
        name = "GetUser",
        skip_all,
        fields(tenant, request_id, aggregate_id, outcome)
    )]
    async fn get_user(&self, request: Request<pb::GetUserRequest>) -> Rpc<pb::GetUserResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let user = parse_user_id("user_id", &request.get_ref().user_id)?;
        scope::check_mask(
            "User",
            request.get_ref().read_mask.as_ref(),
            ctx.caller.scopes,
        )?;
        let loaded = self.core.load_user(&ctx, user).await?;
        let (user, withheld_fields) = scoped_user(&ctx, &loaded.aggregate, loaded.sequence);
        Ok(Response::new(pb::GetUserResponse {
            user: Some(user),
            withheld_fields,
        }))
    }

    #[tracing::instrument(
        name = "GetUserWithBalances",
        skip_all,
        fields(tenant, request_id, aggregate_id, outcome)
    )]
    async fn get_user_with_balances(
        &self,
        request: Request<pb::GetUserWithBalancesRequest>,
    ) -> Rpc<pb::GetUserWithBalancesResponse> {
        use pb::get_user_with_balances_request::Key;
        let ctx = RequestContext::from_request(&request)?;
        let wait = deadline_of(&request);
        let req = request.into_inner();
        let key = match req.key {
            Some(Key::UserId(v)) => user_key("user_id", &v)?,
            Some(Key::Email(v)) => user_key("email", &v)?,
            Some(Key::Phone(v)) => user_key("phone", &v)?,
            Some(Key::ExternalId(v)) => user_key("external_id", &v)?,
            None => return Err(missing_key("key").into()),
        };
        self.core
            .catch_up(Projection::Directory, req.min_position, wait)
            .await?;
        self.core
            .catch_up(Projection::Balances, req.min_position, wait)
            .await?;
        let user = self
            .core
            .projections
            .find_user(ctx.tenant.as_str(), &key)
            .await
            .map_err(ApiError::from)?
            .ok_or(ApiError::from(DomainError::UserNotFound))?;
        let wallets = self
            .core
            .projections
            .wallets_of(ctx.tenant.as_str(), "user", &user.user_id)
            .await
            .map_err(ApiError::from)?;
        let mut withheld_fields = Vec::new();
        let mut user = directory_user_to_pb(&user);
        scope::cut_directory_user(&mut user, ctx.caller.scopes, &mut withheld_fields);
        // The totals stay: they are amounts, not where the person keeps them.
        let totals = totals(&wallets);
        let mut wallets: Vec<pb::WalletBalances> =
            wallets.iter().map(wallet_balances_to_pb).collect();
        scope::Cut::new(
            "GetUserWithBalancesResponse",
            ctx.caller.scopes,
            &mut withheld_fields,
        )
        .field("wallets", &mut wallets);
        Ok(Response::new(pb::GetUserWithBalancesResponse {
            user: Some(user),
            totals,
            wallets,
            withheld_fields,
        }))
    }

    #[tracing::instrument(
        name = "LookupUser",
        skip_all,
        fields(tenant, request_id, aggregate_id, outcome)
    )]
    async fn lookup_user(
        &self,
        request: Request<pb::LookupUserRequest>,
    ) -> Rpc<pb::LookupUserResponse> {
        use pb::lookup_user_request::Key;
        let ctx = RequestContext::from_request(&request)?;
        let wait = deadline_of(&request);
        let req = request.into_inner();
        let key = match req.key {
            Some(Key::Email(v)) => user_key("email", &v)?,
            Some(Key::Phone(v)) => user_key("phone", &v)?,
            Some(Key::ExternalId(v)) => user_key("external_id", &v)?,
            Some(Key::PersonCode(v)) => {
                require(&ctx, Permission::LookupPersonCode)?;
                user_key("person_code", &v)?
            }
            Some(Key::WalletAddress(v)) => user_key("wallet_address", &v)?,
            None => return Err(missing_key("key").into()),
        };
        scope::check_mask("DirectoryUser", req.read_mask.as_ref(), ctx.caller.scopes)?;
        self.core
            .catch_up(Projection::Directory, req.min_position, wait)
            .await?;
        let user = self
            .core
            .projections
            .find_user(ctx.tenant.as_str(), &key)
            .await
            .map_err(ApiError::from)?
            .ok_or(ApiError::from(DomainError::UserNotFound))?;
        let mut withheld_fields = Vec::new();
        let mut user = directory_user_to_pb(&user);
        scope::cut_directory_user(&mut user, ctx.caller.scopes, &mut withheld_fields);
        Ok(Response::new(pb::LookupUserResponse {
            user: Some(user),
            withheld_fields,
        }))
    }

    #[tracing::instrument(
        name = "UserExists",
        skip_all,
        fields(tenant, request_id, aggregate_id, outcome)
    )]
    async fn user_exists(
        &self,
        request: Request<pb::UserExistsRequest>,
    ) -> Rpc<pb::UserExistsResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let wait = deadline_of(&request);
        let req = request.into_inner();
        if !req.person_code.trim().is_empty() {
            require(&ctx, Permission::LookupPersonCode)?;
        }
        let candidates = [
            ("email", req.email.as_str()),
            ("phone", req.phone.as_str()),
            ("external_id", req.external_id.as_str()),
            ("person_code", req.person_code.as_str()),
            ("wallet_address", req.wallet_address.as_str()),
        ];
        let keys = candidates
            .iter()
            .filter(|(_, v)| !v.trim().is_empty())
            .map(|(name, v)| user_key(name, v))
            .collect::<ApiResult<Vec<_>>>()?;
        if keys.is_empty() {
            return Err(missing_key("email").into());
        }
        self.core
            .catch_up(Projection::Directory, req.min_position, wait)
            .await?;
        for key in keys {
            if let Some(user) = self
                .core
                .projections
                .find_user(ctx.tenant.as_str(), &key)
                .await
                .map_err(ApiError::from)?
            {
                return Ok(Response::new(pb::UserExistsResponse {
                    exists: true,
                    matched_key: key.name().to_string(),
                    user_id: user.user_id,
                }));
            }
        }
        Ok(Response::new(pb::UserExistsResponse::default()))
    }

    #[tracing::instrument(
        name = "ListUsers",
        skip_all,
        fields(tenant, request_id, aggregate_id, outcome)
    )]
    async fn list_users(
        &self,
        request: Request<pb::ListUsersRequest>,
    ) -> Rpc<pb::ListUsersResponse> {
        use pb::UserSortField as F;
        let ctx = RequestContext::from_request(&request)?;
        let wait = deadline_of(&request);
        let req = request.into_inner();
        let sort = match F::try_from(req.sort_by) {
            Ok(F::Unspecified | F::CreatedAt) => SortField::CreatedAt,
            Ok(F::UpdatedAt) => SortField::UpdatedAt,
            Ok(F::Email) => SortField::Email,
            Ok(F::Phone) => SortField::Phone,
            Ok(F::ExternalId) => SortField::ExternalId,
            Ok(F::FirstName) => SortField::FirstName,
            Ok(F::LastName) => SortField::LastName,
            Ok(F::IdentifierEmail) => SortField::IdentifierEmail,
            Ok(F::UserId) => SortField::UserId,
            Err(_) => {
                return Err(
                    ApiError::from(DomainError::invalid("sort_by", "unknown sort field")).into(),
                )
            }
        };
        if req.search.len() > 200 {
            return Err(
                ApiError::from(DomainError::invalid("search", "at most 200 characters")).into(),
            );
        }
        // A substring search is a (trigram) scan: a few at a time.
        let _slot = if req.search.trim().is_empty() {
            None
        } else {
            Some(self.core.limits.expensive("ListUsers search").await?)
        };
        self.core
            .catch_up(Projection::Directory, req.min_position, wait)
            .await?;
        let query = ListUsers {
            search: Some(req.search),
            active: req.active,
            sort,
            descending: req.descending,
            limit: req.limit,
            page: Some(req.page),
            cursor: Some(req.cursor),
        };
        let page = self
            .core
            .projections
            .list_users(ctx.tenant.as_str(), &query)
            .await
            .map_err(ApiError::from)?
            .map_err(|_| {
                ApiError::from(DomainError::invalid(
                    "cursor",
                    "not a cursor this service returned",
                ))
            })?;
        let mut withheld_fields = Vec::new();
        let users = page
            .users
            .iter()
            .map(|u| {
                let mut u = directory_user_to_pb(u);
                scope::cut_directory_user(&mut u, ctx.caller.scopes, &mut withheld_fields);
                u
            })
            .collect();
        Ok(Response::new(pb::ListUsersResponse {
            users,
            next_cursor: page.next_cursor.unwrap_or_default(),
            total: page.total,
            withheld_fields,
        }))
    }

    #[tracing::instrument(
        name = "GetPublicProfile",
        skip_all,
        fields(tenant, request_id, aggregate_id, outcome)
    )]
    async fn get_public_profile(
        &self,
        request: Request<pb::GetPublicProfileRequest>,
    ) -> Rpc<pb::GetPublicProfileResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let wait = deadline_of(&request);
        let req = request.into_inner();
        let user = parse_user_id("user_id", &req.user_id)?;
        self.core
            .catch_up(Projection::Directory, req.min_position, wait)
            .await?;
        let mut found = self
            .core
            .projections
            .public_profiles(ctx.tenant.as_str(), &[user.to_string()])
            .await
            .map_err(ApiError::from)?;
        let (user_id, profile) = found
            .pop()
            .ok_or(ApiError::from(DomainError::UserNotFound))?;
        Ok(Response::new(pb::GetPublicProfileResponse {
            profile: Some(pb::PublicProfile {
                user_id,
                public_profile: Some(json_to_struct(&profile)),
            }),
        }))
    }

    #[tracing::instrument(
        name = "ListPublicProfiles",
        skip_all,
        fields(tenant, request_id, aggregate_id, outcome)
    )]
    async fn list_public_profiles(
        &self,
        request: Request<pb::ListPublicProfilesRequest>,
    ) -> Rpc<pb::ListPublicProfilesResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let wait = deadline_of(&request);
        let req = request.into_inner();
        let mut v = Violations::new();
        if req.user_ids.len() > 200 {
            v.push("user_ids", "at most 200 ids");
        }
        let ids: Vec<String> = req
            .user_ids
            .iter()
            .enumerate()
            .filter_map(|(i, id)| {
                user_id(&mut v, &format!("user_ids[{i}]"), id).map(|u| u.to_string())
            })
            .collect();
        v.finish().map_err(ApiError::from)?;
        self.core
            .catch_up(Projection::Directory, req.min_position, wait)
            .await?;
        let profiles = self
            .core
            .projections
            .public_profiles(ctx.tenant.as_str(), &ids)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::ListPublicProfilesResponse {
            profiles: profiles
                .into_iter()
                .map(|(user_id, p)| pb::PublicProfile {
                    user_id,
                    public_profile: Some(json_to_struct(&p)),
                })
                .collect(),
        }))
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
        let cmd = parse_input(input, "", UserId(Uuid::nil()), &ctx).unwrap();
        let kinds: Vec<ClaimKind> = claims_of(&cmd).into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            kinds,
            vec![ClaimKind::ExternalId, ClaimKind::Email, ClaimKind::Phone]
        );
    }
}
