//! The Wallet aggregate: a wallet of one owner on one network, with per-token balances.
//!
//! Balances are `u128` in each token's smallest unit and never go negative. Every credit and
//! debit carries an idempotency key: a retry with the same key and payload appends nothing and
//! the caller reads the first outcome from `Wallet::outcome`; the same key with another payload
//! is refused. Events carry the resulting balance, so read models hold no arithmetic.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::derive::{counterfactual_address, wallet_address, WalletFactory};
use crate::error::{DomainError, ValueError};
use crate::values::{IdempotencyKey, Network, TenantId, TokenAmount, TokenId, WalletId};
use crate::RecordsRejection;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OwnerType {
    User,
    Business,
    Tenant,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Owner {
    pub owner_type: OwnerType,
    pub owner_id: String,
}

impl Owner {
    /// The user id, when the owner is a user (only users have a status and a directory entry).
    pub fn user_id(&self) -> Option<&str> {
        (self.owner_type == OwnerType::User).then_some(self.owner_id.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WalletType {
    Internal,
    External,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum WalletStatus {
    #[default]
    Pending,
    Active,
    Suspended,
    Closed,
}

impl WalletStatus {
    pub const ALL: [Self; 4] = [Self::Pending, Self::Active, Self::Suspended, Self::Closed];

    /// The stable text read models store.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Active => "active",
            Self::Suspended => "suspended",
            Self::Closed => "closed",
        }
    }

    /// The status [`WalletStatus::as_str`] wrote; `None` for any other text.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

impl OwnerType {
    pub const ALL: [Self; 3] = [Self::User, Self::Business, Self::Tenant];

    /// The stable text read models store.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Business => "business",
            Self::Tenant => "tenant",
        }
    }

    /// The owner type [`OwnerType::as_str`] wrote; `None` for any other text.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

impl WalletType {
    pub const ALL: [Self; 2] = [Self::Internal, Self::External];

    /// The stable text read models store.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Internal => "internal",
            Self::External => "external",
        }
    }

    /// The wallet type [`WalletType::as_str`] wrote; `None` for any other text.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// Parses an address a caller brings for an external wallet, in its network's format.
pub fn parse_external_address(network: Network, raw: &str) -> Result<String, ValueError> {
    let s = raw.trim();
    if network.is_evm_like() {
        match s.strip_prefix("0x") {
            Some(h) if h.len() == 40 && h.bytes().all(|b| b.is_ascii_hexdigit()) => {
                Ok(format!("0x{}", h.to_ascii_lowercase()))
            }
            _ => Err(ValueError::new("address must be 0x and 40 hex digits")),
        }
    } else {
        match bs58::decode(s).into_vec() {
            Ok(bytes) if bytes.len() == 32 => Ok(s.to_string()),
            _ => Err(ValueError::new("address must be a base58 public key")),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenWallet {
    pub wallet_id: WalletId,
    pub tenant: TenantId,
    pub owner: Owner,
    /// The owner's identifier email (for users), the salt of internal wallet addresses.
    pub owner_identifier: String,
    pub wallet_type: WalletType,
    pub network: Network,
    /// Required for external wallets, ignored for internal ones (their address is derived).
    pub external_address: Option<String>,
    /// Where the network's smart contract wallets are deployed from: an internal wallet on
    /// an EVM network needs one (its address is CREATE2 from it).
    pub factory: Option<WalletFactory>,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenMovement {
    pub token: TokenId,
    pub amount: TokenAmount,
    pub idempotency_key: IdempotencyKey,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WalletCommand {
    Open(Box<OpenWallet>),
    Activate {
        at: DateTime<Utc>,
    },
    Suspend {
        at: DateTime<Utc>,
    },
    Close {
        at: DateTime<Utc>,
    },
    Credit(TokenMovement),
    Debit(TokenMovement),
    /// Gives the wallet to another owner (a merge of users: docs/adr/0007), keeping its id,
    /// address and balances.
    ChangeOwner {
        owner: Owner,
        at: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WalletEvent {
    WalletOpened {
        wallet_id: WalletId,
        tenant: TenantId,
        owner: Owner,
        wallet_type: WalletType,
        network: Network,
        address: String,
        explorer_url: Option<String>,
        opened_at: DateTime<Utc>,
    },
    WalletActivated {
        at: DateTime<Utc>,
    },
    WalletSuspended {
        at: DateTime<Utc>,
    },
    WalletClosed {
        at: DateTime<Utc>,
    },
    TokensCredited {
        token: TokenId,
        amount: TokenAmount,
        balance: TokenAmount,
        idempotency_key: IdempotencyKey,
        at: DateTime<Utc>,
    },
    TokensDebited {
        token: TokenId,
        amount: TokenAmount,
        balance: TokenAmount,
        idempotency_key: IdempotencyKey,
        at: DateTime<Utc>,
    },
    WalletOwnerChanged {
        owner: Owner,
        previous: Owner,
        at: DateTime<Utc>,
    },
}

domain_event!(
    WalletEvent,
    "1.0",
    [
        WalletOpened,
        WalletActivated,
        WalletSuspended,
        WalletClosed,
        TokensCredited,
        TokensDebited,
        WalletOwnerChanged,
    ]
);

impl RecordsRejection for WalletEvent {}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MovementKind {
    Credit,
    Debit,
}

/// The first outcome of an idempotency key, reported again on a retry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MovementOutcome {
    pub kind: MovementKind,
    pub token: TokenId,
    pub amount: TokenAmount,
    pub balance: TokenAmount,
    /// The wallet's event sequence number of the movement.
    pub sequence: usize,
}

impl MovementOutcome {
    fn same_request(&self, kind: MovementKind, m: &TokenMovement) -> bool {
        self.kind == kind && self.token == m.token && self.amount == m.amount
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wallet {
    pub id: Option<WalletId>,
    pub tenant: Option<TenantId>,
    pub owner: Option<Owner>,
    pub wallet_type: Option<WalletType>,
    pub network: Option<Network>,
    pub address: String,
    pub explorer_url: Option<String>,
    pub status: WalletStatus,
    pub balances: BTreeMap<TokenId, TokenAmount>,
    pub opened_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    /// Number of events applied: the sequence of the last one.
    pub version: usize,
    outcomes: HashMap<IdempotencyKey, MovementOutcome>,
}

impl Wallet {
    pub fn balance(&self, token: &TokenId) -> TokenAmount {
        self.balances.get(token).copied().unwrap_or_default()
    }

    /// The recorded outcome of an idempotency key, if it was used on this wallet.
    pub fn outcome(&self, key: &IdempotencyKey) -> Option<&MovementOutcome> {
        self.outcomes.get(key)
    }

    fn transition(
        &self,
        to: WalletStatus,
        at: DateTime<Utc>,
    ) -> Result<Vec<WalletEvent>, DomainError> {
        use WalletStatus::*;
        let allowed = matches!(
            (self.status, to),
            (Pending, Active)
                | (Suspended, Active)
                | (Active, Suspended)
                | (Pending | Active | Suspended, Closed)
        );
        if self.status == to {
            return Ok(vec![]);
        }
        if !allowed {
            return Err(DomainError::InvalidWalletTransition {
                from: self.status.as_str(),
                to: to.as_str(),
            });
        }
        Ok(vec![match to {
            Active => WalletEvent::WalletActivated { at },
            Suspended => WalletEvent::WalletSuspended { at },
            Closed => WalletEvent::WalletClosed { at },
            Pending => return Ok(vec![]),
        }])
    }

    fn move_tokens(
        &self,
        kind: MovementKind,
        m: TokenMovement,
    ) -> Result<Vec<WalletEvent>, DomainError> {
        if let Some(previous) = self.outcomes.get(&m.idempotency_key) {
            return if previous.same_request(kind, &m) {
                Ok(vec![])
            } else {
                Err(DomainError::IdempotencyKeyReused)
            };
        }
        let current = self.balance(&m.token).value();
        let event = match kind {
            MovementKind::Credit => {
                if self.status == WalletStatus::Closed {
                    return Err(DomainError::WalletNotUsable("closed"));
                }
                let balance = current
                    .checked_add(m.amount.value())
                    .ok_or(DomainError::AmountOverflow)?;
                WalletEvent::TokensCredited {
                    token: m.token,
                    amount: m.amount,
                    balance: TokenAmount(balance),
                    idempotency_key: m.idempotency_key,
                    at: m.at,
                }
            }
            MovementKind::Debit => {
                if matches!(self.status, WalletStatus::Closed | WalletStatus::Suspended) {
                    return Err(DomainError::WalletNotUsable(self.status.as_str()));
                }
                let balance = current.checked_sub(m.amount.value()).ok_or(
                    DomainError::InsufficientBalance {
                        available: current,
                        requested: m.amount.value(),
                    },
                )?;
                WalletEvent::TokensDebited {
                    token: m.token,
                    amount: m.amount,
                    balance: TokenAmount(balance),
                    idempotency_key: m.idempotency_key,
                    at: m.at,
                }
            }
        };
        Ok(vec![event])
    }

    fn decide(&self, command: WalletCommand) -> Result<Vec<WalletEvent>, DomainError> {
        if let WalletCommand::Open(open) = command {
            if self.id.is_some() {
                return Err(DomainError::WalletAlreadyExists);
            }
            let open = *open;
            let address = match open.wallet_type {
                WalletType::Internal if open.network.is_evm_like() => {
                    let factory = open
                        .factory
                        .ok_or_else(|| DomainError::NoWalletFactory(open.network.to_string()))?;
                    counterfactual_address(&open.owner_identifier, &factory)
                }
                WalletType::Internal => wallet_address(&open.owner_identifier, open.network, 0),
                WalletType::External => match open.external_address.as_deref() {
                    Some(raw) => {
                        parse_external_address(open.network, raw).map_err(|e| e.at("address"))?
                    }
                    None => {
                        return Err(DomainError::invalid(
                            "address",
                            "an external wallet needs its address",
                        ))
                    }
                },
            };
            return Ok(vec![WalletEvent::WalletOpened {
                wallet_id: open.wallet_id,
                tenant: open.tenant,
                owner: open.owner,
                wallet_type: open.wallet_type,
                explorer_url: open.network.explorer_url(&address),
                network: open.network,
                address,
                opened_at: open.at,
            }]);
        }
        if self.id.is_none() {
            return Err(DomainError::WalletNotFound);
        }
        match command {
            WalletCommand::Open(_) => Err(DomainError::WalletAlreadyExists),
            WalletCommand::Activate { at } => self.transition(WalletStatus::Active, at),
            WalletCommand::Suspend { at } => self.transition(WalletStatus::Suspended, at),
            WalletCommand::Close { at } => self.transition(WalletStatus::Closed, at),
            WalletCommand::Credit(m) => self.move_tokens(MovementKind::Credit, m),
            WalletCommand::Debit(m) => self.move_tokens(MovementKind::Debit, m),
            WalletCommand::ChangeOwner { owner, at } => Ok(match self.owner.clone() {
                Some(previous) if previous != owner => vec![WalletEvent::WalletOwnerChanged {
                    owner,
                    previous,
                    at,
                }],
                _ => vec![],
            }),
        }
    }

    fn record_movement(
        &mut self,
        kind: MovementKind,
        token: TokenId,
        amount: TokenAmount,
        balance: TokenAmount,
        key: IdempotencyKey,
        at: DateTime<Utc>,
    ) {
        self.balances.insert(token.clone(), balance);
        self.outcomes.insert(
            key,
            MovementOutcome {
                kind,
                token,
                amount,
                balance,
                sequence: self.version,
            },
        );
        self.updated_at = Some(at);
    }
}

decided_aggregate!(Wallet, WalletCommand, WalletEvent);

impl Wallet {
    fn set_status(&mut self, status: WalletStatus, at: DateTime<Utc>) {
        self.status = status;
        self.updated_at = Some(at);
    }

    fn evolve(&mut self, event: WalletEvent) {
        self.version += 1;
        match event {
            WalletEvent::WalletOpened {
                wallet_id,
                tenant,
                owner,
                wallet_type,
                network,
                address,
                explorer_url,
                opened_at,
            } => {
                self.id = Some(wallet_id);
                self.tenant = Some(tenant);
                self.owner = Some(owner);
                self.wallet_type = Some(wallet_type);
                self.network = Some(network);
                self.address = address;
                self.explorer_url = explorer_url;
                self.status = WalletStatus::Pending;
                self.opened_at = Some(opened_at);
                self.updated_at = Some(opened_at);
            }
            WalletEvent::WalletActivated { at } => self.set_status(WalletStatus::Active, at),
            WalletEvent::WalletSuspended { at } => self.set_status(WalletStatus::Suspended, at),
            WalletEvent::WalletClosed { at } => self.set_status(WalletStatus::Closed, at),
            WalletEvent::TokensCredited {
                token,
                amount,
                balance,
                idempotency_key,
                at,
            } => self.record_movement(
                MovementKind::Credit,
                token,
                amount,
                balance,
                idempotency_key,
                at,
            ),
            WalletEvent::TokensDebited {
                token,
                amount,
                balance,
                idempotency_key,
                at,
            } => self.record_movement(
                MovementKind::Debit,
                token,
                amount,
                balance,
                idempotency_key,
                at,
            ),
            WalletEvent::WalletOwnerChanged { owner, at, .. } => {
                self.owner = Some(owner);
                self.updated_at = Some(at);
            }
        }
    }
}
