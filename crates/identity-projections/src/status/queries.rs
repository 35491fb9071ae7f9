//! Reads of the status read model.

use sqlx::any::AnyRow;
use sqlx::Row;

use crate::directory::queries::{decode_cursor, encode_cursor, InvalidCursor};
use crate::queries::{count, json, Result, DEFAULT_LIMIT, MAX_LIMIT};
use crate::Projections;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierView {
    pub tier_id: String,
    pub name: String,
    pub description: Option<String>,
    pub min_balance: String,
    pub discount: String,
    pub image_url: Option<String>,
    pub eligible_tokens: Vec<String>,
    pub retired: bool,
    pub created_at: String,
    pub updated_at: String,
    pub version: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserStatusView {
    pub qualifying: Vec<TierView>,
    pub highest: Option<TierView>,
}

fn tier_from_row(r: &AnyRow) -> Result<TierView> {
    let eligible: String = r.try_get("eligible_tokens")?;
    Ok(TierView {
        tier_id: r.try_get("tier_id")?,
        name: r.try_get("name")?,
        description: r.try_get("description")?,
        min_balance: r.try_get("min_balance")?,
        discount: r.try_get("discount")?,
        image_url: r.try_get("image_url")?,
        eligible_tokens: json("eligible_tokens", &eligible)?,
        retired: r.try_get::<i64, _>("retired")? != 0,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
        version: count(r, "version")?,
    })
}

/// The order of tiers: by minimum balance (a whole number as text: shorter is smaller),
/// then by id.
fn tier_key(t: &TierView) -> (usize, String, String) {
    (
        t.min_balance.len(),
        t.min_balance.clone(),
        t.tier_id.clone(),
    )
}

const TIER_COLUMNS: &str = "tier_id, name, description, min_balance, discount, image_url, eligible_tokens, retired, created_at, updated_at, version";

impl Projections {
    /// The tiers of a tenant, by minimum balance.
    pub async fn tiers(&self, tenant: &str, include_retired: bool) -> Result<Vec<TierView>> {
        let filter = if include_retired {
            ""
        } else {
            " AND retired = 0"
        };
        let rows = sqlx::query(&self.q(&format!(
            "SELECT {TIER_COLUMNS} FROM st_tiers WHERE tenant = $1{filter}"
        )))
        .bind(tenant)
        .fetch_all(self.pool())
        .await?;
        let mut tiers = rows.iter().map(tier_from_row).collect::<Result<Vec<_>>>()?;
        tiers.sort_by_key(tier_key);
        Ok(tiers)
    }

    /// One page of a tenant's tiers, in [`Projections::tiers`]' order: at most `limit` (0:
    /// the default; capped at the maximum) after the tier `page_token` names, and the token
    /// of the next page when there is one.
    pub async fn tiers_page(
        &self,
        tenant: &str,
        include_retired: bool,
        limit: u32,
        page_token: &str,
    ) -> Result<std::result::Result<(Vec<TierView>, Option<String>), InvalidCursor>> {
        let limit = if limit == 0 {
            DEFAULT_LIMIT
        } else {
            limit.min(MAX_LIMIT)
        } as usize;
        let mut tiers = self.tiers(tenant, include_retired).await?;
        if !page_token.is_empty() {
            // The token holds the last tier's sort key: the next page starts after it, even
            // when that tier was retired or removed in between.
            let Some((min_balance, tier_id)) = decode_cursor(page_token) else {
                return Ok(Err(InvalidCursor));
            };
            let after = (min_balance.len(), min_balance, tier_id);
            tiers.retain(|t| tier_key(t) > after);
        }
        let more = tiers.len() > limit;
        tiers.truncate(limit);
        let next = more
            .then(|| {
                tiers
                    .last()
                    .map(|t| encode_cursor(&t.min_balance, &t.tier_id))
            })
            .flatten();
        Ok(Ok((tiers, next)))
    }

    /// The tiers a user qualifies for and the highest one. A user with no balances yet still
    /// qualifies for tiers with a zero minimum.
    pub async fn user_status(&self, tenant: &str, user_id: &str) -> Result<UserStatusView> {
        let row = sqlx::query(&self.q(
            "SELECT qualifying, highest FROM rm_user_status WHERE tenant = $1 AND user_id = $2",
        ))
        .bind(tenant)
        .bind(user_id)
        .fetch_optional(self.pool())
        .await?;
        let tiers = self.tiers(tenant, false).await?;
        let (qualifying, highest): (Vec<String>, Option<String>) = match row {
            Some(r) => {
                let q: String = r.try_get(0)?;
                (serde_json::from_str(&q).unwrap_or_default(), r.try_get(1)?)
            }
            None => {
                let zero: Vec<&TierView> = tiers.iter().filter(|t| t.min_balance == "0").collect();
                (
                    zero.iter().map(|t| t.tier_id.clone()).collect(),
                    zero.last().map(|t| t.tier_id.clone()),
                )
            }
        };
        let find = |id: &str| tiers.iter().find(|t| t.tier_id == id).cloned();
        Ok(UserStatusView {
            qualifying: qualifying.iter().filter_map(|id| find(id)).collect(),
            highest: highest.as_deref().and_then(find),
        })
    }
}
