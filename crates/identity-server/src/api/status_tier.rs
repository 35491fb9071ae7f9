//! `identity.v1.StatusTierService`.

use std::collections::BTreeSet;

use chrono::Utc;
use identity_domain::status_tier::{CreateTier, StatusTier, StatusTierCommand, UpdateTier};
use identity_domain::values::{Name, Percentage, Text, TierId, TokenAmount, TokenId, Url};
use identity_domain::{DomainError, Violations};
use identity_proto::v1 as pb;
use identity_proto::v1::status_tier_service_server::StatusTierService;
use identity_store::Executed;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::context::RequestContext;
use crate::convert::{checked, field, optional_field, parse_fields, present};
use crate::convert::{required, tier_to_pb, tier_view_to_pb};
use crate::core::{deadline_of, Core};
use crate::error::{ApiError, ApiResult};
use identity_domain::values::UserId;
use identity_projections::queries::UserKey;
use identity_projections::Projection;

const MAX_ELIGIBLE_TOKENS: usize = 100;

#[derive(Debug, Clone)]
pub struct StatusTierApi {
    core: Core,
}

impl StatusTierApi {
    pub fn new(core: Core) -> Self {
        Self { core }
    }

    async fn run(
        &self,
        ctx: &RequestContext,
        tier: TierId,
        command: StatusTierCommand,
    ) -> ApiResult<Executed<StatusTier>> {
        self.core
            .execute::<StatusTier>(ctx, &ctx.aggregate_id(tier), command, &())
            .await
    }

    /// AddEligibleToken or RemoveEligibleToken, answered with the tier's tokens after it.
    async fn change_token<R: TokenChange>(&self, request: Request<R>) -> Rpc<R::Answer> {
        let ctx = RequestContext::from_request(&request)?;
        let (tier_id, token) = request.get_ref().tier_and_token();
        parse_fields! {
            tier = field("tier_id", tier_id, TierId::parse),
            token = field("token", token, TokenId::parse),
        }
        let at = Utc::now();
        let command = if R::ADDS {
            StatusTierCommand::AddEligibleToken { token, at }
        } else {
            StatusTierCommand::RemoveEligibleToken { token, at }
        };
        let executed = self.run(&ctx, tier, command).await?;
        let tokens = executed.aggregate.eligible_tokens.iter();
        Ok(Response::new(R::answer(
            tokens.map(ToString::to_string).collect(),
            executed.position,
        )))
    }
}

/// The two requests that change a tier's eligible tokens.
trait TokenChange {
    /// Adds the token (or removes it).
    const ADDS: bool;
    type Answer;
    fn tier_and_token(&self) -> (&str, &str);
    fn answer(eligible_tokens: Vec<String>, position: u64) -> Self::Answer;
}

macro_rules! token_change {
    ($request:ty => $answer:ident, $adds:literal) => {
        impl TokenChange for $request {
            const ADDS: bool = $adds;
            type Answer = pb::$answer;

            fn tier_and_token(&self) -> (&str, &str) {
                (&self.tier_id, &self.token)
            }

            fn answer(eligible_tokens: Vec<String>, position: u64) -> Self::Answer {
                pb::$answer {
                    eligible_tokens,
                    position,
                }
            }
        }
    };
}
token_change!(pb::AddEligibleTokenRequest => AddEligibleTokenResponse, true);
token_change!(pb::RemoveEligibleTokenRequest => RemoveEligibleTokenResponse, false);

/// CreateStatusTier's fields, parsed (every field violation at once) into the command that
/// creates tier `tier_id` in the caller's tenant.
fn new_tier(
    ctx: &RequestContext,
    tier_id: TierId,
    req: &pb::CreateStatusTierRequest,
) -> ApiResult<CreateTier> {
    let mut v = Violations::new();
    if req.eligible_tokens.len() > MAX_ELIGIBLE_TOKENS {
        v.push(
            "eligible_tokens",
            format!("at most {MAX_ELIGIBLE_TOKENS} tokens"),
        );
    }
    let eligible_tokens: BTreeSet<TokenId> = req
        .eligible_tokens
        .iter()
        .enumerate()
        .filter_map(|(i, t)| required(&mut v, &format!("eligible_tokens[{i}]"), t, TokenId::parse))
        .collect();
    parse_fields! { v;
        name = field("name", &req.name, Name::parse),
        description = optional_field("description", &req.description, Text::parse),
        min_balance = field("min_balance", &req.min_balance, TokenAmount::parse),
        discount = if req.discount_percentage.trim().is_empty() {
            Ok(Percentage::ZERO)
        } else {
            checked(
                "discount_percentage",
                Percentage::parse(&req.discount_percentage),
            )
        },
        image_url = optional_field("image_url", &req.image_url, Url::parse),
    }
    Ok(CreateTier {
        tier_id,
        tenant: ctx.tenant.clone(),
        name,
        description,
        min_balance,
        discount,
        image_url,
        eligible_tokens,
        at: Utc::now(),
    })
}

/// UpdateStatusTier's tier and changes, parsed.
struct TierChange(TierId, UpdateTier);

impl TryFrom<&pb::UpdateStatusTierRequest> for TierChange {
    type Error = ApiError;

    fn try_from(req: &pb::UpdateStatusTierRequest) -> ApiResult<Self> {
        // A field that is present must parse; an absent one is left as it is.
        parse_fields! {
            tier = field("tier_id", &req.tier_id, TierId::parse),
            name = present("name", req.name.as_deref(), Name::parse),
            description = present("description", req.description.as_deref(), Text::parse),
            min_balance = present("min_balance", req.min_balance.as_deref(), TokenAmount::parse),
            discount = present("discount_percentage", req.discount_percentage.as_deref(), Percentage::parse),
            image_url = present("image_url", req.image_url.as_deref(), Url::parse),
        }
        Ok(Self(
            tier,
            UpdateTier {
                name,
                description,
                min_balance,
                discount,
                image_url,
            },
        ))
    }
}

fn parse_tier_id(raw: &str) -> ApiResult<TierId> {
    parse_fields! {
        id = field("tier_id", raw, TierId::parse),
    }
    Ok(id)
}

type Rpc<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl StatusTierService for StatusTierApi {
    async fn create_status_tier(
        &self,
        request: Request<pb::CreateStatusTierRequest>,
    ) -> Rpc<pb::CreateStatusTierResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let tier_id = TierId(Uuid::new_v4());
        let command =
            StatusTierCommand::Create(Box::new(new_tier(&ctx, tier_id, request.get_ref())?));
        let executed = self.run(&ctx, tier_id, command).await?;
        Ok(Response::new(pb::CreateStatusTierResponse {
            tier: Some(tier_to_pb(&executed.aggregate, executed.sequence)),
            position: executed.position,
        }))
    }

    async fn update_status_tier(
        &self,
        request: Request<pb::UpdateStatusTierRequest>,
    ) -> Rpc<pb::UpdateStatusTierResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let TierChange(tier, update) = TierChange::try_from(request.get_ref())?;
        let executed = self
            .run(
                &ctx,
                tier,
                StatusTierCommand::Update(Box::new(update), Utc::now()),
            )
            .await?;
        Ok(Response::new(pb::UpdateStatusTierResponse {
            tier: Some(tier_to_pb(&executed.aggregate, executed.sequence)),
            position: executed.position,
        }))
    }

    async fn retire_status_tier(
        &self,
        request: Request<pb::RetireStatusTierRequest>,
    ) -> Rpc<pb::RetireStatusTierResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let tier = parse_tier_id(&request.get_ref().tier_id)?;
        let executed = self
            .run(&ctx, tier, StatusTierCommand::Retire { at: Utc::now() })
            .await?;
        Ok(Response::new(pb::RetireStatusTierResponse {
            position: executed.position,
        }))
    }

    async fn add_eligible_token(
        &self,
        request: Request<pb::AddEligibleTokenRequest>,
    ) -> Rpc<pb::AddEligibleTokenResponse> {
        self.change_token(request).await
    }

    async fn remove_eligible_token(
        &self,
        request: Request<pb::RemoveEligibleTokenRequest>,
    ) -> Rpc<pb::RemoveEligibleTokenResponse> {
        self.change_token(request).await
    }

    async fn get_status_tier(
        &self,
        request: Request<pb::GetStatusTierRequest>,
    ) -> Rpc<pb::GetStatusTierResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let tier = parse_tier_id(&request.get_ref().tier_id)?;
        let loaded = self
            .core
            .load::<StatusTier>(&ctx.aggregate_id(tier), DomainError::TierNotFound)
            .await?;
        Ok(Response::new(pb::GetStatusTierResponse {
            tier: Some(tier_to_pb(&loaded.aggregate, loaded.sequence)),
        }))
    }

    async fn list_status_tiers(
        &self,
        request: Request<pb::ListStatusTiersRequest>,
    ) -> Rpc<pb::ListStatusTiersResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let wait = deadline_of(&request);
        let req = request.into_inner();
        self.core
            .catch_up(Projection::Status, req.min_position, wait)
            .await?;
        let (tiers, next) = self
            .core
            .projections
            .tiers_page(
                ctx.tenant.as_str(),
                req.include_retired,
                req.page_size,
                &req.page_token,
            )
            .await
            .map_err(ApiError::from)?
            .map_err(|_| ApiError::foreign_token("page_token"))?;
        Ok(Response::new(pb::ListStatusTiersResponse {
            tiers: tiers.iter().map(tier_view_to_pb).collect(),
            next_page_token: next.unwrap_or_default(),
        }))
    }

    async fn get_user_status(
        &self,
        request: Request<pb::GetUserStatusRequest>,
    ) -> Rpc<pb::GetUserStatusResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let wait = deadline_of(&request);
        let req = request.into_inner();
        parse_fields! {
            user = field("user_id", &req.user_id, UserId::parse),
        }
        let user = user.to_string();
        self.core
            .catch_up(Projection::Directory, req.min_position, wait)
            .await?;
        self.core
            .catch_up(Projection::Status, req.min_position, wait)
            .await?;
        let tenant = ctx.tenant.as_str();
        if self
            .core
            .projections
            .find_user(tenant, &UserKey::Id(user.clone()))
            .await
            .map_err(ApiError::from)?
            .is_none()
        {
            return Err(ApiError::from(DomainError::UserNotFound).into());
        }
        let status = self
            .core
            .projections
            .user_status(tenant, &user)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::GetUserStatusResponse {
            qualifying: status.qualifying.iter().map(tier_view_to_pb).collect(),
            highest: status.highest.as_ref().map(tier_view_to_pb),
        }))
    }
}
