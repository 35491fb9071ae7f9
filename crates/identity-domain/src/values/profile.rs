//! A person's profile details beyond names (issue 17): postal address, date of birth, gender,
//! natural or legal person, options, nickname, picture and linked accounts. Every field is
//! optional; all of them are personal (sealed with the person's key).

use chrono::NaiveDate;

use super::*;

/// A postal address.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Address {
    pub country: Option<CountryCode>,
    pub city: Option<Name>,
    pub street: Option<Text>,
    pub post_index: Option<Name>,
}

impl Address {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Gender {
    Female,
    Male,
    Other,
}

/// Whether the user is a natural person or a legal one (a company).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PersonType {
    Natural,
    Legal,
}

/// An ISO 4217 currency code, such as EUR.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Currency(String);

impl Currency {
    pub fn parse(raw: &str) -> Result<Self, ValueError> {
        let s = raw.trim().to_ascii_uppercase();
        if s.len() == 3 && s.bytes().all(|b| b.is_ascii_uppercase()) {
            Ok(Self(s))
        } else {
            Err(ValueError::new(
                "currency must be an ISO 4217 code such as EUR",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An account name or id at another service (Instagram, Google): printable, no spaces.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AccountName(String);

impl AccountName {
    pub fn parse(raw: &str) -> Result<Self, ValueError> {
        let s = raw.trim();
        if !s.is_empty()
            && s.len() <= 254
            && !s.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            Ok(Self(s.to_string()))
        } else {
            Err(ValueError::new(
                "an account name is 1 to 254 characters without spaces",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A date of birth: a calendar date, not in the future, not before 1900.
pub fn date_of_birth(raw: &str, today: NaiveDate) -> Result<NaiveDate, ValueError> {
    let date = NaiveDate::parse_from_str(raw.trim(), "%Y-%m-%d")
        .map_err(|_| ValueError::new("date of birth must be a date such as 1986-01-31"))?;
    let earliest = NaiveDate::from_ymd_opt(1900, 1, 1).unwrap_or(NaiveDate::MIN);
    if date > today || date < earliest {
        return Err(ValueError::new(
            "date of birth must be between 1900-01-01 and today",
        ));
    }
    Ok(date)
}

/// The profile details of a user. A change replaces them whole.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProfileDetails {
    pub postal_address: Option<Address>,
    pub date_of_birth: Option<NaiveDate>,
    pub gender: Option<Gender>,
    pub person_type: Option<PersonType>,
    pub default_currency: Option<Currency>,
    pub nickname: Option<Name>,
    pub picture_url: Option<Url>,
    pub instagram_account_id: Option<AccountName>,
    pub google_account_name: Option<AccountName>,
    /// The user's own account (wallet) address, EIP-55 when it is an EVM one.
    pub account_address: Option<String>,
}

impl ProfileDetails {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_values_are_checked() {
        let today = NaiveDate::from_ymd_opt(2026, 12, 6).unwrap();
        assert_eq!(
            date_of_birth("1986-01-31", today).unwrap(),
            NaiveDate::from_ymd_opt(1986, 1, 31).unwrap()
        );
        assert!(date_of_birth("2030-01-01", today).is_err());
        assert!(date_of_birth("1899-12-31", today).is_err());
        assert!(date_of_birth("31.01.1986", today).is_err());
        assert_eq!(Currency::parse("eur").unwrap().as_str(), "EUR");
        assert!(Currency::parse("EURO").is_err());
        assert!(AccountName::parse("has space").is_err());
        // Erased details (an empty object) still decode.
        let empty: ProfileDetails = serde_json::from_str("{}").unwrap();
        assert!(empty.is_empty());
    }
}
