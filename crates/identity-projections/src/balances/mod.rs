//! The balances read model: wallets and their per-token balances.

pub(crate) mod queries;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use identity_domain::wallet::{WalletEvent, WalletStatus};
use identity_store::StoredEvent;
use sqlx::AnyConnection;

use crate::apply::{
    chrono_secs, decode, many, tenant_and_id, values_list, Result, Sql, Touched, ROWS_PER_STATEMENT,
};
use crate::read_model::{Fold, ReadModel, Target, Writing};
use crate::schema::Table;

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

impl WalletChange {
    /// The wallet's status is now `status`, since `at`.
    fn became(&mut self, status: WalletStatus, at: DateTime<Utc>) -> DateTime<Utc> {
        self.status = Some(status.as_str());
        at
    }
}

/// What a span of wallet events leaves of the balances read model: each wallet row and each
/// balance once, with its last value (events carry their resulting balance); a wallet's
/// `updated_at` and `version` are those of its last event.
#[derive(Debug, Default)]
pub(crate) struct BalanceFold {
    wallets: BTreeMap<(String, String), WalletChange>,
    amounts: BTreeMap<(String, String, String), String>,
}

impl BalanceFold {
    pub(crate) fn add(&mut self, e: &StoredEvent) -> Result<()> {
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
                    owner_type: owner.owner_type.as_str(),
                    owner_id: owner.owner_id,
                    wallet_type: wallet_type.as_str(),
                    network: network.to_string(),
                    address,
                    explorer_url,
                    created_at: fmt(opened_at),
                });
                change.status = Some(WalletStatus::Pending.as_str());
                opened_at
            }
            WalletEvent::WalletActivated { at } => change.became(WalletStatus::Active, at),
            WalletEvent::WalletSuspended { at } => change.became(WalletStatus::Suspended, at),
            WalletEvent::WalletClosed { at } => change.became(WalletStatus::Closed, at),
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
            // Applied alone (`apply_alone`): the row it changes may be pending before it.
            WalletEvent::WalletOwnerChanged { at, .. } => at,
        };
        change.updated_at = fmt(when);
        Ok(())
    }

    pub(crate) async fn write(
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
                    .bind(c.status.unwrap_or(WalletStatus::Pending.as_str()))
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

const RM_WALLETS: Table = Table {
    indexes: &["CREATE INDEX IF NOT EXISTS {t}_owner ON {t} (tenant, owner_type, owner_id)"],
    ..Table::new(
        "rm_wallets",
        "tenant, wallet_id",
        "CREATE TABLE IF NOT EXISTS {t} (
            tenant TEXT NOT NULL, wallet_id TEXT NOT NULL, owner_type TEXT NOT NULL, owner_id TEXT NOT NULL,
            wallet_type TEXT NOT NULL, network TEXT NOT NULL, address TEXT NOT NULL, explorer_url TEXT,
            status TEXT NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL, version BIGINT NOT NULL,
            PRIMARY KEY (tenant, wallet_id))",
    )
};

const RM_BALANCES: Table = Table::new(
    "rm_balances",
    "tenant, wallet_id, token",
    "CREATE TABLE IF NOT EXISTS {t} (
        tenant TEXT NOT NULL, wallet_id TEXT NOT NULL, token TEXT NOT NULL, amount TEXT NOT NULL,
        PRIMARY KEY (tenant, wallet_id, token))",
);

/// The balances read model.
pub(crate) const MODEL: ReadModel = ReadModel {
    name: "balances",
    tables: &[RM_WALLETS, RM_BALANCES],
    fold: || Box::<BalanceFold>::default(),
};

impl Fold for BalanceFold {
    fn fold_event(&mut self, e: &StoredEvent) -> Result<bool> {
        if e.event_type == "WalletOwnerChanged" {
            return Ok(false);
        }
        self.add(e).map(|()| true)
    }

    fn apply_alone<'a>(&'a mut self, to: Target<'a>, e: &'a StoredEvent) -> Writing<'a> {
        Box::pin(async move {
            let (tenant, wallet) = tenant_and_id(e)?;
            let WalletEvent::WalletOwnerChanged {
                owner,
                previous,
                at,
            } = decode(e)?
            else {
                return Ok(());
            };
            let fmt = at.to_rfc3339_opts(chrono_secs(), true);
            sqlx::query(&to.sql.text(
                "UPDATE {rm_wallets} SET owner_type = $1, owner_id = $2, updated_at = $3, version = $4
                  WHERE tenant = $5 AND wallet_id = $6",
            ))
            .bind(owner.owner_type.as_str())
            .bind(&owner.owner_id)
            .bind(fmt)
            .bind(i64::try_from(e.sequence).unwrap_or(i64::MAX))
            .bind(&tenant)
            .bind(&wallet)
            .execute(&mut *to.conn)
            .await?;
            if let Some(touched) = to.touched {
                touched
                    .wallets
                    .entry(tenant.clone())
                    .or_default()
                    .insert(wallet);
                let owners = touched.owners.entry(tenant).or_default();
                for o in [owner, previous] {
                    owners.insert((o.owner_type.as_str().to_string(), o.owner_id));
                }
            }
            Ok(())
        })
    }

    fn pending(&self) -> usize {
        self.wallets.len() + self.amounts.len()
    }

    fn write_rows<'a>(&'a mut self, to: Target<'a>) -> Writing<'a> {
        Box::pin(self.write(to.conn, to.sql, to.touched))
    }
}
