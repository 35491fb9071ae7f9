//! Every setting, defined once: its variable (the same name in the configuration file), its
//! default and its meaning, as the README's configuration table shows them. The loader reads
//! no other name, and a test fails when the README's table and this list differ.

/// One row of the configuration table (a row may name two variables that go together).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    pub names: &'static [&'static str],
    pub default: &'static str,
    pub meaning: &'static str,
}

pub const SETTINGS: &[Setting] = &[
    Setting {
        names: &["IDENTITY_CONFIG_FILE"],
        default: "unset",
        meaning: "a TOML file of these same variables (`IDENTITY_DB_MAX_CONNECTIONS = 32`); the environment overrides it, and an unknown name in it is refused",
    },
    Setting {
        names: &["IDENTITY_LISTEN_ADDR"],
        default: "`127.0.0.1:50051`",
        meaning: "gRPC address; port `0` picks a free one",
    },
    Setting {
        names: &["DATABASE_URL"],
        default: "`sqlite://data/identity.db`",
        meaning: "`postgres://…` or `sqlite://…`",
    },
    Setting {
        names: &["IDENTITY_DB_MAX_CONNECTIONS"],
        default: "`16`",
        meaning: "connection pool size",
    },
    Setting {
        names: &["IDENTITY_AGGREGATE_CACHE"],
        default: "`100000`",
        meaning: "events' worth of aggregates kept in memory between commands (`0`: off)",
    },
    Setting {
        names: &["IDENTITY_READ_CACHE"],
        default: "`10000`",
        meaning: "balance answers kept in memory until the balances read model moves (`0`: off)",
    },
    Setting {
        names: &["IDENTITY_WALLET_FACTORY"],
        default: "in development, a placeholder (the deterministic deployment proxy with an empty init code); none in production",
        meaning: "where every EVM network's smart contract wallets are deployed from, `0x<factory address>:0x<keccak256 of the wallet's init code>`: a user's internal wallet address is CREATE2 (EIP-1014) from it, salted by `keccak256(identifier email)`, EIP-55 checksummed. Without one, opening an internal EVM wallet is FAILED_PRECONDITION, `NO_WALLET_FACTORY`",
    },
    Setting {
        names: &["IDENTITY_WALLET_FACTORIES"],
        default: "unset",
        meaning: "per-network factories, `<chain id>=0x<factory>:0x<init code hash>` separated by commas (`80002=0x…:0x…,8453=0x…:0x…`; Polygon is 137); each wins over `IDENTITY_WALLET_FACTORY` on its network",
    },
    Setting {
        names: &["IDENTITY_CODE_PEPPER"],
        default: "a built-in development value",
        meaning: "secret mixed into stored one-time code hashes: **set it in production**",
    },
    Setting {
        names: &["IDENTITY_CODE_TTL_SECS"],
        default: "`600`",
        meaning: "lifetime of a one-time code",
    },
    Setting {
        names: &["IDENTITY_SHUTDOWN_GRACE_SECS"],
        default: "`10`",
        meaning: "time in-flight calls get after SIGTERM",
    },
    Setting {
        names: &["IDENTITY_ADMIN_ADDR"],
        default: "`127.0.0.1:9464`",
        meaning: "admin HTTP: `/metrics`, `/healthz`, `/readyz`, `/.well-known/jwks.json`",
    },
    Setting {
        names: &["IDENTITY_MAX_MESSAGE_BYTES"],
        default: "`1048576`",
        meaning: "largest request; a larger one answers `RESOURCE_EXHAUSTED`",
    },
    Setting {
        names: &["IDENTITY_MAX_RESPONSE_BYTES"],
        default: "`8388608`",
        meaning: "largest response; audit and event pages stop short of it",
    },
    Setting {
        names: &["IDENTITY_EXPENSIVE_CALLS"],
        default: "`4`",
        meaning: "expensive calls at once (GetAggregateHistory, GetAggregateStateAt, ListEvents, VerifyChain, ListUsers with `search`); one that waits over 1 s answers `RESOURCE_EXHAUSTED`, reason `CONCURRENCY_LIMIT`",
    },
    Setting {
        names: &["IDENTITY_QUERY_TIMEOUT_MS"],
        default: "`5000`",
        meaning: "PostgreSQL `statement_timeout` of read-model queries and ListEvents; past it `RESOURCE_EXHAUSTED`, reason `QUERY_TOO_SLOW` (`0`: none)",
    },
    Setting {
        names: &["IDENTITY_STREAMS_PER_TENANT"],
        default: "`16`",
        meaning: "StreamEvents streams open at once per tenant",
    },
    Setting {
        names: &["IDENTITY_STREAMS_PER_CONNECTION"],
        default: "`4`",
        meaning: "StreamEvents streams open at once per client connection (more: `TOO_MANY_STREAMS`)",
    },
    Setting {
        names: &["IDENTITY_STREAM_BUFFER"],
        default: "`4096`",
        meaning: "events a live stream may fall behind before it is ended (`SLOW_CONSUMER`)",
    },
    Setting {
        names: &["IDENTITY_ENVIRONMENT"],
        default: "`development`",
        meaning: "`development` bootstraps a `dev` tenant, a SUPER_ADMIN `admin@dev.local` and a signing key under `IDENTITY_DATA_DIR`; `production` bootstraps nothing and refuses to start without `IDENTITY_SIGNING_KEY_FILE` or `IDENTITY_TRUSTED_ISSUERS`",
    },
    Setting {
        names: &["IDENTITY_DATA_DIR"],
        default: "`./data`",
        meaning: "where development keeps its signing key and master key",
    },
    Setting {
        names: &["IDENTITY_SIGNING_KEY_FILE"],
        default: "`<data dir>/signing-key.pem` in development",
        meaning: "the service's Ed25519 signing key (PKCS#8 PEM, e.g. `openssl genpkey -algorithm ed25519`)",
    },
    Setting {
        names: &["IDENTITY_MASTER_KEY_FILE"],
        default: "`<data dir>/master.key` in development (created on first start)",
        meaning: "the master key (64 hex characters) that wraps each person's data key; personal fields of events are sealed under those (ADR 0006). Production refuses to start without it. Keep it apart from the database's backups: without it no personal field can be read",
    },
    Setting {
        names: &["IDENTITY_PREVIOUS_MASTER_KEY_FILES"],
        default: "unset",
        meaning: "comma-separated files of master keys rotated out: the data keys they wrapped still open until `identity-admin rewrap-keys` has wrapped them with the current one; never used to wrap",
    },
    Setting {
        names: &["IDENTITY_JWT_ISSUER"],
        default: "`identity`",
        meaning: "`iss` of the tokens the service signs",
    },
    Setting {
        names: &["IDENTITY_JWT_AUDIENCE"],
        default: "`identity`",
        meaning: "`aud` every accepted token must carry",
    },
    Setting {
        names: &["IDENTITY_PREVIOUS_SIGNING_KEYS"],
        default: "unset",
        meaning: "comma-separated PEM files of rotated-out keys (public SPKI or private PKCS#8): their tokens still verify and they stay published in the JWKS; never used to sign",
    },
    Setting {
        names: &["IDENTITY_TRUSTED_ISSUERS"],
        default: "unset",
        meaning: "a JSON file `[{\"issuer\": \"https://idp.example\", \"jwks_file\": \"/etc/identity/idp.jwks\"}]`: external issuers whose EdDSA, ES256 or RS256 tokens are accepted (keys picked by `kid`)",
    },
    Setting {
        names: &["IDENTITY_REFLECTION"],
        default: "`true`",
        meaning: "serve gRPC reflection (it describes the API, never data)",
    },
    Setting {
        names: &["IDENTITY_CHECKPOINT_INTERVAL_MS"],
        default: "`10000`",
        meaning: "how often the checkpointer signs the log's running digest with the signing key, when there are new events (`0`: never); an edit, removal or truncation at or before a checkpoint is then reported by VerifyChain and `identity-admin verify`",
    },
    Setting {
        names: &["IDENTITY_ACCESS_REFRESH_MS"],
        default: "`250`",
        meaning: "how often each replica reloads changed tenants, project keys and admins: a revocation reaches every replica within this",
    },
    Setting {
        names: &["IDENTITY_TLS_CERT_FILE", "IDENTITY_TLS_KEY_FILE"],
        default: "unset",
        meaning: "PEM certificate chain and key: the gRPC port and the admin HTTP port serve TLS (rustls)",
    },
    Setting {
        names: &["IDENTITY_TLS_CLIENT_CA_FILE"],
        default: "unset",
        meaning: "PEM CA: clients must present a certificate it signed (mutual TLS)",
    },
    Setting {
        names: &["IDENTITY_ALLOW_PLAINTEXT"],
        default: "`false`",
        meaning: "listening beyond loopback without TLS is refused unless this is `true` (then it logs a warning)",
    },
    Setting {
        names: &["IDENTITY_PASSWORD_QUEUE"],
        default: "`64`",
        meaning: "password checks waiting for a hashing thread; more answer RESOURCE_EXHAUSTED (`HASHING_BUSY`) at once",
    },
    Setting {
        names: &["IDENTITY_ACCESS_TOKEN_TTL_SECS"],
        default: "`900`",
        meaning: "lifetime of the access tokens SignIn and Refresh issue",
    },
    Setting {
        names: &["IDENTITY_REFRESH_TOKEN_TTL_SECS"],
        default: "`2592000`",
        meaning: "a session ends this long after its last refresh",
    },
    Setting {
        names: &["IDENTITY_SIGN_IN_PER_MINUTE"],
        default: "`30`",
        meaning: "SignIn calls per minute per caller (credential and client address); more answer RATE_LIMIT_EXCEEDED with `retry_after_seconds`",
    },
    Setting {
        names: &["IDENTITY_CODE_REQUESTS_PER_MINUTE"],
        default: "`10`",
        meaning: "one-time code requests (email, phone, password reset) per minute per caller",
    },
    Setting {
        names: &["IDENTITY_LEGACY_IMPORT"],
        default: "`true`",
        meaning: "accept ImportLegacyPassword; set `false` once migration is over (FAILED_PRECONDITION, `LEGACY_IMPORT_DISABLED`)",
    },
    Setting {
        names: &["IDENTITY_NATS_URL"],
        default: "unset",
        meaning: "NATS server whose JetStream receives one-time codes (e.g. `nats://127.0.0.1:4222`); unset: codes are not delivered, only `read:codes` holders see them",
    },
    Setting {
        names: &["IDENTITY_NATS_SUBJECT"],
        default: "`identity.codes`",
        meaning: "codes are published on `<subject>.<tenant>`",
    },
    Setting {
        names: &["IDENTITY_NATS_STREAM"],
        default: "`IDENTITY_CODES`",
        meaning: "the JetStream stream created for those subjects if missing (messages and duplicate detection last one code lifetime)",
    },
    Setting {
        names: &["IDENTITY_LOG_FORMAT"],
        default: "`pretty`",
        meaning: "`pretty` or `json`",
    },
    Setting {
        names: &["OTEL_EXPORTER_OTLP_ENDPOINT"],
        default: "unset",
        meaning: "export traces over OTLP (HTTP/protobuf)",
    },
    Setting {
        names: &["RUST_LOG"],
        default: "`info`",
        meaning: "log filter",
    },
];

/// Whether `name` is a defined setting.
pub fn is_defined(name: &str) -> bool {
    SETTINGS.iter().any(|s| s.names.contains(&name))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The README's configuration table, row by row.
    fn readme_rows() -> Vec<Setting> {
        let readme = include_str!("../../../README.md");
        let start = readme
            .find("## Configuration")
            .expect("a Configuration section");
        let section = &readme[start..];
        let end = section[3..].find("\n## ").map_or(section.len(), |i| i + 3);
        section[..end]
            .lines()
            .filter(|l| l.starts_with("| `"))
            .map(|l| {
                let cells: Vec<&str> = l
                    .trim()
                    .trim_matches('|')
                    .split(" | ")
                    .map(str::trim)
                    .collect();
                assert_eq!(cells.len(), 3, "a row of three cells: {l}");
                let names: Vec<&'static str> = cells[0]
                    .split('`')
                    .filter(|n| {
                        !n.is_empty() && n.chars().all(|c| c.is_ascii_uppercase() || c == '_')
                    })
                    .map(|n| &*Box::leak(n.to_string().into_boxed_str()))
                    .collect();
                Setting {
                    names: Box::leak(names.into_boxed_slice()),
                    default: Box::leak(cells[1].to_string().into_boxed_str()),
                    meaning: Box::leak(cells[2].to_string().into_boxed_str()),
                }
            })
            .collect()
    }

    #[test]
    fn the_readme_table_is_this_list() {
        let readme = readme_rows();
        for s in SETTINGS {
            assert!(
                readme.contains(s),
                "README.md lacks or differs for {:?}",
                s.names
            );
        }
        for r in &readme {
            assert!(
                SETTINGS.contains(r),
                "README.md documents {:?}, which is not defined here",
                r.names
            );
        }
    }
}
