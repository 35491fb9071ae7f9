//! `identity.v1.WalletService`.

use chrono::Utc;
use identity_domain::values::{
    ExternalId, IdempotencyKey, Network, TokenAmount, TokenId, UserId, WalletId,
};
use identity_domain::wallet::{
    MovementKind, OpenWallet, Owner, OwnerType, TokenMovement, Wallet, WalletCommand,
};
use identity_domain::{derive, DomainError, Violations};
use identity_proto::v1 as pb;
use identity_proto::v1::wallet_service_server::WalletService;
use tonic::{Request, Response, Status};

use crate::context::RequestContext;
use crate::convert::{balances_to_pb, totals, wallet_view_to_pb};
use crate::convert::{checked, field, optional_field, parse_fields};
use crate::convert::{
    owner_type_from_pb, required, wallet_status_to_pb, wallet_to_pb, wallet_type_from_pb,
};
use crate::core::{deadline_of, Core};
use crate::error::{ApiError, ApiResult};
use identity_projections::Projection;

/// Namespace of deterministic wallet ids: one owner, network, type and address is one wallet.

#[derive(Debug, Clone)]
pub struct WalletApi {
    core: Core,
}

impl WalletApi {
    pub fn new(core: Core) -> Self {
        Self { core }
    }

    async fn run(
        &self,
        ctx: &RequestContext,
        wallet: WalletId,
        command: WalletCommand,
    ) -> ApiResult<identity_store::Executed<Wallet>> {
        self.core
            .execute::<Wallet>(ctx, &ctx.aggregate_id(wallet), command, &())
            .await
    }

    /// A credit or a debit (`kind`) as a request asks it.
    async fn movement<R, A>(&self, request: &Request<R>, kind: MovementKind) -> Rpc<A>
    where
        for<'r> Movement: TryFrom<&'r R, Error = ApiError>,
        A: From<Moved>,
    {
        let ctx = &RequestContext::from_request(request)?;
        let Movement {
            wallet,
            token,
            amount,
            key,
        } = Movement::try_from(request.get_ref())?;
        let movement = TokenMovement {
            token: token.clone(),
            amount,
            idempotency_key: key.clone(),
            at: Utc::now(),
        };
        let command = match kind {
            MovementKind::Credit => WalletCommand::Credit(movement),
            MovementKind::Debit => WalletCommand::Debit(movement),
        };
        let executed = self.run(ctx, wallet, command).await?;
        let replayed = executed.events.is_empty();
        let outcome = executed
            .aggregate
            .outcome(&key)
            .ok_or_else(|| ApiError::Internal("a movement left no outcome".into()))?;
        // A retry answers with the first outcome, including where it landed in the log.
        let position = if replayed {
            self.core
                .log
                .position_of("Wallet", &ctx.aggregate_id(wallet), outcome.sequence)
                .await
                .map_err(ApiError::from)?
        } else {
            executed.position
        };
        let moved = Moved {
            token: outcome.token.to_string(),
            balance: outcome.balance.to_string(),
            replayed,
            position,
        };
        Ok(Response::new(moved.into()))
    }

    async fn transition(
        &self,
        request: &Request<impl HasWalletId>,
        make: fn(chrono::DateTime<Utc>) -> WalletCommand,
    ) -> ApiResult<(i32, u64)> {
        let ctx = RequestContext::from_request(request)?;
        parse_fields! {
            wallet = field("wallet_id", request.get_ref().wallet_id(), WalletId::parse),
        }
        let executed = self.run(&ctx, wallet, make(Utc::now())).await?;
        Ok((
            wallet_status_to_pb(executed.aggregate.status) as i32,
            executed.position,
        ))
    }
}

/// A credit or a debit, parsed (every field violation at once).
struct Movement {
    wallet: WalletId,
    token: TokenId,
    amount: TokenAmount,
    key: IdempotencyKey,
}

/// What a credit or a debit left: the token, its balance, whether the call was a retry
/// answered with the first outcome, and the position of that outcome.
struct Moved {
    token: String,
    balance: String,
    replayed: bool,
    position: u64,
}

macro_rules! movement_from {
    ($($t:ty => $answer:ty),*) => {$(
        impl From<Moved> for $answer {
            fn from(m: Moved) -> Self {
                Self {
                    token: m.token,
                    balance: m.balance,
                    replayed: m.replayed,
                    position: m.position,
                }
            }
        }

        impl TryFrom<&$t> for Movement {
            type Error = ApiError;

            fn try_from(r: &$t) -> ApiResult<Self> {
                parse_fields! {
                    wallet = field("wallet_id", &r.wallet_id, WalletId::parse),
                    token = field("token", &r.token, TokenId::parse),
                    amount = field("amount", &r.amount, TokenAmount::parse_positive),
                    key = field("idempotency_key", &r.idempotency_key, IdempotencyKey::parse),
                }
                Ok(Self { wallet, token, amount, key })
            }
        }
    )*};
}
movement_from!(
    pb::CreditTokensRequest => pb::CreditTokensResponse,
    pb::DebitTokensRequest => pb::DebitTokensResponse
);

/// OpenWallet's fields, parsed.
struct NewWallet {
    owner_type: OwnerType,
    wallet_type: identity_domain::wallet::WalletType,
    network: Network,
    owner_id: ExternalId,
    address: Option<String>,
}

impl TryFrom<&pb::OpenWalletRequest> for NewWallet {
    type Error = ApiError;

    fn try_from(req: &pb::OpenWalletRequest) -> ApiResult<Self> {
        parse_fields! {
            owner_type = checked("owner_type", owner_type_from_pb(req.owner_type)),
            wallet_type = checked("wallet_type", wallet_type_from_pb(req.wallet_type)),
            network = field("network", &req.network, Network::parse),
            owner_id = field("owner_id", &req.owner_id, ExternalId::parse),
            address = optional_field("address", &req.address, |s| Ok(s.trim().to_string())),
        }
        Ok(Self {
            owner_type,
            wallet_type,
            network,
            owner_id,
            address,
        })
    }
}

/// The owner ListWallets names, parsed.
struct WalletOwner {
    owner_type: OwnerType,
    owner_id: ExternalId,
}

impl TryFrom<&pb::ListWalletsRequest> for WalletOwner {
    type Error = ApiError;

    fn try_from(req: &pb::ListWalletsRequest) -> ApiResult<Self> {
        parse_fields! {
            owner_type = checked("owner_type", owner_type_from_pb(req.owner_type)),
            owner_id = field("owner_id", &req.owner_id, ExternalId::parse),
        }
        Ok(Self {
            owner_type,
            owner_id,
        })
    }
}

/// Requests that name one wallet.
pub trait HasWalletId {
    fn wallet_id(&self) -> &str;
}

macro_rules! has_wallet_id {
    ($($t:ty),*) => {$(impl HasWalletId for $t { fn wallet_id(&self) -> &str { &self.wallet_id } })*};
}
has_wallet_id!(
    pb::ActivateWalletRequest,
    pb::SuspendWalletRequest,
    pb::CloseWalletRequest
);

type Rpc<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl WalletService for WalletApi {
    async fn open_wallet(
        &self,
        request: Request<pb::OpenWalletRequest>,
    ) -> Rpc<pb::OpenWalletResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let NewWallet {
            owner_type,
            wallet_type,
            network,
            owner_id,
            address,
        } = NewWallet::try_from(request.get_ref())?;
        // A user's wallets are salted with the user's identifier email.
        let owner_identifier =
            match derive::owner_identifier(&ctx.tenant, owner_type, owner_id.as_str()) {
                Some(other) => other,
                None => {
                    let user = UserId::parse(owner_id.as_str())
                        .map_err(|e| ApiError::from(e.at("owner_id")))?;
                    let loaded = self.core.load_user(&ctx, user).await?;
                    loaded
                        .aggregate
                        .may_own_a_new_wallet()
                        .map_err(ApiError::from)?
                        .to_string()
                }
            };
        let wallet_id = derive::wallet_id(
            &ctx.tenant,
            owner_type,
            owner_id.as_str(),
            network,
            wallet_type,
            address.as_deref(),
        );
        let command = WalletCommand::Open(Box::new(OpenWallet {
            wallet_id,
            tenant: ctx.tenant.clone(),
            owner: Owner {
                owner_type,
                owner_id: owner_id.to_string(),
            },
            owner_identifier,
            wallet_type,
            network,
            external_address: address,
            factory: self.core.factories.for_network(network),
            at: Utc::now(),
        }));
        let executed = self.run(&ctx, wallet_id, command).await?;
        Ok(Response::new(pb::OpenWalletResponse {
            wallet: Some(wallet_to_pb(&executed.aggregate)),
            position: executed.position,
        }))
    }

    async fn activate_wallet(
        &self,
        request: Request<pb::ActivateWalletRequest>,
    ) -> Rpc<pb::ActivateWalletResponse> {
        let (status, position) = self
            .transition(&request, |at| WalletCommand::Activate { at })
            .await?;
        Ok(Response::new(pb::ActivateWalletResponse {
            status,
            position,
        }))
    }

    async fn suspend_wallet(
        &self,
        request: Request<pb::SuspendWalletRequest>,
    ) -> Rpc<pb::SuspendWalletResponse> {
        let (status, position) = self
            .transition(&request, |at| WalletCommand::Suspend { at })
            .await?;
        Ok(Response::new(pb::SuspendWalletResponse {
            status,
            position,
        }))
    }

    async fn close_wallet(
        &self,
        request: Request<pb::CloseWalletRequest>,
    ) -> Rpc<pb::CloseWalletResponse> {
        let (status, position) = self
            .transition(&request, |at| WalletCommand::Close { at })
            .await?;
        Ok(Response::new(pb::CloseWalletResponse { status, position }))
    }

    async fn credit_tokens(
        &self,
        request: Request<pb::CreditTokensRequest>,
    ) -> Rpc<pb::CreditTokensResponse> {
        self.movement(&request, MovementKind::Credit).await
    }

    async fn debit_tokens(
        &self,
        request: Request<pb::DebitTokensRequest>,
    ) -> Rpc<pb::DebitTokensResponse> {
        self.movement(&request, MovementKind::Debit).await
    }

    async fn get_wallet(
        &self,
        request: Request<pb::GetWalletRequest>,
    ) -> Rpc<pb::GetWalletResponse> {
        let ctx = RequestContext::from_request(&request)?;
        parse_fields! {
            wallet = field("wallet_id", &request.get_ref().wallet_id, WalletId::parse),
        }
        let loaded = self
            .core
            .load::<Wallet>(&ctx.aggregate_id(wallet), DomainError::WalletNotFound)
            .await?;
        Ok(Response::new(pb::GetWalletResponse {
            wallet: Some(wallet_to_pb(&loaded.aggregate)),
        }))
    }

    async fn list_wallets(
        &self,
        request: Request<pb::ListWalletsRequest>,
    ) -> Rpc<pb::ListWalletsResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let wait = deadline_of(&request);
        let req = request.into_inner();
        let WalletOwner {
            owner_type,
            owner_id,
        } = WalletOwner::try_from(&req)?;
        let owner_type = match owner_type {
            OwnerType::User => "user",
            OwnerType::Business => "business",
            OwnerType::Tenant => "tenant",
        };
        self.core
            .catch_up(Projection::Balances, req.min_position, wait)
            .await?;
        let wallets = self
            .core
            .projections
            .wallets_of(ctx.tenant.as_str(), owner_type, owner_id.as_str())
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::ListWalletsResponse {
            wallets: wallets.iter().map(wallet_view_to_pb).collect(),
        }))
    }

    async fn get_balances(
        &self,
        request: Request<pb::GetBalancesRequest>,
    ) -> Rpc<pb::GetBalancesResponse> {
        use pb::get_balances_request::Key;
        let ctx = RequestContext::from_request(&request)?;
        let wait = deadline_of(&request);
        let req = request.into_inner();
        let mut v = Violations::new();
        let key = match &req.key {
            Some(Key::WalletId(w)) => required(&mut v, "wallet_id", w, WalletId::parse)
                .map(|w| Key::WalletId(w.to_string())),
            Some(Key::UserId(u)) => {
                required(&mut v, "user_id", u, UserId::parse).map(|u| Key::UserId(u.to_string()))
            }
            None => {
                v.push("wallet_id", "one of wallet_id or user_id is required");
                None
            }
        };
        v.finish().map_err(ApiError::from)?;
        self.core
            .catch_up(Projection::Balances, req.min_position, wait)
            .await?;
        let tenant = ctx.tenant.as_str();
        let balances = match key {
            Some(Key::WalletId(w)) => {
                let wallet = self
                    .core
                    .projections
                    .wallet(tenant, &w)
                    .await
                    .map_err(ApiError::from)?
                    .ok_or(ApiError::from(DomainError::WalletNotFound))?;
                balances_to_pb(&wallet.balances)
            }
            Some(Key::UserId(u)) => totals(
                &self
                    .core
                    .projections
                    .wallets_of(tenant, "user", &u)
                    .await
                    .map_err(ApiError::from)?,
            ),
            None => Vec::new(),
        };
        Ok(Response::new(pb::GetBalancesResponse { balances }))
    }
}
