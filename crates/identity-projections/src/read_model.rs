//! What a read model is. Each lives in its own module (`balances`, `status`, `directory`):
//! its tables, how it folds a span of events into rows and writes them, and its queries.
//! [`crate::Projection::model`] is the one list of them: adding a read model is its module
//! plus a variant and a line there.

use std::future::Future;
use std::pin::Pin;

use identity_store::StoredEvent;
use sqlx::AnyConnection;

use crate::apply::{Result, Sql, Touched};
use crate::schema::Table;

/// A write in flight.
pub(crate) type Writing<'a> = Pin<Box<dyn Future<Output = Result<()>> + Send + 'a>>;

/// One read model.
pub(crate) struct ReadModel {
    /// Its name, as checkpoints, ListProjections, RebuildProjection and the CLI know it.
    pub(crate) name: &'static str,
    /// Its tables (the first is the one a leftover rebuild is recognized by).
    pub(crate) tables: &'static [Table],
    /// An empty fold for a span of events.
    pub(crate) fold: fn() -> Box<dyn Fold>,
}

/// Where a fold writes: a connection, the statements' table names and, when they are tracked,
/// the balance rows written.
pub(crate) struct Target<'a> {
    pub(crate) conn: &'a mut AnyConnection,
    pub(crate) sql: &'a Sql<'a>,
    pub(crate) touched: Option<&'a mut Touched>,
}

/// The rows a span of events leaves of one read model, before they are written. Events carry
/// their results, so most of them fold into one row per key (the last one wins); an event
/// that depends on the rows before it is refused by [`Fold::fold_event`] and applied alone,
/// in order, once the rows pending before it are written.
pub(crate) trait Fold: Send + std::fmt::Debug {
    /// Folds `e`; `false` (nothing folded) when it must go through [`Fold::apply_alone`].
    fn fold_event(&mut self, e: &StoredEvent) -> Result<bool>;
    /// Rows waiting to be written.
    fn pending(&self) -> usize;
    /// Writes the pending rows; notes the balance rows it changed when the target tracks them.
    fn write_rows<'a>(&'a mut self, to: Target<'a>) -> Writing<'a>;
    /// Applies an event [`Fold::fold_event`] refused (the pending rows are written first).
    fn apply_alone<'a>(&'a mut self, _to: Target<'a>, _e: &'a StoredEvent) -> Writing<'a> {
        Box::pin(async { Ok(()) })
    }
    /// What follows the last write of a span.
    fn finish<'a>(&'a mut self, _to: Target<'a>) -> Writing<'a> {
        Box::pin(async { Ok(()) })
    }
}
