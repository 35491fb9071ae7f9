//! The StatusTier aggregate ("status type") and the pure rule that says which tiers a user
//! qualifies for.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::DomainError;
use crate::values::{Name, Percentage, TenantId, Text, TierId, TokenAmount, TokenId, Url};
use crate::RecordsRejection;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateTier {
    pub tier_id: TierId,
    pub tenant: TenantId,
    pub name: Name,
    pub description: Option<Text>,
    pub min_balance: TokenAmount,
    pub discount: Percentage,
    pub image_url: Option<Url>,
    pub eligible_tokens: BTreeSet<TokenId>,
    pub at: DateTime<Utc>,
}

/// A partial update: `None` leaves a field as it is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UpdateTier {
    pub name: Option<Name>,
    pub description: Option<Text>,
    pub min_balance: Option<TokenAmount>,
    pub discount: Option<Percentage>,
    pub image_url: Option<Url>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatusTierCommand {
    Create(Box<CreateTier>),
    Update(Box<UpdateTier>, DateTime<Utc>),
    Retire { at: DateTime<Utc> },
    AddEligibleToken { token: TokenId, at: DateTime<Utc> },
    RemoveEligibleToken { token: TokenId, at: DateTime<Utc> },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StatusTierEvent {
    StatusTierCreated {
        tier_id: TierId,
        tenant: TenantId,
        name: Name,
        description: Option<Text>,
        min_balance: TokenAmount,
        discount: Percentage,
        image_url: Option<Url>,
        eligible_tokens: BTreeSet<TokenId>,
        created_at: DateTime<Utc>,
    },
    /// Only the fields that changed are present.
    StatusTierUpdated {
        name: Option<Name>,
        description: Option<Text>,
        min_balance: Option<TokenAmount>,
        discount: Option<Percentage>,
        image_url: Option<Url>,
        updated_at: DateTime<Utc>,
    },
    StatusTierRetired {
        at: DateTime<Utc>,
    },
    EligibleTokenAdded {
        token: TokenId,
        at: DateTime<Utc>,
    },
    EligibleTokenRemoved {
        token: TokenId,
        at: DateTime<Utc>,
    },
}

domain_event!(
    StatusTierEvent,
    "1.0",
    [
        StatusTierCreated,
        StatusTierUpdated,
        StatusTierRetired,
        EligibleTokenAdded,
        EligibleTokenRemoved,
    ]
);

impl RecordsRejection for StatusTierEvent {}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusTier {
    pub id: Option<TierId>,
    pub tenant: Option<TenantId>,
    pub name: Option<Name>,
    pub description: Option<Text>,
    pub min_balance: TokenAmount,
    pub discount: Percentage,
    pub image_url: Option<Url>,
    pub eligible_tokens: BTreeSet<TokenId>,
    pub retired: bool,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
}

impl StatusTier {
    /// The tier as a qualification rule; `None` when it does not exist or is retired.
    pub fn rule(&self) -> Option<TierRule> {
        match (self.id, self.retired) {
            (Some(id), false) => Some(TierRule {
                id,
                min_balance: self.min_balance,
                discount: self.discount,
                eligible_tokens: self.eligible_tokens.clone(),
            }),
            _ => None,
        }
    }

    fn ensure_live(&self) -> Result<(), DomainError> {
        match (self.id, self.retired) {
            (None, _) => Err(DomainError::TierNotFound),
            (Some(_), true) => Err(DomainError::TierRetired),
            (Some(_), false) => Ok(()),
        }
    }

    fn decide(&self, command: StatusTierCommand) -> Result<Vec<StatusTierEvent>, DomainError> {
        use StatusTierEvent as E;
        if let StatusTierCommand::Create(c) = command {
            if self.id.is_some() {
                return Err(DomainError::TierAlreadyExists);
            }
            let c = *c;
            return Ok(vec![E::StatusTierCreated {
                tier_id: c.tier_id,
                tenant: c.tenant,
                name: c.name,
                description: c.description,
                min_balance: c.min_balance,
                discount: c.discount,
                image_url: c.image_url,
                eligible_tokens: c.eligible_tokens,
                created_at: c.at,
            }]);
        }
        self.ensure_live()?;
        Ok(match command {
            StatusTierCommand::Create(_) => return Err(DomainError::TierAlreadyExists),
            StatusTierCommand::Update(u, at) => {
                let u = *u;
                let name = u.name.filter(|n| self.name.as_ref() != Some(n));
                let description = u
                    .description
                    .filter(|d| self.description.as_ref() != Some(d));
                let min_balance = u.min_balance.filter(|m| *m != self.min_balance);
                let discount = u.discount.filter(|d| self.discount != *d);
                let image_url = u.image_url.filter(|i| self.image_url.as_ref() != Some(i));
                if name.is_none()
                    && description.is_none()
                    && min_balance.is_none()
                    && discount.is_none()
                    && image_url.is_none()
                {
                    vec![]
                } else {
                    vec![E::StatusTierUpdated {
                        name,
                        description,
                        min_balance,
                        discount,
                        image_url,
                        updated_at: at,
                    }]
                }
            }
            StatusTierCommand::Retire { at } => vec![E::StatusTierRetired { at }],
            StatusTierCommand::AddEligibleToken { token, at } => {
                if self.eligible_tokens.contains(&token) {
                    vec![]
                } else {
                    vec![E::EligibleTokenAdded { token, at }]
                }
            }
            StatusTierCommand::RemoveEligibleToken { token, at } => {
                if self.eligible_tokens.contains(&token) {
                    vec![E::EligibleTokenRemoved { token, at }]
                } else {
                    vec![]
                }
            }
        })
    }
}

decided_aggregate!(StatusTier, StatusTierCommand, StatusTierEvent);

impl StatusTier {
    fn evolve(&mut self, event: StatusTierEvent) {
        use StatusTierEvent as E;
        match event {
            E::StatusTierCreated {
                tier_id,
                tenant,
                name,
                description,
                min_balance,
                discount,
                image_url,
                eligible_tokens,
                created_at,
            } => {
                *self = StatusTier {
                    id: Some(tier_id),
                    tenant: Some(tenant),
                    name: Some(name),
                    description,
                    min_balance,
                    discount,
                    image_url,
                    eligible_tokens,
                    retired: false,
                    created_at: Some(created_at),
                    updated_at: Some(created_at),
                }
            }
            E::StatusTierUpdated {
                name,
                description,
                min_balance,
                discount,
                image_url,
                updated_at,
            } => {
                if name.is_some() {
                    self.name = name;
                }
                if description.is_some() {
                    self.description = description;
                }
                if let Some(m) = min_balance {
                    self.min_balance = m;
                }
                if let Some(d) = discount {
                    self.discount = d;
                }
                if image_url.is_some() {
                    self.image_url = image_url;
                }
                self.updated_at = Some(updated_at);
            }
            E::StatusTierRetired { at } => {
                self.retired = true;
                self.updated_at = Some(at);
            }
            E::EligibleTokenAdded { token, at } => {
                self.eligible_tokens.insert(token);
                self.updated_at = Some(at);
            }
            E::EligibleTokenRemoved { token, at } => {
                self.eligible_tokens.remove(&token);
                self.updated_at = Some(at);
            }
        }
    }
}

/// What qualification needs to know of a tier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierRule {
    pub id: TierId,
    pub min_balance: TokenAmount,
    pub discount: Percentage,
    pub eligible_tokens: BTreeSet<TokenId>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Qualification {
    /// Every tier whose minimum the user's eligible balance meets, lowest minimum first.
    pub qualifying: Vec<TierId>,
    /// The qualifying tier with the highest minimum (ties: higher discount, then id).
    pub highest: Option<TierId>,
}

/// The tiers a user qualifies for: a tier counts when the sum of the user's balances of that
/// tier's eligible tokens is at least its minimum.
pub fn qualify(balances: &BTreeMap<TokenId, TokenAmount>, tiers: &[TierRule]) -> Qualification {
    let mut met: Vec<&TierRule> = tiers
        .iter()
        .filter(|t| {
            let eligible = t
                .eligible_tokens
                .iter()
                .filter_map(|tok| balances.get(tok))
                .fold(0u128, |acc, a| acc.saturating_add(a.value()));
            eligible >= t.min_balance.value()
        })
        .collect();
    met.sort_by_key(|t| (t.min_balance, t.discount, t.id));
    Qualification {
        highest: met.last().map(|t| t.id),
        qualifying: met.into_iter().map(|t| t.id).collect(),
    }
}
