//! `identity-admin`: audit and maintenance commands against the identity service's store
//! (the same `DATABASE_URL` as the server; SQLite `./data/identity.db` by default).
//!
//! - `history <type> <id>`: the events of one aggregate and its state after each;
//! - `state-at <type> <id> --position N | --time T`: its state at a point in the past;
//! - `export --from N --to M`: JSON Lines of events with their hashes, for auditors to keep;
//! - `rebuild <read-model>`: rebuild a read model from position 0 (progress and events/s);
//! - `verify`: replay every event into fresh read models and compare with the live ones, and
//!   verify every hash chain. Exits non-zero, naming the spot, on any difference.
//!
//! - `token`: mint a bearer token with the service's signing key (by default, for the
//!   development SUPER_ADMIN in the `dev` tenant: `identity-admin token`);
//! - `bootstrap --tenant T --email E`: create a tenant and a SUPER_ADMIN in it (production's
//!   first step; development does it on its own).
//!
//! - `seal-forward`: once, before the first release: seal the personal fields a store
//!   written before sealing holds in clear, and move its claims to keyed ids;
//! - `rewrap-keys`: after a master-key rotation, wrap every stored key with the new key.
//!
//! Aggregate ids are `<tenant>/<id>` as stored, or `<id>` with `--tenant`.

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Instant;

mod checkpoints;
mod forward;

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand};
use identity_projections::replay::{state_at, states_after_each, AsOf};
use identity_projections::{Projection, Projections};
use identity_settings::Settings;
use identity_store::{EventFilter, EventLog, StoreConfig, StoredEvent};

#[derive(Debug, Parser)]
#[command(
    name = "identity-admin",
    version,
    about = "Audit and maintenance of the identity service's event log"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The events of one aggregate, each with the aggregate's state after it.
    History {
        /// User, Wallet, StatusTier, Identification or UniqueClaim.
        aggregate_type: String,
        /// `<tenant>/<id>`, or `<id>` with --tenant.
        id: String,
        #[arg(long)]
        tenant: Option<String>,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// An aggregate's state as of a global position or a time (RFC 3339).
    StateAt {
        aggregate_type: String,
        id: String,
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long, conflicts_with = "time", required_unless_present = "time")]
        position: Option<u64>,
        #[arg(long)]
        time: Option<String>,
    },
    /// Events from position N to M (inclusive) as JSON Lines, with their hashes.
    Export {
        #[arg(long, default_value_t = 1)]
        from: u64,
        #[arg(long)]
        to: Option<u64>,
        /// Also write the signed checkpoints that end in that range to this file (JSON Lines).
        #[arg(long)]
        checkpoints: Option<std::path::PathBuf>,
    },
    /// Prints the latest signed checkpoint as JSON: keep it outside the service, and give it
    /// back to `verify --checkpoint` to prove nothing before it changed since.
    Checkpoint,
    /// Rebuilds a read model (balances, status or directory) from position 0 and swaps it in.
    Rebuild { read_model: String },
    /// Replays every event into fresh read models, compares them with the live ones,
    /// verifies every hash chain, and checks the log against the latest signed checkpoint
    /// (and one given with --checkpoint).
    Verify {
        /// A checkpoint kept outside the service (what `checkpoint` printed).
        #[arg(long)]
        checkpoint: Option<std::path::PathBuf>,
        /// The public key(s) checkpoints must be signed with (SPKI PEM); by default the
        /// service's signing key and IDENTITY_PREVIOUS_SIGNING_KEYS.
        #[arg(long = "public-key")]
        public_keys: Vec<std::path::PathBuf>,
    },
    /// Prints a bearer token signed with the service's key (IDENTITY_SIGNING_KEY_FILE, or
    /// ./data/signing-key.pem in development). Without options: the development SUPER_ADMIN.
    Token {
        /// The tenant the token is for.
        #[arg(long, default_value = "dev")]
        tenant: String,
        /// An admin by email (default: admin@dev.local).
        #[arg(long, conflicts_with_all = ["service", "user"])]
        admin: Option<String>,
        /// A service token with this name; give its permissions with --permissions.
        #[arg(long, conflicts_with = "user", requires = "permissions")]
        service: Option<String>,
        /// A user token for this user id (its roles decide what it may do).
        #[arg(long)]
        user: Option<String>,
        /// Comma-separated permissions of a service token (`read:users,credit:wallets`).
        #[arg(long, value_delimiter = ',')]
        permissions: Vec<String>,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl: u64,
        /// Comma-separated field scopes (`name,phone`): personal fields outside them are
        /// withheld. Without it the token reaches every field its permissions do.
        #[arg(long, value_delimiter = ',')]
        scopes: Option<Vec<String>>,
    },
    /// Rotates the service's signing key: keeps the current key's public part beside it,
    /// writes a new key in its place, and prints the setting that keeps tokens signed with
    /// the old key verifying (and its key published) until they expire.
    RotateSigningKey,
    /// Once, on a store written before personal data was sealed: seals every personal field
    /// still stored in clear (and erases those of people already erased), rewrites the hash
    /// chains that changes, removes the checkpoints of the old log, and moves every claim to
    /// its keyed id. Run with no replica serving; a second run changes nothing.
    SealForward,
    /// The second step of a master-key rotation: wraps every stored key still wrapped by a
    /// key in IDENTITY_PREVIOUS_MASTER_KEY_FILES with IDENTITY_MASTER_KEY_FILE. Safe while
    /// replicas serve.
    RewrapKeys,
    /// Creates a tenant and a SUPER_ADMIN attached to it, unless they exist.
    Bootstrap {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        email: String,
    },
}

fn known_type(aggregate_type: &str) -> anyhow::Result<()> {
    if identity_projections::replay::AGGREGATE_TYPES.contains(&aggregate_type) {
        Ok(())
    } else {
        bail!(
            "unknown aggregate type {aggregate_type:?}; known: {}",
            identity_projections::replay::AGGREGATE_TYPES.join(", ")
        )
    }
}

fn full_id(id: &str, tenant: Option<&str>) -> String {
    match tenant {
        Some(t) => format!("{t}/{id}"),
        None => id.to_string(),
    }
}

async fn open_log() -> anyhow::Result<EventLog> {
    let settings = Settings::from_env()?;
    let log = EventLog::open(&StoreConfig {
        url: settings.database_url.clone(),
        max_connections: 4,
        cache_capacity: 0,
    })
    .await
    .with_context(|| {
        format!(
            "opening the event store at {}",
            settings.database_url_for_logs()
        )
    })?;
    Ok(log
        .with_master_key(settings.master_key()?)
        .with_previous_master_keys(settings.previous_master_keys()?))
}

fn print_table(events: &[StoredEvent], states: &[serde_json::Value]) {
    println!(
        "{:>9}  {:>4}  {:<28}  {:<24}  {:<12}  state after",
        "position", "seq", "event", "recorded at", "actor"
    );
    for (e, s) in events.iter().zip(states) {
        let actor = e
            .metadata
            .get("actor")
            .and_then(|a| a.as_str())
            .unwrap_or("-");
        println!(
            "{:>9}  {:>4}  {:<28}  {:<24}  {:<12}  {}",
            e.position,
            e.sequence,
            format!("{} v{}", e.event_type, e.event_version),
            e.recorded_at,
            actor,
            s
        );
    }
}

/// A progress bar on stderr (drawn only on a terminal), counting to `len`.
fn progress(len: u64, template: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len);
    if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("#> "));
    }
    bar
}

fn mint(
    tenant: String,
    admin: Option<String>,
    service: Option<String>,
    user: Option<String>,
    permissions: Vec<String>,
    ttl: u64,
    scopes: Option<Vec<String>>,
) -> anyhow::Result<String> {
    use identity_access::registry::{signing_key, DEV_ADMIN_EMAIL};
    let settings = Settings::from_env()?;
    let key = signing_key(&settings)?.context(
        "no signing key: set IDENTITY_SIGNING_KEY_FILE (development uses ./data/signing-key.pem)",
    )?;
    identity_domain::values::TenantId::parse(&tenant)
        .map_err(|e| anyhow::anyhow!("--tenant: {e}"))?;
    let (kind, sub) = match (admin, service, user) {
        (_, Some(name), _) => {
            if let Err(unknown) =
                identity_access::permission::parse_names(permissions.iter().map(String::as_str))
            {
                bail!("unknown permission {unknown:?}");
            }
            ("service", name)
        }
        (_, _, Some(user)) => ("user", user),
        (admin, None, None) => {
            let email =
                identity_domain::values::Email::parse(admin.as_deref().unwrap_or(DEV_ADMIN_EMAIL))
                    .map_err(|e| anyhow::anyhow!("--admin: {e}"))?;
            (
                "admin",
                identity_domain::admin::admin_id(&email).to_string(),
            )
        }
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    key.mint(&identity_access::Claims {
        iss: settings.jwt_issuer.clone(),
        sub,
        aud: settings.jwt_audience.clone(),
        exp: now + ttl.max(1),
        nbf: None,
        iat: None,
        tenant: Some(tenant),
        kind: kind.to_string(),
        permissions: if kind == "service" {
            permissions
        } else {
            Vec::new()
        },
        sid: None,
        roles: Vec::new(),
        scopes,
    })
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Token {
            tenant,
            admin,
            service,
            user,
            permissions,
            ttl,
            scopes,
        } => {
            if let Some(unknown) = scopes
                .iter()
                .flatten()
                .find(|s| identity_access::scope::Scope::parse(s).is_none())
            {
                bail!("unknown scope {unknown:?}");
            }
            println!(
                "{}",
                mint(tenant, admin, service, user, permissions, ttl, scopes)?
            );
        }
        Command::RotateSigningKey => {
            let settings = Settings::from_env()?;
            let path = settings.signing_key_path().context(
                "no signing key: set IDENTITY_SIGNING_KEY_FILE (development uses ./data/signing-key.pem)",
            )?;
            let (kept, fresh) = identity_access::SigningKey::rotate(&path)?;
            let mut previous: Vec<String> = settings
                .previous_signing_keys
                .iter()
                .map(|p| p.display().to_string())
                .collect();
            previous.push(kept.display().to_string());
            eprintln!(
                "new signing key {} at {}; the previous key's public part is at {}",
                fresh.kid,
                path.display(),
                kept.display()
            );
            eprintln!(
                "restart every replica with the line below; drop the old key from it {} s later (IDENTITY_ACCESS_TOKEN_TTL_SECS), when its last tokens have expired",
                settings.access_token_ttl_secs
            );
            println!("IDENTITY_PREVIOUS_SIGNING_KEYS={}", previous.join(","));
        }
        Command::Bootstrap { tenant, email } => {
            let tenant = identity_domain::values::TenantId::parse(&tenant)
                .map_err(|e| anyhow::anyhow!("--tenant: {e}"))?;
            let email = identity_domain::values::Email::parse(&email)
                .map_err(|e| anyhow::anyhow!("--email: {e}"))?;
            let log = open_log().await?;
            identity_access::registry::ensure_registry(&log, &tenant, &email).await?;
            println!(
                "tenant {tenant} and SUPER_ADMIN {email} (id {}) exist",
                identity_domain::admin::admin_id(&email)
            );
        }
        Command::History {
            aggregate_type,
            id,
            tenant,
            json,
        } => {
            known_type(&aggregate_type)?;
            let log = open_log().await?;
            let id = full_id(&id, tenant.as_deref());
            let events = log.aggregate_history(&aggregate_type, &id).await?;
            if events.is_empty() {
                bail!("no events for {aggregate_type} {id}");
            }
            let states = states_after_each(&aggregate_type, &events)?;
            if json {
                let out: Vec<serde_json::Value> = events
                    .iter()
                    .zip(&states)
                    .map(|(e, s)| {
                        serde_json::json!({
                            "position": e.position, "sequence": e.sequence, "event_type": e.event_type,
                            "event_version": e.event_version, "recorded_at": e.recorded_at,
                            "metadata": e.metadata, "payload": identity_projections::replay::redact(e.payload.clone()),
                            "hash": e.hash, "state": s,
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                print_table(&events, &states);
            }
        }
        Command::StateAt {
            aggregate_type,
            id,
            tenant,
            position,
            time,
        } => {
            known_type(&aggregate_type)?;
            let log = open_log().await?;
            let id = full_id(&id, tenant.as_deref());
            let at = match (position, time) {
                (Some(p), _) => AsOf::Position(p),
                (None, Some(t)) => {
                    chrono_check(&t)?;
                    AsOf::Time(t)
                }
                (None, None) => bail!("give --position or --time"),
            };
            let events = log.aggregate_history(&aggregate_type, &id).await?;
            match state_at(&aggregate_type, &events, &at)? {
                Some((state, last)) => println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({
                        "aggregate_type": aggregate_type, "aggregate_id": id,
                        "sequence": last.sequence, "position": last.position, "state": state,
                    }))?
                ),
                None => bail!("{aggregate_type} {id} had no events at that point"),
            }
        }
        Command::SealForward => {
            if !forward::seal_forward(&open_log().await?).await? {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::RewrapKeys => {
            let log = open_log().await?;
            let moved = log.rewrap_keys().await?;
            println!("rewrapped {moved} key(s) with the current master key");
            for (master, keys) in log.keys_by_master().await? {
                println!("  master key {master}: {keys} key(s)");
            }
        }
        Command::Checkpoint => {
            let log = open_log().await?;
            println!("{}", checkpoints::latest(&log).await?);
        }
        Command::Export {
            from,
            to,
            checkpoints: checkpoints_file,
        } => {
            let log = open_log().await?;
            let filter = EventFilter {
                to_position: to,
                ..EventFilter::default()
            };
            let mut after = from.saturating_sub(1);
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            let mut written = 0u64;
            loop {
                let batch = log.list_events(&filter, after, 1000).await?;
                let Some(last) = batch.last() else { break };
                after = last.position;
                for e in &batch {
                    let line = serde_json::json!({
                        "position": e.position, "aggregate_type": e.aggregate_type, "aggregate_id": e.aggregate_id,
                        "sequence": e.sequence, "event_type": e.event_type, "event_version": e.event_version,
                        "payload": e.payload, "metadata": e.metadata, "recorded_at": e.recorded_at, "hash": e.hash,
                    });
                    writeln!(out, "{line}")?;
                    written += 1;
                }
            }
            out.flush()?;
            eprintln!("exported {written} events");
            if let Some(path) = checkpoints_file {
                let n = checkpoints::export(&log, &path, from, to).await?;
                eprintln!("exported {n} checkpoints to {}", path.display());
            }
        }
        Command::Rebuild { read_model } => {
            let p = Projection::parse(&read_model)?;
            let log = open_log().await?;
            let head = log.head_position().await?.max(1);
            let projections = Projections::open(log).await?;
            let started = Instant::now();
            let bar = progress(head, "[{bar:40}] {pos}/{len} events, {per_sec}");
            let replayed = projections
                .rebuild_with_progress(p, |n| bar.set_position(n))
                .await?;
            bar.finish_and_clear();
            let seconds = started.elapsed().as_secs_f64();
            println!(
                "rebuilt {} from position 0: {replayed} events in {seconds:.2} s ({:.0} events/s)",
                p.name(),
                replayed as f64 / seconds.max(1e-6)
            );
        }
        Command::Verify {
            checkpoint,
            public_keys,
        } => {
            let keys = checkpoints::keys(&public_keys)?;
            let log = open_log().await?;
            let mut failed = false;
            let started = Instant::now();
            let head = log.head_position().await?.max(1);
            let bar = progress(head, "[{bar:40}] checked {pos} events");
            let report = log.verify_chains(None, |n| bar.set_position(n)).await?;
            bar.finish_and_clear();
            if report.intact() {
                println!(
                    "hash chains: intact ({} events in {} aggregates) in {:.2} s",
                    report.events_checked,
                    report.aggregates_checked,
                    started.elapsed().as_secs_f64()
                );
            } else {
                failed = true;
                println!(
                    "hash chains: {} break(s) in {} events ({} unhashed):",
                    report.breaks_found, report.events_checked, report.unhashed
                );
                for b in &report.breaks {
                    println!(
                        "  BROKEN at position {} ({} {} sequence {}): {}",
                        b.position, b.aggregate_type, b.aggregate_id, b.sequence, b.reason
                    );
                }
                if report.breaks_found > report.breaks.len() as u64 {
                    println!(
                        "  … and {} more",
                        report.breaks_found - report.breaks.len() as u64
                    );
                }
            }
            if !checkpoints::verify(&log, checkpoint.as_deref(), &keys).await? {
                failed = true;
            }
            let projections = Projections::open(log).await?;
            for p in Projection::ALL {
                let differences = projections.verify(p).await?;
                if differences.is_empty() {
                    println!("read model {}: equal to a replay of the log", p.name());
                } else {
                    failed = true;
                    println!(
                        "read model {}: {} difference(s) from a replay:",
                        p.name(),
                        differences.len()
                    );
                    for d in differences {
                        println!("  {d}");
                    }
                }
            }
            if failed {
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn chrono_check(t: &str) -> anyhow::Result<()> {
    // Reject a malformed time up front instead of silently matching nothing.
    if t.len() < 20 || !t.contains('T') {
        bail!("--time must be RFC 3339, e.g. 2026-11-24T10:00:00Z");
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Cli::parse()).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("identity-admin: {e:#}");
            ExitCode::FAILURE
        }
    }
}
