//! How each projection folds one event into its tables. Events carry their results (the
//! resulting balance, the whole role set), so these are writes, not arithmetic; the only rule
//! applied here is the domain's own `qualify`.

use std::collections::{BTreeMap, BTreeSet};

use identity_store::StoredEvent;
use sqlx::AnyConnection;

use crate::read_model::{Fold, Target};
use crate::{Dialect, Projection, ProjectionError};

pub(crate) type Result<T> = std::result::Result<T, ProjectionError>;

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
        for model in Projection::ALL.map(Projection::model) {
            for t in model.tables {
                s = s.replace(
                    &format!("{{{}}}", t.name),
                    &format!("{}{}", t.name, self.suffix),
                );
            }
        }
        self.dialect.placeholders(&s)
    }
}

pub(crate) fn tenant_and_id(e: &StoredEvent) -> Result<(String, String)> {
    e.aggregate_id
        .split_once('/')
        .map(|(t, i)| (t.to_string(), i.to_string()))
        .ok_or_else(|| ProjectionError::Event {
            position: e.position,
            message: format!("aggregate id {:?} has no tenant", e.aggregate_id),
        })
}

/// The event as its type, through the store's decode point ([`StoredEvent::decode`]).
pub(crate) fn decode<T: serde::de::DeserializeOwned>(e: &StoredEvent) -> Result<T> {
    e.decode().map_err(|err| ProjectionError::Event {
        position: e.position,
        message: err.to_string(),
    })
}

/// Folds a span of one read model's events, in feed order, and writes what they leave in a
/// few multi-row statements: a span of any length compresses to about one row per key, which
/// is what makes a replay fast (docs/adr/0002-read-models.md). The read model decides what
/// folds and what is applied alone ([`crate::read_model::Fold`]).
#[derive(Debug)]
pub(crate) struct Folder {
    fold: Box<dyn Fold>,
    /// What the written balance rows were, when asked for ([`Folder::tracking`]).
    touched: Option<Touched>,
}

/// The balance rows a span of events changed: the cached answers it makes stale. Keyed by
/// tenant so that a cached answer is checked with borrowed lookups, no allocation.
#[derive(Debug, Default)]
pub(crate) struct Touched {
    /// Per tenant, the wallet ids whose row or balances changed.
    pub(crate) wallets: BTreeMap<String, BTreeSet<String>>,
    /// Per tenant, the owners (type, id) with a new wallet.
    pub(crate) owners: BTreeMap<String, BTreeSet<(String, String)>>,
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
            fold: (p.model().fold)(),
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
        self.fold.fold_event(e)
    }

    /// Rows waiting to be written.
    pub(crate) fn pending(&self) -> usize {
        self.fold.pending()
    }

    /// Writes the pending rows, then applies `e` (one [`Folder::fold`] refused) alone.
    pub(crate) async fn apply_alone(
        &mut self,
        conn: &mut AnyConnection,
        sql: &Sql<'_>,
        e: &StoredEvent,
    ) -> Result<()> {
        self.write(conn, sql).await?;
        // Tracked like written rows: a wallet changing owner changes cached balance reads.
        let to = Target {
            conn,
            sql,
            touched: self.touched.as_mut(),
        };
        self.fold.apply_alone(to, e).await
    }

    async fn write(&mut self, conn: &mut AnyConnection, sql: &Sql<'_>) -> Result<()> {
        let to = Target {
            conn,
            sql,
            touched: self.touched.as_mut(),
        };
        self.fold.write_rows(to).await
    }

    /// Writes everything pending, then what the read model does last.
    pub(crate) async fn finish(&mut self, conn: &mut AnyConnection, sql: &Sql<'_>) -> Result<()> {
        self.write(conn, sql).await?;
        self.fold.finish(untracked(conn, sql)).await
    }
}

fn untracked<'a>(conn: &'a mut AnyConnection, sql: &'a Sql<'a>) -> Target<'a> {
    Target {
        conn,
        sql,
        touched: None,
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

/// A statement whose text depends on how many rows it carries: planned with its values
/// each time, and not kept in the connection's statement cache. A cached generic plan made
/// while a fresh replay table was empty would scan that table whole once it had grown (seen:
/// a directory replay slowing to 900 events/s at 30k users).
pub(crate) fn many(text: &str) -> sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments<'_>> {
    sqlx::query(text).persistent(false)
}

/// "$2, $3, …" for `n` keys that follow the tenant (`$1`) in `WHERE tenant = $1 AND k IN (…)`.
pub(crate) fn key_marks(n: usize) -> String {
    (2..n + 2)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `text` (a [`many`] statement) with the tenant bound as `$1` and `keys` as `$2`, `$3`, …
/// (the marks [`key_marks`] writes).
pub(crate) fn for_keys<'q>(
    text: &'q str,
    tenant: &'q str,
    keys: impl IntoIterator<Item = &'q str>,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    keys.into_iter()
        .fold(many(text).bind(tenant), |q, key| q.bind(key))
}

/// Rows per multi-row statement (4–12 arguments each, far below both databases' limits).
pub(crate) const ROWS_PER_STATEMENT: usize = 200;

/// "($1, $2, …), ($n+1, …)" for `rows` rows of `width` arguments; `casts[i]` wraps column i.
pub(crate) fn values_list(rows: usize, width: usize, casts: &[Option<&str>]) -> String {
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

/// Seconds with microseconds, matching the feed's `recorded_at` format.
pub(crate) fn chrono_secs() -> chrono::SecondsFormat {
    chrono::SecondsFormat::Micros
}
