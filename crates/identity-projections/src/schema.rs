//! Read-model tables. One DDL serves PostgreSQL and SQLite (TEXT and BIGINT only). Each
//! projection owns its tables; a rebuild creates them again with a suffix beside the live
//! ones and swaps them in.

use sqlx::AnyPool;

use crate::{now_text, Dialect, Projection, ProjectionError};

/// A table of a projection: its base name and DDL with `{t}` for the (suffixed) table name.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Table {
    pub(crate) name: &'static str,
    pub(crate) create: &'static str,
    /// Extra DDL (indexes), `{t}` for the table name.
    pub(crate) indexes: &'static [&'static str],
    /// Columns that order rows for comparisons (the primary key).
    pub(crate) key: &'static str,
    /// A PostgreSQL trigram index (`{t}` for the table name), made when pg_trgm is there.
    pub(crate) trigram: Option<&'static str>,
}

impl Table {
    /// A table without extra indexes, ordered by `key`.
    pub(crate) const fn new(name: &'static str, key: &'static str, create: &'static str) -> Self {
        Self {
            name,
            create,
            indexes: &[],
            key,
            trigram: None,
        }
    }
}

/// The columns a table's DDL creates, lowercase, in order: what a live table is compared
/// with at start (a read model whose tables changed columns is rebuilt from the log).
pub(crate) fn columns(create: &str) -> Vec<String> {
    let (Some(open), Some(close)) = (create.find('('), create.rfind(')')) else {
        return Vec::new();
    };
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0usize, open + 1);
    for (i, c) in create.char_indices().take(close).skip(open + 1) {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&create[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&create[start..close]);
    parts
        .into_iter()
        .map(str::trim)
        .filter(|p| {
            let upper = p.to_ascii_uppercase();
            !(upper.starts_with("PRIMARY KEY") || upper.starts_with("UNIQUE") || p.is_empty())
        })
        .filter_map(|p| p.split_whitespace().next())
        .map(str::to_ascii_lowercase)
        .collect()
}

/// A read model's tables.
pub(crate) fn tables(p: Projection) -> &'static [Table] {
    p.model().tables
}

pub(crate) const CHECKPOINTS: &str = "CREATE TABLE IF NOT EXISTS projection_checkpoints (
    name TEXT NOT NULL PRIMARY KEY, xid BIGINT NOT NULL, position BIGINT NOT NULL,
    updated_at TEXT NOT NULL)";

/// A table's index statements (`{t}` for the table name); `trigram` adds PostgreSQL's
/// trigram index to the directory's users.
pub(crate) fn indexes(t: &Table, trigram: bool) -> Vec<&'static str> {
    let mut out = t.indexes.to_vec();
    if trigram {
        out.extend(t.trigram);
    }
    out
}

/// The name template (`{t}_…`) of the index an index statement creates.
pub(crate) fn index_name(statement: &str) -> &str {
    statement
        .split("IF NOT EXISTS ")
        .nth(1)
        .and_then(|rest| rest.split(" ON ").next())
        .unwrap_or_default()
}

/// The DDL that creates a projection's tables with `suffix`.
pub(crate) fn create_statements(p: Projection, suffix: &str, trigram: bool) -> Vec<String> {
    let mut out = Vec::new();
    for t in tables(p) {
        let name = format!("{}{suffix}", t.name);
        out.push(t.create.replace("{t}", &name));
        for i in indexes(t, trigram) {
            out.push(i.replace("{t}", &name));
        }
    }
    out
}

/// A read model whose live tables do not have exactly the columns its tables are now
/// created with (a column was added or removed since they were made) is dropped, and its
/// checkpoint goes back to the start: its projector builds it again from the log. Read
/// models are disposable; the log is the record.
pub(crate) async fn reshape_if_changed(
    pool: &AnyPool,
    dialect: Dialect,
    p: Projection,
) -> Result<(), ProjectionError> {
    let sql = match dialect {
        Dialect::Postgres => {
            "SELECT CAST(column_name AS TEXT) FROM information_schema.columns
              WHERE table_schema = current_schema() AND table_name = $1"
        }
        Dialect::Sqlite => "SELECT name FROM pragma_table_info(?1)",
    };
    let mut changed = Vec::new();
    for t in tables(p) {
        let live: std::collections::BTreeSet<String> = sqlx::query_scalar::<_, String>(sql)
            .bind(t.name)
            .fetch_all(pool)
            .await?
            .into_iter()
            .map(|c| c.to_ascii_lowercase())
            .collect();
        let wanted: std::collections::BTreeSet<String> = columns(t.create).into_iter().collect();
        if !live.is_empty() && live != wanted {
            changed.push(t.name);
        }
    }
    if changed.is_empty() {
        return Ok(());
    }
    tracing::warn!(
        read_model = p.name(),
        tables = ?changed,
        "the read model's tables changed columns: rebuilding it from the log"
    );
    for t in tables(p) {
        sqlx::query(&format!("DROP TABLE IF EXISTS {}", t.name))
            .execute(pool)
            .await?;
    }
    sqlx::query(&dialect.placeholders(
        "UPDATE projection_checkpoints SET xid = 0, position = 0, updated_at = $2 WHERE name = $1",
    ))
    .bind(p.name())
    .bind(now_text())
    .execute(pool)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_columns_of_every_table_are_read_from_its_ddl() {
        let cols = columns(
            "CREATE TABLE IF NOT EXISTS {t} (
                tenant TEXT NOT NULL, wallet_id TEXT NOT NULL, amount NUMERIC(38, 0),
                PRIMARY KEY (tenant, wallet_id))",
        );
        assert_eq!(cols, vec!["tenant", "wallet_id", "amount"]);
        for p in Projection::ALL {
            for t in tables(p) {
                let cols = columns(t.create);
                assert!(cols.len() >= 2, "{}: {cols:?}", t.name);
                assert!(
                    cols.iter()
                        .all(|c| c.chars().all(|ch| ch.is_ascii_lowercase() || ch == '_')),
                    "{}: {cols:?}",
                    t.name
                );
            }
        }
    }
}
