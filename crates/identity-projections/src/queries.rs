//! Reads of the read models. Every read is scoped to one tenant; each read model's queries
//! live beside its fold (`balances/queries.rs`, `status/queries.rs`, `directory/queries.rs`).

use crate::{ProjectionError, Projections};

pub(crate) use crate::balances::queries::ReadCache;
pub use crate::balances::queries::WalletView;
pub use crate::directory::queries::{
    DirectoryUser, DirectoryWallet, InvalidCursor, ListUsers, Profile, ProfileFilter, SortField,
    UserKey, UserPage,
};
pub use crate::status::queries::{TierView, UserStatusView};

pub(crate) type Result<T> = std::result::Result<T, ProjectionError>;

/// A column's stored text in its domain type: unknown text is a corrupt row, never a default.
pub(crate) fn parsed<T>(
    column: &str,
    text: &str,
    parse: impl FnOnce(&str) -> Option<T>,
) -> Result<T> {
    parse(text).ok_or_else(|| ProjectionError::CorruptRow(format!("{column} {text:?}")))
}

/// A JSON column in its type: unreadable JSON is a corrupt row, never a default.
pub(crate) fn json<T: serde::de::DeserializeOwned>(column: &str, text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| ProjectionError::CorruptRow(format!("{column}: {e}")))
}

/// A count or version column (never negative).
pub(crate) fn count(row: &sqlx::any::AnyRow, column: &str) -> Result<u64> {
    use sqlx::Row as _;
    let n: i64 = row.try_get(column)?;
    u64::try_from(n).map_err(|_| ProjectionError::CorruptRow(format!("{column} {n}")))
}

/// Most rows one list call returns.
pub const MAX_LIMIT: u32 = 200;

pub const DEFAULT_LIMIT: u32 = 50;

impl Projections {
    pub(crate) fn q(&self, sql: &str) -> String {
        self.dialect().placeholders(sql)
    }
}
