//! The test kit's keys and tokens: one signing key and one master key per test process,
//! written where the servers read them, and tokens minted with the signing key.

use std::path::PathBuf;

/// The test kit's signing key (one per test process), written where servers read it.
pub fn kit_key() -> &'static (PathBuf, identity_server::access::SigningKey) {
    static KEY: std::sync::OnceLock<(PathBuf, identity_server::access::SigningKey)> =
        std::sync::OnceLock::new();
    KEY.get_or_init(|| {
        let pem = identity_server::access::SigningKey::generate_pem().expect("a key");
        let path = std::env::temp_dir().join(format!(
            "identity-kit-key-{}.pem",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::write(&path, &pem).expect("write the kit key");
        let key = identity_server::access::SigningKey::from_pem(&pem).expect("the kit key");
        (path, key)
    })
}

/// The test kit's master key of personal data (one per test process), written where
/// servers read it (`IDENTITY_MASTER_KEY_FILE`).
pub fn kit_master_key_file() -> &'static PathBuf {
    static PATH: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PATH.get_or_init(|| {
        let path = std::env::temp_dir().join(format!(
            "identity-kit-master-{}.key",
            uuid::Uuid::new_v4().simple()
        ));
        identity_store::MasterKey::read_or_create(&path).expect("the kit's master key");
        path
    })
}

/// The kit's master key, for a test that opens the event log itself.
pub fn kit_master_key() -> identity_store::MasterKey {
    identity_store::MasterKey::read(kit_master_key_file()).expect("the kit's master key")
}

/// A token signed with the kit's key: `kind` admin, service or user, for `sub`.
pub fn mint(kind: &str, sub: &str, tenant: Option<&str>, permissions: &[&str]) -> String {
    mint_claims(identity_server::access::Claims {
        iss: "identity".into(),
        sub: sub.into(),
        aud: "identity".into(),
        exp: now_secs() + 3600,
        nbf: None,
        iat: Some(now_secs()),
        tenant: tenant.map(str::to_string),
        kind: kind.into(),
        permissions: permissions.iter().map(|p| p.to_string()).collect(),
        sid: None,
        roles: Vec::new(),
        scopes: None,
    })
}

pub fn mint_claims(claims: identity_server::access::Claims) -> String {
    kit_key().1.mint(&claims).expect("mint")
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// The development SUPER_ADMIN's token (the admin every development server bootstraps).
pub fn super_admin_token() -> &'static str {
    static TOKEN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TOKEN.get_or_init(|| {
        mint(
            "admin",
            &identity_server::access::bootstrap::dev_admin_id().to_string(),
            None,
            &[],
        )
    })
}

/// The actor the store records for calls made with [`req`].
pub fn kit_actor() -> String {
    format!(
        "admin:{}",
        identity_server::access::bootstrap::dev_admin_id()
    )
}
