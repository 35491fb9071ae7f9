//! Configuration, with defaults that need no setup.
//!
//! Every setting is defined once, in [`definitions::SETTINGS`] (the README's configuration
//! table is checked against it). Values come from the defaults, then an optional TOML file
//! (`IDENTITY_CONFIG_FILE`, the same names), then the environment, layered with figment.

pub mod definitions;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Development bootstraps itself; production needs its keys configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    Development,
    Production,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub listen_addr: SocketAddr,
    pub database_url: String,
    pub db_max_connections: u32,
    /// Events' worth of aggregates kept in memory between commands.
    pub aggregate_cache: usize,
    /// Balance answers kept in memory until the balances read model moves.
    pub read_cache: usize,
    pub code_pepper: String,
    /// `IDENTITY_WALLET_FACTORY`: the factory of every EVM network without its own.
    pub wallet_factory: Option<String>,
    /// `IDENTITY_WALLET_FACTORIES`: `<chain id>=<factory>,…`, one network's own factory each.
    pub wallet_factories: Option<String>,
    pub code_ttl_secs: i64,
    pub log_json: bool,
    pub shutdown_grace_secs: u64,
    pub admin_addr: SocketAddr,
    /// Largest accepted request message, in bytes.
    pub max_message_bytes: usize,
    /// Largest response message, in bytes; pages of audit answers stop short of it.
    pub max_response_bytes: usize,
    /// Expensive calls (audit history and states, ListEvents, VerifyChain, ListUsers
    /// searches) running at once; more wait up to a second, then answer RESOURCE_EXHAUSTED.
    pub expensive_calls: usize,
    /// PostgreSQL `statement_timeout` of read-model queries and event listings, in ms.
    pub query_timeout_ms: u64,
    /// StreamEvents streams open at once per tenant, and per client connection.
    pub streams_per_tenant: usize,
    pub streams_per_connection: usize,
    /// Events a stream may fall behind the live feed before it is ended (RESOURCE_EXHAUSTED;
    /// the client resumes from its last position).
    pub stream_buffer: usize,
    pub environment: Environment,
    pub data_dir: PathBuf,
    /// The Ed25519 signing key; `None` means `<data_dir>/signing-key.pem` in development.
    pub signing_key_file: Option<PathBuf>,
    /// The master key of personal data; `None` means `<data_dir>/master.key` in development.
    pub master_key_file: Option<PathBuf>,
    /// Keys rotated out: they verify (and publish) but never sign.
    pub previous_signing_keys: Vec<PathBuf>,
    pub previous_master_key_files: Vec<PathBuf>,
    pub jwt_issuer: String,
    pub jwt_audience: String,
    pub trusted_issuers_file: Option<PathBuf>,
    pub reflection: bool,
    pub access_refresh_ms: u64,
    /// How often the checkpointer signs the log (ms); 0: never.
    pub checkpoint_interval_ms: u64,
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    pub tls_client_ca_file: Option<PathBuf>,
    pub allow_plaintext: bool,
    /// Password checks waiting for a hashing thread before more are refused.
    pub password_queue: usize,
    pub access_token_ttl_secs: u64,
    pub refresh_token_ttl_secs: i64,
    pub sign_in_per_minute: u32,
    pub code_requests_per_minute: u32,
    /// Whether ImportLegacyPassword is accepted (a migration tool).
    pub legacy_import: bool,
    pub nats_url: Option<String>,
    pub nats_subject: String,
    pub nats_stream: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen_addr: SocketAddr::from(([127, 0, 0, 1], 50051)),
            database_url: "sqlite://data/identity.db".into(),
            db_max_connections: 16,
            aggregate_cache: identity_store::DEFAULT_CACHE_CAPACITY,
            read_cache: identity_projections::DEFAULT_READ_CACHE,
            code_pepper: "identity-dev-pepper-change-me".into(),
            wallet_factory: None,
            wallet_factories: None,
            code_ttl_secs: 600,
            log_json: false,
            shutdown_grace_secs: 10,
            admin_addr: SocketAddr::from(([127, 0, 0, 1], 9464)),
            max_message_bytes: 1024 * 1024,
            max_response_bytes: 8 * 1024 * 1024,
            expensive_calls: 4,
            query_timeout_ms: 5_000,
            streams_per_tenant: 16,
            streams_per_connection: 4,
            stream_buffer: 4096,
            environment: Environment::Development,
            data_dir: PathBuf::from("data"),
            signing_key_file: None,
            master_key_file: None,
            previous_signing_keys: Vec::new(),
            previous_master_key_files: Vec::new(),
            jwt_issuer: "identity".into(),
            jwt_audience: "identity".into(),
            trusted_issuers_file: None,
            reflection: true,
            access_refresh_ms: 250,
            checkpoint_interval_ms: 10_000,
            tls_cert_file: None,
            tls_key_file: None,
            tls_client_ca_file: None,
            allow_plaintext: false,
            password_queue: 64,
            access_token_ttl_secs: 900,
            refresh_token_ttl_secs: 30 * 24 * 3600,
            sign_in_per_minute: 30,
            code_requests_per_minute: 10,
            legacy_import: true,
            nats_url: None,
            nats_subject: "identity.codes".into(),
            nats_stream: "IDENTITY_CODES".into(),
        }
    }
}

/// A variable parsed as `T`, if set.
/// The raw values of the settings: the optional file, then the environment over it. Names are
/// matched without regard to case; empty values count as unset.
#[derive(Debug, Default)]
pub struct Source(BTreeMap<String, String>);

impl Source {
    /// `IDENTITY_CONFIG_FILE` (if set) under the process environment.
    pub fn load() -> anyhow::Result<Self> {
        let file = std::env::var("IDENTITY_CONFIG_FILE")
            .ok()
            .filter(|v| !v.trim().is_empty());
        Self::layered(file.as_deref().map(std::path::Path::new), true)
    }

    /// The layers: `file` (TOML), then, when `environment`, the process environment.
    pub fn layered(file: Option<&std::path::Path>, environment: bool) -> anyhow::Result<Self> {
        use figment::providers::{Env, Format as _, Toml};
        let names: Vec<&str> = definitions::SETTINGS
            .iter()
            .flat_map(|s| s.names.iter().copied())
            .collect();
        let mut layers = figment::Figment::new();
        if let Some(path) = file {
            if !path.exists() {
                anyhow::bail!("IDENTITY_CONFIG_FILE {} does not exist", path.display());
            }
            layers = layers.merge(Toml::file(path));
        }
        if environment {
            layers = layers.merge(Env::raw().only(&names));
        }
        let values: BTreeMap<String, serde_json::Value> = layers
            .extract()
            .map_err(|e| anyhow::anyhow!("reading the settings: {e}"))?;
        let mut out = BTreeMap::new();
        for (key, value) in values {
            let name = key.to_ascii_uppercase();
            if !definitions::is_defined(&name) {
                anyhow::bail!(
                    "unknown setting {name} in IDENTITY_CONFIG_FILE (see README: Configuration)"
                );
            }
            let text = match value {
                serde_json::Value::String(s) => s,
                serde_json::Value::Array(items) => items
                    .iter()
                    .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_string))
                    .collect::<Vec<_>>()
                    .join(","),
                other => other.to_string(),
            };
            if !text.trim().is_empty() {
                out.insert(name, text);
            }
        }
        Ok(Self(out))
    }

    fn var(&self, name: &str) -> Option<String> {
        debug_assert!(
            definitions::is_defined(name),
            "{name} is not in definitions.rs"
        );
        self.0.get(name).cloned()
    }

    fn parsed<T: std::str::FromStr>(&self, name: &str, what: &str) -> anyhow::Result<Option<T>> {
        self.var(name)
            .map(|v| {
                v.parse()
                    .map_err(|_| anyhow::anyhow!("{name}={v} is not {what}"))
            })
            .transpose()
    }
}

impl Settings {
    /// Reads the configuration file and the environment over the defaults.
    pub fn from_env() -> anyhow::Result<Self> {
        Self::from_source(&Source::load()?)
    }

    /// The settings `source` gives, over the defaults.
    pub fn from_source(source: &Source) -> anyhow::Result<Self> {
        let mut s = Self::default();
        if let Some(v) = source.parsed("IDENTITY_LISTEN_ADDR", "host:port")? {
            s.listen_addr = v;
        }
        if let Some(v) = source.var("DATABASE_URL") {
            s.database_url = v;
        }
        if let Some(v) = source.parsed("IDENTITY_DB_MAX_CONNECTIONS", "a number")? {
            s.db_max_connections = v;
        }
        if let Some(v) = source.parsed("IDENTITY_AGGREGATE_CACHE", "a number")? {
            s.aggregate_cache = v;
        }
        if let Some(v) = source.parsed("IDENTITY_READ_CACHE", "a number")? {
            s.read_cache = v;
        }
        if let Some(v) = source.var("IDENTITY_CODE_PEPPER") {
            s.code_pepper = v;
        }
        s.wallet_factory = source.var("IDENTITY_WALLET_FACTORY");
        s.wallet_factories = source.var("IDENTITY_WALLET_FACTORIES");
        if let Some(v) = source.parsed("IDENTITY_CODE_TTL_SECS", "a number")? {
            s.code_ttl_secs = v;
        }
        if let Some(v) = source.parsed("IDENTITY_SHUTDOWN_GRACE_SECS", "a number")? {
            s.shutdown_grace_secs = v;
        }
        if let Some(v) = source.parsed("IDENTITY_ADMIN_ADDR", "host:port")? {
            s.admin_addr = v;
        }
        for (name, field) in [
            ("IDENTITY_MAX_MESSAGE_BYTES", &mut s.max_message_bytes),
            ("IDENTITY_MAX_RESPONSE_BYTES", &mut s.max_response_bytes),
            ("IDENTITY_EXPENSIVE_CALLS", &mut s.expensive_calls),
            ("IDENTITY_STREAMS_PER_TENANT", &mut s.streams_per_tenant),
            (
                "IDENTITY_STREAMS_PER_CONNECTION",
                &mut s.streams_per_connection,
            ),
            ("IDENTITY_STREAM_BUFFER", &mut s.stream_buffer),
            ("IDENTITY_PASSWORD_QUEUE", &mut s.password_queue),
        ] {
            if let Some(v) = source.parsed::<usize>(name, "a number")? {
                *field = v.max(1);
            }
        }
        if let Some(v) = source.parsed("IDENTITY_QUERY_TIMEOUT_MS", "a number")? {
            s.query_timeout_ms = v;
        }
        if let Some(v) = source.var("IDENTITY_ENVIRONMENT") {
            s.environment = match v.as_str() {
                "development" => Environment::Development,
                "production" => Environment::Production,
                other => {
                    anyhow::bail!("IDENTITY_ENVIRONMENT={other}: use development or production")
                }
            };
        }
        if let Some(v) = source.var("IDENTITY_DATA_DIR") {
            s.data_dir = PathBuf::from(v);
        }
        s.signing_key_file = source.var("IDENTITY_SIGNING_KEY_FILE").map(PathBuf::from);
        s.master_key_file = source.var("IDENTITY_MASTER_KEY_FILE").map(PathBuf::from);
        if let Some(v) = source.var("IDENTITY_PREVIOUS_SIGNING_KEYS") {
            s.previous_signing_keys = paths(&v);
        }
        if let Some(v) = source.var("IDENTITY_PREVIOUS_MASTER_KEY_FILES") {
            s.previous_master_key_files = paths(&v);
        }
        if let Some(v) = source.var("IDENTITY_JWT_ISSUER") {
            s.jwt_issuer = v;
        }
        if let Some(v) = source.var("IDENTITY_JWT_AUDIENCE") {
            s.jwt_audience = v;
        }
        s.trusted_issuers_file = source.var("IDENTITY_TRUSTED_ISSUERS").map(PathBuf::from);
        if let Some(v) = source.parsed("IDENTITY_REFLECTION", "true or false")? {
            s.reflection = v;
        }
        if let Some(v) = source.parsed::<u64>("IDENTITY_CHECKPOINT_INTERVAL_MS", "a number")? {
            s.checkpoint_interval_ms = v;
        }
        if let Some(v) = source.parsed::<u64>("IDENTITY_ACCESS_REFRESH_MS", "a number")? {
            s.access_refresh_ms = v.max(10);
        }
        s.tls_cert_file = source.var("IDENTITY_TLS_CERT_FILE").map(PathBuf::from);
        s.tls_key_file = source.var("IDENTITY_TLS_KEY_FILE").map(PathBuf::from);
        s.tls_client_ca_file = source.var("IDENTITY_TLS_CLIENT_CA_FILE").map(PathBuf::from);
        if let Some(v) = source.parsed("IDENTITY_ALLOW_PLAINTEXT", "true or false")? {
            s.allow_plaintext = v;
        }
        if let Some(v) = source.parsed::<u64>("IDENTITY_ACCESS_TOKEN_TTL_SECS", "a number")? {
            s.access_token_ttl_secs = v.max(1);
        }
        if let Some(v) = source.parsed::<i64>("IDENTITY_REFRESH_TOKEN_TTL_SECS", "a number")? {
            s.refresh_token_ttl_secs = v.max(1);
        }
        if let Some(v) = source.parsed::<u32>("IDENTITY_SIGN_IN_PER_MINUTE", "a number")? {
            s.sign_in_per_minute = v.max(1);
        }
        if let Some(v) = source.parsed::<u32>("IDENTITY_CODE_REQUESTS_PER_MINUTE", "a number")? {
            s.code_requests_per_minute = v.max(1);
        }
        if let Some(v) = source.parsed("IDENTITY_LEGACY_IMPORT", "true or false")? {
            s.legacy_import = v;
        }
        s.nats_url = source.var("IDENTITY_NATS_URL");
        if let Some(v) = source.var("IDENTITY_NATS_SUBJECT") {
            s.nats_subject = v;
        }
        if let Some(v) = source.var("IDENTITY_NATS_STREAM") {
            s.nats_stream = v;
        }
        if let Some(v) = source.var("IDENTITY_LOG_FORMAT") {
            s.log_json = match v.as_str() {
                "json" => true,
                "pretty" => false,
                other => anyhow::bail!("IDENTITY_LOG_FORMAT={other}: use json or pretty"),
            };
        }
        Ok(s)
    }

    /// The signing key's path: the configured one, or the development default.
    pub fn signing_key_path(&self) -> Option<PathBuf> {
        match (&self.signing_key_file, self.environment) {
            (Some(p), _) => Some(p.clone()),
            (None, Environment::Development) => Some(self.data_dir.join("signing-key.pem")),
            (None, Environment::Production) => None,
        }
    }

    /// The master key of personal data: `IDENTITY_MASTER_KEY_FILE`, or in development
    /// `<data dir>/master.key`, created on first start. Production has no default: a key
    /// made up on the spot would seal data no other replica could read.
    pub fn master_key(&self) -> anyhow::Result<identity_store::MasterKey> {
        let (path, create) = match (&self.master_key_file, self.environment) {
            (Some(path), _) => (path.clone(), false),
            (None, Environment::Development) => (self.data_dir.join("master.key"), true),
            (None, Environment::Production) => anyhow::bail!(
                "no master key: set IDENTITY_MASTER_KEY_FILE (64 hex characters, e.g. `openssl rand -hex 32`)"
            ),
        };
        let key = if create {
            identity_store::MasterKey::read_or_create(&path)
        } else {
            identity_store::MasterKey::read(&path)
        };
        Ok(key?)
    }

    /// Master keys rotated out (`IDENTITY_PREVIOUS_MASTER_KEY_FILES`): they still unwrap the
    /// keys they wrapped until `identity-admin rewrap-keys` has moved those.
    pub fn previous_master_keys(&self) -> anyhow::Result<Vec<identity_store::MasterKey>> {
        Ok(self
            .previous_master_key_files
            .iter()
            .map(|p| identity_store::MasterKey::read(p))
            .collect::<Result<_, _>>()?)
    }

    /// The database URL with any password masked, for logs.
    pub fn database_url_for_logs(&self) -> String {
        match self.database_url.split_once('@') {
            Some((creds, rest)) if creds.contains("://") => {
                let scheme = creds.split("://").next().unwrap_or("db");
                format!("{scheme}://***@{rest}")
            }
            _ => self.database_url.clone(),
        }
    }
}

/// A comma-separated list of file paths.
fn paths(list: &str) -> Vec<PathBuf> {
    list.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(contents: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!("identity-{}.toml", uuid::Uuid::new_v4()));
        std::fs::write(&path, contents).expect("writes");
        path
    }

    #[test]
    fn every_variable_the_loader_reads_is_defined() {
        // `Source::var` asserts (in tests) that each name it is asked for is defined.
        let s = Settings::from_source(&Source::default()).expect("defaults");
        assert_eq!(s.db_max_connections, Settings::default().db_max_connections);
    }

    #[test]
    fn a_configuration_file_sets_the_same_names() {
        let path = file(
            "IDENTITY_DB_MAX_CONNECTIONS = 32\nIDENTITY_LOG_FORMAT = \"json\"\nIDENTITY_PREVIOUS_SIGNING_KEYS = [\"a.pem\", \"b.pem\"]\nIDENTITY_REFLECTION = false\n",
        );
        let s = Settings::from_source(&Source::layered(Some(&path), false).expect("reads"))
            .expect("parses");
        assert_eq!(s.db_max_connections, 32);
        assert!(s.log_json);
        assert!(!s.reflection);
        assert_eq!(
            s.previous_signing_keys,
            vec![PathBuf::from("a.pem"), PathBuf::from("b.pem")]
        );
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn an_unknown_name_or_a_bad_value_in_the_file_is_refused_by_name() {
        let typo = file("IDENTITY_DB_MAX_CONECTIONS = 32\n");
        let e = Source::layered(Some(&typo), false).expect_err("refused");
        assert!(e.to_string().contains("IDENTITY_DB_MAX_CONECTIONS"), "{e}");
        let bad = file("IDENTITY_DB_MAX_CONNECTIONS = \"many\"\n");
        let e = Settings::from_source(&Source::layered(Some(&bad), false).expect("reads"))
            .expect_err("refused");
        assert!(
            e.to_string().contains("IDENTITY_DB_MAX_CONNECTIONS=many"),
            "{e}"
        );
        let _ = (std::fs::remove_file(typo), std::fs::remove_file(bad));
    }
}
