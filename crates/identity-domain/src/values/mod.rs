//! Value objects. Each one parses its input once (`parse`) and is valid from then on; the rest
//! of the domain never re-checks a string.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::ValueError;

mod json;
mod money;
mod network;
mod profile;

pub use json::{JsonObject, MAX_JSON_DEPTH};
pub use money::{Percentage, TokenAmount};
pub use network::{IdentificationLevel, KnownNetwork, Network, KNOWN_NETWORKS};
pub use profile::{
    date_of_birth, AccountName, Address, Currency, Gender, PersonType, ProfileDetails,
};

/// Limits that keep one request from filling the store.
pub const MAX_NAME_LEN: usize = 200;
pub const MAX_JSON_BYTES: usize = 16 * 1024;
pub const MAX_TEXT_LEN: usize = 2_000;

macro_rules! string_value {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

string_value!(
    /// A tenant: lowercase letters, digits, `-` and `_`, 1 to 63 characters.
    TenantId
);
string_value!(
    /// An email address, trimmed and lowercased so that lookups are case-insensitive.
    Email
);
string_value!(
    /// A phone number as digits with the country code, without `+` or `00`.
    Phone
);
string_value!(
    /// The caller's own id for a user.
    ExternalId
);
string_value!(
    /// A token: a contract address (`0x` + 40 hex, lowercased) or a symbol (A-Z, 0-9, 1-16).
    TokenId
);
string_value!(
    /// An absolute http(s) URL.
    Url
);
string_value!(
    /// A BCP 47-like locale such as `en` or `pt-BR`.
    Locale
);
string_value!(
    /// An ISO 3166-1 alpha-2 country code, uppercase.
    CountryCode
);
string_value!(
    /// A role id: letters, digits, `_`, `-`, `.` and `:`, kept as given (ids such as
    /// `rol_abCdeFghIjklMnmP` are case-sensitive).
    Role
);
string_value!(
    /// An idempotency key chosen by the caller.
    IdempotencyKey
);

fn non_blank(raw: &str, what: &str, max: usize) -> Result<String, ValueError> {
    let s = raw.trim();
    if s.is_empty() {
        return Err(ValueError::new(format!("{what} must not be empty")));
    }
    if s.chars().count() > max {
        return Err(ValueError::new(format!(
            "{what} must be at most {max} characters"
        )));
    }
    if s.chars().any(char::is_control) {
        return Err(ValueError::new(format!(
            "{what} must not contain control characters"
        )));
    }
    Ok(s.to_string())
}

impl TenantId {
    pub fn parse(raw: &str) -> Result<Self, ValueError> {
        let ok = !raw.is_empty()
            && raw.len() <= 63
            && raw
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if ok {
            Ok(Self(raw.to_string()))
        } else {
            Err(ValueError::new(
                "tenant id must be 1 to 63 characters of a-z, 0-9, '-' or '_'",
            ))
        }
    }
}

impl Email {
    pub fn parse(raw: &str) -> Result<Self, ValueError> {
        let s = raw.trim().to_lowercase();
        let bad = || ValueError::new("email must look like name@example.com");
        if s.len() > 254 || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad());
        }
        let (local, domain) = s.split_once('@').ok_or_else(bad)?;
        let domain_ok = domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !domain.contains("..")
            && !domain.contains('@');
        if local.is_empty() || local.len() > 64 || !domain_ok {
            return Err(bad());
        }
        Ok(Self(s))
    }
}

impl Phone {
    /// Accepts `+44 20 7946 0958`, `0044-20-7946-0958` or `442079460958`; keeps digits only.
    pub fn parse(raw: &str) -> Result<Self, ValueError> {
        let s = raw.trim();
        let s = s
            .strip_prefix('+')
            .or_else(|| s.strip_prefix("00"))
            .unwrap_or(s);
        if s.chars()
            .any(|c| !(c.is_ascii_digit() || matches!(c, ' ' | '-' | '(' | ')' | '.')))
        {
            return Err(ValueError::new(
                "phone must hold digits with the country code",
            ));
        }
        let digits: String = s.chars().filter(char::is_ascii_digit).collect();
        if !(8..=15).contains(&digits.len()) || digits.starts_with('0') {
            return Err(ValueError::new(
                "phone must be 8 to 15 digits starting with the country code",
            ));
        }
        Ok(Self(digits))
    }
}

impl ExternalId {
    pub fn parse(raw: &str) -> Result<Self, ValueError> {
        non_blank(raw, "external id", 128).map(Self)
    }
}

impl TokenId {
    pub fn parse(raw: &str) -> Result<Self, ValueError> {
        let s = raw.trim();
        if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
            if hex.len() == 40 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Ok(Self(format!("0x{}", hex.to_ascii_lowercase())));
            }
            return Err(ValueError::new(
                "token address must be 0x and 40 hex digits",
            ));
        }
        let upper = s.to_ascii_uppercase();
        if !upper.is_empty()
            && upper.len() <= 16
            && upper
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        {
            return Ok(Self(upper));
        }
        Err(ValueError::new(
            "token must be an address (0x + 40 hex) or a symbol of 1 to 16 letters or digits",
        ))
    }
}

impl Url {
    pub fn parse(raw: &str) -> Result<Self, ValueError> {
        let s = raw.trim();
        let rest = s
            .strip_prefix("https://")
            .or_else(|| s.strip_prefix("http://"));
        match rest {
            Some(r)
                if !r.is_empty()
                    && s.len() <= 2048
                    && !r.starts_with('/')
                    && !s.chars().any(|c| c.is_whitespace() || c.is_control()) =>
            {
                Ok(Self(s.to_string()))
            }
            _ => Err(ValueError::new("url must be an absolute http(s) URL")),
        }
    }
}

impl Locale {
    pub fn parse(raw: &str) -> Result<Self, ValueError> {
        let s = raw.trim().replace('_', "-");
        let mut parts = s.split('-');
        let lang = parts.next().unwrap_or_default();
        let lang_ok =
            (2..=3).contains(&lang.len()) && lang.bytes().all(|b| b.is_ascii_alphabetic());
        let rest: Vec<&str> = parts.collect();
        let rest_ok = rest.len() <= 2
            && rest.iter().all(|p| {
                (2..=8).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_alphanumeric())
            });
        if !(lang_ok && rest_ok) {
            return Err(ValueError::new("locale must look like en or pt-BR"));
        }
        let mut out = lang.to_ascii_lowercase();
        for p in rest {
            out.push('-');
            if p.len() == 2 {
                out.push_str(&p.to_ascii_uppercase());
            } else {
                out.push_str(p);
            }
        }
        Ok(Self(out))
    }
}

impl CountryCode {
    pub fn parse(raw: &str) -> Result<Self, ValueError> {
        let s = raw.trim().to_ascii_uppercase();
        if s.len() == 2 && s.bytes().all(|b| b.is_ascii_uppercase()) {
            Ok(Self(s))
        } else {
            Err(ValueError::new(
                "country must be an ISO 3166-1 alpha-2 code such as EE",
            ))
        }
    }
}

impl Role {
    pub fn parse(raw: &str) -> Result<Self, ValueError> {
        let s = raw.trim();
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'));
        if ok {
            Ok(Self(s.to_string()))
        } else {
            Err(ValueError::new(
                "role must be 1 to 64 characters of A-Z, a-z, 0-9, '_', '-', '.' or ':'",
            ))
        }
    }
}

impl IdempotencyKey {
    pub fn parse(raw: &str) -> Result<Self, ValueError> {
        let s = raw.trim();
        if s.is_empty() || s.len() > 128 || !s.is_ascii() || s.chars().any(|c| c.is_control()) {
            return Err(ValueError::new(
                "idempotency key must be 1 to 128 printable ASCII characters",
            ));
        }
        Ok(Self(s.to_string()))
    }
}

/// A person's name part (first name, surname): trimmed, bounded, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Name(String);

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Name {
    pub fn parse(raw: &str) -> Result<Self, ValueError> {
        non_blank(raw, "name", MAX_NAME_LEN).map(Self)
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Free text such as a description or a reason.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Text(String);

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Text {
    pub fn parse(raw: &str) -> Result<Self, ValueError> {
        non_blank(raw, "text", MAX_TEXT_LEN).map(Self)
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A person code (national id number) together with the country that issued it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PersonCode {
    pub country: CountryCode,
    pub code: String,
}

impl PersonCode {
    pub fn parse(country: &str, code: &str) -> Result<Self, ValueError> {
        let country = CountryCode::parse(country)?;
        let code: String = code
            .trim()
            .chars()
            .filter(|c| !matches!(c, ' ' | '-'))
            .collect::<String>()
            .to_ascii_uppercase();
        if code.is_empty() || code.len() > 32 || !code.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(ValueError::new(
                "person code must be 1 to 32 letters or digits",
            ));
        }
        Ok(Self { country, code })
    }

    /// The normalized value uniqueness is decided on.
    pub fn key(&self) -> String {
        format!("{}:{}", self.country, self.code)
    }
}

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            pub fn parse(raw: &str) -> Result<Self, ValueError> {
                Uuid::parse_str(raw.trim())
                    .map(Self)
                    .map_err(|_| ValueError::new(concat!(stringify!($name), " must be a UUID")))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

uuid_id!(
    /// A user's id, made by the server.
    UserId
);
uuid_id!(
    /// A wallet's id, made by the server.
    WalletId
);
uuid_id!(
    /// A status tier's id, made by the server.
    TierId
);
uuid_id!(
    /// An identity document's id, made by the server.
    DocumentId
);
uuid_id!(
    /// A sign-in session's id, made by the server.
    SessionId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalized_to_lowercase() {
        let e = Email::parse("  Ada.Lovelace@Example.COM ").unwrap();
        assert_eq!(e.as_str(), "ada.lovelace@example.com");
    }

    #[test]
    fn malformed_emails_are_refused() {
        for bad in [
            "",
            "ada",
            "ada@",
            "@example.com",
            "ada@example",
            "a b@example.com",
            "ada@.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn phones_keep_digits_with_the_country_code() {
        assert_eq!(
            Phone::parse("+44 20 7946 0958").unwrap().as_str(),
            "442079460958"
        );
        assert_eq!(
            Phone::parse("0044-20-7946-0958").unwrap().as_str(),
            "442079460958"
        );
        assert!(Phone::parse("12345").is_err());
        assert!(Phone::parse("+44 abc").is_err());
    }

    #[test]
    fn token_amounts_are_whole_decimal_strings() {
        assert_eq!(TokenAmount::parse("1500").unwrap().value(), 1500);
        assert_eq!(
            TokenAmount::parse("340282366920938463463374607431768211455")
                .unwrap()
                .value(),
            u128::MAX
        );
        for bad in [
            "",
            "-1",
            "1.5",
            "1e3",
            "340282366920938463463374607431768211456",
            " ",
        ] {
            assert!(TokenAmount::parse(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(TokenAmount::parse_positive("0").is_err());
    }

    #[test]
    fn token_amounts_serialize_as_strings() {
        let json = serde_json::to_string(&TokenAmount(u128::MAX)).unwrap();
        assert_eq!(json, "\"340282366920938463463374607431768211455\"");
    }

    #[test]
    fn percentages_are_exact_hundredths() {
        assert_eq!(Percentage::parse("12.5").unwrap().hundredths(), 1250);
        assert_eq!(Percentage::parse("100").unwrap().hundredths(), 10_000);
        assert_eq!(Percentage::parse("0.01").unwrap().hundredths(), 1);
        assert_eq!(Percentage::parse("12.5").unwrap().to_string(), "12.5");
        for bad in ["100.01", "-1", "1.234", "abc", "", "."] {
            assert!(Percentage::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn networks_parse_with_chain_ids() {
        assert_eq!(Network::parse("Polygon").unwrap(), Network::Polygon);
        assert_eq!(Network::parse("evm:8453").unwrap(), Network::Evm(8453));
        assert!(Network::parse("evm:0").is_err());
        assert!(Network::parse("bitcoin").is_err());
    }

    #[test]
    fn identification_levels_are_ordered() {
        use IdentificationLevel::*;
        assert!(Unidentified < SemiIdentified);
        assert!(SemiIdentified < BasicIdentified);
        assert!(BasicIdentified < Identified);
        assert!(Identified < FullyIdentified);
        assert_eq!(
            IdentificationLevel::parse("basic_identified").unwrap(),
            BasicIdentified
        );
    }

    #[test]
    fn tokens_are_addresses_or_symbols() {
        assert_eq!(TokenId::parse("usdc").unwrap().as_str(), "USDC");
        let addr = "0xABCDEF0123456789abcdef0123456789ABCDEF01";
        assert_eq!(
            TokenId::parse(addr).unwrap().as_str(),
            addr.to_ascii_lowercase()
        );
        assert!(TokenId::parse("0x123").is_err());
        assert!(TokenId::parse("US DC").is_err());
    }

    #[test]
    fn json_objects_are_bounded() {
        assert!(JsonObject::parse("{\"a\":1}").is_ok());
        assert!(JsonObject::parse("[1]").is_err());
        let big = format!("{{\"a\":\"{}\"}}", "x".repeat(MAX_JSON_BYTES));
        assert!(JsonObject::parse(&big).is_err());
    }

    #[test]
    fn locales_and_person_codes_are_normalized() {
        assert_eq!(Locale::parse("pt_br").unwrap().as_str(), "pt-BR");
        let pc = PersonCode::parse("ee", "3860-1010 123").unwrap();
        assert_eq!(pc.key(), "EE:38601010123");
        assert!(PersonCode::parse("EST", "1").is_err());
    }
}
