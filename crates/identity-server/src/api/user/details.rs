//! Profile details (issue 17) from and to the wire: each field checked on the way in, every
//! refused one reported at once.

use chrono::NaiveDate;
use identity_domain::values::{
    date_of_birth, AccountName, Address, CountryCode, Currency, Gender, PersonType, ProfileDetails,
    Text, Url,
};

use super::*;

/// An account address: an EVM address (given back EIP-55 checksummed) or a base58 one.
fn account_address(raw: &str) -> Result<String, identity_domain::ValueError> {
    let s = raw.trim();
    if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        let bytes: Option<[u8; 20]> = hex::decode(hex).ok().and_then(|b| b.try_into().ok());
        if let Some(bytes) = bytes {
            return Ok(identity_domain::derive::checksummed(&bytes));
        }
    } else if (32..=44).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Ok(s.to_string());
    }
    Err(identity_domain::ValueError::new(
        "an account address is 0x and 40 hex digits, or a base58 address",
    ))
}

/// The details of a request, with every invalid field noted in `v` under `prefix`.
pub(super) fn parse_details(
    v: &mut Violations,
    prefix: &str,
    d: pb::ProfileDetails,
    today: NaiveDate,
) -> ProfileDetails {
    let f = |n: &str| format!("{prefix}{n}");
    let a = d.address.unwrap_or_default();
    let address = Address {
        country: optional(v, &f("address.country"), &a.country, CountryCode::parse),
        city: optional(v, &f("address.city"), &a.city, Name::parse),
        street: optional(v, &f("address.street"), &a.street, Text::parse),
        post_index: optional(v, &f("address.post_index"), &a.post_index, Name::parse),
    };
    let gender = match pb::Gender::try_from(d.gender) {
        Ok(pb::Gender::Unspecified) => None,
        Ok(pb::Gender::Female) => Some(Gender::Female),
        Ok(pb::Gender::Male) => Some(Gender::Male),
        Ok(pb::Gender::Other) => Some(Gender::Other),
        Err(_) => {
            v.push(f("gender"), "unknown gender");
            None
        }
    };
    let person_type = match pb::PersonType::try_from(d.person_type) {
        Ok(pb::PersonType::Unspecified) => None,
        Ok(pb::PersonType::Natural) => Some(PersonType::Natural),
        Ok(pb::PersonType::Legal) => Some(PersonType::Legal),
        Err(_) => {
            v.push(f("person_type"), "unknown person type");
            None
        }
    };
    ProfileDetails {
        postal_address: (!address.is_empty()).then_some(address),
        date_of_birth: optional(v, &f("date_of_birth"), &d.date_of_birth, |s| {
            date_of_birth(s, today)
        }),
        gender,
        person_type,
        default_currency: optional(
            v,
            &f("default_currency"),
            &d.default_currency,
            Currency::parse,
        ),
        nickname: optional(v, &f("nickname"), &d.nickname, Name::parse),
        picture_url: optional(v, &f("picture_url"), &d.picture_url, Url::parse),
        instagram_account_id: optional(
            v,
            &f("instagram_account_id"),
            &d.instagram_account_id,
            AccountName::parse,
        ),
        google_account_name: optional(
            v,
            &f("google_account_name"),
            &d.google_account_name,
            AccountName::parse,
        ),
        account_address: optional(
            v,
            &f("account_address"),
            &d.account_address,
            account_address,
        ),
    }
}

/// The details on the wire; none when the user has none.
pub(crate) fn details_to_pb(d: &ProfileDetails) -> Option<pb::ProfileDetails> {
    if d.is_empty() {
        return None;
    }
    let text = |o: Option<&str>| o.unwrap_or_default().to_string();
    Some(pb::ProfileDetails {
        address: d.postal_address.as_ref().map(|a| pb::Address {
            country: text(a.country.as_ref().map(|c| c.as_str())),
            city: text(a.city.as_ref().map(|c| c.as_str())),
            street: text(a.street.as_ref().map(|s| s.as_str())),
            post_index: text(a.post_index.as_ref().map(|p| p.as_str())),
        }),
        date_of_birth: d
            .date_of_birth
            .map(|b| b.format("%Y-%m-%d").to_string())
            .unwrap_or_default(),
        gender: match d.gender {
            None => pb::Gender::Unspecified,
            Some(Gender::Female) => pb::Gender::Female,
            Some(Gender::Male) => pb::Gender::Male,
            Some(Gender::Other) => pb::Gender::Other,
        } as i32,
        person_type: match d.person_type {
            None => pb::PersonType::Unspecified,
            Some(PersonType::Natural) => pb::PersonType::Natural,
            Some(PersonType::Legal) => pb::PersonType::Legal,
        } as i32,
        default_currency: text(d.default_currency.as_ref().map(Currency::as_str)),
        nickname: text(d.nickname.as_ref().map(Name::as_str)),
        picture_url: text(d.picture_url.as_ref().map(|u| u.as_str())),
        instagram_account_id: text(d.instagram_account_id.as_ref().map(AccountName::as_str)),
        google_account_name: text(d.google_account_name.as_ref().map(AccountName::as_str)),
        account_address: text(d.account_address.as_deref()),
    })
}
