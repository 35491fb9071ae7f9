//! Deterministic derivations: the identifier email, wallet addresses and aggregate ids.
//! Each output is a function of its inputs alone, forever: changing one of these functions
//! changes the meaning of stored events, so add a new version instead of editing one.
//!
//! An id derived from a personal value (a claim id, the identifier email) is a keyed MAC
//! under the tenant's [`IdKey`] (version 2): a bare hash of an email or a phone number gives
//! the value back to anyone who hashes candidates, and these ids reach logs and traces.
//! Version 1 (a bare SHA-256) is kept for what stores written before it hold
//! (docs/adr/0006-personal-data-keys-and-erasure.md, "Keyed ids").

use hmac::{Hmac, Mac as _};
use sha2::{Digest, Sha256};

use uuid::Uuid;

use crate::error::ClaimKind;
use crate::values::{Email, ExternalId, Network, Phone, TenantId, WalletId};
use crate::wallet::{OwnerType, WalletType};

fn sha256(parts: &[&str]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        // Length-prefix every part so that ("ab", "c") and ("a", "bc") never collide.
        h.update((p.len() as u64).to_be_bytes());
        h.update(p.as_bytes());
    }
    h.finalize().into()
}

/// Feeds length-prefixed parts to a digest, so that ("ab", "c") and ("a", "bc") never collide.
fn keyed(key: &IdKey, parts: &[&str]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256>>::new_from_slice(&key.0)
        .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
    for p in parts {
        mac.update(&(p.len() as u64).to_be_bytes());
        mac.update(p.as_bytes());
    }
    mac.finalize().into_bytes().into()
}

/// A tenant's secret for the ids derived from its people's personal values: 32 random
/// bytes, kept by the store wrapped by the master key. Its `Debug` shows nothing of it.
#[derive(Clone, PartialEq, Eq)]
pub struct IdKey([u8; 32]);

impl IdKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
}

impl std::fmt::Debug for IdKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdKey(..)")
    }
}

/// What the identifier email is derived from, in order of preference.
#[derive(Debug, Clone, Copy)]
pub enum IdentifierSource<'a> {
    Email(&'a Email),
    ExternalId(&'a ExternalId),
    Phone(&'a Phone),
}

impl IdentifierSource<'_> {
    fn parts(self) -> (&'static str, String) {
        match self {
            IdentifierSource::Email(e) => ("email", e.as_str().to_string()),
            IdentifierSource::ExternalId(x) => ("external_id", x.as_str().to_string()),
            IdentifierSource::Phone(p) => ("phone", p.as_str().to_string()),
        }
    }
}

/// The identifier email of users registered before version 2: a bare hash. Kept because
/// their events hold it and their wallet addresses are salted with it.
pub fn identifier_email(tenant: &TenantId, source: IdentifierSource<'_>) -> String {
    let (kind, value) = source.parts();
    let digest = sha256(&["identifier-email/v1", tenant.as_str(), kind, &value]);
    format!("u{}@{}.id", hex::encode(&digest[..16]), tenant.as_str())
}

/// The user's identifier email (version 2): `u<32 hex>@<tenant>.id`, the salt of the user's
/// wallet addresses, keyed by the tenant's [`IdKey`]. Derived from the email when there is
/// one, else the external id, else the phone.
pub fn keyed_identifier_email(
    key: &IdKey,
    tenant: &TenantId,
    source: IdentifierSource<'_>,
) -> String {
    let (kind, value) = source.parts();
    let digest = keyed(key, &["identifier-email/v2", tenant.as_str(), kind, &value]);
    format!("u{}@{}.id", hex::encode(&digest[..16]), tenant.as_str())
}

/// Where a network's smart contract wallets are deployed from with CREATE2 (EIP-1014): the
/// factory's address and the keccak256 of the wallet's init code (creation code and
/// constructor arguments). Configured per network (`IDENTITY_WALLET_FACTORY`,
/// `IDENTITY_WALLET_FACTORIES`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalletFactory {
    pub address: [u8; 20],
    pub init_code_hash: [u8; 32],
}

impl WalletFactory {
    /// Parses `0x<40 hex>:0x<64 hex>`: the factory's address, then the init code's hash.
    pub fn parse(raw: &str) -> Result<Self, crate::error::ValueError> {
        let bad = || {
            crate::error::ValueError::new(
                "a wallet factory is 0x<factory address, 40 hex>:0x<init code hash, 64 hex>",
            )
        };
        let (address, hash) = raw.trim().split_once(':').ok_or_else(bad)?;
        let bytes = |text: &str| {
            text.strip_prefix("0x")
                .and_then(|h| hex::decode(h).ok())
                .ok_or_else(bad)
        };
        Ok(Self {
            address: bytes(address)?.try_into().map_err(|_| bad())?,
            init_code_hash: bytes(hash)?.try_into().map_err(|_| bad())?,
        })
    }
}

fn keccak256(parts: &[&[u8]]) -> [u8; 32] {
    use sha3::Digest as _;
    let mut h = sha3::Keccak256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// The address CREATE2 deploys to (EIP-1014):
/// `keccak256(0xff ‖ deployer ‖ salt ‖ init_code_hash)[12..]`.
pub fn create2_address(
    deployer: &[u8; 20],
    salt: &[u8; 32],
    init_code_hash: &[u8; 32],
) -> [u8; 20] {
    let digest = keccak256(&[&[0xff], deployer, salt, init_code_hash]);
    let mut address = [0u8; 20];
    address.copy_from_slice(&digest[12..]);
    address
}

/// An address in EIP-55 mixed case: a hex letter is upper case where the keccak256 of the
/// lowercase hex has a nibble of 8 or more.
pub fn checksummed(address: &[u8; 20]) -> String {
    let lower = hex::encode(address);
    let digest = keccak256(&[lower.as_bytes()]);
    let mixed: String = lower
        .chars()
        .enumerate()
        .map(|(i, c)| {
            let nibble = (digest[i / 2] >> if i % 2 == 0 { 4 } else { 0 }) & 0x0f;
            if c.is_ascii_alphabetic() && nibble >= 8 {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect();
    format!("0x{mixed}")
}

/// A user's smart contract wallet address (version 2) on an EVM network: CREATE2 from the
/// network's factory, salted by `keccak256(identifier)` (the owner's identifier email as
/// UTF-8, what the factory computes from it on deployment), EIP-55 checksummed. The same
/// owner, factory and init code give the same address on every chain, and no chain is
/// called.
pub fn counterfactual_address(identifier: &str, factory: &WalletFactory) -> String {
    let salt = keccak256(&[identifier.as_bytes()]);
    checksummed(&create2_address(
        &factory.address,
        &salt,
        &factory.init_code_hash,
    ))
}

/// A placeholder wallet address (version 1) for an owner's identifier on a network, kept
/// for Solana and for the wallets opened before version 2 (their events hold it): the same
/// owner and network always give the same address, and no chain is called.
pub fn wallet_address(identifier: &str, network: Network, salt_index: u32) -> String {
    let digest = sha256(&[
        "wallet-address/v1",
        identifier,
        &network.to_string(),
        &salt_index.to_string(),
    ]);
    if network.is_evm_like() {
        format!("0x{}", hex::encode(&digest[12..]))
    } else {
        bs58::encode(digest).into_string()
    }
}

/// The identifier that salts the wallet addresses of an owner that is not a user (a user's
/// wallets are salted with the user's identifier email).
pub fn owner_identifier(
    tenant: &TenantId,
    owner_type: OwnerType,
    owner_id: &str,
) -> Option<String> {
    match owner_type {
        OwnerType::User => None,
        OwnerType::Business => Some(format!("business:{owner_id}@{}", tenant.as_str())),
        OwnerType::Tenant => Some(format!("tenant:{owner_id}@{}", tenant.as_str())),
    }
}

const WALLET_NAMESPACE: Uuid = Uuid::from_u128(0x6a1f_3c2e_9b7d_4e51_8c0a_5d2f_7e4b_1a93);

/// The id of a wallet (version 1): a UUIDv5 of the tenant, owner, network, wallet type and
/// external address, so that opening the same wallet twice names the same aggregate. The
/// type names are spelled out here, as version 1 first wrote them, rather than taken from
/// the enums: renaming a variant must never move a wallet.
pub fn wallet_id(
    tenant: &TenantId,
    owner_type: OwnerType,
    owner_id: &str,
    network: Network,
    wallet_type: WalletType,
    external_address: Option<&str>,
) -> WalletId {
    let owner_type = match owner_type {
        OwnerType::User => "User",
        OwnerType::Business => "Business",
        OwnerType::Tenant => "Tenant",
    };
    let wallet_type = match wallet_type {
        WalletType::Internal => "Internal",
        WalletType::External => "External",
    };
    let name = format!(
        "{}|{owner_type}|{owner_id}|{network}|{wallet_type}|{}",
        tenant.as_str(),
        external_address.unwrap_or_default().to_ascii_lowercase()
    );
    WalletId(Uuid::new_v5(&WALLET_NAMESPACE, name.as_bytes()))
}

/// The id of the claim aggregate guarding one unique value in one tenant (version 2): a
/// keyed MAC under the tenant's [`IdKey`], so that no email or phone number can be read
/// back from aggregate ids, logs or traces. `<tenant>/c2.<64 hex>`.
pub fn claim_id(key: &IdKey, tenant: &TenantId, kind: ClaimKind, normalized_value: &str) -> String {
    let digest = keyed(
        key,
        &["claim/v2", tenant.as_str(), kind.as_str(), normalized_value],
    );
    format!("{}/{CLAIM_V2}{}", tenant.as_str(), hex::encode(digest))
}

/// The email's hash for a support tool (the upstream's `pylonEmailHash`): HMAC-SHA256 under
/// the tenant's [`IdKey`], as hex, so that the tool can match a user by email without the
/// service handing out emails, and nobody without the key can test guesses against it.
pub fn email_hash(key: &IdKey, email: &Email) -> String {
    hex::encode(keyed(key, &["email-hash/v1", email.as_str()]))
}

/// What starts the id part of a version 2 claim id.
pub const CLAIM_V2: &str = "c2.";

/// The claim id version 1 gave a value (a bare SHA-256): what stores written before
/// version 2 hold, and what `identity-admin seal-forward` moves to [`claim_id`].
pub fn legacy_claim_id(tenant: &TenantId, kind: ClaimKind, normalized_value: &str) -> String {
    let digest = sha256(&["claim/v1", tenant.as_str(), kind.as_str(), normalized_value]);
    format!("{}/{}", tenant.as_str(), hex::encode(digest))
}

/// The aggregate id of an entity: its tenant and its own id, so that a lookup in one tenant
/// can never load another tenant's aggregate.
pub fn aggregate_id(tenant: &TenantId, id: impl std::fmt::Display) -> String {
    format!("{}/{}", tenant.as_str(), id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(s: &str) -> TenantId {
        TenantId::parse(s).unwrap()
    }

    #[test]
    fn the_identifier_email_is_stable_forever() {
        let e = Email::parse("ada@example.com").unwrap();
        let id = identifier_email(&tenant("acme"), IdentifierSource::Email(&e));
        // Pinned: if this changes, every stored wallet address loses its meaning.
        assert_eq!(id, "ufc26da9ced3682f36df5f1430c530b38@acme.id");
        assert_eq!(
            id,
            identifier_email(&tenant("acme"), IdentifierSource::Email(&e))
        );
        assert_ne!(
            id,
            identifier_email(&tenant("other"), IdentifierSource::Email(&e))
        );
        assert!(id.ends_with("@acme.id") && id.len() == "u@acme.id".len() + 32);
    }

    #[test]
    fn wallet_addresses_are_deterministic_per_network() {
        let a = wallet_address("u1@acme.id", Network::Polygon, 0);
        assert_eq!(a, wallet_address("u1@acme.id", Network::Polygon, 0));
        assert!(a.starts_with("0x") && a.len() == 42);
        assert_ne!(a, wallet_address("u1@acme.id", Network::Evm(1), 0));
        assert_ne!(a, wallet_address("u1@acme.id", Network::Polygon, 1));
        let s = wallet_address("u1@acme.id", Network::Solana, 0);
        assert!((32..=44).contains(&s.len()));
    }

    fn bytes<const N: usize>(text: &str) -> [u8; N] {
        hex::decode(text.trim_start_matches("0x"))
            .unwrap()
            .try_into()
            .unwrap()
    }

    #[test]
    fn create2_gives_the_published_eip_1014_examples() {
        // The examples of EIP-1014 (deployer, salt, init code, address), checksummed.
        let examples = [
            (
                "0x0000000000000000000000000000000000000000",
                "0x0000000000000000000000000000000000000000000000000000000000000000",
                "00",
                "0x4D1A2e2bB4F88F0250f26Ffff098B0b30B26BF38",
            ),
            (
                "0xdeadbeef00000000000000000000000000000000",
                "0x0000000000000000000000000000000000000000000000000000000000000000",
                "00",
                "0xB928f69Bb1D91Cd65274e3c79d8986362984fDA3",
            ),
            (
                "0xdeadbeef00000000000000000000000000000000",
                "0x000000000000000000000000feed000000000000000000000000000000000000",
                "00",
                "0xD04116cDd17beBE565EB2422F2497E06cC1C9833",
            ),
            (
                "0x0000000000000000000000000000000000000000",
                "0x0000000000000000000000000000000000000000000000000000000000000000",
                "deadbeef",
                "0x70f2b2914A2a4b783FaEFb75f459A580616Fcb5e",
            ),
            (
                "0x00000000000000000000000000000000deadbeef",
                "0x00000000000000000000000000000000000000000000000000000000cafebabe",
                "deadbeef",
                "0x60f3f640a8508fC6a86d45DF051962668E1e8AC7",
            ),
        ];
        for (deployer, salt, init_code, expected) in examples {
            let init_code_hash = keccak256(&[&hex::decode(init_code).unwrap()]);
            let address = create2_address(&bytes(deployer), &bytes(salt), &init_code_hash);
            assert_eq!(checksummed(&address), expected);
        }
    }

    #[test]
    fn addresses_carry_the_eip_55_checksum() {
        // The examples of EIP-55.
        for expected in [
            "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
            "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
            "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
            "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
        ] {
            assert_eq!(
                checksummed(&bytes(&expected.to_ascii_lowercase())),
                expected
            );
        }
    }

    #[test]
    fn a_users_wallet_address_is_create2_from_the_factory_salted_by_the_identifier() {
        let factory = WalletFactory::parse(
            "0x00000000000000000000000000000000deadbeef:0x0000000000000000000000000000000000000000000000000000000000000001",
        )
        .unwrap();
        let id = "u0123456789abcdef0123456789abcdef@acme.id";
        let address = counterfactual_address(id, &factory);
        let salt = keccak256(&[id.as_bytes()]);
        assert_eq!(
            address,
            checksummed(&create2_address(
                &factory.address,
                &salt,
                &factory.init_code_hash
            ))
        );
        assert_eq!(address, counterfactual_address(id, &factory));
        assert_ne!(address, counterfactual_address("other@acme.id", &factory));
        assert!(WalletFactory::parse("0xdeadbeef:0x01").is_err());
        assert!(WalletFactory::parse("deadbeef").is_err());
    }

    #[test]
    fn wallet_ids_are_pinned_forever() {
        // Pinned: these are the ids wallets opened before the derivation moved here were
        // given; if one changes, an existing wallet can be opened a second time.
        let acme = tenant("acme");
        let id = |ot, owner, net, wt, addr| wallet_id(&acme, ot, owner, net, wt, addr).to_string();
        assert_eq!(
            id(
                OwnerType::User,
                "0b6f2a4e-1c1d-4f7a-9a53-2f1d6f3c9e10",
                Network::Polygon,
                WalletType::Internal,
                None
            ),
            "2d037bd6-e38d-5a09-b79b-545a22f48977"
        );
        assert_eq!(
            id(
                OwnerType::Business,
                "shop-42",
                Network::Evm(8453),
                WalletType::External,
                Some("0xABCDEF0000000000000000000000000000000001")
            ),
            "a6c330f3-34e7-5bca-94aa-679408772507"
        );
        assert_eq!(
            id(
                OwnerType::Tenant,
                "treasury",
                Network::Solana,
                WalletType::Internal,
                None
            ),
            "1c47eb8d-e6bd-591e-bfd5-3850d2e6e826"
        );
        assert_eq!(
            owner_identifier(&acme, OwnerType::Business, "shop-42").as_deref(),
            Some("business:shop-42@acme")
        );
        assert_eq!(owner_identifier(&acme, OwnerType::User, "x"), None);
    }

    #[test]
    fn claim_ids_hide_the_value_and_separate_tenants() {
        let k = IdKey::from_bytes([1; 32]);
        let a = claim_id(&k, &tenant("acme"), ClaimKind::Email, "ada@example.com");
        assert!(!a.contains("ada"));
        assert_ne!(
            a,
            claim_id(&k, &tenant("beta"), ClaimKind::Email, "ada@example.com")
        );
        assert_ne!(
            a,
            claim_id(&k, &tenant("acme"), ClaimKind::Phone, "ada@example.com")
        );
    }

    #[test]
    fn keyed_ids_are_pinned_and_depend_on_the_key() {
        // Pinned: if these change, every claim of every store stops guarding its value and
        // every later user's wallet addresses move. Both values were computed apart from
        // this code, with Python's hmac module over the same length-prefixed parts.
        let k = IdKey::from_bytes([7; 32]);
        let acme = tenant("acme");
        let e = Email::parse("ada@example.com").unwrap();
        assert_eq!(
            claim_id(&k, &acme, ClaimKind::Email, "ada@example.com"),
            "acme/c2.9af4d3951efe91b522fc43f79650ee7f47da41d07a1f0b8d0375f28fd74fdf80"
        );
        assert_eq!(
            keyed_identifier_email(&k, &acme, IdentifierSource::Email(&e)),
            "ud80d4781ea3054675afcc2cf8569fee0@acme.id"
        );
        // Without the key, the value cannot be found by hashing candidates: neither the bare
        // hash of version 1 nor another tenant's key gives the same id.
        let other = IdKey::from_bytes([8; 32]);
        assert_ne!(
            claim_id(&k, &acme, ClaimKind::Email, "ada@example.com"),
            claim_id(&other, &acme, ClaimKind::Email, "ada@example.com")
        );
        assert_ne!(
            claim_id(&k, &acme, ClaimKind::Email, "ada@example.com").trim_start_matches("acme/c2."),
            legacy_claim_id(&acme, ClaimKind::Email, "ada@example.com").trim_start_matches("acme/")
        );
        assert_ne!(
            keyed_identifier_email(&k, &acme, IdentifierSource::Email(&e)),
            identifier_email(&acme, IdentifierSource::Email(&e))
        );
        assert_eq!(format!("{k:?}"), "IdKey(..)");
    }
}
