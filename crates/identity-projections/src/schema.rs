//! Read-model tables. One DDL serves PostgreSQL and SQLite (TEXT and BIGINT only). Each
//! projection owns its tables; a rebuild creates them again with a suffix beside the live
//! ones and swaps them in.

use crate::Projection;

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
