//! Reads of the directory read model: lookups, search, sorting and paging.

use base64::Engine as _;
use sqlx::any::AnyRow;
use sqlx::Row;

use crate::queries::{count, json, Result, DEFAULT_LIMIT, MAX_LIMIT};
use crate::Projections;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryUser {
    pub user_id: String,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub external_id: Option<String>,
    pub identifier_email: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub locale: Option<String>,
    pub active: bool,
    pub roles: Vec<String>,
    pub public_profile: serde_json::Map<String, serde_json::Value>,
    pub merged_into: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub version: u64,
    pub wallet_addresses: Vec<String>,
    /// The user's wallets as the directory knows them, in the order of `wallet_addresses`.
    pub wallets: Vec<DirectoryWallet>,
    pub details: identity_domain::values::ProfileDetails,
}

/// A user's wallet in the directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryWallet {
    pub wallet_id: String,
    pub address: String,
    /// `polygon`, `solana` or `evm:<chain id>`.
    pub network: String,
}

/// How a caller names a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserKey {
    Id(String),
    Email(String),
    Phone(String),
    ExternalId(String),
    /// `COUNTRY:CODE`, as `PersonCode::key` makes it.
    PersonCode(String),
    WalletAddress(String),
}

impl UserKey {
    pub fn name(&self) -> &'static str {
        match self {
            UserKey::Id(_) => "user_id",
            UserKey::Email(_) => "email",
            UserKey::Phone(_) => "phone",
            UserKey::ExternalId(_) => "external_id",
            UserKey::PersonCode(_) => "person_code",
            UserKey::WalletAddress(_) => "wallet_address",
        }
    }
}

/// The scalar fields ListUsers sorts by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortField {
    #[default]
    CreatedAt,
    UpdatedAt,
    Email,
    Phone,
    ExternalId,
    FirstName,
    LastName,
    IdentifierEmail,
    UserId,
    /// Inactive users first (ascending).
    Active,
    Locale,
    /// The user's account address: the lowest address of their wallets ("" without one).
    AccountAddress,
}

impl SortField {
    /// The sort key as a text expression over a row of `rm_users`: the database both orders
    /// by it and hands it back for the cursor, so the two always agree.
    fn expr(self) -> &'static str {
        match self {
            SortField::CreatedAt => "COALESCE(created_at, '')",
            SortField::UpdatedAt => "COALESCE(updated_at, '')",
            SortField::Email => "COALESCE(email, '')",
            SortField::Phone => "COALESCE(phone, '')",
            SortField::ExternalId => "COALESCE(external_id, '')",
            SortField::FirstName => "COALESCE(first_name, '')",
            SortField::LastName => "COALESCE(last_name, '')",
            SortField::IdentifierEmail => "COALESCE(identifier_email, '')",
            SortField::UserId => "user_id",
            SortField::Active => "CAST(active AS TEXT)",
            SortField::Locale => "COALESCE(locale, '')",
            SortField::AccountAddress => {
                "COALESCE((SELECT MIN(w.address) FROM rm_user_wallets w
                            WHERE w.tenant = rm_users.tenant AND w.user_id = rm_users.user_id), '')"
            }
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct ListUsers {
    pub search: Option<String>,
    pub active: Option<bool>,
    pub sort: SortField,
    pub descending: bool,
    pub limit: u32,
    /// 1-based page; ignored when a cursor is given.
    pub page: Option<u32>,
    pub cursor: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct UserPage {
    pub users: Vec<DirectoryUser>,
    /// Pass back to read the next page; `None` on the last one.
    pub next_cursor: Option<String>,
    /// Users matching the filters, over all pages.
    pub total: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("invalid cursor")]
pub struct InvalidCursor;

pub(crate) fn encode_cursor(value: &str, id: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(serde_json::json!([value, id]).to_string())
}

pub(crate) fn decode_cursor(c: &str) -> Option<(String, String)> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(c)
        .ok()?;
    let v: (String, String) = serde_json::from_slice(&bytes).ok()?;
    Some(v)
}

fn escape_like(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

/// How many merges a lookup follows from the user holding a value to its survivor.
const MERGE_HOPS: usize = 8;

/// The EIP-55 form of a lowercase EVM address (`0x` and 40 hex digits), if it is one.
fn checksummed_form(address: &str) -> Option<String> {
    let bytes: [u8; 20] = hex::decode(address.strip_prefix("0x")?)
        .ok()?
        .try_into()
        .ok()?;
    Some(identity_domain::derive::checksummed(&bytes))
}

const USER_COLUMNS: &str = "user_id, email, phone, external_id, identifier_email, first_name, last_name, locale, active, roles, public_profile, merged_into, created_at, updated_at, version, details";

fn user_from_row(r: &AnyRow) -> Result<DirectoryUser> {
    let roles: String = r.try_get("roles")?;
    let profile: String = r.try_get("public_profile")?;
    let details: String = r.try_get("details")?;
    Ok(DirectoryUser {
        user_id: r.try_get("user_id")?,
        email: r.try_get("email")?,
        phone: r.try_get("phone")?,
        external_id: r.try_get("external_id")?,
        identifier_email: r.try_get("identifier_email")?,
        first_name: r.try_get("first_name")?,
        last_name: r.try_get("last_name")?,
        locale: r.try_get("locale")?,
        active: r.try_get::<i64, _>("active")? != 0,
        roles: json("roles", &roles)?,
        public_profile: json("public_profile", &profile)?,
        merged_into: r.try_get("merged_into")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
        version: count(r, "version")?,
        wallet_addresses: Vec::new(),
        wallets: Vec::new(),
        details: json("details", &details)?,
    })
}

impl Projections {
    async fn with_addresses(
        &self,
        tenant: &str,
        mut users: Vec<DirectoryUser>,
    ) -> Result<Vec<DirectoryUser>> {
        // One query for the whole page (at most MAX_LIMIT users), not one per user.
        for chunk in users.chunks_mut(MAX_LIMIT as usize) {
            let sql = self.q(&format!(
                "SELECT user_id, wallet_id, address, network FROM rm_user_wallets
                  WHERE tenant = $1 AND user_id IN ({})
                  ORDER BY user_id, wallet_id",
                crate::apply::key_marks(chunk.len())
            ));
            let keys: Vec<String> = chunk.iter().map(|u| u.user_id.clone()).collect();
            let query = crate::apply::for_keys(&sql, tenant, keys.iter().map(String::as_str));
            let mut wallets: std::collections::HashMap<String, Vec<DirectoryWallet>> =
                std::collections::HashMap::new();
            for row in query.fetch_all(self.pool()).await? {
                wallets
                    .entry(row.try_get(0)?)
                    .or_default()
                    .push(DirectoryWallet {
                        wallet_id: row.try_get(1)?,
                        address: row.try_get(2)?,
                        network: row.try_get(3)?,
                    });
            }
            for u in chunk.iter_mut() {
                u.wallets = wallets.remove(&u.user_id).unwrap_or_default();
                u.wallet_addresses = u.wallets.iter().map(|w| w.address.clone()).collect();
            }
        }
        Ok(users)
    }

    /// One user of the directory, by any of its keys.
    pub async fn find_user(&self, tenant: &str, key: &UserKey) -> Result<Option<DirectoryUser>> {
        let (filter, value) = match key {
            UserKey::Id(v) => ("user_id = $2", v),
            UserKey::Email(v) => ("email = $2", v),
            UserKey::Phone(v) => ("phone = $2", v),
            UserKey::ExternalId(v) => ("external_id = $2", v),
            UserKey::PersonCode(v) => (
                "user_id IN (SELECT user_id FROM rm_person_codes WHERE tenant = $1 AND person_code = $2)",
                v,
            ),
            // An EVM address is held as written when its wallet opened: lowercase (external
            // wallets, and internal ones before CREATE2) or EIP-55 mixed case. Both are asked.
            UserKey::WalletAddress(v) => (
                "user_id IN (SELECT user_id FROM rm_user_wallets WHERE tenant = $1 AND address IN ($2, $3))",
                v,
            ),
        };
        let sql = self.q(&format!(
            "SELECT {USER_COLUMNS} FROM rm_users WHERE tenant = $1 AND {filter} ORDER BY created_at, user_id LIMIT 1"
        ));
        let mut query = sqlx::query(&sql).bind(tenant).bind(value);
        if let UserKey::WalletAddress(v) = key {
            query = query.bind(checksummed_form(v).unwrap_or_else(|| v.clone()));
        }
        let row = query.fetch_optional(self.pool()).await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let mut user = user_from_row(&row)?;
        // A merged user's values belong to its survivor (docs/adr/0007): a lookup by a value
        // follows the merge, over a few hops at most (a survivor merged later in turn). By
        // id, the user asked for is the answer, merged or not.
        let hops = if matches!(key, UserKey::Id(_)) {
            0
        } else {
            MERGE_HOPS
        };
        for _ in 0..hops {
            let Some(into) = user.merged_into.clone() else {
                break;
            };
            let sql = self.q(&format!(
                "SELECT {USER_COLUMNS} FROM rm_users WHERE tenant = $1 AND user_id = $2"
            ));
            match sqlx::query(&sql)
                .bind(tenant)
                .bind(&into)
                .fetch_optional(self.pool())
                .await?
            {
                Some(row) => user = user_from_row(&row)?,
                None => break,
            }
        }
        Ok(self.with_addresses(tenant, vec![user]).await?.pop())
    }

    /// A page of the directory: search, filter, sort, then page or cursor.
    pub async fn list_users(
        &self,
        tenant: &str,
        q: &ListUsers,
    ) -> Result<std::result::Result<UserPage, InvalidCursor>> {
        let limit = if q.limit == 0 {
            DEFAULT_LIMIT
        } else {
            q.limit.min(MAX_LIMIT)
        };
        let sort_expr = q.sort.expr();
        let (dir, cmp) = if q.descending {
            ("DESC", "<")
        } else {
            ("ASC", ">")
        };
        let mut filters = vec!["tenant = $1".to_string()];
        let mut args: Vec<String> = vec![tenant.to_string()];
        if let Some(term) = q.search.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
            args.push(format!("%{}%", escape_like(&term.to_lowercase())));
            filters.push(format!("search LIKE ${} ESCAPE '\\'", args.len()));
        }
        if let Some(active) = q.active {
            filters.push(format!("active = {}", i64::from(active)));
        }
        // The total counts the filtered users, before any cursor or page.
        let count_sql = self.q(&format!(
            "SELECT COUNT(*) FROM rm_users WHERE {}",
            filters.join(" AND ")
        ));
        let count_args = args.clone();

        let mut offset = 0u64;
        if let Some(c) = q.cursor.as_deref().filter(|c| !c.is_empty()) {
            let Some((value, id)) = decode_cursor(c) else {
                return Ok(Err(InvalidCursor));
            };
            args.push(value);
            let v = args.len();
            args.push(id);
            let i = args.len();
            filters.push(format!(
                "({sort_expr} {cmp} ${v} OR ({sort_expr} = ${v} AND user_id {cmp} ${i}))"
            ));
        } else if let Some(page) = q.page.filter(|p| *p > 1) {
            offset = u64::from(page - 1) * u64::from(limit);
        }
        let sql = format!(
            "SELECT {USER_COLUMNS}, {sort_expr} AS sort_key FROM rm_users WHERE {}
              ORDER BY sort_key {dir}, user_id {dir} LIMIT {} OFFSET {offset}",
            filters.join(" AND "),
            limit + 1
        );
        let sql = self.q(&sql);
        let mut query = sqlx::query(&sql);
        for a in &args {
            query = query.bind(a.clone());
        }
        let rows = query.fetch_all(self.pool()).await?;
        let mut users = rows.iter().map(user_from_row).collect::<Result<Vec<_>>>()?;
        let more = users.len() > limit as usize;
        users.truncate(limit as usize);
        let next_cursor = match (more, rows.get(users.len().wrapping_sub(1)), users.last()) {
            (true, Some(row), Some(u)) => {
                let key: String = row.try_get("sort_key")?;
                Some(encode_cursor(&key, &u.user_id))
            }
            _ => None,
        };
        let first_page = offset == 0 && q.cursor.as_deref().is_none_or(str::is_empty);
        let total = if first_page && !more {
            // Everything the filters match is on this page: no need to count again.
            users.len() as u64
        } else {
            let mut count = sqlx::query_scalar::<_, i64>(&count_sql);
            for a in &count_args {
                count = count.bind(a.clone());
            }
            u64::try_from(count.fetch_one(self.pool()).await?).unwrap_or(0)
        };
        let users = self.with_addresses(tenant, users).await?;
        Ok(Ok(UserPage {
            users,
            next_cursor,
            total,
        }))
    }

    /// Public profiles of some users (unknown ids are left out), those `filter` matches.
    pub async fn public_profiles(
        &self,
        tenant: &str,
        ids: &[String],
        filter: Option<&ProfileFilter>,
    ) -> Result<Vec<(String, serde_json::Map<String, serde_json::Value>)>> {
        let mut out = Vec::new();
        for id in ids {
            let row: Option<String> = sqlx::query_scalar(
                &self.q("SELECT public_profile FROM rm_users WHERE tenant = $1 AND user_id = $2"),
            )
            .bind(tenant)
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
            if let Some(p) = row {
                let profile = json("public_profile", &p)?;
                if filter.is_none_or(|f| f.matches(&profile)) {
                    out.push((id.clone(), profile));
                }
            }
        }
        Ok(out)
    }

    /// A page of the tenant's public profiles by user id, those `filter` matches, after the
    /// user `page_token` names; and the token of the next page when there is one.
    pub async fn public_profiles_page(
        &self,
        tenant: &str,
        filter: Option<&ProfileFilter>,
        limit: u32,
        page_token: &str,
    ) -> Result<std::result::Result<(Vec<Profile>, Option<String>), InvalidCursor>> {
        let limit = if limit == 0 {
            DEFAULT_LIMIT
        } else {
            limit.min(MAX_LIMIT)
        } as usize;
        let mut after = String::new();
        if !page_token.is_empty() {
            let Some((_, id)) = decode_cursor(page_token) else {
                return Ok(Err(InvalidCursor));
            };
            after = id;
        }
        // The key's JSON spelling narrows the scan; the exact match is decided on the parsed
        // profile.
        let pattern = filter.map(|f| {
            let key = serde_json::to_string(&f.key).unwrap_or_default();
            format!("%{}:%", escape_like(&key))
        });
        let sql = self.q(&format!(
            "SELECT user_id, public_profile FROM rm_users
              WHERE tenant = $1 AND user_id > $2{}
              ORDER BY user_id LIMIT {SCAN_BATCH}",
            if pattern.is_some() {
                " AND public_profile LIKE $3 ESCAPE '\\'"
            } else {
                ""
            }
        ));
        let mut page: Vec<Profile> = Vec::new();
        loop {
            let mut query = sqlx::query(&sql).bind(tenant).bind(after.clone());
            if let Some(p) = &pattern {
                query = query.bind(p.clone());
            }
            let rows = query.fetch_all(self.pool()).await?;
            let full = rows.len() == SCAN_BATCH;
            for row in &rows {
                let id: String = row.try_get(0)?;
                let text: String = row.try_get(1)?;
                let profile = json("public_profile", &text)?;
                after = id.clone();
                if filter.is_none_or(|f| f.matches(&profile)) {
                    page.push((id, profile));
                    if page.len() > limit {
                        page.truncate(limit);
                        let next = page.last().map(|(id, _)| encode_cursor("", id));
                        return Ok(Ok((page, next)));
                    }
                }
            }
            if !full {
                return Ok(Ok((page, None)));
            }
        }
    }
}

/// A user id and their public profile.
pub type Profile = (String, serde_json::Map<String, serde_json::Value>);

/// Rows read at a time while a filtered listing fills a page.
const SCAN_BATCH: usize = 500;

/// ListPublicProfiles' filter: a top-level field of the profile and the value it must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileFilter {
    pub key: String,
    pub value: String,
}

impl ProfileFilter {
    /// Whether the profile's field holds the value: a string equal to it, or a number or
    /// boolean written as it.
    pub fn matches(&self, profile: &serde_json::Map<String, serde_json::Value>) -> bool {
        match profile.get(&self.key) {
            Some(serde_json::Value::String(s)) => *s == self.value,
            Some(v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_))) => {
                serde_json::from_str::<serde_json::Value>(&self.value)
                    .ok()
                    .as_ref()
                    == Some(v)
            }
            _ => false,
        }
    }
}
