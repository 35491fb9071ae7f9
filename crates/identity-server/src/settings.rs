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
//! | `IDENTITY_LOG_FORMAT` | `pretty` | `pretty` or `json` |
//! | `RUST_LOG` | `info` | log filter |

use std::net::SocketAddr;

use anyhow::Context as _;

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
        }
    }
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

impl Settings {
    /// Reads the environment over the defaults.
    pub fn from_env() -> anyhow::Result<Self> {
        let mut s = Self::default();
        if let Some(v) = var("IDENTITY_LISTEN_ADDR") {
            s.listen_addr = v
                .parse()
                .with_context(|| format!("IDENTITY_LISTEN_ADDR={v} is not host:port"))?;
        }
        if let Some(v) = var("DATABASE_URL") {
            s.database_url = v;
        }
        if let Some(v) = var("IDENTITY_DB_MAX_CONNECTIONS") {
            s.db_max_connections = v
                .parse()
                .with_context(|| format!("IDENTITY_DB_MAX_CONNECTIONS={v} is not a number"))?;
        }
        if let Some(v) = var("IDENTITY_AGGREGATE_CACHE") {
            s.aggregate_cache = v
                .parse()
                .with_context(|| format!("IDENTITY_AGGREGATE_CACHE={v} is not a number"))?;
        }
        if let Some(v) = var("IDENTITY_READ_CACHE") {
            s.read_cache = v
                .parse()
                .with_context(|| format!("IDENTITY_READ_CACHE={v} is not a number"))?;
        }
        if let Some(v) = var("IDENTITY_CODE_PEPPER") {
            s.code_pepper = v;
        }
        if let Some(v) = var("IDENTITY_CODE_TTL_SECS") {
            s.code_ttl_secs = v
                .parse()
                .with_context(|| format!("IDENTITY_CODE_TTL_SECS={v} is not a number"))?;
        }
        if let Some(v) = var("IDENTITY_SHUTDOWN_GRACE_SECS") {
            s.shutdown_grace_secs = v
                .parse()
                .with_context(|| format!("IDENTITY_SHUTDOWN_GRACE_SECS={v} is not a number"))?;
        }
        if let Some(v) = var("IDENTITY_ADMIN_ADDR") {
            s.admin_addr = v
                .parse()
                .with_context(|| format!("IDENTITY_ADMIN_ADDR={v} is not host:port"))?;
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
