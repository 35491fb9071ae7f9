//! Reads of the read models. Every read is scoped to one tenant; each read model's queries
//! live beside its fold (`balances/queries.rs`, `status/queries.rs`, `directory/queries.rs`).

use crate::{ProjectionError, Projections};

pub(crate) use crate::balances::queries::ReadCache;
pub use crate::balances::queries::WalletView;
pub use crate::directory::queries::{
    DirectoryUser, InvalidCursor, ListUsers, SortField, UserKey, UserPage,
};
pub use crate::status::queries::{TierView, UserStatusView};

pub(crate) type Result<T> = std::result::Result<T, ProjectionError>;

/// Most rows one list call returns.
pub const MAX_LIMIT: u32 = 200;

pub const DEFAULT_LIMIT: u32 = 50;

impl Projections {
    pub(crate) fn q(&self, sql: &str) -> String {
        self.dialect().placeholders(sql)
    }
}
