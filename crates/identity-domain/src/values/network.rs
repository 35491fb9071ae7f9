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

/// An EVM network the service knows by name, with its explorer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownNetwork {
    pub name: &'static str,
    pub chain_id: u64,
    /// The explorer's base URL; an address is looked up at `<base>/address/<address>`.
    pub explorer: &'static str,
}

/// The EVM networks known by name. Any other is `evm:<chain id>`, without an explorer.
pub const KNOWN_NETWORKS: &[KnownNetwork] = &[
    KnownNetwork {
        name: "polygon",
        chain_id: 137,
        explorer: "https://polygonscan.com",
    },
    KnownNetwork {
        name: "amoy",
        chain_id: 80002,
        explorer: "https://amoy.polygonscan.com",
    },
    KnownNetwork {
        name: "ethereum",
        chain_id: 1,
        explorer: "https://etherscan.io",
    },
    KnownNetwork {
        name: "sepolia",
        chain_id: 11_155_111,
        explorer: "https://sepolia.etherscan.io",
    },
    KnownNetwork {
        name: "base",
        chain_id: 8453,
        explorer: "https://basescan.org",
    },
    KnownNetwork {
        name: "base-sepolia",
        chain_id: 84532,
        explorer: "https://sepolia.basescan.org",
    },
];

impl Network {
    /// Parses `polygon`, `solana`, `evm:<chain id>`, or the name of a known EVM network
    /// (`amoy`, `ethereum`, `sepolia`, `base`, `base-sepolia`: `evm:<its chain id>`).
    pub fn parse(raw: &str) -> Result<Self, ValueError> {
        let s = raw.trim().to_ascii_lowercase();
        match s.as_str() {
            "polygon" => Ok(Self::Polygon),
            "solana" => Ok(Self::Solana),
            _ => {
                if let Some(known) = KNOWN_NETWORKS.iter().find(|n| n.name == s) {
                    return Ok(Self::Evm(known.chain_id));
                }
                s.strip_prefix("evm:")
                    .and_then(|id| id.parse::<u64>().ok())
                    .filter(|id| *id > 0)
                    .map(Self::Evm)
                    .ok_or_else(|| {
                        ValueError::new(
                            "network must be polygon, solana, evm:<chain id> or a known network \
                             (amoy, ethereum, sepolia, base, base-sepolia)",
                        )
                    })
            }
        }
    }

    pub fn is_evm_like(self) -> bool {
        !matches!(self, Self::Solana)
    }

    /// The EVM chain id (Polygon is 137); none for Solana.
    pub fn chain_id(self) -> Option<u64> {
        match self {
            Self::Polygon => Some(137),
            Self::Evm(id) => Some(id),
            Self::Solana => None,
        }
    }

    /// The known network this is, if any.
    pub fn known(self) -> Option<&'static KnownNetwork> {
        let id = self.chain_id()?;
        KNOWN_NETWORKS.iter().find(|n| n.chain_id == id)
    }

    /// Where a person can look the address up, for the networks with a known explorer.
    pub fn explorer_url(self, address: &str) -> Option<String> {
        let base = match self {
            Self::Solana => "https://explorer.solana.com",
            _ => self.known()?.explorer,
        };
        Some(format!("{base}/address/{address}"))
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
