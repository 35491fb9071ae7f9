//! The chains wallets live on, and identification (KYC) levels.

use super::*;

/// The chain a wallet lives on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "chain_id")]
pub enum Network {
    Polygon,
    Solana,
    Evm(u64),
}

impl Network {
    /// Parses `polygon`, `solana` or `evm:<chain id>`.
    pub fn parse(raw: &str) -> Result<Self, ValueError> {
        let s = raw.trim().to_ascii_lowercase();
        match s.as_str() {
            "polygon" => Ok(Self::Polygon),
            "solana" => Ok(Self::Solana),
            _ => s
                .strip_prefix("evm:")
                .and_then(|id| id.parse::<u64>().ok())
                .filter(|id| *id > 0)
                .map(Self::Evm)
                .ok_or_else(|| {
                    ValueError::new("network must be polygon, solana or evm:<chain id>")
                }),
        }
    }

    pub fn is_evm_like(self) -> bool {
        !matches!(self, Self::Solana)
    }

    /// Where a person can look the address up, for the chains we know an explorer of.
    pub fn explorer_url(self, address: &str) -> Option<String> {
        let base = match self {
            Self::Polygon | Self::Evm(137) => "https://polygonscan.com/address/",
            Self::Solana => "https://explorer.solana.com/address/",
            Self::Evm(1) => "https://etherscan.io/address/",
            Self::Evm(_) => return None,
        };
        Some(format!("{base}{address}"))
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Polygon => f.write_str("polygon"),
            Self::Solana => f.write_str("solana"),
            Self::Evm(id) => write!(f, "evm:{id}"),
        }
    }
}

/// The identification (KYC) level, in increasing order of assurance.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "snake_case")]
pub enum IdentificationLevel {
    #[default]
    Unidentified,
    SemiIdentified,
    BasicIdentified,
    Identified,
    FullyIdentified,
}

impl IdentificationLevel {
    pub fn parse(raw: &str) -> Result<Self, ValueError> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "unidentified" => Ok(Self::Unidentified),
            "semi_identified" => Ok(Self::SemiIdentified),
            "basic_identified" => Ok(Self::BasicIdentified),
            "identified" => Ok(Self::Identified),
            "fully_identified" => Ok(Self::FullyIdentified),
            _ => Err(ValueError::new(
                "level must be one of unidentified, semi_identified, basic_identified, identified, fully_identified",
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unidentified => "unidentified",
            Self::SemiIdentified => "semi_identified",
            Self::BasicIdentified => "basic_identified",
            Self::Identified => "identified",
            Self::FullyIdentified => "fully_identified",
        }
    }
}
