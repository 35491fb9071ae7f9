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
}

const RM_WALLETS: Table = Table {
    name: "rm_wallets",
    create: "CREATE TABLE IF NOT EXISTS {t} (
        tenant TEXT NOT NULL, wallet_id TEXT NOT NULL, owner_type TEXT NOT NULL, owner_id TEXT NOT NULL,
        wallet_type TEXT NOT NULL, network TEXT NOT NULL, address TEXT NOT NULL, explorer_url TEXT,
        status TEXT NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL, version BIGINT NOT NULL,
        PRIMARY KEY (tenant, wallet_id))",
    indexes: &["CREATE INDEX IF NOT EXISTS {t}_owner ON {t} (tenant, owner_type, owner_id)"],
    key: "tenant, wallet_id",
};

const RM_BALANCES: Table = Table {
    name: "rm_balances",
    create: "CREATE TABLE IF NOT EXISTS {t} (
        tenant TEXT NOT NULL, wallet_id TEXT NOT NULL, token TEXT NOT NULL, amount TEXT NOT NULL,
        PRIMARY KEY (tenant, wallet_id, token))",
    indexes: &[],
    key: "tenant, wallet_id, token",
};

const ST_WALLETS: Table = Table {
    name: "st_wallets",
    create: "CREATE TABLE IF NOT EXISTS {t} (
        tenant TEXT NOT NULL, wallet_id TEXT NOT NULL, user_id TEXT NOT NULL,
        PRIMARY KEY (tenant, wallet_id))",
    indexes: &[],
    key: "tenant, wallet_id",
};

const ST_BALANCES: Table = Table {
    name: "st_balances",
    create: "CREATE TABLE IF NOT EXISTS {t} (
        tenant TEXT NOT NULL, user_id TEXT NOT NULL, wallet_id TEXT NOT NULL, token TEXT NOT NULL,
        amount TEXT NOT NULL, PRIMARY KEY (tenant, wallet_id, token))",
    indexes: &[
        "CREATE INDEX IF NOT EXISTS {t}_token ON {t} (tenant, token)",
        "CREATE INDEX IF NOT EXISTS {t}_user ON {t} (tenant, user_id)",
    ],
    key: "tenant, wallet_id, token",
};

const ST_TIERS: Table = Table {
    name: "st_tiers",
    create: "CREATE TABLE IF NOT EXISTS {t} (
        tenant TEXT NOT NULL, tier_id TEXT NOT NULL, name TEXT NOT NULL, description TEXT,
        min_balance TEXT NOT NULL, discount TEXT NOT NULL, image_url TEXT,
        eligible_tokens TEXT NOT NULL, retired BIGINT NOT NULL, created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL, version BIGINT NOT NULL, PRIMARY KEY (tenant, tier_id))",
    indexes: &[],
    key: "tenant, tier_id",
};

const RM_USER_STATUS: Table = Table {
    name: "rm_user_status",
    create: "CREATE TABLE IF NOT EXISTS {t} (
        tenant TEXT NOT NULL, user_id TEXT NOT NULL, qualifying TEXT NOT NULL, highest TEXT,
        PRIMARY KEY (tenant, user_id))",
    indexes: &[],
    key: "tenant, user_id",
};

const RM_USERS: Table = Table {
    name: "rm_users",
    create: "CREATE TABLE IF NOT EXISTS {t} (
        tenant TEXT NOT NULL, user_id TEXT NOT NULL, email TEXT, phone TEXT, external_id TEXT,
        identifier_email TEXT NOT NULL, first_name TEXT, last_name TEXT, locale TEXT,
        active BIGINT NOT NULL, roles TEXT NOT NULL, public_profile TEXT NOT NULL, merged_into TEXT,
        created_at TEXT NOT NULL, updated_at TEXT NOT NULL, version BIGINT NOT NULL,
        search TEXT NOT NULL, PRIMARY KEY (tenant, user_id))",
    indexes: &[
        "CREATE INDEX IF NOT EXISTS {t}_email ON {t} (tenant, email)",
        "CREATE INDEX IF NOT EXISTS {t}_phone ON {t} (tenant, phone)",
        "CREATE INDEX IF NOT EXISTS {t}_external ON {t} (tenant, external_id)",
        "CREATE INDEX IF NOT EXISTS {t}_created ON {t} (tenant, created_at, user_id)",
    ],
    key: "tenant, user_id",
};

const RM_USER_WALLETS: Table = Table {
    name: "rm_user_wallets",
    create: "CREATE TABLE IF NOT EXISTS {t} (
        tenant TEXT NOT NULL, wallet_id TEXT NOT NULL, user_id TEXT NOT NULL, address TEXT NOT NULL,
        PRIMARY KEY (tenant, wallet_id))",
    indexes: &[
        "CREATE INDEX IF NOT EXISTS {t}_address ON {t} (tenant, address)",
        "CREATE INDEX IF NOT EXISTS {t}_user ON {t} (tenant, user_id)",
    ],
    key: "tenant, wallet_id",
};

const RM_PERSON_CODES: Table = Table {
    name: "rm_person_codes",
    create: "CREATE TABLE IF NOT EXISTS {t} (
        tenant TEXT NOT NULL, user_id TEXT NOT NULL, person_code TEXT NOT NULL,
        PRIMARY KEY (tenant, user_id))",
    indexes: &["CREATE INDEX IF NOT EXISTS {t}_code ON {t} (tenant, person_code)"],
    key: "tenant, user_id",
};

pub(crate) fn tables(p: Projection) -> &'static [Table] {
    match p {
        Projection::Balances => &[RM_WALLETS, RM_BALANCES],
        Projection::Status => &[ST_WALLETS, ST_BALANCES, ST_TIERS, RM_USER_STATUS],
        Projection::Directory => &[RM_USERS, RM_USER_WALLETS, RM_PERSON_CODES],
    }
}

pub(crate) const CHECKPOINTS: &str = "CREATE TABLE IF NOT EXISTS projection_checkpoints (
    name TEXT NOT NULL PRIMARY KEY, xid BIGINT NOT NULL, position BIGINT NOT NULL,
    updated_at TEXT NOT NULL)";

/// The trigram index that serves ListUsers' substring search on PostgreSQL (with pg_trgm).
const RM_USERS_TRIGRAM: &str =
    "CREATE INDEX IF NOT EXISTS {t}_search ON {t} USING gin (search gin_trgm_ops)";

/// A table's index statements (`{t}` for the table name); `trigram` adds PostgreSQL's
/// trigram index to the directory's users.
pub(crate) fn indexes(t: &Table, trigram: bool) -> Vec<&'static str> {
    let mut out = t.indexes.to_vec();
    if trigram && t.name == RM_USERS.name {
        out.push(RM_USERS_TRIGRAM);
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
