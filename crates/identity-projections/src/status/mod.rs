//! The status read model: the tiers each user qualifies for and the highest one.

pub(crate) mod queries;

use std::collections::{BTreeMap, BTreeSet};

use identity_domain::status_tier::{qualify, StatusTierEvent, TierRule};
use identity_domain::values::{Percentage, TierId, TokenAmount, TokenId};
use identity_domain::wallet::{OwnerType, WalletEvent};
use identity_store::StoredEvent;
use sqlx::{AnyConnection, Row};

use crate::apply::{
    chrono_secs, decode, for_keys, key_marks, many, tenant_and_id, values_list, Result, Sql,
    ROWS_PER_STATEMENT,
};
use crate::read_model::{Fold, ReadModel, Target, Writing};
use crate::schema::Table;
use crate::ProjectionError;

/// What a run of wallet events leaves of the status read model: new user wallets, each
/// touched balance once with its last value, then one recomputation per affected user.
#[derive(Debug, Default)]
pub(crate) struct StatusFold {
    opened: Vec<(String, String, String)>,
    amounts: BTreeMap<(String, String, String), String>,
}

impl StatusFold {
    pub(crate) fn add(&mut self, e: &StoredEvent) -> Result<()> {
        if !matches!(
            e.event_type.as_str(),
            "WalletOpened" | "TokensCredited" | "TokensDebited"
        ) {
            return Ok(());
        }
        let (tenant, wallet) = tenant_and_id(e)?;
        match decode::<WalletEvent>(e)? {
            WalletEvent::WalletOpened { owner, .. } if owner.owner_type == OwnerType::User => {
                self.opened.push((tenant, wallet, owner.owner_id));
            }
            WalletEvent::TokensCredited { token, balance, .. }
            | WalletEvent::TokensDebited { token, balance, .. } => {
                self.amounts.insert(
                    (tenant, wallet, token.as_str().to_string()),
                    balance.to_string(),
                );
            }
            _ => {}
        }
        Ok(())
    }

    pub(crate) async fn write(&mut self, conn: &mut AnyConnection, sql: &Sql<'_>) -> Result<()> {
        let opened = std::mem::take(&mut self.opened);
        let amounts = std::mem::take(&mut self.amounts);
        for chunk in opened.chunks(ROWS_PER_STATEMENT) {
            let text = sql.text(&format!(
                "INSERT INTO {{st_wallets}} (tenant, wallet_id, user_id) VALUES {}",
                values_list(chunk.len(), 3, &[])
            ));
            let mut q = many(&text);
            for (tenant, wallet, user) in chunk {
                q = q.bind(tenant).bind(wallet).bind(user);
            }
            q.execute(&mut *conn).await?;
        }
        if amounts.is_empty() {
            return Ok(());
        }
        // The owners of the touched wallets (wallets of businesses and tenants have no status).
        let mut wallets: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for (tenant, wallet, _) in amounts.keys() {
            wallets.entry(tenant).or_default().insert(wallet);
        }
        let mut owners: BTreeMap<(String, String), String> = BTreeMap::new();
        for (tenant, ids) in &wallets {
            let ids: Vec<&str> = ids.iter().copied().collect();
            for chunk in ids.chunks(ROWS_PER_STATEMENT) {
                let text = sql.text(&format!(
                    "SELECT wallet_id, user_id FROM {{st_wallets}} WHERE tenant = $1 AND wallet_id IN ({})",
                    key_marks(chunk.len())
                ));
                let keys = chunk.iter().copied();
                for row in for_keys(&text, tenant, keys).fetch_all(&mut *conn).await? {
                    owners.insert(((*tenant).to_string(), row.try_get(0)?), row.try_get(1)?);
                }
            }
        }
        let mut rows = Vec::new();
        let mut affected: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for ((tenant, wallet, token), amount) in amounts {
            if let Some(user) = owners.get(&(tenant.clone(), wallet.clone())) {
                affected
                    .entry(tenant.clone())
                    .or_default()
                    .insert(user.clone());
                rows.push((tenant, user.clone(), wallet, token, amount));
            }
        }
        for chunk in rows.chunks(ROWS_PER_STATEMENT) {
            let text = sql.text(&format!(
                "INSERT INTO {{st_balances}} (tenant, user_id, wallet_id, token, amount) VALUES {}
                 ON CONFLICT (tenant, wallet_id, token) DO UPDATE SET amount = excluded.amount",
                values_list(chunk.len(), 5, &[])
            ));
            let mut q = many(&text);
            for (tenant, user, wallet, token, amount) in chunk {
                q = q
                    .bind(tenant)
                    .bind(user)
                    .bind(wallet)
                    .bind(token)
                    .bind(amount);
            }
            q.execute(&mut *conn).await?;
        }
        for (tenant, users) in affected {
            let users: Vec<String> = users.into_iter().collect();
            recompute(conn, sql, &tenant, &users).await?;
        }
        Ok(())
    }
}

fn parse_amount(s: &str, position: u64) -> Result<TokenAmount> {
    TokenAmount::parse(s).map_err(|e| ProjectionError::Event {
        position,
        message: format!("bad stored amount {s:?}: {e}"),
    })
}

/// The live tiers of a tenant as qualification rules.
async fn tier_rules(
    conn: &mut AnyConnection,
    sql: &Sql<'_>,
    tenant: &str,
) -> Result<Vec<TierRule>> {
    let rows = sqlx::query(&sql.text(
        "SELECT tier_id, min_balance, discount, eligible_tokens FROM {st_tiers} WHERE tenant = $1 AND retired = 0",
    ))
    .bind(tenant)
    .fetch_all(&mut *conn)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let id: String = r.try_get(0)?;
        let min: String = r.try_get(1)?;
        let discount: String = r.try_get(2)?;
        let eligible: String = r.try_get(3)?;
        let bad = |m: String| ProjectionError::Event {
            position: 0,
            message: m,
        };
        out.push(TierRule {
            id: TierId::parse(&id).map_err(|e| bad(e.to_string()))?,
            min_balance: parse_amount(&min, 0)?,
            discount: Percentage::parse(&discount).map_err(|e| bad(e.to_string()))?,
            eligible_tokens: serde_json::from_str(&eligible).map_err(|e| bad(e.to_string()))?,
        });
    }
    Ok(out)
}

/// Recomputes the status of some users of a tenant from their balances and the live tiers.
pub(crate) async fn recompute(
    conn: &mut AnyConnection,
    sql: &Sql<'_>,
    tenant: &str,
    users: &[String],
) -> Result<()> {
    if users.is_empty() {
        return Ok(());
    }
    let rules = tier_rules(conn, sql, tenant).await?;
    for chunk in users.chunks(200) {
        let q = sql.text(&format!(
            "SELECT user_id, token, amount FROM {{st_balances}} WHERE tenant = $1 AND user_id IN ({})",
            key_marks(chunk.len())
        ));
        let keys = chunk.iter().map(String::as_str);
        let rows = for_keys(&q, tenant, keys).fetch_all(&mut *conn).await?;
        let mut per_user: BTreeMap<String, BTreeMap<TokenId, TokenAmount>> =
            chunk.iter().map(|u| (u.clone(), BTreeMap::new())).collect();
        for r in rows {
            let user: String = r.try_get(0)?;
            let token: String = r.try_get(1)?;
            let amount: String = r.try_get(2)?;
            let token = TokenId::parse(&token).map_err(|e| ProjectionError::Event {
                position: 0,
                message: e.to_string(),
            })?;
            let amount = parse_amount(&amount, 0)?;
            let entry = per_user.entry(user).or_default().entry(token).or_default();
            *entry = TokenAmount(entry.value().saturating_add(amount.value()));
        }
        let statuses: Vec<(String, String, Option<String>)> = per_user
            .into_iter()
            .map(|(user, balances)| {
                let q = qualify(&balances, &rules);
                let qualifying: Vec<String> =
                    q.qualifying.iter().map(ToString::to_string).collect();
                (
                    user,
                    serde_json::to_string(&qualifying).unwrap_or_else(|_| "[]".into()),
                    q.highest.map(|h| h.to_string()),
                )
            })
            .collect();
        let text = sql.text(&format!(
            "INSERT INTO {{rm_user_status}} (tenant, user_id, qualifying, highest) VALUES {}
             ON CONFLICT (tenant, user_id) DO UPDATE SET qualifying = excluded.qualifying, highest = excluded.highest",
            values_list(statuses.len(), 4, &[])
        ));
        let mut query = many(&text);
        for (user, qualifying, highest) in &statuses {
            query = query
                .bind(tenant)
                .bind(user)
                .bind(qualifying)
                .bind(highest.as_deref());
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

/// Users whose status a change of these tokens or this tier can move: holders of any of the
/// tokens, and users who currently qualify for the tier. Found through indexes, never by
/// reading every user.
async fn affected_users(
    conn: &mut AnyConnection,
    sql: &Sql<'_>,
    tenant: &str,
    tier: &str,
    tokens: &BTreeSet<String>,
) -> Result<Vec<String>> {
    let mut users = BTreeSet::new();
    for token in tokens {
        let rows: Vec<String> =
            sqlx::query_scalar(&sql.text(
                "SELECT DISTINCT user_id FROM {st_balances} WHERE tenant = $1 AND token = $2",
            ))
            .bind(tenant)
            .bind(token)
            .fetch_all(&mut *conn)
            .await?;
        users.extend(rows);
    }
    let holders: Vec<String> = sqlx::query_scalar(
        &sql.text("SELECT user_id FROM {rm_user_status} WHERE tenant = $1 AND qualifying LIKE $2"),
    )
    .bind(tenant)
    .bind(format!("%{tier}%"))
    .fetch_all(&mut *conn)
    .await?;
    users.extend(holders);
    Ok(users.into_iter().collect())
}

pub(crate) async fn status_tier(
    conn: &mut AnyConnection,
    sql: &Sql<'_>,
    e: &StoredEvent,
) -> Result<()> {
    let (tenant, tier) = tenant_and_id(e)?;
    let event: StatusTierEvent = decode(e)?;
    let version = e.sequence as i64;
    let old_tokens: BTreeSet<String> = sqlx::query_scalar::<_, String>(
        &sql.text("SELECT eligible_tokens FROM {st_tiers} WHERE tenant = $1 AND tier_id = $2"),
    )
    .bind(&tenant)
    .bind(&tier)
    .fetch_optional(&mut *conn)
    .await?
    .and_then(|s| serde_json::from_str(&s).ok())
    .unwrap_or_default();
    let mut new_tokens = old_tokens.clone();
    match event {
        StatusTierEvent::StatusTierCreated {
            name,
            description,
            min_balance,
            discount,
            image_url,
            eligible_tokens,
            created_at,
            ..
        } => {
            new_tokens = eligible_tokens.iter().map(|t| t.to_string()).collect();
            let when = created_at.to_rfc3339_opts(chrono_secs(), true);
            sqlx::query(&sql.text(
                "INSERT INTO {st_tiers} (tenant, tier_id, name, description, min_balance, discount, image_url,
                    eligible_tokens, retired, created_at, updated_at, version)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, $9, $9, $10)",
            ))
            .bind(&tenant)
            .bind(&tier)
            .bind(name.as_str())
            .bind(description.map(|d| d.as_str().to_string()))
            .bind(min_balance.to_string())
            .bind(discount.to_string())
            .bind(image_url.map(|u| u.as_str().to_string()))
            .bind(serde_json::to_string(&new_tokens).unwrap_or_else(|_| "[]".into()))
            .bind(when)
            .bind(version)
            .execute(&mut *conn)
            .await?;
        }
        StatusTierEvent::StatusTierUpdated {
            name,
            description,
            min_balance,
            discount,
            image_url,
            updated_at,
        } => {
            sqlx::query(&sql.text(
                "UPDATE {st_tiers} SET name = COALESCE($1, name), description = COALESCE($2, description),
                    min_balance = COALESCE($3, min_balance), discount = COALESCE($4, discount),
                    image_url = COALESCE($5, image_url), updated_at = $6, version = $7
                 WHERE tenant = $8 AND tier_id = $9",
            ))
            .bind(name.map(|n| n.as_str().to_string()))
            .bind(description.map(|d| d.as_str().to_string()))
            .bind(min_balance.map(|m| m.to_string()))
            .bind(discount.map(|d| d.to_string()))
            .bind(image_url.map(|u| u.as_str().to_string()))
            .bind(updated_at.to_rfc3339_opts(chrono_secs(), true))
            .bind(version)
            .bind(&tenant)
            .bind(&tier)
            .execute(&mut *conn)
            .await?;
        }
        StatusTierEvent::StatusTierRetired { at } => {
            sqlx::query(&sql.text(
                "UPDATE {st_tiers} SET retired = 1, updated_at = $1, version = $2 WHERE tenant = $3 AND tier_id = $4",
            ))
            .bind(at.to_rfc3339_opts(chrono_secs(), true))
            .bind(version)
            .bind(&tenant)
            .bind(&tier)
            .execute(&mut *conn)
            .await?;
        }
        StatusTierEvent::EligibleTokenAdded { token, at }
        | StatusTierEvent::EligibleTokenRemoved { token, at } => {
            if e.event_type == "EligibleTokenAdded" {
                new_tokens.insert(token.to_string());
            } else {
                new_tokens.remove(token.as_str());
            }
            sqlx::query(&sql.text(
                "UPDATE {st_tiers} SET eligible_tokens = $1, updated_at = $2, version = $3 WHERE tenant = $4 AND tier_id = $5",
            ))
            .bind(serde_json::to_string(&new_tokens).unwrap_or_else(|_| "[]".into()))
            .bind(at.to_rfc3339_opts(chrono_secs(), true))
            .bind(version)
            .bind(&tenant)
            .bind(&tier)
            .execute(&mut *conn)
            .await?;
        }
    }
    let tokens: BTreeSet<String> = old_tokens.union(&new_tokens).cloned().collect();
    let users = affected_users(conn, sql, &tenant, &tier, &tokens).await?;
    recompute(conn, sql, &tenant, &users).await
}

/// A wallet given to another user (a merge): its balances count for the new owner's status,
/// and no longer for the old one's. (Wallets of businesses and tenants have no status.)
async fn wallet_owner_changed(
    conn: &mut AnyConnection,
    sql: &Sql<'_>,
    e: &StoredEvent,
) -> Result<()> {
    let (tenant, wallet) = tenant_and_id(e)?;
    let WalletEvent::WalletOwnerChanged {
        owner, previous, ..
    } = decode(e)?
    else {
        return Ok(());
    };

    match owner.user_id().map(str::to_string) {
        Some(new) => {
            sqlx::query(&sql.text(
                "INSERT INTO {st_wallets} (tenant, wallet_id, user_id) VALUES ($1, $2, $3)
                 ON CONFLICT (tenant, wallet_id) DO UPDATE SET user_id = excluded.user_id",
            ))
            .bind(&tenant)
            .bind(&wallet)
            .bind(&new)
            .execute(&mut *conn)
            .await?;
            sqlx::query(&sql.text(
                "UPDATE {st_balances} SET user_id = $3 WHERE tenant = $1 AND wallet_id = $2",
            ))
            .bind(&tenant)
            .bind(&wallet)
            .bind(&new)
            .execute(&mut *conn)
            .await?;
        }
        None => {
            for table in ["st_wallets", "st_balances"] {
                sqlx::query(&sql.text(&format!(
                    "DELETE FROM {{{table}}} WHERE tenant = $1 AND wallet_id = $2"
                )))
                .bind(&tenant)
                .bind(&wallet)
                .execute(&mut *conn)
                .await?;
            }
        }
    }
    let users: Vec<String> = [owner.user_id(), previous.user_id()]
        .into_iter()
        .flatten()
        .map(str::to_string)
        .collect();
    recompute(conn, sql, &tenant, &users).await
}

const ST_WALLETS: Table = Table::new(
    "st_wallets",
    "tenant, wallet_id",
    "CREATE TABLE IF NOT EXISTS {t} (
        tenant TEXT NOT NULL, wallet_id TEXT NOT NULL, user_id TEXT NOT NULL,
        PRIMARY KEY (tenant, wallet_id))",
);

const ST_BALANCES: Table = Table {
    indexes: &[
        "CREATE INDEX IF NOT EXISTS {t}_token ON {t} (tenant, token)",
        "CREATE INDEX IF NOT EXISTS {t}_user ON {t} (tenant, user_id)",
    ],
    ..Table::new(
        "st_balances",
        "tenant, wallet_id, token",
        "CREATE TABLE IF NOT EXISTS {t} (
            tenant TEXT NOT NULL, user_id TEXT NOT NULL, wallet_id TEXT NOT NULL, token TEXT NOT NULL,
            amount TEXT NOT NULL, PRIMARY KEY (tenant, wallet_id, token))",
    )
};

const ST_TIERS: Table = Table::new(
    "st_tiers",
    "tenant, tier_id",
    "CREATE TABLE IF NOT EXISTS {t} (
        tenant TEXT NOT NULL, tier_id TEXT NOT NULL, name TEXT NOT NULL, description TEXT,
        min_balance TEXT NOT NULL, discount TEXT NOT NULL, image_url TEXT,
        eligible_tokens TEXT NOT NULL, retired BIGINT NOT NULL, created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL, version BIGINT NOT NULL, PRIMARY KEY (tenant, tier_id))",
);

const RM_USER_STATUS: Table = Table::new(
    "rm_user_status",
    "tenant, user_id",
    "CREATE TABLE IF NOT EXISTS {t} (
        tenant TEXT NOT NULL, user_id TEXT NOT NULL, qualifying TEXT NOT NULL, highest TEXT,
        PRIMARY KEY (tenant, user_id))",
);

/// The status read model.
pub(crate) const MODEL: ReadModel = ReadModel {
    name: "status",
    tables: &[ST_WALLETS, ST_BALANCES, ST_TIERS, RM_USER_STATUS],
    fold: || Box::<StatusFold>::default(),
};

impl Fold for StatusFold {
    fn fold_event(&mut self, e: &StoredEvent) -> Result<bool> {
        match e.aggregate_type.as_str() {
            // A wallet that changes owner moves its balances between two users' statuses.
            "Wallet" if e.event_type == "WalletOwnerChanged" => Ok(false),
            "Wallet" => self.add(e).map(|()| true),
            // A tier change recomputes statuses from the rows before it.
            "StatusTier" => Ok(false),
            _ => Ok(true),
        }
    }

    fn pending(&self) -> usize {
        self.opened.len() + self.amounts.len()
    }

    fn write_rows<'a>(&'a mut self, to: Target<'a>) -> Writing<'a> {
        Box::pin(self.write(to.conn, to.sql))
    }

    fn apply_alone<'a>(&'a mut self, to: Target<'a>, e: &'a StoredEvent) -> Writing<'a> {
        let Target { conn, sql, .. } = to;
        Box::pin(async move {
            if e.aggregate_type == "StatusTier" {
                status_tier(conn, sql, e).await?;
            } else if e.event_type == "WalletOwnerChanged" {
                wallet_owner_changed(conn, sql, e).await?;
            }
            Ok(())
        })
    }
}
