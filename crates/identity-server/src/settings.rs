//! Configuration, from environment variables with defaults that need no setup.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `IDENTITY_LISTEN_ADDR` | `127.0.0.1:50051` | gRPC address (`:0` picks a free port) |
//! | `DATABASE_URL` | `sqlite://data/identity.db` | `postgres://…` or `sqlite://…` |
//! | `IDENTITY_DB_MAX_CONNECTIONS` | `16` | connection pool size |
//! | `IDENTITY_AGGREGATE_CACHE` | `100000` | events' worth of aggregates kept in memory between commands (`0`: off) |
//! | `IDENTITY_READ_CACHE` | `10000` | balance answers kept in memory until the balances read model moves (`0`: off) |
//! | `IDENTITY_CODE_PEPPER` | built-in (change it) | secret mixed into one-time code hashes |
//! | `IDENTITY_CODE_TTL_SECS` | `600` | lifetime of a one-time code |
//! | `IDENTITY_SHUTDOWN_GRACE_SECS` | `10` | time in-flight calls get after SIGTERM |
//! | `IDENTITY_ADMIN_ADDR` | `127.0.0.1:9464` | admin HTTP: `/metrics`, `/healthz`, `/readyz` |
//! | `IDENTITY_MAX_MESSAGE_BYTES` | `1048576` | largest request; larger ones answer RESOURCE_EXHAUSTED |
//! | `IDENTITY_MAX_RESPONSE_BYTES` | `8388608` | largest response; audit pages stop short of it |
//! | `IDENTITY_EXPENSIVE_CALLS` | `4` | audit replays, ListEvents, VerifyChain and ListUsers searches at once |
//! | `IDENTITY_QUERY_TIMEOUT_MS` | `5000` | PostgreSQL statement timeout of read queries and event listings |
//! | `IDENTITY_STREAMS_PER_TENANT` | `16` | StreamEvents streams open at once per tenant |
//! | `IDENTITY_STREAMS_PER_CONNECTION` | `4` | StreamEvents streams open at once per client connection |
//! | `IDENTITY_STREAM_BUFFER` | `4096` | events a stream may fall behind before it is ended |
//! | `IDENTITY_ENVIRONMENT` | `development` | `development` creates a `dev` tenant, a SUPER_ADMIN `admin@dev.local` and a signing key under `IDENTITY_DATA_DIR` on first start; `production` refuses to start without a signing key file or trusted issuers |
//! | `IDENTITY_DATA_DIR` | `./data` | where development keeps its signing key |
//! | `IDENTITY_SIGNING_KEY_FILE` | `<data dir>/signing-key.pem` | the service's Ed25519 token signing key (PKCS#8 PEM) |
//! | `IDENTITY_PREVIOUS_SIGNING_KEYS` | none | comma-separated PEM files of keys rotated out (public SPKI or private PKCS#8): their tokens still verify and their public keys stay in the JWKS; drop each once `IDENTITY_ACCESS_TOKEN_TTL_SECS` has passed since the rotation |
//! | `IDENTITY_JWT_ISSUER` | `identity` | `iss` of the tokens the service signs |
//! | `IDENTITY_JWT_AUDIENCE` | `identity` | `aud` every accepted token must carry |
//! | `IDENTITY_TRUSTED_ISSUERS` | none | a JSON file: `[{"issuer": "...", "jwks_file": "..."}]` of external issuers |
//! | `IDENTITY_REFLECTION` | `true` | serve gRPC reflection (it describes the API, never data) |
//! | `IDENTITY_ACCESS_REFRESH_MS` | `250` | how often each replica reloads changed tenants, keys and admins (revocations take effect within this) |
//! | `IDENTITY_TLS_CERT_FILE`, `IDENTITY_TLS_KEY_FILE` | none | PEM certificate chain and key: the gRPC and admin ports serve TLS |
//! | `IDENTITY_TLS_CLIENT_CA_FILE` | none | PEM CA: clients must present a certificate it signed (mutual TLS) |
//! | `IDENTITY_ALLOW_PLAINTEXT` | `false` | allow listening beyond loopback without TLS (logs a warning) |
//! | `IDENTITY_PASSWORD_QUEUE` | `64` | password checks waiting for a hashing thread; more answer RESOURCE_EXHAUSTED |
//! | `IDENTITY_ACCESS_TOKEN_TTL_SECS` | `900` | lifetime of the access tokens SignIn and Refresh issue |
//! | `IDENTITY_REFRESH_TOKEN_TTL_SECS` | `2592000` | a session ends this long after its last refresh |
//! | `IDENTITY_SIGN_IN_PER_MINUTE` | `30` | SignIn calls per minute per caller (client address) |
//! | `IDENTITY_CODE_REQUESTS_PER_MINUTE` | `10` | one-time code requests per minute per caller |
//! | `IDENTITY_LEGACY_IMPORT` | `true` | accept ImportLegacyPassword; turn off once migration is over |
//! | `IDENTITY_NATS_URL` | none | NATS server whose JetStream receives one-time codes (e.g. `nats://127.0.0.1:4222`); unset: not delivered, only `read:codes` holders see them |
//! | `IDENTITY_NATS_SUBJECT` | `identity.codes` | subject the codes are published on (`<subject>.<tenant>`) |
//! | `IDENTITY_NATS_STREAM` | `IDENTITY_CODES` | JetStream stream created for that subject if missing |
//! | `IDENTITY_LOG_FORMAT` | `pretty` | `pretty` or `json` |
//! | `RUST_LOG` | `info` | log filter |

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
    /// Keys rotated out: they verify (and publish) but never sign.
    pub previous_signing_keys: Vec<PathBuf>,
    pub jwt_issuer: String,
    pub jwt_audience: String,
    pub trusted_issuers_file: Option<PathBuf>,
    pub reflection: bool,
    pub access_refresh_ms: u64,
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
            previous_signing_keys: Vec::new(),
            jwt_issuer: "identity".into(),
            jwt_audience: "identity".into(),
            trusted_issuers_file: None,
            reflection: true,
            access_refresh_ms: 250,
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
fn parsed<T: std::str::FromStr>(name: &str, what: &str) -> anyhow::Result<Option<T>> {
    var(name)
        .map(|v| {
            v.parse()
                .map_err(|_| anyhow::anyhow!("{name}={v} is not {what}"))
        })
        .transpose()
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

impl Settings {
    /// Reads the environment over the defaults.
    pub fn from_env() -> anyhow::Result<Self> {
        let mut s = Self::default();
        if let Some(v) = parsed("IDENTITY_LISTEN_ADDR", "host:port")? {
            s.listen_addr = v;
        }
        if let Some(v) = var("DATABASE_URL") {
            s.database_url = v;
        }
        if let Some(v) = parsed("IDENTITY_DB_MAX_CONNECTIONS", "a number")? {
            s.db_max_connections = v;
        }
        if let Some(v) = parsed("IDENTITY_AGGREGATE_CACHE", "a number")? {
            s.aggregate_cache = v;
        }
        if let Some(v) = parsed("IDENTITY_READ_CACHE", "a number")? {
            s.read_cache = v;
        }
        if let Some(v) = var("IDENTITY_CODE_PEPPER") {
            s.code_pepper = v;
        }
        if let Some(v) = parsed("IDENTITY_CODE_TTL_SECS", "a number")? {
            s.code_ttl_secs = v;
        }
        if let Some(v) = parsed("IDENTITY_SHUTDOWN_GRACE_SECS", "a number")? {
            s.shutdown_grace_secs = v;
        }
        if let Some(v) = parsed("IDENTITY_ADMIN_ADDR", "host:port")? {
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
            if let Some(v) = parsed::<usize>(name, "a number")? {
                *field = v.max(1);
            }
        }
        if let Some(v) = parsed("IDENTITY_QUERY_TIMEOUT_MS", "a number")? {
            s.query_timeout_ms = v;
        }
        if let Some(v) = var("IDENTITY_ENVIRONMENT") {
            s.environment = match v.as_str() {
                "development" => Environment::Development,
                "production" => Environment::Production,
                other => {
                    anyhow::bail!("IDENTITY_ENVIRONMENT={other}: use development or production")
                }
            };
        }
        if let Some(v) = var("IDENTITY_DATA_DIR") {
            s.data_dir = PathBuf::from(v);
        }
        s.signing_key_file = var("IDENTITY_SIGNING_KEY_FILE").map(PathBuf::from);
        if let Some(v) = var("IDENTITY_PREVIOUS_SIGNING_KEYS") {
            s.previous_signing_keys = v
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(PathBuf::from)
                .collect();
        }
        if let Some(v) = var("IDENTITY_JWT_ISSUER") {
            s.jwt_issuer = v;
        }
        if let Some(v) = var("IDENTITY_JWT_AUDIENCE") {
            s.jwt_audience = v;
        }
        s.trusted_issuers_file = var("IDENTITY_TRUSTED_ISSUERS").map(PathBuf::from);
        if let Some(v) = parsed("IDENTITY_REFLECTION", "true or false")? {
            s.reflection = v;
        }
        if let Some(v) = parsed::<u64>("IDENTITY_ACCESS_REFRESH_MS", "a number")? {
            s.access_refresh_ms = v.max(10);
        }
        s.tls_cert_file = var("IDENTITY_TLS_CERT_FILE").map(PathBuf::from);
        s.tls_key_file = var("IDENTITY_TLS_KEY_FILE").map(PathBuf::from);
        s.tls_client_ca_file = var("IDENTITY_TLS_CLIENT_CA_FILE").map(PathBuf::from);
        if let Some(v) = parsed("IDENTITY_ALLOW_PLAINTEXT", "true or false")? {
            s.allow_plaintext = v;
        }
        if let Some(v) = parsed::<u64>("IDENTITY_ACCESS_TOKEN_TTL_SECS", "a number")? {
            s.access_token_ttl_secs = v.max(1);
        }
        if let Some(v) = parsed::<i64>("IDENTITY_REFRESH_TOKEN_TTL_SECS", "a number")? {
            s.refresh_token_ttl_secs = v.max(1);
        }
        if let Some(v) = parsed::<u32>("IDENTITY_SIGN_IN_PER_MINUTE", "a number")? {
            s.sign_in_per_minute = v.max(1);
        }
        if let Some(v) = parsed::<u32>("IDENTITY_CODE_REQUESTS_PER_MINUTE", "a number")? {
            s.code_requests_per_minute = v.max(1);
        }
        if let Some(v) = parsed("IDENTITY_LEGACY_IMPORT", "true or false")? {
            s.legacy_import = v;
        }
        s.nats_url = var("IDENTITY_NATS_URL");
        if let Some(v) = var("IDENTITY_NATS_SUBJECT") {
            s.nats_subject = v;
        }
        if let Some(v) = var("IDENTITY_NATS_STREAM") {
            s.nats_stream = v;
        }
        if let Some(v) = var("IDENTITY_LOG_FORMAT") {
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
