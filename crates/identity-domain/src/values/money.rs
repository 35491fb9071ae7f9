//! Token amounts (integers of the smallest unit) and percentages: never floats.

use super::*;

/// An amount of a token in its smallest unit. Never a float.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct TokenAmount(pub u128);

impl TokenAmount {
    pub const ZERO: Self = Self(0);

    /// Parses a decimal string of the smallest unit (`"1500"`); no sign, no fraction.
    pub fn parse(raw: &str) -> Result<Self, ValueError> {
        let s = raw.trim();
        if s.is_empty() || s.len() > 39 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ValueError::new(
                "amount must be a decimal string of whole smallest units, such as \"1500\"",
            ));
        }
        s.parse::<u128>()
            .map(Self)
            .map_err(|_| ValueError::new("amount is too large"))
    }

    /// Parses an amount that must be greater than zero (credits and debits).
    pub fn parse_positive(raw: &str) -> Result<Self, ValueError> {
        let a = Self::parse(raw)?;
        if a.0 == 0 {
            return Err(ValueError::new("amount must be greater than zero"));
        }
        Ok(a)
    }

    pub fn value(self) -> u128 {
        self.0
    }
}

impl fmt::Display for TokenAmount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

// u128 does not survive a JSON round trip through every reader (JavaScript, PostgreSQL's json
// functions read numbers as doubles), so amounts are stored as decimal strings.
impl Serialize for TokenAmount {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0.to_string())
    }
}

impl<'de> Deserialize<'de> for TokenAmount {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A discount in hundredths of a percent: `12.5%` is 1250. Exact; 0 to 100%.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(transparent)]
pub struct Percentage(u16);

impl Percentage {
    pub const ZERO: Self = Self(0);

    pub fn parse(raw: &str) -> Result<Self, ValueError> {
        let bad =
            || ValueError::new("discount must be a decimal from 0 to 100 with at most 2 decimals");
        let s = raw.trim();
        let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
        if whole.is_empty()
            || whole.len() > 3
            || frac.len() > 2
            || !whole.bytes().all(|b| b.is_ascii_digit())
            || !frac.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(bad());
        }
        let whole: u16 = whole.parse().map_err(|_| bad())?;
        let frac: u16 = format!("{frac:0<2}").parse().map_err(|_| bad())?;
        let hundredths = whole * 100 + frac;
        if hundredths > 10_000 {
            return Err(bad());
        }
        Ok(Self(hundredths))
    }

    pub fn hundredths(self) -> u16 {
        self.0
    }
}

impl fmt::Display for Percentage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (w, h) = (self.0 / 100, self.0 % 100);
        if h == 0 {
            write!(f, "{w}")
        } else if h % 10 == 0 {
            write!(f, "{w}.{}", h / 10)
        } else {
            write!(f, "{w}.{h:02}")
        }
    }
}
