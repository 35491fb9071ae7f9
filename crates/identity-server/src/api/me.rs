//! `identity.v1.MeService`: a signed-in person acts as themselves. Each call is answered by
//! the handler operators use, for the user the token names, with the same admitted caller
//! (so field scopes and permissions apply unchanged).

use chrono::Utc;
use identity_domain::session::SessionCommand;
use identity_domain::session::SessionEnd;
use identity_domain::user::UserCommand;
use identity_domain::values::{SessionId, UserId};
use identity_domain::DomainError;
use identity_proto::v1 as pb;
use identity_proto::v1::me_service_server::MeService;
use identity_proto::v1::status_tier_service_server::StatusTierService;
use identity_proto::v1::user_service_server::UserService;
use tonic::{Request, Response, Status};

use crate::access::Principal;
use crate::api::status_tier::StatusTierApi;
use crate::api::user::{scoped_user, UserApi};
use crate::context::RequestContext;
use crate::convert::timestamp;
use crate::core::Core;
use crate::error::{ApiError, ApiResult};

type Rpc<T> = Result<Response<T>, Status>;

/// The signed-in person's own calls, answered by the same handlers as the operators' calls
/// for the user the token names.
#[derive(Debug, Clone)]
pub struct MeApi {
    core: Core,
    users: UserApi,
    tiers: StatusTierApi,
}

impl MeApi {
    pub fn new(core: Core) -> Self {
        Self {
            users: UserApi::new(core.clone()),
            tiers: StatusTierApi::new(core.clone()),
            core,
        }
    }
}

/// The user a user token names, and its session.
fn me(ctx: &RequestContext) -> ApiResult<(UserId, Option<String>)> {
    match &ctx.caller.principal {
        Principal::User {
            user_id, session, ..
        } => Ok((
            UserId::parse(user_id).map_err(|_| {
                ApiError::Unauthenticated("the token's subject is not a user".into())
            })?,
            session.clone(),
        )),
        other => Err(ApiError::Forbidden(format!(
            "{} is not a user: MeService needs a user access token (AuthService.SignIn)",
            other.kind()
        ))),
    }
}

/// `request` as a call of another handler, with the same admitted caller.
fn forward<T, U>(request: &Request<T>, message: U) -> Request<U> {
    let mut forwarded = Request::new(message);
    *forwarded.metadata_mut() = request.metadata().clone();
    if let Some(caller) = request
        .extensions()
        .get::<std::sync::Arc<crate::access::Caller>>()
    {
        forwarded.extensions_mut().insert(caller.clone());
    }
    forwarded
}

#[tonic::async_trait]
impl MeService for MeApi {
    async fn get_me(&self, request: Request<pb::GetMeRequest>) -> Rpc<pb::GetMeResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let (user, session) = me(&ctx)?;
        // The aggregate itself: always current, so any min_position is met.
        let loaded = self.core.load_user(&ctx, user).await?;
        let (user, withheld_fields) =
            scoped_user(&self.core, &ctx, &loaded.aggregate, loaded.sequence).await?;
        Ok(Response::new(pb::GetMeResponse {
            user: Some(user),
            withheld_fields,
            permissions: ctx
                .caller
                .permissions
                .names()
                .into_iter()
                .map(str::to_string)
                .collect(),
            session_id: session.unwrap_or_default(),
        }))
    }

    async fn update_me(&self, request: Request<pb::UpdateMeRequest>) -> Rpc<pb::UpdateMeResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let (user, _) = me(&ctx)?;
        let req = request.get_ref().clone();
        let answer = self
            .users
            .update_user_profile(forward(
                &request,
                pb::UpdateUserProfileRequest {
                    user_id: user.to_string(),
                    profile: req.profile,
                    update_mask: req.update_mask,
                },
            ))
            .await?
            .into_inner();
        Ok(Response::new(pb::UpdateMeResponse {
            user: answer.user,
            position: answer.position,
            withheld_fields: answer.withheld_fields,
        }))
    }

    async fn get_my_balances(
        &self,
        request: Request<pb::GetMyBalancesRequest>,
    ) -> Rpc<pb::GetMyBalancesResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let (user, _) = me(&ctx)?;
        let answer = self
            .users
            .get_user_with_balances(forward(
                &request,
                pb::GetUserWithBalancesRequest {
                    key: Some(pb::get_user_with_balances_request::Key::UserId(
                        user.to_string(),
                    )),
                    min_position: request.get_ref().min_position,
                },
            ))
            .await?
            .into_inner();
        Ok(Response::new(pb::GetMyBalancesResponse {
            wallets: answer.wallets,
            withheld_fields: answer
                .withheld_fields
                .into_iter()
                .filter(|f| f == "wallets")
                .collect(),
        }))
    }

    async fn get_my_status(
        &self,
        request: Request<pb::GetMyStatusRequest>,
    ) -> Rpc<pb::GetMyStatusResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let (user, _) = me(&ctx)?;
        let answer = self
            .tiers
            .get_user_status(forward(
                &request,
                pb::GetUserStatusRequest {
                    user_id: user.to_string(),
                    min_position: request.get_ref().min_position,
                },
            ))
            .await?
            .into_inner();
        Ok(Response::new(pb::GetMyStatusResponse {
            qualifying: answer.qualifying,
            highest: answer.highest,
        }))
    }

    async fn list_my_sessions(
        &self,
        request: Request<pb::ListMySessionsRequest>,
    ) -> Rpc<pb::ListMySessionsResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let (user, current) = me(&ctx)?;
        let loaded = self.core.load_user(&ctx, user).await?;
        let sessions = loaded
            .aggregate
            .live_sessions(Utc::now())
            .map(|(id, s)| pb::Session {
                session_id: id.to_string(),
                started_at: timestamp(Some(s.started_at)),
                refreshed_at: timestamp(Some(s.refreshed_at)),
                expires_at: timestamp(Some(s.expires_at)),
                current: current.as_deref() == Some(id.to_string().as_str()),
            })
            .collect();
        Ok(Response::new(pb::ListMySessionsResponse { sessions }))
    }

    async fn end_my_session(
        &self,
        request: Request<pb::EndMySessionRequest>,
    ) -> Rpc<pb::EndMySessionResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let (user, _) = me(&ctx)?;
        let session = SessionId::parse(&request.get_ref().session_id)
            .map_err(|e| ApiError::from(DomainError::invalid("session_id", e.to_string())))?;
        let executed = self
            .core
            .execute_user(
                &ctx,
                user,
                UserCommand::Sessions(SessionCommand::End {
                    session: Some(session),
                    reason: SessionEnd::SignedOut,
                    at: Utc::now(),
                }),
            )
            .await?;
        Ok(Response::new(pb::EndMySessionResponse {
            position: executed.position,
        }))
    }
}
