//! The directory read model: users for lookups, search, sorting and paging.

mod owners;
pub(crate) mod queries;
mod users;

use users::directory_user;

use std::collections::{BTreeMap, BTreeSet};

use identity_domain::identification::IdentificationEvent;
use identity_domain::user::UserEvent;
use identity_domain::wallet::{OwnerType, WalletEvent};
use identity_store::StoredEvent;
use sqlx::{AnyConnection, Row};

use crate::apply::{
    chrono_secs, decode, for_keys, key_marks, many, tenant_and_id, values_list, Result, Sql,
    ROWS_PER_STATEMENT,
};
use crate::read_model::{Fold, ReadModel, Target, Writing};
use crate::schema::Table;

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
pub(crate) struct DirectoryFold {
    users: Vec<UserRow>,
    wallets: Vec<(String, String, String, String, String)>,
    person_codes: BTreeMap<(String, String), String>,
    /// Users registered in the span: their search text is complete unless they have wallets.
    registered: BTreeSet<(String, String)>,
    /// Users whose search text must be recomputed.
    pub(crate) refresh: BTreeSet<(String, String)>,
}

impl DirectoryFold {
    pub(crate) fn add(&mut self, e: &StoredEvent) -> Result<bool> {
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
                if let WalletEvent::WalletOpened {
                    owner,
                    address,
                    network,
                    ..
                } = decode(e)?
                {
                    if owner.owner_type == OwnerType::User {
                        self.refresh
                            .insert((tenant.clone(), owner.owner_id.clone()));
                        let network = network.to_string();
                        self.wallets
                            .push((tenant, wallet, owner.owner_id, address, network));
                    }
                }
                Ok(true)
            }
            // Applied alone: the wallet's row may be pending before it.
            ("Wallet", "WalletOwnerChanged") => Ok(false),
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

    pub(crate) async fn write(&mut self, conn: &mut AnyConnection, sql: &Sql<'_>) -> Result<()> {
        insert_users(conn, sql, &std::mem::take(&mut self.users)).await?;
        for chunk in std::mem::take(&mut self.wallets).chunks(ROWS_PER_STATEMENT) {
            let text = sql.text(&format!(
                "INSERT INTO {{rm_user_wallets}} (tenant, wallet_id, user_id, address, network) VALUES {}",
                values_list(chunk.len(), 5, &[])
            ));
            let mut q = many(&text);
            for (tenant, wallet, user, address, network) in chunk {
                q = q
                    .bind(tenant)
                    .bind(wallet)
                    .bind(user)
                    .bind(address)
                    .bind(network);
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
    pub(crate) async fn refresh_search(
        &mut self,
        conn: &mut AnyConnection,
        sql: &Sql<'_>,
    ) -> Result<()> {
        // Registered users with a wallet (opened before they registered) need their addresses.
        let mut registered: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (tenant, user) in std::mem::take(&mut self.registered) {
            if !self.refresh.contains(&(tenant.clone(), user.clone())) {
                registered.entry(tenant).or_default().push(user);
            }
        }
        for (tenant, users) in &registered {
            for chunk in users.chunks(ROWS_PER_STATEMENT) {
                let text = sql.text(&format!(
                    "SELECT DISTINCT user_id FROM {{rm_user_wallets}} WHERE tenant = $1 AND user_id IN ({})",
                    key_marks(chunk.len())
                ));
                let keys = chunk.iter().map(String::as_str);
                for row in for_keys(&text, tenant, keys).fetch_all(&mut *conn).await? {
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
                let marks = key_marks(chunk.len());
                let mut parts: BTreeMap<String, Vec<String>> = BTreeMap::new();
                let text = sql.text(&format!(
                    "SELECT user_id, email, phone, external_id, identifier_email, first_name, last_name
                       FROM {{rm_users}} WHERE tenant = $1 AND user_id IN ({marks})"
                ));
                let keys = chunk.iter().map(String::as_str);
                for row in for_keys(&text, tenant, keys).fetch_all(&mut *conn).await? {
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
                let keys = chunk.iter().map(String::as_str);
                for row in for_keys(&text, tenant, keys).fetch_all(&mut *conn).await? {
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

const RM_USERS: Table = Table {
    indexes: &[
        "CREATE INDEX IF NOT EXISTS {t}_email ON {t} (tenant, email)",
        "CREATE INDEX IF NOT EXISTS {t}_phone ON {t} (tenant, phone)",
        "CREATE INDEX IF NOT EXISTS {t}_external ON {t} (tenant, external_id)",
        "CREATE INDEX IF NOT EXISTS {t}_created ON {t} (tenant, created_at, user_id)",
    ],
    trigram: Some("CREATE INDEX IF NOT EXISTS {t}_search ON {t} USING gin (search gin_trgm_ops)"),
    ..Table::new(
        "rm_users",
        "tenant, user_id",
        "CREATE TABLE IF NOT EXISTS {t} (
            tenant TEXT NOT NULL, user_id TEXT NOT NULL, email TEXT, phone TEXT, external_id TEXT,
            identifier_email TEXT NOT NULL, first_name TEXT, last_name TEXT, locale TEXT,
            active BIGINT NOT NULL, roles TEXT NOT NULL, public_profile TEXT NOT NULL, merged_into TEXT,
            details TEXT NOT NULL DEFAULT '{}',
            created_at TEXT NOT NULL, updated_at TEXT NOT NULL, version BIGINT NOT NULL,
            search TEXT NOT NULL, PRIMARY KEY (tenant, user_id))",
    )
};

const RM_USER_WALLETS: Table = Table {
    indexes: &[
        "CREATE INDEX IF NOT EXISTS {t}_address ON {t} (tenant, address)",
        "CREATE INDEX IF NOT EXISTS {t}_user ON {t} (tenant, user_id)",
    ],
    ..Table::new(
        "rm_user_wallets",
        "tenant, wallet_id",
        "CREATE TABLE IF NOT EXISTS {t} (
            tenant TEXT NOT NULL, wallet_id TEXT NOT NULL, user_id TEXT NOT NULL, address TEXT NOT NULL,
            network TEXT NOT NULL, PRIMARY KEY (tenant, wallet_id))",
    )
};

const RM_PERSON_CODES: Table = Table {
    indexes: &["CREATE INDEX IF NOT EXISTS {t}_code ON {t} (tenant, person_code)"],
    ..Table::new(
        "rm_person_codes",
        "tenant, user_id",
        "CREATE TABLE IF NOT EXISTS {t} (
            tenant TEXT NOT NULL, user_id TEXT NOT NULL, person_code TEXT NOT NULL,
            PRIMARY KEY (tenant, user_id))",
    )
};

/// The directory read model.
pub(crate) const MODEL: ReadModel = ReadModel {
    name: "directory",
    tables: &[RM_USERS, RM_USER_WALLETS, RM_PERSON_CODES],
    fold: || Box::<DirectoryFold>::default(),
};

impl Fold for DirectoryFold {
    fn fold_event(&mut self, e: &StoredEvent) -> Result<bool> {
        self.add(e)
    }

    fn pending(&self) -> usize {
        self.users.len()
            + self.wallets.len()
            + self.person_codes.len()
            + self.registered.len()
            + self.refresh.len()
    }

    fn write_rows<'a>(&'a mut self, to: Target<'a>) -> Writing<'a> {
        Box::pin(self.write(to.conn, to.sql))
    }

    fn apply_alone<'a>(&'a mut self, to: Target<'a>, e: &'a StoredEvent) -> Writing<'a> {
        let Target { conn, sql, .. } = to;
        Box::pin(async move {
            if e.aggregate_type == "User" {
                directory_user(conn, sql, e, &mut self.refresh).await?;
            } else if e.event_type == "WalletOwnerChanged" {
                owners::wallet_owner_changed(conn, sql, e, &mut self.refresh).await?;
            }
            Ok(())
        })
    }

    /// The search texts, once everything they read is written.
    fn finish<'a>(&'a mut self, to: Target<'a>) -> Writing<'a> {
        Box::pin(self.refresh_search(to.conn, to.sql))
    }
}
