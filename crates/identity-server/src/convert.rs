//! Proto ⇄ domain conversion: every request field is parsed here, once, and every invalid
//! field is reported together as `BadRequest` violations.

use chrono::{DateTime, NaiveDate, Utc};
use identity_domain::error::ValueError;
use identity_domain::identification::{Document, DocumentKind, Identification};
use identity_domain::status_tier::StatusTier;
use identity_domain::user::User;
use identity_domain::values::{IdentificationLevel, JsonObject, Network, TokenAmount, TokenId};
use identity_domain::wallet::{OwnerType, Wallet, WalletStatus, WalletType};
use identity_domain::Violations;
use identity_proto::prost_types::{self, value::Kind};
use identity_proto::v1 as pb;

/// Parses a required field, recording a violation under `field` when it is empty or invalid.
pub fn required<T>(
    v: &mut Violations,
    field: &str,
    raw: &str,
    parse: impl FnOnce(&str) -> Result<T, ValueError>,
) -> Option<T> {
    noted(v, self::field(field, raw, parse))
}

/// What a field parsed to, or `None` with its violation recorded in `v`.
fn noted<T>(v: &mut Violations, parsed: Result<T, Refused>) -> Option<T> {
    parsed.map_err(|e| v.push(e.field, e.why)).ok()
}

/// A request field that did not parse: its name and why.
#[derive(Debug)]
pub struct Refused {
    pub field: String,
    pub why: String,
}

/// A required field: empty is "is required", otherwise what `parse` makes of it.
pub fn field<T>(
    name: &str,
    raw: &str,
    parse: impl FnOnce(&str) -> Result<T, ValueError>,
) -> Result<T, Refused> {
    if raw.trim().is_empty() {
        return Err(Refused {
            field: name.to_string(),
            why: "is required".into(),
        });
    }
    checked(name, parse(raw))
}

/// An optional field: empty means absent.
pub fn optional_field<T>(
    name: &str,
    raw: &str,
    parse: impl FnOnce(&str) -> Result<T, ValueError>,
) -> Result<Option<T>, Refused> {
    if raw.trim().is_empty() {
        return Ok(None);
    }
    checked(name, parse(raw)).map(Some)
}

/// A field that may be left out (`None`, left as it is); when present it must parse.
pub fn present<T>(
    name: &str,
    raw: Option<&str>,
    parse: impl FnOnce(&str) -> Result<T, ValueError>,
) -> Result<Option<T>, Refused> {
    raw.map(|s| field(name, s, parse)).transpose()
}

/// A value already parsed, as the field `name`.
pub fn checked<T>(name: &str, parsed: Result<T, ValueError>) -> Result<T, Refused> {
    parsed.map_err(|e| Refused {
        field: name.to_string(),
        why: e.0,
    })
}

/// Parses every field of a request at once and binds each in the caller's scope:
/// `parse_fields! { wallet = field("wallet_id", raw, WalletId::parse), ... }`. When any field
/// is refused, the handler returns INVALID_ARGUMENT naming every refused field (and, in the
/// `parse_fields! { v; ... }` form, every violation already recorded in `v`, such as one per
/// bad list item). The match is exhaustive: no field can be left unparsed.
macro_rules! parse_fields {
    ($v:ident; $($var:ident = $parsed:expr),+ $(,)?) => {
        let ($($var,)+) = match ($($parsed,)+) {
            ($(Ok($var),)+) if $v.is_empty() => ($($var,)+),
            ($($var,)+) => {
                let mut refused = identity_domain::Violations::new();
                $(
                    if let Err(e) = $var {
                        refused.push(e.field, e.why);
                    }
                )+
                refused.append($v);
                return Err(crate::error::ApiError::from(refused.into_error()).into());
            }
        };
    };
    ($($var:ident = $parsed:expr),+ $(,)?) => {
        let none = identity_domain::Violations::new();
        $crate::convert::parse_fields! { none; $($var = $parsed),+ }
    };
}
pub(crate) use parse_fields;

/// Parses an optional field: empty means absent.
pub fn optional<T>(
    v: &mut Violations,
    field: &str,
    raw: &str,
    parse: impl FnOnce(&str) -> Result<T, ValueError>,
) -> Option<T> {
    noted(v, optional_field(field, raw, parse)).flatten()
}

pub fn parse_date(raw: &str) -> Result<NaiveDate, ValueError> {
    NaiveDate::parse_from_str(raw.trim(), "%Y-%m-%d")
        .map_err(|_| ValueError::new("date must be YYYY-MM-DD"))
}

pub fn timestamp(t: Option<DateTime<Utc>>) -> Option<prost_types::Timestamp> {
    t.map(|t| prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0),
    })
}

fn value_to_json(v: prost_types::Value) -> serde_json::Value {
    match v.kind {
        None | Some(Kind::NullValue(_)) => serde_json::Value::Null,
        Some(Kind::BoolValue(b)) => serde_json::Value::Bool(b),
        Some(Kind::StringValue(s)) => serde_json::Value::String(s),
        Some(Kind::NumberValue(n)) => {
            // JSON numbers arrive as doubles; keep whole numbers whole.
            if n.fract() == 0.0 && n.abs() < 9.0e15 {
                serde_json::Value::from(n as i64)
            } else {
                serde_json::Number::from_f64(n).map_or(serde_json::Value::Null, Into::into)
            }
        }
        Some(Kind::StructValue(s)) => serde_json::Value::Object(struct_to_map(s)),
        Some(Kind::ListValue(l)) => {
            serde_json::Value::Array(l.values.into_iter().map(value_to_json).collect())
        }
    }
}

fn struct_to_map(s: prost_types::Struct) -> serde_json::Map<String, serde_json::Value> {
    s.fields
        .into_iter()
        .map(|(k, v)| (k, value_to_json(v)))
        .collect()
}

fn json_to_value(v: &serde_json::Value) -> prost_types::Value {
    let kind = match v {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(*b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        serde_json::Value::String(s) => Kind::StringValue(s.clone()),
        serde_json::Value::Array(a) => Kind::ListValue(prost_types::ListValue {
            values: a.iter().map(json_to_value).collect(),
        }),
        serde_json::Value::Object(o) => Kind::StructValue(json_to_struct(o)),
    };
    prost_types::Value { kind: Some(kind) }
}

pub fn json_to_struct(m: &serde_json::Map<String, serde_json::Value>) -> prost_types::Struct {
    prost_types::Struct {
        fields: m
            .iter()
            .map(|(k, v)| (k.clone(), json_to_value(v)))
            .collect(),
    }
}

/// A `Struct` field as a bounded JSON object; `None` when the field is absent.
pub fn json_object(
    v: &mut Violations,
    field: &str,
    s: Option<prost_types::Struct>,
) -> Option<JsonObject> {
    s.and_then(|s| v.check(field, JsonObject::from_map(struct_to_map(s))))
}

/// An optional value object as a proto string (empty when absent).
fn text<T: std::fmt::Display>(o: &Option<T>) -> String {
    o.as_ref().map(ToString::to_string).unwrap_or_default()
}

pub fn user_to_pb(u: &User, version: usize) -> pb::User {
    pb::User {
        user_id: u.id.map(|i| i.to_string()).unwrap_or_default(),
        email: text(&u.email),
        email_confirmed: u.email_confirmed,
        phone: text(&u.phone),
        phone_confirmed: u.phone_confirmed,
        external_id: text(&u.external_id),
        identifier_email: u.identifier_email.clone(),
        first_name: text(&u.first_name),
        last_name: text(&u.last_name),
        locale: text(&u.locale),
        custom_data: Some(json_to_struct(u.custom_data.as_map())),
        public_profile: Some(json_to_struct(u.public_profile.as_map())),
        active: u.active,
        roles: u.roles.iter().map(|r| r.to_string()).collect(),
        has_password: u.credential.is_some(),
        merged_into: u.merged_into.map(|i| i.to_string()).unwrap_or_default(),
        created_at: timestamp(u.registered_at),
        updated_at: timestamp(u.updated_at),
        version: version as u64,
        details: crate::api::user::details_to_pb(&u.details),
        // Set by `scoped_user`, which holds the tenant's key.
        email_hash: String::new(),
    }
}

/// One wire enum and its domain enum, variant for variant: `$from` reads the wire value
/// (refusing UNSPECIFIED and unknown numbers with `$refusal`), `$to` (of visibility `$vis`)
/// writes it.
macro_rules! wire_enum {
    ($vis:vis $from:ident, $to:ident, $pb:ident <-> $domain:ident, [$($v:ident),+ $(,)?], $refusal:literal) => {
        pub fn $from(v: i32) -> Result<$domain, ValueError> {
            match pb::$pb::try_from(v) {
                $(Ok(pb::$pb::$v) => Ok($domain::$v),)+
                Ok(pb::$pb::Unspecified) | Err(_) => Err(ValueError::new($refusal)),
            }
        }

        $vis fn $to(t: $domain) -> pb::$pb {
            match t {
                $($domain::$v => pb::$pb::$v,)+
            }
        }
    };
}

wire_enum!(
    owner_type_from_pb,
    owner_type_to_pb,
    OwnerType <-> OwnerType,
    [User, Business, Tenant],
    "owner_type must be OWNER_TYPE_USER, OWNER_TYPE_BUSINESS or OWNER_TYPE_TENANT"
);
wire_enum!(
    wallet_type_from_pb,
    wallet_type_to_pb,
    WalletType <-> WalletType,
    [Internal, External],
    "wallet_type must be WALLET_TYPE_INTERNAL or WALLET_TYPE_EXTERNAL"
);
wire_enum!(
    pub level_from_pb,
    level_to_pb,
    IdentificationLevel <-> IdentificationLevel,
    [Unidentified, SemiIdentified, BasicIdentified, Identified, FullyIdentified],
    "level must be one of the IDENTIFICATION_LEVEL_* values other than UNSPECIFIED"
);

pub fn wallet_status_to_pb(s: WalletStatus) -> pb::WalletStatus {
    match s {
        WalletStatus::Pending => pb::WalletStatus::Pending,
        WalletStatus::Active => pb::WalletStatus::Active,
        WalletStatus::Suspended => pb::WalletStatus::Suspended,
        WalletStatus::Closed => pb::WalletStatus::Closed,
    }
}

pub fn wallet_to_pb(w: &Wallet) -> pb::Wallet {
    pb::Wallet {
        wallet_id: w.id.map(|i| i.to_string()).unwrap_or_default(),
        owner_type: w.owner.as_ref().map_or(pb::OwnerType::Unspecified, |o| {
            owner_type_to_pb(o.owner_type)
        }) as i32,
        owner_id: w
            .owner
            .as_ref()
            .map(|o| o.owner_id.clone())
            .unwrap_or_default(),
        wallet_type: w
            .wallet_type
            .map_or(pb::WalletType::Unspecified, wallet_type_to_pb) as i32,
        status: wallet_status_to_pb(w.status) as i32,
        network: w.network.map(|n| n.to_string()).unwrap_or_default(),
        address: w.address.clone(),
        explorer_url: explorer_url(w.network, &w.address, w.explorer_url.as_deref()),
        chain_id: w.network.and_then(Network::chain_id).unwrap_or_default(),
        balances: w
            .balances
            .iter()
            .map(|(t, a)| pb::TokenBalance {
                token: t.to_string(),
                amount: a.to_string(),
            })
            .collect(),
        created_at: timestamp(w.opened_at),
        updated_at: timestamp(w.updated_at),
        version: w.version as u64,
    }
}

pub fn tier_to_pb(t: &StatusTier, version: usize) -> pb::StatusTier {
    pb::StatusTier {
        tier_id: t.id.map(|i| i.to_string()).unwrap_or_default(),
        name: text(&t.name),
        description: text(&t.description),
        min_balance: t.min_balance.to_string(),
        discount_percentage: t.discount.to_string(),
        image_url: text(&t.image_url),
        eligible_tokens: t.eligible_tokens.iter().map(|t| t.to_string()).collect(),
        retired: t.retired,
        created_at: timestamp(t.created_at),
        updated_at: timestamp(t.updated_at),
        version: version as u64,
    }
}

wire_enum!(
    document_kind_from_pb,
    document_kind_to_pb,
    DocumentKind <-> DocumentKind,
    [Passport, IdentityCard, DrivingLicence],
    "kind must be DOCUMENT_KIND_PASSPORT, DOCUMENT_KIND_IDENTITY_CARD or DOCUMENT_KIND_DRIVING_LICENCE"
);

fn document_to_pb(d: &Document) -> pb::Document {
    pb::Document {
        document_id: d.document_id.to_string(),
        kind: document_kind_to_pb(d.kind) as i32,
        number: d.number.clone(),
        issue_date: d.issue_date.to_string(),
        expiry_date: d.expiry_date.map(|e| e.to_string()).unwrap_or_default(),
        file: d.file.as_ref().map(|f| pb::DocumentFile {
            digest: f.digest.clone(),
            size: f.size,
            media_type: f.media_type.clone(),
            title: f
                .title
                .as_ref()
                .map(|t| t.as_str().to_string())
                .unwrap_or_default(),
            extension: f.extension.clone().unwrap_or_default(),
        }),
    }
}

pub fn identification_to_pb(
    user_id: &str,
    i: &Identification,
    version: usize,
) -> pb::Identification {
    pb::Identification {
        user_id: user_id.to_string(),
        identity: i.identity.as_ref().map(|id| pb::Identity {
            first_name: id.first_name.as_str().to_string(),
            surname: id.surname.as_str().to_string(),
            nationality: id.nationality.to_string(),
            person_code: id.person_code.code.clone(),
            person_code_country: id.person_code.country.to_string(),
            date_of_birth: id.date_of_birth.map(|d| d.to_string()).unwrap_or_default(),
        }),
        documents: i.documents.values().map(document_to_pb).collect(),
        pep: i.pep,
        level: level_to_pb(i.level) as i32,
        updated_at: timestamp(i.updated_at),
        version: version as u64,
        calculated_level: level_to_pb(i.calculated_level(Utc::now().date_naive())) as i32,
        pep_records: i
            .pep_records
            .iter()
            .map(|r| pb::PepRecord {
                position: r.position.as_str().to_string(),
                country: r.country.to_string(),
                since: r.since.map(|d| d.to_string()).unwrap_or_default(),
                until: r.until.map(|d| d.to_string()).unwrap_or_default(),
                relation: match r.relation {
                    identity_domain::identification::PepRelation::Holder => pb::PepRelation::Holder,
                    identity_domain::identification::PepRelation::FamilyMember => {
                        pb::PepRelation::FamilyMember
                    }
                    identity_domain::identification::PepRelation::CloseAssociate => {
                        pb::PepRelation::CloseAssociate
                    }
                } as i32,
            })
            .collect(),
        level_changes: i
            .level_changes
            .iter()
            .map(|c| pb::LevelChange {
                from: level_to_pb(c.from) as i32,
                to: level_to_pb(c.to) as i32,
                reason: c
                    .reason
                    .as_ref()
                    .map(|r| r.as_str().to_string())
                    .unwrap_or_default(),
                by: c.by.clone(),
                at: timestamp(Some(c.at)),
            })
            .collect(),
    }
}

/// A read model's RFC 3339 text as a protobuf timestamp.
pub fn timestamp_text(t: &str) -> Option<prost_types::Timestamp> {
    DateTime::parse_from_rfc3339(t)
        .ok()
        .map(|d| d.with_timezone(&Utc))
        .and_then(|d| timestamp(Some(d)))
}

pub fn directory_user_to_pb(u: &identity_projections::queries::DirectoryUser) -> pb::DirectoryUser {
    pb::DirectoryUser {
        user_id: u.user_id.clone(),
        email: u.email.clone().unwrap_or_default(),
        phone: u.phone.clone().unwrap_or_default(),
        external_id: u.external_id.clone().unwrap_or_default(),
        identifier_email: u.identifier_email.clone(),
        first_name: u.first_name.clone().unwrap_or_default(),
        last_name: u.last_name.clone().unwrap_or_default(),
        locale: u.locale.clone().unwrap_or_default(),
        active: u.active,
        roles: u.roles.clone(),
        wallet_addresses: u.wallet_addresses.clone(),
        wallets: u
            .wallets
            .iter()
            .map(|w| {
                let network = Network::parse(&w.network).ok();
                pb::UserWallet {
                    wallet_id: w.wallet_id.clone(),
                    address: w.address.clone(),
                    network: w.network.clone(),
                    chain_id: network.and_then(Network::chain_id).unwrap_or_default(),
                    explorer_url: explorer_url(network, &w.address, None),
                }
            })
            .collect(),
        merged_into: u.merged_into.clone().unwrap_or_default(),
        details: crate::api::user::details_to_pb(&u.details),
        created_at: timestamp_text(&u.created_at),
        updated_at: timestamp_text(&u.updated_at),
        version: u.version,
    }
}

pub fn balances_to_pb(b: &[(TokenId, TokenAmount)]) -> Vec<pb::TokenBalance> {
    b.iter()
        .map(|(token, amount)| pb::TokenBalance {
            token: token.to_string(),
            amount: amount.to_string(),
        })
        .collect()
}

pub fn wallet_view_to_pb(w: &identity_projections::queries::WalletView) -> pb::Wallet {
    pb::Wallet {
        wallet_id: w.wallet_id.clone(),
        owner_type: owner_type_to_pb(w.owner_type) as i32,
        owner_id: w.owner_id.clone(),
        wallet_type: wallet_type_to_pb(w.wallet_type) as i32,
        status: wallet_status_to_pb(w.status) as i32,
        network: w.network.clone(),
        address: w.address.clone(),
        explorer_url: view_explorer_url(w),
        chain_id: view_chain_id(w),
        balances: balances_to_pb(&w.balances),
        created_at: timestamp_text(&w.created_at),
        updated_at: timestamp_text(&w.updated_at),
        version: w.version,
    }
}

pub fn wallet_balances_to_pb(w: &identity_projections::queries::WalletView) -> pb::WalletBalances {
    pb::WalletBalances {
        wallet_id: w.wallet_id.clone(),
        network: w.network.clone(),
        address: w.address.clone(),
        status: wallet_status_to_pb(w.status) as i32,
        balances: balances_to_pb(&w.balances),
        explorer_url: view_explorer_url(w),
        chain_id: view_chain_id(w),
    }
}

/// Where to look a wallet up: the URL its event recorded, else the network table's (so a
/// wallet opened before its network was known gets one too); empty when neither has one.
fn explorer_url(network: Option<Network>, address: &str, recorded: Option<&str>) -> String {
    recorded
        .map(str::to_string)
        .or_else(|| network.and_then(|n| n.explorer_url(address)))
        .unwrap_or_default()
}

fn view_explorer_url(w: &identity_projections::queries::WalletView) -> String {
    explorer_url(
        Network::parse(&w.network).ok(),
        &w.address,
        w.explorer_url.as_deref(),
    )
}

fn view_chain_id(w: &identity_projections::queries::WalletView) -> u64 {
    Network::parse(&w.network)
        .ok()
        .and_then(Network::chain_id)
        .unwrap_or_default()
}

/// Per-token sums over several wallets, exact (`u128`; saturating, which a sum of valid
/// balances of one user never reaches in practice).
pub fn totals(wallets: &[identity_projections::queries::WalletView]) -> Vec<pb::TokenBalance> {
    let mut sums: std::collections::BTreeMap<&str, u128> = std::collections::BTreeMap::new();
    for w in wallets {
        for (token, amount) in &w.balances {
            let e = sums.entry(token.as_str()).or_default();
            *e = e.saturating_add(amount.value());
        }
    }
    sums.into_iter()
        .map(|(token, amount)| pb::TokenBalance {
            token: token.to_string(),
            amount: amount.to_string(),
        })
        .collect()
}

pub fn tier_view_to_pb(t: &identity_projections::queries::TierView) -> pb::StatusTier {
    pb::StatusTier {
        tier_id: t.tier_id.clone(),
        name: t.name.clone(),
        description: t.description.clone().unwrap_or_default(),
        min_balance: t.min_balance.clone(),
        discount_percentage: t.discount.clone(),
        image_url: t.image_url.clone().unwrap_or_default(),
        eligible_tokens: t.eligible_tokens.clone(),
        retired: t.retired,
        created_at: timestamp_text(&t.created_at),
        updated_at: timestamp_text(&t.updated_at),
        version: t.version,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ApiResult;
    use identity_domain::DomainError;

    fn number(s: &str) -> Result<u8, ValueError> {
        s.trim()
            .parse()
            .map_err(|_| ValueError::new("must be a number"))
    }

    fn request(a: &str, b: &str, list_ok: bool) -> ApiResult<(u8, Option<u8>)> {
        let mut v = Violations::new();
        if !list_ok {
            v.push("items[2]", "is bad");
        }
        parse_fields! { v;
            a = field("a", a, number),
            b = optional_field("b", b, number),
        }
        Ok((a, b))
    }

    fn refused(r: ApiResult<(u8, Option<u8>)>) -> Vec<(String, String)> {
        match r {
            Err(crate::error::ApiError::Domain(DomainError::InvalidArgument(list))) => {
                list.into_iter().map(|f| (f.field, f.description)).collect()
            }
            other => panic!("expected INVALID_ARGUMENT, got {other:?}"),
        }
    }

    #[test]
    fn every_refused_field_is_reported_at_once_and_nothing_is_left_unparsed() {
        assert_eq!(request("7", "", true).ok(), Some((7, None)));
        assert_eq!(request("7", "8", true).ok(), Some((7, Some(8))));
        assert_eq!(
            refused(request("", "x", false)),
            vec![
                ("a".to_string(), "is required".to_string()),
                ("b".to_string(), "must be a number".to_string()),
                ("items[2]".to_string(), "is bad".to_string()),
            ]
        );
        // Recorded violations refuse the request even when every field parsed.
        assert_eq!(
            refused(request("7", "8", false)),
            vec![("items[2]".to_string(), "is bad".to_string())]
        );
    }
}
