//! How each projection folds one event into its tables. Events carry their results (the
//! resulting balance, the whole role set), so these are writes, not arithmetic; the only rule
//! applied here is the domain's own `qualify`.

use std::collections::{BTreeMap, BTreeSet};

use identity_domain::identification::IdentificationEvent;
use identity_domain::status_tier::{qualify, StatusTierEvent, TierRule};
use identity_domain::user::UserEvent;
use identity_domain::values::{Percentage, TierId, TokenAmount, TokenId};
use identity_domain::wallet::{OwnerType, WalletEvent};
use identity_store::StoredEvent;
use sqlx::{AnyConnection, Row};

use crate::{Dialect, Projection, ProjectionError};

type Result<T> = std::result::Result<T, ProjectionError>;

/// One statement in the right dialect, with its arguments.
pub(crate) struct Sql<'a> {
    dialect: Dialect,
    suffix: &'a str,
}

impl<'a> Sql<'a> {
    pub(crate) fn new(dialect: Dialect, suffix: &'a str) -> Self {
        Self { dialect, suffix }
    }

    /// Replaces `{table}` markers with suffixed names and `$N` with the dialect's placeholders.
    pub(crate) fn text(&self, sql: &str) -> String {
        let mut s = sql.to_string();
        for name in [
            "rm_wallets",
            "rm_balances",
            "st_wallets",
            "st_balances",
            "st_tiers",
            "rm_user_status",
            "rm_users",
            "rm_user_wallets",
            "rm_person_codes",
        ] {
            s = s.replace(&format!("{{{name}}}"), &format!("{name}{}", self.suffix));
        }
        self.dialect.placeholders(&s)
    }
}

fn tenant_and_id(e: &StoredEvent) -> Result<(String, String)> {
    e.aggregate_id
        .split_once('/')
        .map(|(t, i)| (t.to_string(), i.to_string()))
        .ok_or_else(|| ProjectionError::Event {
            position: e.position,
            message: format!("aggregate id {:?} has no tenant", e.aggregate_id),
        })
}

fn decode<T: serde::de::DeserializeOwned>(e: &StoredEvent) -> Result<T> {
    T::deserialize(&e.payload).map_err(|err| ProjectionError::Event {
        position: e.position,
        message: format!("cannot read {} {}: {err}", e.event_type, e.event_version),
    })
}

/// Folds a span of one projection's events, in feed order, and writes what they leave in a
/// few multi-row statements. Events carry their results (the resulting balance, the whole
/// role set), so for most of them the last one wins, and a span of any length compresses to
/// one row per wallet, balance or user: this is what makes a replay fast
/// (docs/adr/0002-read-models.md). Events that depend on the rows before them (tier changes
/// recompute statuses; user updates change existing rows) are applied alone, in order, once
/// the rows pending before them are written.
#[derive(Debug)]
pub(crate) struct Folder {
    p: Projection,
    balances: BalanceFold,
    status: StatusFold,
    directory: DirectoryFold,
    /// What the written balance rows were, when asked for ([`Folder::tracking`]).
    touched: Option<Touched>,
}

/// The balance rows a span of events changed: the cached answers it makes stale. Keyed by
/// tenant so that a cached answer is checked with borrowed lookups, no allocation.
#[derive(Debug, Default)]
pub(crate) struct Touched {
    /// Per tenant, the wallet ids whose row or balances changed.
    wallets: BTreeMap<String, BTreeSet<String>>,
    /// Per tenant, the owners (type, id) with a new wallet.
    owners: BTreeMap<String, BTreeSet<(String, String)>>,
}

impl Touched {
    pub(crate) fn is_empty(&self) -> bool {
        self.wallets.is_empty() && self.owners.is_empty()
    }

    pub(crate) fn wallet(&self, tenant: &str, wallet_id: &str) -> bool {
        self.wallets
            .get(tenant)
            .is_some_and(|ids| ids.contains(wallet_id))
    }

    pub(crate) fn owner(&self, tenant: &str, owner_type: &str, owner_id: &str) -> bool {
        self.owners.get(tenant).is_some_and(|owners| {
            owners
                .iter()
                .any(|(t, id)| t == owner_type && id == owner_id)
        })
    }
}

impl Folder {
    pub(crate) fn new(p: Projection) -> Self {
        Self {
            p,
            balances: BalanceFold::default(),
            status: StatusFold::default(),
            directory: DirectoryFold::default(),
            touched: None,
        }
    }

    /// A folder that also records which balance rows it wrote ([`Folder::touched`]).
    pub(crate) fn tracking(p: Projection) -> Self {
        Self {
            touched: Some(Touched::default()),
            ..Self::new(p)
        }
    }

    /// The balance rows written so far, if tracked.
    pub(crate) fn touched(self) -> Option<Touched> {
        self.touched
    }

    /// Folds `e` into the pending rows; `false` (and nothing folded) when it must be applied
    /// alone with [`Folder::apply_alone`].
    pub(crate) fn fold(&mut self, e: &StoredEvent) -> Result<bool> {
        match self.p {
            Projection::Balances => self.balances.add(e).map(|()| true),
            Projection::Status => match e.aggregate_type.as_str() {
                "Wallet" => self.status.add(e).map(|()| true),
                "StatusTier" => Ok(false),
                _ => Ok(true),
            },
            Projection::Directory => self.directory.add(e),
        }
    }

    /// Rows waiting to be written.
    pub(crate) fn pending(&self) -> usize {
        self.balances.rows() + self.status.rows() + self.directory.rows()
    }

    /// Writes the pending rows, then applies `e` (one [`Folder::fold`] refused) alone.
    pub(crate) async fn apply_alone(
        &mut self,
        conn: &mut AnyConnection,
        sql: &Sql<'_>,
        e: &StoredEvent,
    ) -> Result<()> {
        self.write(conn, sql).await?;
        match (self.p, e.aggregate_type.as_str()) {
            (Projection::Status, "StatusTier") => status_tier(conn, sql, e).await,
            (Projection::Directory, "User") => {
                directory_user(conn, sql, e, &mut self.directory.refresh).await
            }
            _ => Ok(()),
        }
    }

    async fn write(&mut self, conn: &mut AnyConnection, sql: &Sql<'_>) -> Result<()> {
        self.balances
            .write(conn, sql, self.touched.as_mut())
            .await?;
        self.status.write(conn, sql).await?;
        self.directory.write(conn, sql).await
    }

    /// Writes everything pending, the directory's search texts last.
    pub(crate) async fn finish(&mut self, conn: &mut AnyConnection, sql: &Sql<'_>) -> Result<()> {
        self.write(conn, sql).await?;
        self.directory.refresh_search(conn, sql).await
    }
}

/// Applies a batch of events, in feed order, to projection `p`'s tables; returns the
/// balance rows it changed.
pub(crate) async fn apply_batch(
    p: Projection,
    conn: &mut AnyConnection,
    sql: &Sql<'_>,
    events: &[StoredEvent],
) -> Result<Touched> {
    let mut folder = Folder::tracking(p);
    for e in events {
        if !folder.fold(e)? {
            folder.apply_alone(conn, sql, e).await?;
        }
    }
    folder.finish(conn, sql).await?;
    Ok(folder.touched().unwrap_or_default())
}

fn owner_type_str(t: OwnerType) -> &'static str {
    match t {
        OwnerType::User => "user",
        OwnerType::Business => "business",
        OwnerType::Tenant => "tenant",
    }
}

/// A wallet row to insert: the wallet was opened within the batch.
#[derive(Debug)]
struct OpenedWallet {
    owner_type: &'static str,
    owner_id: String,
    wallet_type: &'static str,
    network: String,
    address: String,
    explorer_url: Option<String>,
    created_at: String,
}

/// What a batch of events leaves of one wallet's row.
#[derive(Debug, Default)]
struct WalletChange {
    opened: Option<OpenedWallet>,
    status: Option<&'static str>,
    updated_at: String,
    version: i64,
}

/// A statement whose text depends on how many rows it carries: planned with its values
/// each time, and not kept in the connection's statement cache. A cached generic plan made
/// while a fresh replay table was empty would scan that table whole once it had grown (seen:
/// a directory replay slowing to 900 events/s at 30k users).
fn many(text: &str) -> sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments<'_>> {
    sqlx::query(text).persistent(false)
}

/// Rows per multi-row statement (4–12 arguments each, far below both databases' limits).
const ROWS_PER_STATEMENT: usize = 200;

/// "($1, $2, …), ($n+1, …)" for `rows` rows of `width` arguments; `casts[i]` wraps column i.
fn values_list(rows: usize, width: usize, casts: &[Option<&str>]) -> String {
    let mut out = String::new();
    for r in 0..rows {
        out.push_str(if r == 0 { "(" } else { ", (" });
        for c in 0..width {
            if c > 0 {
                out.push_str(", ");
            }
            let n = r * width + c + 1;
            match casts.get(c).copied().flatten() {
                Some(ty) => out.push_str(&format!("CAST(${n} AS {ty})")),
                None => out.push_str(&format!("${n}")),
            }
        }
        out.push(')');
    }
    out
}

/// What a span of wallet events leaves of the balances read model: each wallet row and each
/// balance once, with its last value (events carry their resulting balance); a wallet's
/// `updated_at` and `version` are those of its last event.
#[derive(Debug, Default)]
struct BalanceFold {
    wallets: BTreeMap<(String, String), WalletChange>,
    amounts: BTreeMap<(String, String, String), String>,
}

impl BalanceFold {
    fn rows(&self) -> usize {
        self.wallets.len() + self.amounts.len()
    }

    fn add(&mut self, e: &StoredEvent) -> Result<()> {
        if e.aggregate_type != "Wallet" {
            return Ok(());
        }
        let fmt = |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono_secs(), true);
        let (tenant, wallet) = tenant_and_id(e)?;
        let event: WalletEvent = decode(e)?;
        let change = self
            .wallets
            .entry((tenant.clone(), wallet.clone()))
            .or_default();
        change.version = i64::try_from(e.sequence).unwrap_or(i64::MAX);
        let when = match event {
            WalletEvent::WalletOpened {
                owner,
                wallet_type,
                network,
                address,
                explorer_url,
                opened_at,
                ..
            } => {
                change.opened = Some(OpenedWallet {
                    owner_type: owner_type_str(owner.owner_type),
                    owner_id: owner.owner_id,
                    wallet_type: match wallet_type {
                        identity_domain::wallet::WalletType::Internal => "internal",
                        identity_domain::wallet::WalletType::External => "external",
                    },
                    network: network.to_string(),
                    address,
                    explorer_url,
                    created_at: fmt(opened_at),
                });
                change.status = Some("pending");
                opened_at
            }
            WalletEvent::WalletActivated { at } => {
                change.status = Some("active");
                at
            }
            WalletEvent::WalletSuspended { at } => {
                change.status = Some("suspended");
                at
            }
            WalletEvent::WalletClosed { at } => {
                change.status = Some("closed");
                at
            }
            WalletEvent::TokensCredited {
                token, balance, at, ..
            }
            | WalletEvent::TokensDebited {
                token, balance, at, ..
            } => {
                self.amounts.insert(
                    (tenant, wallet, token.as_str().to_string()),
                    balance.to_string(),
                );
                at
            }
        };
        change.updated_at = fmt(when);
        Ok(())
    }

    async fn write(
        &mut self,
        conn: &mut AnyConnection,
        sql: &Sql<'_>,
        touched: Option<&mut Touched>,
    ) -> Result<()> {
        let wallets = std::mem::take(&mut self.wallets);
        let amounts = std::mem::take(&mut self.amounts);
        if let Some(touched) = touched {
            // Every balance event also changes its wallet's row, so wallets cover amounts.
            for ((tenant, wallet), change) in &wallets {
                touched
                    .wallets
                    .entry(tenant.clone())
                    .or_default()
                    .insert(wallet.clone());
                if let Some(o) = &change.opened {
                    touched
                        .owners
                        .entry(tenant.clone())
                        .or_default()
                        .insert((o.owner_type.to_string(), o.owner_id.clone()));
                }
            }
        }
        let (opened, changed): (Vec<_>, Vec<_>) =
            wallets.into_iter().partition(|(_, c)| c.opened.is_some());
        for chunk in opened.chunks(ROWS_PER_STATEMENT) {
            let text = format!(
                "INSERT INTO {{rm_wallets}} (tenant, wallet_id, owner_type, owner_id, wallet_type, network, address,
                    explorer_url, status, created_at, updated_at, version) VALUES {}",
                values_list(chunk.len(), 12, &[])
            );
            let text = sql.text(&text);
            let mut q = many(&text);
            for ((tenant, wallet), c) in chunk {
                let Some(o) = &c.opened else { continue };
                q = q
                    .bind(tenant)
                    .bind(wallet)
                    .bind(o.owner_type)
                    .bind(&o.owner_id)
                    .bind(o.wallet_type)
                    .bind(&o.network)
                    .bind(&o.address)
                    .bind(o.explorer_url.as_deref())
                    .bind(c.status.unwrap_or("pending"))
                    .bind(&o.created_at)
                    .bind(&c.updated_at)
                    .bind(c.version);
            }
            q.execute(&mut *conn).await?;
        }
        // Existing wallets: one UPDATE … FROM (VALUES …) per chunk; the status is kept unless
        // the batch changed it.
        for chunk in changed.chunks(ROWS_PER_STATEMENT) {
            let text = format!(
                "UPDATE {{rm_wallets}} SET status = COALESCE(v.column1, {{rm_wallets}}.status),
                        updated_at = v.column2, version = v.column3
                   FROM (VALUES {}) AS v
                  WHERE {{rm_wallets}}.tenant = v.column4 AND {{rm_wallets}}.wallet_id = v.column5",
                values_list(chunk.len(), 5, &[Some("TEXT"), None, Some("BIGINT")])
            );
            let text = sql.text(&text);
            let mut q = many(&text);
            for ((tenant, wallet), c) in chunk {
                q = q
                    .bind(c.status)
                    .bind(&c.updated_at)
                    .bind(c.version)
                    .bind(tenant)
                    .bind(wallet);
            }
            q.execute(&mut *conn).await?;
        }
        let amounts: Vec<_> = amounts.into_iter().collect();
        for chunk in amounts.chunks(ROWS_PER_STATEMENT) {
            let text = format!(
                "INSERT INTO {{rm_balances}} (tenant, wallet_id, token, amount) VALUES {}
                 ON CONFLICT (tenant, wallet_id, token) DO UPDATE SET amount = excluded.amount",
                values_list(chunk.len(), 4, &[])
            );
            let text = sql.text(&text);
            let mut q = many(&text);
            for ((tenant, wallet, token), amount) in chunk {
                q = q.bind(tenant).bind(wallet).bind(token).bind(amount);
            }
            q.execute(&mut *conn).await?;
        }
        Ok(())
    }
}

/// Seconds with microseconds, matching the feed's `recorded_at` format.
fn chrono_secs() -> chrono::SecondsFormat {
    chrono::SecondsFormat::Micros
}

/// What a run of wallet events leaves of the status read model: new user wallets, each
/// touched balance once with its last value, then one recomputation per affected user.
#[derive(Debug, Default)]
struct StatusFold {
    opened: Vec<(String, String, String)>,
    amounts: BTreeMap<(String, String, String), String>,
}

impl StatusFold {
    fn rows(&self) -> usize {
        self.opened.len() + self.amounts.len()
    }

    fn add(&mut self, e: &StoredEvent) -> Result<()> {
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

    async fn write(&mut self, conn: &mut AnyConnection, sql: &Sql<'_>) -> Result<()> {
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
                let marks: Vec<String> = (0..chunk.len()).map(|i| format!("${}", i + 2)).collect();
                let text = sql.text(&format!(
                    "SELECT wallet_id, user_id FROM {{st_wallets}} WHERE tenant = $1 AND wallet_id IN ({})",
                    marks.join(", ")
                ));
                let mut q = many(&text).bind(*tenant);
                for id in chunk {
                    q = q.bind(*id);
                }
                for row in q.fetch_all(&mut *conn).await? {
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
        let marks: Vec<String> = (0..chunk.len()).map(|i| format!("${}", i + 2)).collect();
        let q = sql.text(&format!(
            "SELECT user_id, token, amount FROM {{st_balances}} WHERE tenant = $1 AND user_id IN ({})",
            marks.join(", ")
        ));
        let mut query = many(&q).bind(tenant);
        for u in chunk {
            query = query.bind(u);
        }
        let rows = query.fetch_all(&mut *conn).await?;
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

async fn status_tier(conn: &mut AnyConnection, sql: &Sql<'_>, e: &StoredEvent) -> Result<()> {
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

/// A user event other than a registration: changes the user's existing row and marks its
/// search text for recomputation.
async fn directory_user(
    conn: &mut AnyConnection,
    sql: &Sql<'_>,
    e: &StoredEvent,
    refresh: &mut BTreeSet<(String, String)>,
) -> Result<()> {
    let (tenant, user) = tenant_and_id(e)?;
    let event: UserEvent = decode(e)?;
    let version = e.sequence as i64;
    let fmt = |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono_secs(), true);
    let touch = |sets: &str| {
        sql.text(&format!(
            "UPDATE {{rm_users}} SET {sets}version = $1 WHERE tenant = $2 AND user_id = $3"
        ))
    };
    match event {
        UserEvent::UserRegistered { .. } => {
            // Usually folded (DirectoryFold); one applied alone is written the same way.
            if let Some(row) = UserRow::of(e, tenant.clone(), user.clone())? {
                insert_users(conn, sql, &[row]).await?;
            }
            refresh.insert((tenant, user));
        }
        UserEvent::UserProfileUpdated {
            first_name,
            last_name,
            locale,
            public_profile,
            updated_at,
            ..
        } => {
            sqlx::query(&touch(
                "first_name = COALESCE($4, first_name), last_name = COALESCE($5, last_name), locale = COALESCE($6, locale), public_profile = COALESCE($7, public_profile), updated_at = $8, ",
            ))
            .bind(version)
            .bind(&tenant)
            .bind(&user)
            .bind(first_name.map(|v| v.to_string()))
            .bind(last_name.map(|v| v.to_string()))
            .bind(locale.map(|v| v.to_string()))
            .bind(public_profile.map(|p| p.to_json_string()))
            .bind(fmt(updated_at))
            .execute(&mut *conn)
            .await?;
            refresh.insert((tenant.clone(), user.clone()));
        }
        UserEvent::UserDeactivated { at } | UserEvent::UserReactivated { at } => {
            let active = i64::from(e.event_type == "UserReactivated");
            sqlx::query(&touch("active = $4, updated_at = $5, "))
                .bind(version)
                .bind(&tenant)
                .bind(&user)
                .bind(active)
                .bind(fmt(at))
                .execute(&mut *conn)
                .await?;
        }
        UserEvent::EmailConfirmed { email, at, .. } => {
            sqlx::query(&touch("email = $4, updated_at = $5, "))
                .bind(version)
                .bind(&tenant)
                .bind(&user)
                .bind(email.to_string())
                .bind(fmt(at))
                .execute(&mut *conn)
                .await?;
            refresh.insert((tenant.clone(), user.clone()));
        }
        UserEvent::PhoneConfirmed { phone, at, .. } => {
            sqlx::query(&touch("phone = $4, updated_at = $5, "))
                .bind(version)
                .bind(&tenant)
                .bind(&user)
                .bind(phone.to_string())
                .bind(fmt(at))
                .execute(&mut *conn)
                .await?;
            refresh.insert((tenant.clone(), user.clone()));
        }
        UserEvent::RolesChanged { roles } => {
            let roles: Vec<String> = roles.iter().map(ToString::to_string).collect();
            sqlx::query(&touch("roles = $4, "))
                .bind(version)
                .bind(&tenant)
                .bind(&user)
                .bind(serde_json::to_string(&roles).unwrap_or_else(|_| "[]".into()))
                .execute(&mut *conn)
                .await?;
        }
        UserEvent::UserMerged { into, at } => {
            sqlx::query(&touch("merged_into = $4, updated_at = $5, "))
                .bind(version)
                .bind(&tenant)
                .bind(&user)
                .bind(into.to_string())
                .bind(fmt(at))
                .execute(&mut *conn)
                .await?;
        }
        UserEvent::EmailChangeRequested { .. }
        | UserEvent::EmailConfirmationFailed { .. }
        | UserEvent::PhoneChangeRequested { .. }
        | UserEvent::PhoneConfirmationFailed { .. }
        | UserEvent::PasswordSet { .. }
        | UserEvent::PasswordChanged { .. }
        | UserEvent::LegacyCredentialImported { .. }
        | UserEvent::LegacyCredentialUpgraded { .. }
        | UserEvent::PasswordCheckFailed { .. }
        | UserEvent::PasswordFailuresCleared { .. }
        | UserEvent::SessionStarted { .. }
        | UserEvent::SessionRefreshed { .. }
        | UserEvent::SessionsEnded { .. }
        | UserEvent::EmailChangeStarted { .. }
        | UserEvent::PhoneChangeStarted { .. }
        | UserEvent::PasswordResetStarted { .. }
        | UserEvent::PasswordResetFailed { .. }
        | UserEvent::PasswordReset { .. } => {
            sqlx::query(&touch(""))
                .bind(version)
                .bind(&tenant)
                .bind(&user)
                .execute(&mut *conn)
                .await?;
        }
    }
    Ok(())
}

/// A directory row for a registered user. Its search text holds the user's own fields;
/// [`DirectoryFold::refresh_search`] adds wallet addresses where there are any.
#[derive(Debug)]
struct UserRow {
    tenant: String,
    user: String,
    email: Option<String>,
    phone: Option<String>,
    external_id: Option<String>,
    identifier_email: String,
    first_name: Option<String>,
    last_name: Option<String>,
    locale: Option<String>,
    public_profile: String,
    registered_at: String,
    version: i64,
    search: String,
}

impl UserRow {
    /// The row of a `UserRegistered` event; `None` for any other event.
    fn of(e: &StoredEvent, tenant: String, user: String) -> Result<Option<Self>> {
        let UserEvent::UserRegistered {
            email,
            phone,
            external_id,
            identifier_email,
            first_name,
            last_name,
            locale,
            public_profile,
            registered_at,
            ..
        } = decode(e)?
        else {
            return Ok(None);
        };
        let email = email.map(|v| v.to_string());
        let phone = phone.map(|v| v.to_string());
        let external_id = external_id.map(|v| v.to_string());
        let first_name = first_name.map(|v| v.to_string());
        let last_name = last_name.map(|v| v.to_string());
        let search = search_text(
            [
                &email,
                &phone,
                &external_id,
                &Some(identifier_email.clone()),
                &first_name,
                &last_name,
            ]
            .into_iter()
            .flatten()
            .cloned(),
        );
        Ok(Some(Self {
            tenant,
            user,
            email,
            phone,
            external_id,
            identifier_email,
            first_name,
            last_name,
            locale: locale.map(|v| v.to_string()),
            public_profile: public_profile.to_json_string(),
            registered_at: registered_at.to_rfc3339_opts(chrono_secs(), true),
            version: i64::try_from(e.sequence).unwrap_or(i64::MAX),
            search,
        }))
    }
}

/// The lowercased text ListUsers searches: contact fields, names, ids, wallet addresses.
fn search_text(parts: impl IntoIterator<Item = String>) -> String {
    parts
        .into_iter()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

async fn insert_users(conn: &mut AnyConnection, sql: &Sql<'_>, rows: &[UserRow]) -> Result<()> {
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let text = sql.text(&format!(
            "INSERT INTO {{rm_users}} (tenant, user_id, email, phone, external_id, identifier_email, first_name,
                last_name, locale, public_profile, created_at, updated_at, version, active, roles, search)
             VALUES {}",
            values_list(chunk.len(), 16, &[])
        ));
        let mut q = many(&text);
        for r in chunk {
            q = q
                .bind(&r.tenant)
                .bind(&r.user)
                .bind(r.email.as_deref())
                .bind(r.phone.as_deref())
                .bind(r.external_id.as_deref())
                .bind(&r.identifier_email)
                .bind(r.first_name.as_deref())
                .bind(r.last_name.as_deref())
                .bind(r.locale.as_deref())
                .bind(&r.public_profile)
                .bind(&r.registered_at)
                .bind(&r.registered_at)
                .bind(r.version)
                .bind(1i64)
                .bind("[]")
                .bind(&r.search);
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

/// What a span of events leaves of the directory: registrations, user wallets and person
/// codes as multi-row inserts, and the users whose search text must be recomputed once all
/// of it is written. Other user events are applied alone ([`directory_user`]).
#[derive(Debug, Default)]
struct DirectoryFold {
    users: Vec<UserRow>,
    wallets: Vec<(String, String, String, String)>,
    person_codes: BTreeMap<(String, String), String>,
    /// Users registered in the span: their search text is complete unless they have wallets.
    registered: BTreeSet<(String, String)>,
    /// Users whose search text must be recomputed.
    refresh: BTreeSet<(String, String)>,
}

impl DirectoryFold {
    fn rows(&self) -> usize {
        self.users.len()
            + self.wallets.len()
            + self.person_codes.len()
            + self.registered.len()
            + self.refresh.len()
    }

    fn add(&mut self, e: &StoredEvent) -> Result<bool> {
        match (e.aggregate_type.as_str(), e.event_type.as_str()) {
            ("User", "UserRegistered") => {
                let (tenant, user) = tenant_and_id(e)?;
                if let Some(row) = UserRow::of(e, tenant.clone(), user.clone())? {
                    self.users.push(row);
                    self.registered.insert((tenant, user));
                }
                Ok(true)
            }
            ("User", _) => Ok(false),
            ("Wallet", "WalletOpened") => {
                let (tenant, wallet) = tenant_and_id(e)?;
                if let WalletEvent::WalletOpened { owner, address, .. } = decode(e)? {
                    if owner.owner_type == OwnerType::User {
                        self.refresh
                            .insert((tenant.clone(), owner.owner_id.clone()));
                        self.wallets.push((tenant, wallet, owner.owner_id, address));
                    }
                }
                Ok(true)
            }
            ("Identification", "IdentitySubmitted") => {
                let (tenant, user) = tenant_and_id(e)?;
                if let IdentificationEvent::IdentitySubmitted { identity, .. } = decode(e)? {
                    self.person_codes
                        .insert((tenant, user), identity.person_code.key());
                }
                Ok(true)
            }
            _ => Ok(true),
        }
    }

    async fn write(&mut self, conn: &mut AnyConnection, sql: &Sql<'_>) -> Result<()> {
        insert_users(conn, sql, &std::mem::take(&mut self.users)).await?;
        for chunk in std::mem::take(&mut self.wallets).chunks(ROWS_PER_STATEMENT) {
            let text = sql.text(&format!(
                "INSERT INTO {{rm_user_wallets}} (tenant, wallet_id, user_id, address) VALUES {}",
                values_list(chunk.len(), 4, &[])
            ));
            let mut q = many(&text);
            for (tenant, wallet, user, address) in chunk {
                q = q.bind(tenant).bind(wallet).bind(user).bind(address);
            }
            q.execute(&mut *conn).await?;
        }
        let codes: Vec<_> = std::mem::take(&mut self.person_codes).into_iter().collect();
        for chunk in codes.chunks(ROWS_PER_STATEMENT) {
            let text = sql.text(&format!(
                "INSERT INTO {{rm_person_codes}} (tenant, user_id, person_code) VALUES {}
                 ON CONFLICT (tenant, user_id) DO UPDATE SET person_code = excluded.person_code",
                values_list(chunk.len(), 3, &[])
            ));
            let mut q = many(&text);
            for ((tenant, user), code) in chunk {
                q = q.bind(tenant).bind(user).bind(code);
            }
            q.execute(&mut *conn).await?;
        }
        Ok(())
    }

    /// Recomputes the lowercased text ListUsers searches (contact fields, names, ids and
    /// wallet addresses) of every user marked since the last call.
    async fn refresh_search(&mut self, conn: &mut AnyConnection, sql: &Sql<'_>) -> Result<()> {
        // Registered users with a wallet (opened before they registered) need their addresses.
        let mut registered: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (tenant, user) in std::mem::take(&mut self.registered) {
            if !self.refresh.contains(&(tenant.clone(), user.clone())) {
                registered.entry(tenant).or_default().push(user);
            }
        }
        for (tenant, users) in &registered {
            for chunk in users.chunks(ROWS_PER_STATEMENT) {
                let marks: Vec<String> = (0..chunk.len()).map(|i| format!("${}", i + 2)).collect();
                let text = sql.text(&format!(
                    "SELECT DISTINCT user_id FROM {{rm_user_wallets}} WHERE tenant = $1 AND user_id IN ({})",
                    marks.join(", ")
                ));
                let mut q = many(&text).bind(tenant);
                for u in chunk {
                    q = q.bind(u);
                }
                for row in q.fetch_all(&mut *conn).await? {
                    self.refresh.insert((tenant.clone(), row.try_get(0)?));
                }
            }
        }
        let mut per_tenant: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (tenant, user) in std::mem::take(&mut self.refresh) {
            per_tenant.entry(tenant).or_default().push(user);
        }
        for (tenant, users) in &per_tenant {
            for chunk in users.chunks(ROWS_PER_STATEMENT) {
                let marks: Vec<String> = (0..chunk.len()).map(|i| format!("${}", i + 2)).collect();
                let marks = marks.join(", ");
                let mut parts: BTreeMap<String, Vec<String>> = BTreeMap::new();
                let text = sql.text(&format!(
                    "SELECT user_id, email, phone, external_id, identifier_email, first_name, last_name
                       FROM {{rm_users}} WHERE tenant = $1 AND user_id IN ({marks})"
                ));
                let mut q = many(&text).bind(tenant);
                for u in chunk {
                    q = q.bind(u);
                }
                for row in q.fetch_all(&mut *conn).await? {
                    let mut fields = Vec::new();
                    for i in 1..7 {
                        fields.extend(row.try_get::<Option<String>, _>(i)?);
                    }
                    parts.insert(row.try_get(0)?, fields);
                }
                if parts.is_empty() {
                    continue;
                }
                let text = sql.text(&format!(
                    "SELECT user_id, address FROM {{rm_user_wallets}}
                      WHERE tenant = $1 AND user_id IN ({marks}) ORDER BY user_id, wallet_id"
                ));
                let mut q = many(&text).bind(tenant);
                for u in chunk {
                    q = q.bind(u);
                }
                for row in q.fetch_all(&mut *conn).await? {
                    let user: String = row.try_get(0)?;
                    if let Some(fields) = parts.get_mut(&user) {
                        fields.push(row.try_get(1)?);
                    }
                }
                let text = sql.text(&format!(
                    "UPDATE {{rm_users}} SET search = v.column1 FROM (VALUES {}) AS v
                      WHERE {{rm_users}}.tenant = v.column2 AND {{rm_users}}.user_id = v.column3",
                    values_list(parts.len(), 3, &[])
                ));
                let mut q = many(&text);
                for (user, fields) in parts {
                    q = q.bind(search_text(fields)).bind(tenant).bind(user);
                }
                q.execute(&mut *conn).await?;
            }
        }
        Ok(())
    }
}
