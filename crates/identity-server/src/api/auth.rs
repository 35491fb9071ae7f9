//! `identity.v1.AuthService` and `identity.v1.MeService`: people sign in with a password,
//! keep a session with rotating refresh tokens, recover a forgotten password with a code,
//! and act as themselves.

use chrono::{DateTime, Utc};
use identity_domain::session::SessionCommand;
use identity_domain::session::{CodeChannel, SessionEnd};
use identity_domain::user::{Credential, Secret, User, UserCommand, UserEvent};
use identity_domain::values::{Email, ExternalId, PersonCode, Phone, UserId};
use identity_domain::{ClaimKind, DomainError};
use identity_proto::v1 as pb;
use identity_proto::v1::auth_service_server::AuthService;
use tonic::{Request, Response, Status};

use crate::access::Claims;
use crate::context::RequestContext;
use crate::convert::timestamp;
use crate::core::Core;
use crate::error::{ApiError, ApiResult};

type Rpc<T> = Result<Response<T>, Status>;

use super::refresh::parse_refresh;
pub(crate) use super::refresh::{opening, Account, RefreshToken, SessionRefresh};

#[derive(Debug, Clone)]
pub struct AuthApi {
    core: Core,
}

impl AuthApi {
    pub fn new(core: Core) -> Self {
        Self { core }
    }
}

/// The email or the phone a request's `identifier` oneof names (`Identifier` in scope).
macro_rules! email_or_phone {
    ($identifier:expr) => {
        match &$identifier {
            Some(Identifier::Email(e)) => (Some(e.as_str()), None),
            Some(Identifier::Phone(p)) => (None, Some(p.as_str())),
            None => (None, None),
        }
    };
}

/// The password as presented to SignIn (any text of sane length: the policy applies when set).
fn presented_password(raw: String) -> ApiResult<Secret> {
    if raw.is_empty() || raw.len() > 1024 {
        return Err(ApiError::from(DomainError::invalid(
            "password",
            "password must be 1 to 1024 bytes",
        )));
    }
    Ok(Secret::new(raw))
}

/// The account a person names: an email, a phone or a migrated username (external id).
fn identifier(
    email: Option<&str>,
    phone: Option<&str>,
    username: Option<&str>,
) -> ApiResult<(ClaimKind, String)> {
    let invalid = |field: &str, e: identity_domain::ValueError| {
        ApiError::from(DomainError::invalid(field, e.to_string()))
    };
    match (email, phone, username) {
        (Some(e), _, _) => Email::parse(e)
            .map(|e| (ClaimKind::Email, e.to_string()))
            .map_err(|e| invalid("email", e)),
        (None, Some(p), _) => Phone::parse(p)
            .map(|p| (ClaimKind::Phone, p.to_string()))
            .map_err(|e| invalid("phone", e)),
        (None, None, Some(u)) => ExternalId::parse(u)
            .map(|u| (ClaimKind::ExternalId, u.to_string()))
            .map_err(|e| invalid("username", e)),
        (None, None, None) => Err(ApiError::from(DomainError::invalid(
            "identifier",
            "one of email, phone or username is required",
        ))),
    }
}

impl AuthApi {
    /// Signs an access token for `user`'s `session` and wraps it with the refresh token.
    fn tokens(
        &self,
        ctx: &RequestContext,
        user: &User,
        refresh: SessionRefresh,
    ) -> ApiResult<pb::Tokens> {
        issue_tokens(&self.core, ctx, user, refresh)
    }

    /// Continues a person's session with a new refresh token.
    async fn refresh_user(
        &self,
        ctx: &RequestContext,
        user: UserId,
        presented: RefreshToken,
    ) -> ApiResult<pb::RefreshResponse> {
        let renewal = presented.renewal(ctx, &self.core);
        let executed = self
            .run(ctx, user, UserCommand::Sessions(renewal.command))
            .await
            .map_err(|e| match e {
                // An unknown user says nothing more than an invalid token.
                ApiError::Domain(DomainError::UserNotFound) => {
                    ApiError::from(DomainError::InvalidRefreshToken)
                }
                e => e,
            })?;
        let tokens = self.tokens(ctx, &executed.aggregate, renewal.refresh)?;
        Ok(pb::RefreshResponse {
            tokens: Some(tokens),
            position: executed.position,
        })
    }

    /// Ends the person's session the presented (current) refresh token continues.
    async fn sign_out_user(
        &self,
        ctx: &RequestContext,
        user: UserId,
        presented: RefreshToken,
    ) -> ApiResult<pb::SignOutResponse> {
        let loaded = self
            .core
            .load_user(ctx, user)
            .await
            .map_err(|_| ApiError::from(DomainError::InvalidRefreshToken))?;
        let end = presented
            .sign_out(&loaded.aggregate.sign_in)
            .ok_or_else(|| ApiError::from(DomainError::InvalidRefreshToken))?;
        let executed = self.run(ctx, user, UserCommand::Sessions(end)).await?;
        Ok(pb::SignOutResponse {
            position: executed.position,
        })
    }

    async fn run(
        &self,
        ctx: &RequestContext,
        user: UserId,
        command: UserCommand,
    ) -> ApiResult<identity_store::Executed<User>> {
        self.core.execute_user(ctx, user, command).await
    }

    /// The user a reset names (email or phone), if any.
    async fn reset_target(
        &self,
        ctx: &RequestContext,
        email: Option<&str>,
        phone: Option<&str>,
    ) -> ApiResult<(CodeChannel, String, Option<UserId>)> {
        let (kind, value) = identifier(email, phone, None)?;
        let channel = match kind {
            ClaimKind::Phone => CodeChannel::Phone,
            ClaimKind::Email | ClaimKind::ExternalId | ClaimKind::PersonCode => CodeChannel::Email,
        };
        let owner = self.core.owner_of(ctx, kind, &value).await?;
        Ok((channel, value, owner))
    }

    /// A reset for a user with a submitted identity must name its person code.
    async fn check_identity(
        &self,
        ctx: &RequestContext,
        user: UserId,
        person_code: &str,
    ) -> ApiResult<()> {
        let identification = self
            .core
            .log
            .load::<identity_domain::identification::Identification>(&ctx.aggregate_id(user))
            .await?;
        let Some(identity) = identification.and_then(|i| i.aggregate.identity.clone()) else {
            return Ok(());
        };
        if person_code.trim().is_empty() {
            return Err(DomainError::IdentityRequired("password reset").into());
        }
        let given = person_code
            .split_once(':')
            .and_then(|(country, code)| PersonCode::parse(country, code).ok());
        if given.as_ref() != Some(&identity.person_code) {
            return Err(DomainError::InvalidIdentity.into());
        }
        Ok(())
    }
}

/// Signs an access token for `user`'s `session`: subject, tenant, kind, roles and the
/// permissions the tenant's role table gives them (the gate recomputes those on every call).
pub(crate) fn issue_tokens(
    core: &Core,
    ctx: &RequestContext,
    user: &User,
    refresh: SessionRefresh,
) -> ApiResult<pb::Tokens> {
    let user_id = user
        .id
        .ok_or_else(|| ApiError::from(DomainError::UserNotFound))?;
    let permissions = core
        .access
        .directory
        .snapshot()
        .permissions_of_roles(ctx.tenant.as_str(), user.roles.iter().map(|r| r.as_str()))
        .union(crate::access::Permissions::of_self());
    let subject = Subject {
        sub: user_id.to_string(),
        kind: "user",
        permissions,
        roles: user.roles.iter().map(|r| r.as_str().to_string()).collect(),
    };
    sign_tokens(core, ctx, subject, refresh)
}

/// Who an access token speaks for.
pub(crate) struct Subject {
    pub(crate) sub: String,
    pub(crate) kind: &'static str,
    /// Listed in the token for its reader; the gate works them out again on every call.
    pub(crate) permissions: crate::access::Permissions,
    pub(crate) roles: Vec<String>,
}

/// Signs a short-lived access token for a session and wraps it with the refresh token.
pub(crate) fn sign_tokens(
    core: &Core,
    ctx: &RequestContext,
    subject: Subject,
    refresh: SessionRefresh,
) -> ApiResult<pb::Tokens> {
    let SessionRefresh {
        session,
        token: refresh_token,
        expires_at: refresh_expires,
    } = refresh;
    let signer = core.access.signer.as_ref().ok_or_else(|| {
        ApiError::Internal("no signing key configured: this service cannot issue tokens".into())
    })?;
    let now = Utc::now();
    let exp = now.timestamp().max(0) as u64 + core.settings.access_token_ttl_secs;
    let claims = Claims {
        iss: core.settings.jwt_issuer.clone(),
        sub: subject.sub,
        aud: core.settings.jwt_audience.clone(),
        exp,
        nbf: None,
        iat: Some(now.timestamp().max(0) as u64),
        tenant: Some(ctx.tenant.to_string()),
        kind: subject.kind.into(),
        permissions: subject
            .permissions
            .names()
            .into_iter()
            .map(str::to_string)
            .collect(),
        sid: Some(session.to_string()),
        roles: subject.roles,
        scopes: None,
    };
    let access_token = signer
        .mint(&claims)
        .map_err(|e| ApiError::Internal(format!("signing a token: {e}")))?;
    Ok(pb::Tokens {
        access_token,
        access_token_expires_at: timestamp(DateTime::from_timestamp(exp as i64, 0)),
        refresh_token,
        refresh_token_expires_at: timestamp(Some(refresh_expires)),
        token_type: "Bearer".into(),
        session_id: session.to_string(),
    })
}

/// A credential nobody's password matches, checked when no account matched so that an
/// unknown account costs the same hash as a wrong password (no enumeration by timing).
pub(crate) fn decoy() -> &'static Credential {
    static DECOY: std::sync::OnceLock<Credential> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| Credential::Modern {
        phc: "$argon2id$v=19$m=19456,t=2,p=1$ZGVjb3ktc2FsdC0xNmJ5dA$AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"
            .into(),
    })
}

#[tonic::async_trait]
impl AuthService for AuthApi {
    async fn sign_in(&self, request: Request<pb::SignInRequest>) -> Rpc<pb::SignInResponse> {
        use pb::sign_in_request::Identifier;
        let ctx = RequestContext::from_request(&request)?;
        let req = request.into_inner();
        let (email, phone, username) = match &req.identifier {
            Some(Identifier::Email(e)) => (Some(e.as_str()), None, None),
            Some(Identifier::Phone(p)) => (None, Some(p.as_str()), None),
            Some(Identifier::Username(u)) => (None, None, Some(u.as_str())),
            Some(Identifier::AdminEmail(e)) => {
                let email = Email::parse(e).map_err(|err| {
                    ApiError::from(DomainError::invalid("admin_email", err.to_string()))
                })?;
                let password = presented_password(req.password)?;
                self.core.limits.sign_in(&ctx.caller_key())?;
                let signed_in =
                    super::auth_admin::sign_in(&self.core, &ctx, &email, password).await?;
                return Ok(Response::new(signed_in));
            }
            None => (None, None, None),
        };
        let (kind, value) = identifier(email, phone, username)?;
        let password = presented_password(req.password)?;
        self.core.limits.sign_in(&ctx.caller_key())?;
        let Some(user) = self.core.owner_of(&ctx, kind, &value).await? else {
            use identity_domain::user::CredentialVerifier as _;
            self.core
                .passwords
                .verify(decoy(), &password)
                .await
                .map_err(ApiError::from)?;
            return Err(ApiError::from(DomainError::InvalidCredentials).into());
        };
        let (refresh, attempt) = opening(&ctx, &self.core, Account::User(user), password);
        let executed = self.run(&ctx, user, UserCommand::SignIn(attempt)).await?;
        let tokens = self.tokens(&ctx, &executed.aggregate, refresh)?;
        Ok(Response::new(pb::SignInResponse {
            tokens: Some(tokens),
            user_id: user.to_string(),
            position: executed.position,
        }))
    }

    async fn refresh(&self, request: Request<pb::RefreshRequest>) -> Rpc<pb::RefreshResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let presented = parse_refresh(&ctx, &request.get_ref().refresh_token)?;
        Ok(Response::new(match presented.account {
            Account::User(user) => self.refresh_user(&ctx, user, presented).await?,
            Account::Admin(id) => {
                super::auth_admin::refresh(&self.core, &ctx, id, presented).await?
            }
        }))
    }

    async fn sign_out(&self, request: Request<pb::SignOutRequest>) -> Rpc<pb::SignOutResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let presented = parse_refresh(&ctx, &request.get_ref().refresh_token)?;
        Ok(Response::new(match presented.account {
            Account::User(user) => self.sign_out_user(&ctx, user, presented).await?,
            Account::Admin(id) => {
                super::auth_admin::sign_out(&self.core, &ctx, id, presented).await?
            }
        }))
    }

    async fn request_password_reset(
        &self,
        request: Request<pb::RequestPasswordResetRequest>,
    ) -> Rpc<pb::RequestPasswordResetResponse> {
        use pb::request_password_reset_request::Identifier;
        let ctx = RequestContext::from_request(&request)?;
        let req = request.into_inner();
        let (email, phone) = email_or_phone!(req.identifier);
        self.core.limits.code_request(&ctx.caller_key())?;
        let (channel, destination, owner) = self.reset_target(&ctx, email, phone).await?;
        let (code, hash, expires_at) = match owner {
            Some(user) => self.core.new_code(&ctx.aggregate_id(user)),
            None => self.core.new_code("nobody"),
        };
        let Some(user) = owner else {
            // The same answer as for a real account: who is registered stays private.
            return Ok(Response::new(pb::RequestPasswordResetResponse {
                expires_at: timestamp(Some(expires_at)),
                code: String::new(),
            }));
        };
        self.check_identity(&ctx, user, &req.person_code).await?;
        let message = crate::delivery::Code {
            purpose: crate::delivery::Purpose::PasswordReset,
            channel: channel.as_str(),
            destination: &destination,
            code: &code,
            code_hash: &hash,
            expires_at,
        };
        let command = UserCommand::RequestPasswordReset {
            channel,
            code_hash: hash.clone(),
            expires_at,
            at: Utc::now(),
        };
        let (_, code) = self
            .core
            .execute_with_code(&ctx, user, message, command)
            .await?;
        Ok(Response::new(pb::RequestPasswordResetResponse {
            expires_at: timestamp(Some(expires_at)),
            code,
        }))
    }

    async fn reset_password(
        &self,
        request: Request<pb::ResetPasswordRequest>,
    ) -> Rpc<pb::ResetPasswordResponse> {
        use pb::reset_password_request::Identifier;
        let ctx = RequestContext::from_request(&request)?;
        let req = request.into_inner();
        let (email, phone) = email_or_phone!(req.identifier);
        let new_password = Secret::new_password(&req.new_password)
            .map_err(|why| ApiError::from(DomainError::InvalidPassword(why)))?;
        let wrong = || ApiError::from(DomainError::InvalidCode { attempts_left: 0 });
        let (_, _, owner) = self.reset_target(&ctx, email, phone).await?;
        let user = owner.ok_or_else(wrong)?;
        let code_hash = self.core.hash_code(&ctx.aggregate_id(user), &req.code);
        let executed = self
            .run(
                &ctx,
                user,
                UserCommand::ResetPassword {
                    code_hash,
                    new_password,
                    at: Utc::now(),
                },
            )
            .await
            .map_err(|e| match e {
                ApiError::Domain(DomainError::NoPendingChange(_)) => wrong(),
                e => e,
            })?;
        Ok(Response::new(pb::ResetPasswordResponse {
            position: executed.position,
        }))
    }

    async fn revoke_user_sessions(
        &self,
        request: Request<pb::RevokeUserSessionsRequest>,
    ) -> Rpc<pb::RevokeUserSessionsResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let user = UserId::parse(&request.get_ref().user_id)
            .map_err(|e| ApiError::from(DomainError::invalid("user_id", e.to_string())))?;
        let executed = self
            .run(
                &ctx,
                user,
                UserCommand::Sessions(SessionCommand::End {
                    session: None,
                    reason: SessionEnd::Revoked,
                    at: Utc::now(),
                }),
            )
            .await?;
        let ended = executed
            .events
            .iter()
            .map(|e| match e {
                UserEvent::SessionsEnded { sessions, .. } => sessions.len() as u32,
                _ => 0,
            })
            .sum();
        Ok(Response::new(pb::RevokeUserSessionsResponse {
            ended,
            position: executed.position,
        }))
    }
}
