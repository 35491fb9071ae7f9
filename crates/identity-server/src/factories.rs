//! The wallet factories of the EVM networks (`IDENTITY_WALLET_FACTORY`,
//! `IDENTITY_WALLET_FACTORIES`): where each network's smart contract wallets are deployed
//! from, so that a user's wallet address is the CREATE2 address it will have on chain.

use std::collections::HashMap;

use anyhow::Context as _;
use identity_domain::derive::WalletFactory;
use identity_domain::values::Network;

use crate::settings::{Environment, Settings};

/// Development's factory when none is configured: the deterministic deployment proxy found at
/// this address on most EVM chains, with the hash of an empty init code. Its addresses have
/// the right form and checksum, and no wallet will ever be deployed at them.
pub const DEVELOPMENT_FACTORY: &str = "0x4e59b44847b379578588920ca78fbf26c0b4956c:0xc5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470";

/// The configured factories: one per chain id, and one for every other EVM network.
#[derive(Debug, Clone, Default)]
pub struct Factories {
    default: Option<WalletFactory>,
    by_chain: HashMap<u64, WalletFactory>,
}

impl Factories {
    /// Reads and checks the settings (a malformed factory stops the start).
    pub fn from_settings(settings: &Settings) -> anyhow::Result<Self> {
        let default = match (&settings.wallet_factory, settings.environment) {
            (Some(raw), _) => Some(raw.as_str()),
            (None, Environment::Development) => Some(DEVELOPMENT_FACTORY),
            (None, Environment::Production) => None,
        };
        let default = default
            .map(WalletFactory::parse)
            .transpose()
            .map_err(|e| anyhow::anyhow!("IDENTITY_WALLET_FACTORY: {e}"))?;
        let mut by_chain = HashMap::new();
        for entry in settings
            .wallet_factories
            .as_deref()
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
        {
            let (chain, factory) = entry.split_once('=').with_context(|| {
                format!("IDENTITY_WALLET_FACTORIES: {entry:?} is not <chain id>=<factory>")
            })?;
            let chain: u64 = chain.trim().parse().with_context(|| {
                format!("IDENTITY_WALLET_FACTORIES: {chain:?} is not a chain id")
            })?;
            let factory = WalletFactory::parse(factory)
                .map_err(|e| anyhow::anyhow!("IDENTITY_WALLET_FACTORIES, chain {chain}: {e}"))?;
            by_chain.insert(chain, factory);
        }
        Ok(Self { default, by_chain })
    }

    /// The factory of a network: its own, else the default; none for Solana.
    pub fn for_network(&self, network: Network) -> Option<WalletFactory> {
        let chain = network.chain_id()?;
        self.by_chain.get(&chain).copied().or(self.default)
    }
}
