//! `identity-bench`: drives the real server binary (release build) over gRPC with the
//! project's own tonic client, and measures PostgreSQL's own ceilings on this machine in the
//! same run with pgbench, so every figure is printed beside a baseline (the machine is
//! shared and noisy; absolute numbers alone mean little).
//!
//! Phases (`--phases`, all by default), each on its own database:
//! - `ceilings`: pgbench (a) one event INSERT per transaction, (c) a cqrs-es-shaped command
//!   (load the aggregate's events, insert one, commit), plain primary-key SELECTs.
//! - `credit_spread`, `credit_hot`, `register`, `mixed` (90% GetBalances with the worker's
//!   last `min_position` / 10% credits), `reads` (GetBalances at 8 concurrent, with the
//!   server's in-memory answers and then with `IDENTITY_READ_CACHE=0`).
//! - `argon`: CreditTokens alone, beside a control (a CPU spinner in the idle scheduling
//!   class), then beside VerifyPassword (argon2id) callers: p99 ratios.
//! - `list_users`: ListUsers with a search term at 100k users.
//! - `sqlite`: CreditTokens on the embedded SQLite store beside a raw SQLite insert loop with
//!   the same durability settings (WAL, synchronous FULL).
//! - `replay`: rebuild of the balances read model from a 1M-event log (`identity-admin
//!   rebuild`, its peak RSS) beside PostgreSQL streaming the same rows (`COPY … TO STDOUT`).
//! - `growth`: CreditTokens again with 2M events already stored.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Parser;
use futures::future::BoxFuture;
use futures::FutureExt as _;
use hdrhistogram::Histogram;
use identity_proto::v1 as pb;
use identity_proto::v1::user_service_client::UserServiceClient;
use identity_proto::v1::wallet_service_client::WalletServiceClient;
use tonic::transport::Channel;
use tonic::{Request, Status};

mod harness;
mod store_phases;
mod workloads;

use harness::*;
use store_phases::*;
use workloads::*;

#[derive(Debug, Parser, Clone)]
#[command(
    name = "identity-bench",
    about = "Service throughput and latency beside PostgreSQL's ceilings"
)]
struct Args {
    /// Seconds each measured phase runs.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Seconds of warm-up before each measured phase.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Concurrent requests in flight.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// HTTP/2 connections the requests share.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Wallets the spread workload credits.
    #[arg(long, default_value_t = 200)]
    wallets: usize,
    /// PostgreSQL server (admin database) to create benchmark databases on.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    pg: String,
    /// Print one JSON document instead of a table.
    #[arg(long)]
    json: bool,
    /// Comma-separated phases: ceilings, credit_spread, credit_hot, register, mixed, reads,
    /// argon, list_users, sqlite, replay, growth; or all.
    #[arg(long, default_value = "all")]
    phases: String,
    /// Events in the replay log (the growth phase stores twice as many).
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Users in the directory for the ListUsers search.
    #[arg(long, default_value_t = 100_000)]
    users: u64,
    /// The identity-server binary to drive (default: the one beside this harness). Point it
    /// at another build to compare two versions in one run.
    #[arg(long)]
    server_bin: Option<PathBuf>,
}

/// The bearer token every request carries: a service token for the development tenant,
/// minted once by `identity-admin token` with the harness's own signing key.
static TOKEN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
/// `--server-bin`.
static SERVER_BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
/// Where every server of this run keeps its development signing key.
static DATA_DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// What the harness's calls need, and nothing else.
const PERMISSIONS: &str =
    "create:users,update:users,read:users,verify:passwords,manage:wallets,credit:wallets,read:wallets,sign_in";

/// A figure that is not a load run (a rate, a size), with its baseline ratio if it has one.
#[derive(Debug, Clone, serde::Serialize)]
struct Figure {
    name: String,
    value: f64,
    unit: &'static str,
    ratio: Option<(String, f64)>,
}

impl Figure {
    fn new(name: String, value: f64, unit: &'static str) -> Self {
        Self {
            name,
            value,
            unit,
            ratio: None,
        }
    }

    fn vs(mut self, baseline: &str, ratio: f64) -> Self {
        self.ratio = Some((baseline.to_string(), ratio));
        self
    }
}

/// The phases to run.
#[derive(Debug)]
struct Phases(Vec<String>);

impl Phases {
    fn has(&self, phase: &str) -> bool {
        self.0.iter().any(|p| p == "all" || p == phase)
    }
}

/// A load run and the baselines it is compared with.
#[derive(Debug, serde::Serialize)]
struct Row {
    #[serde(flatten)]
    outcome: Outcome,
    ratios: Vec<(String, f64)>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(bin) = &args.server_bin {
        let _ = SERVER_BIN.set(bin.clone());
    }
    let _ = TOKEN.set(mint_token()?);
    let phases = Phases(
        args.phases
            .split(',')
            .map(|p| p.trim().to_string())
            .collect(),
    );
    let mut ceilings: BTreeMap<&str, f64> = BTreeMap::new();
    if phases.has("ceilings") {
        ceilings.insert("(a)", ceiling(&args, "a_insert.sql").await?);
        ceilings.insert("(c)", ceiling(&args, "c_command.sql").await?);
        ceilings.insert("PK SELECT", ceiling(&args, "pk_select.sql").await?);
    }
    // The read-latency target is stated at 8 concurrent: measure reads and their baseline there.
    let mut args8 = args.clone();
    args8.concurrency = 8;
    if phases.has("ceilings") {
        ceilings.insert("PK SELECT@8", ceiling(&args8, "pk_select.sql").await?);
    }
    let ratios = |o: &Outcome, against: &[&str]| -> Vec<(String, f64)> {
        against
            .iter()
            .filter_map(|k| ceilings.get(k).map(|v| (k.to_string(), o.per_second / v)))
            .collect()
    };
    let mut rows: Vec<Row> = Vec::new();
    let mut figures: Vec<Figure> = Vec::new();
    let mut empty_store_credits = None;
    for kind in ["credit_spread", "credit_hot", "register", "mixed"] {
        if phases.has(kind) {
            let o = service_workload(&args, kind).await?;
            if kind == "credit_spread" {
                empty_store_credits = Some(o.per_second);
            }
            let against: &[&str] = if kind == "mixed" {
                &["PK SELECT"]
            } else {
                &["(c)", "(a)"]
            };
            rows.push(Row {
                ratios: ratios(&o, against),
                outcome: o,
            });
        }
    }
    if phases.has("reads") {
        // With the in-memory answers (the default), then every read from PostgreSQL.
        for kind in ["reads", "reads_uncached"] {
            let o = service_workload(&args8, kind).await?;
            rows.push(Row {
                ratios: ratios(&o, &["PK SELECT@8"]),
                outcome: o,
            });
        }
    }
    if phases.has("argon") {
        let run = argon(&args).await?;
        let alone_p99 = run.alone.p99_ms.max(1e-9);
        let credits_alone = run.alone.per_second.max(1e-9);
        rows.push(Row {
            ratios: ratios(&run.alone, &["(c)"]),
            outcome: run.alone,
        });
        for o in run.control.into_iter().chain([run.beside]) {
            let mut r = ratios(&o, &["(c)"]);
            r.push(("p99 vs alone".into(), o.p99_ms / alone_p99));
            rows.push(Row {
                ratios: r,
                outcome: o,
            });
        }
        let logins = run.logins_per_second;
        figures.push(Figure::new(
            "VerifyPassword (argon2id) beside the credits".into(),
            logins,
            "logins/s",
        ));
        let mut r = ratios(&run.beside_sign_in, &["(c)"]);
        r.push(("p99 vs alone".into(), run.beside_sign_in.p99_ms / alone_p99));
        r.push((
            "credits/s vs alone".into(),
            run.beside_sign_in.per_second / credits_alone,
        ));
        rows.push(Row {
            ratios: r,
            outcome: run.beside_sign_in,
        });
        figures.push(Figure::new(
            "SignIn (argon2id, session event, signed token) beside the credits".into(),
            run.sign_ins_per_second,
            "sign-ins/s",
        ));
    }
    if phases.has("list_users") {
        let o = list_users(&args, &mut figures).await?;
        rows.push(Row {
            ratios: ratios(&o, &["PK SELECT@8"]),
            outcome: o,
        });
    }
    if phases.has("sqlite") {
        let (o, raw) = sqlite(&args).await?;
        figures.push(Figure::new(
            "raw SQLite insert loop (WAL, synchronous FULL)".into(),
            raw,
            "rows/s",
        ));
        let ratio = o.per_second / raw;
        rows.push(Row {
            ratios: vec![("raw SQLite".into(), ratio)],
            outcome: o,
        });
    }
    if phases.has("replay") || phases.has("growth") {
        if let Some(o) = replay_and_growth(&args, &phases, &mut figures).await? {
            let mut r = ratios(&o, &["(c)"]);
            if let Some(empty) = empty_store_credits {
                r.push(("empty store".into(), o.per_second / empty));
            }
            rows.push(Row {
                ratios: r,
                outcome: o,
            });
        }
    }
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "concurrency": args.concurrency, "connections": args.connections, "seconds": args.duration,
                "ceilings": ceilings, "workloads": rows, "figures": figures,
            })
        );
        return Ok(());
    }
    println!(
        "PostgreSQL ceilings (pgbench, {} clients unless marked @8, {} s, synchronous_commit on):",
        args.concurrency, args.duration
    );
    for (name, tps) in &ceilings {
        let what = match *name {
            "(a)" => "(a) one event INSERT per transaction",
            "(c)" => "(c) load events + insert one + commit",
            "PK SELECT" => "    primary-key SELECT",
            _ => "    primary-key SELECT, 8 clients",
        };
        println!("  {what:<40} {tps:>10.0} tps");
    }
    println!();
    println!(
        "{:<52} {:>8} {:>7} {:>7} {:>7} {:>7} {:>7}  {:<34} errors",
        "workload", "ops/s", "p50 ms", "p90 ms", "p99 ms", "p99.9", "RSS MiB", "ratios"
    );
    for r in &rows {
        let o = &r.outcome;
        let ratios: Vec<String> = r
            .ratios
            .iter()
            .map(|(k, v)| format!("{v:.2}× {k}"))
            .collect();
        println!(
            "{:<52} {:>8.0} {:>7.2} {:>7.2} {:>7.2} {:>7.2} {:>7.1}  {:<34} {:?}",
            o.name,
            o.per_second,
            o.p50_ms,
            o.p90_ms,
            o.p99_ms,
            o.p999_ms,
            o.peak_rss_mib.unwrap_or(0.0),
            ratios.join(", "),
            o.errors
        );
    }
    if !figures.is_empty() {
        println!();
        for f in &figures {
            let ratio = f
                .ratio
                .as_ref()
                .map(|(k, v)| format!("  ({v:.2}× {k})"))
                .unwrap_or_default();
            println!("{:<60} {:>12.1} {}{ratio}", f.name, f.value, f.unit);
        }
    }
    Ok(())
}
