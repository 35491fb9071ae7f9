//! `identity-bench`: drives the real server binary (release build) over gRPC with the
//! project's own tonic client, and measures PostgreSQL's own ceilings on this machine in the
//! same run with pgbench, so every figure is printed beside a baseline (the machine is
//! shared and noisy; absolute numbers alone mean little).
//!
//! Workloads: CreditTokens spread over many wallets, CreditTokens on one hot wallet,
//! RegisterUser with unique emails, and 90% reads (GetBalances with `min_position`) / 10%
//! credits. Ceilings: (a) one event INSERT per transaction, (c) a cqrs-es-shaped command
//! (load the aggregate's events, insert one, commit), and plain primary-key SELECTs.
//! Each workload creates its own database.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Parser;
use hdrhistogram::Histogram;
use identity_proto::v1 as pb;
use identity_proto::v1::user_service_client::UserServiceClient;
use identity_proto::v1::wallet_service_client::WalletServiceClient;
use tonic::transport::Channel;
use tonic::{Request, Status};

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
}

#[derive(Debug, Clone, serde::Serialize)]
struct Outcome {
    name: String,
    ops: u64,
    seconds: f64,
    per_second: f64,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    errors: BTreeMap<String, u64>,
    peak_rss_mib: Option<f64>,
}

/// Runs `op` from `concurrency` workers for `seconds`; returns counts and latencies.
async fn load<F, Fut>(name: &str, args: &Args, seconds: u64, op: F) -> Outcome
where
    F: Fn(usize, u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<(), Status>> + Send,
{
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let workers: Vec<_> = (0..args.concurrency)
        .map(|w| {
            let op = op.clone();
            tokio::spawn(async move {
                let mut hist =
                    Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
                let mut errors: BTreeMap<String, u64> = BTreeMap::new();
                let mut i = 0u64;
                while Instant::now() < deadline {
                    let t = Instant::now();
                    match op(w, i).await {
                        Ok(()) => {
                            let _ = hist.record(t.elapsed().as_micros().max(1) as u64);
                        }
                        Err(s) => *errors.entry(format!("{:?}", s.code())).or_default() += 1,
                    }
                    i += 1;
                }
                (hist, errors)
            })
        })
        .collect();
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    for w in workers {
        if let Ok((h, e)) = w.await {
            let _ = hist.add(&h);
            for (k, v) in e {
                *errors.entry(k).or_default() += v;
            }
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let q = |p: f64| hist.value_at_quantile(p) as f64 / 1000.0;
    Outcome {
        name: name.to_string(),
        ops: hist.len(),
        seconds,
        per_second: hist.len() as f64 / seconds,
        p50_ms: q(0.5),
        p90_ms: q(0.9),
        p99_ms: q(0.99),
        p999_ms: q(0.999),
        errors,
        peak_rss_mib: None,
    }
}

fn req<T>(msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut()
        .insert("x-tenant-id", "bench".parse().expect("ascii"));
    r
}

struct Server {
    child: Child,
    addr: String,
}

impl Server {
    fn start(url: &str) -> anyhow::Result<Self> {
        let exe = std::env::current_exe()?;
        let bin: PathBuf = exe.with_file_name("identity-server");
        if !bin.exists() {
            bail!(
                "{} is missing: cargo build --release -p identity-server",
                bin.display()
            );
        }
        let mut child = Command::new(bin)
            .env("DATABASE_URL", url)
            .env("IDENTITY_LISTEN_ADDR", "127.0.0.1:0")
            .env("IDENTITY_ADMIN_ADDR", "127.0.0.1:0")
            .env("IDENTITY_LOG_FORMAT", "json")
            .env("RUST_LOG", "warn,identity_server=info")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdout = child.stdout.take().context("stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                    if v["message"] == "identity service ready" {
                        let _ = tx.send(v["addr"].as_str().unwrap_or_default().to_string());
                    }
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(60))
            .context("the server did not start")?;
        Ok(Self { child, addr })
    }

    /// Peak resident memory so far, from /proc.
    fn peak_rss_mib(&self) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let kb: f64 = status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        Some(kb / 1024.0)
    }

    async fn channels(&self, n: usize) -> anyhow::Result<Vec<Channel>> {
        let mut out = Vec::new();
        for _ in 0..n.max(1) {
            out.push(
                Channel::from_shared(format!("http://{}", self.addr))?
                    .connect()
                    .await?,
            );
        }
        Ok(out)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn fresh_database(admin: &str, label: &str) -> anyhow::Result<(String, String)> {
    let name = format!("identity_bench_{label}_{}", uuid::Uuid::new_v4().simple());
    let pool = sqlx::PgPool::connect(admin)
        .await
        .with_context(|| format!("PostgreSQL at {admin}"))?;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&pool)
        .await?;
    pool.close().await;
    let base = admin.rsplit_once('/').map_or(admin, |(b, _)| b);
    Ok((name.clone(), format!("{base}/{name}")))
}

async fn drop_database(admin: &str, name: &str) {
    if let Ok(pool) = sqlx::PgPool::connect(admin).await {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&pool)
            .await;
    }
}

/// Users with active wallets, for the credit workloads.
async fn wallets(ch: &Channel, n: usize) -> anyhow::Result<Vec<(String, String)>> {
    let mut users = UserServiceClient::new(ch.clone());
    let mut w = WalletServiceClient::new(ch.clone());
    let mut out = Vec::new();
    for i in 0..n {
        let user = users
            .register_user(req(pb::RegisterUserRequest {
                user: Some(pb::UserInput {
                    email: format!("seed{i}@bench.example"),
                    ..Default::default()
                }),
            }))
            .await?
            .into_inner()
            .user
            .context("user")?
            .user_id;
        let wallet = w
            .open_wallet(req(pb::OpenWalletRequest {
                owner_type: pb::OwnerType::User as i32,
                owner_id: user.clone(),
                wallet_type: pb::WalletType::Internal as i32,
                network: "polygon".into(),
                address: String::new(),
            }))
            .await?
            .into_inner()
            .wallet
            .context("wallet")?
            .wallet_id;
        w.activate_wallet(req(pb::ActivateWalletRequest {
            wallet_id: wallet.clone(),
        }))
        .await?;
        out.push((user, wallet));
    }
    Ok(out)
}

fn credit(wallet: &str, key: String) -> pb::CreditTokensRequest {
    pb::CreditTokensRequest {
        wallet_id: wallet.to_string(),
        token: "PTS".into(),
        amount: "1".into(),
        idempotency_key: key,
    }
}

/// One service workload on its own database: seed, warm up, measure.
async fn service_workload(args: &Args, kind: &str) -> anyhow::Result<Outcome> {
    let (db, url) = fresh_database(&args.pg, kind).await?;
    let server = Server::start(&url)?;
    let channels = server.channels(args.connections).await?;
    let seeded = wallets(
        &channels[0],
        if kind == "register" { 1 } else { args.wallets },
    )
    .await?;
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let make = |phase: &'static str| {
        let channels = channels.clone();
        let seeded = seeded.clone();
        let kind = kind.to_string();
        let run_id = run_id.clone();
        move |w: usize, i: u64| {
            let ch = channels[w % channels.len()].clone();
            let seeded = seeded.clone();
            let kind = kind.clone();
            let key = format!("{phase}-{run_id}-{w}-{i}");
            async move {
                match kind.as_str() {
                    "credit_spread" => {
                        let (_, wallet) = &seeded[(w * 7919 + i as usize) % seeded.len()];
                        WalletServiceClient::new(ch)
                            .credit_tokens(req(credit(wallet, key)))
                            .await
                            .map(|_| ())
                    }
                    "credit_hot" => WalletServiceClient::new(ch)
                        .credit_tokens(req(credit(&seeded[0].1, key)))
                        .await
                        .map(|_| ()),
                    "reads" => {
                        let (user, _) = &seeded[(w * 31 + i as usize) % seeded.len()];
                        WalletServiceClient::new(ch)
                            .get_balances(req(pb::GetBalancesRequest {
                                key: Some(pb::get_balances_request::Key::UserId(user.clone())),
                                min_position: 0,
                            }))
                            .await
                            .map(|_| ())
                    }
                    "register" => UserServiceClient::new(ch)
                        .register_user(req(pb::RegisterUserRequest {
                            user: Some(pb::UserInput {
                                email: format!("{key}@bench.example"),
                                ..Default::default()
                            }),
                        }))
                        .await
                        .map(|_| ()),
                    _ => {
                        // 90% reads of the worker's own user with read-your-writes, 10% credits.
                        let (user, wallet) = &seeded[w % seeded.len()];
                        if i.is_multiple_of(10) {
                            WalletServiceClient::new(ch)
                                .credit_tokens(req(credit(wallet, key)))
                                .await
                                .map(|_| ())
                        } else {
                            WalletServiceClient::new(ch)
                                .get_balances(req(pb::GetBalancesRequest {
                                    key: Some(pb::get_balances_request::Key::UserId(user.clone())),
                                    min_position: 0,
                                }))
                                .await
                                .map(|_| ())
                        }
                    }
                }
            }
        }
    };
    let _ = load("warm-up", args, args.warmup, make("warm")).await;
    let name = match kind {
        "credit_spread" => format!("CreditTokens, {} wallets", args.wallets),
        "credit_hot" => "CreditTokens, one hot wallet".to_string(),
        "register" => "RegisterUser, unique emails".to_string(),
        "reads" => format!("GetBalances, {} concurrent, reads only", args.concurrency),
        _ => "90% GetBalances / 10% CreditTokens".to_string(),
    };
    let mut outcome = load(&name, args, args.duration, make("run")).await;
    outcome.peak_rss_mib = server.peak_rss_mib();
    drop(server);
    drop_database(&args.pg, &db).await;
    Ok(outcome)
}

/// A pgbench ceiling on its own database: transactions per second.
async fn ceiling(args: &Args, script: &str) -> anyhow::Result<f64> {
    let (db, _) = fresh_database(&args.pg, "pgbench").await?;
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("pgbench");
    let host_args = ["-h", "127.0.0.1", "-U", "postgres"];
    let setup = Command::new("psql")
        .args(host_args)
        .args(["-q", "-v", "ON_ERROR_STOP=1", "-d", &db, "-f"])
        .arg(dir.join("setup.sql"))
        .output()?;
    if !setup.status.success() {
        bail!(
            "pgbench setup failed: {}",
            String::from_utf8_lossy(&setup.stderr)
        );
    }
    let out = Command::new("pgbench")
        .args(host_args)
        .args([
            "-n",
            "-c",
            &args.concurrency.to_string(),
            "-j",
            "2",
            "-T",
            &args.duration.to_string(),
            "-f",
        ])
        .arg(dir.join(script))
        .arg(&db)
        .output()?;
    drop_database(&args.pg, &db).await;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| {
            l.strip_prefix("tps = ")
                .and_then(|r| r.split_whitespace().next())
                .and_then(|n| n.parse().ok())
        })
        .with_context(|| {
            format!(
                "no tps in pgbench output: {text} {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let ceiling_a = ceiling(&args, "a_insert.sql").await?;
    let ceiling_c = ceiling(&args, "c_command.sql").await?;
    let pk_select = ceiling(&args, "pk_select.sql").await?;
    // The read-latency target is stated at 8 concurrent: measure reads and their baseline there.
    let mut args8 = args.clone();
    args8.concurrency = 8;
    let pk_select8 = ceiling(&args8, "pk_select.sql").await?;
    let mut results = Vec::new();
    for kind in ["credit_spread", "credit_hot", "register", "mixed"] {
        results.push(service_workload(&args, kind).await?);
    }
    results.push(service_workload(&args8, "reads").await?);
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "concurrency": args.concurrency, "connections": args.connections, "seconds": args.duration,
                "ceilings": {"a_insert_tps": ceiling_a, "c_command_tps": ceiling_c, "pk_select_tps": pk_select, "pk_select_8_clients_tps": pk_select8},
                "workloads": results,
            })
        );
        return Ok(());
    }
    println!(
        "PostgreSQL ceilings ({} clients, {} s, synchronous_commit on):",
        args.concurrency, args.duration
    );
    println!("  (a) one event INSERT per transaction   {ceiling_a:>10.0} tps");
    println!("  (c) load events + insert one + commit  {ceiling_c:>10.0} tps");
    println!("      primary-key SELECT                 {pk_select:>10.0} tps");
    println!("      primary-key SELECT, 8 clients      {pk_select8:>10.0} tps");
    println!();
    println!(
        "{:<36} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9}  errors",
        "workload", "ops/s", "p50 ms", "p90 ms", "p99 ms", "p99.9", "vs (a)", "vs (c)", "RSS MiB"
    );
    for r in &results {
        let (base_a, base_c) = if r.name.starts_with("90%") {
            (pk_select, pk_select)
        } else if r.name.starts_with("GetBalances") {
            (pk_select8, pk_select8)
        } else {
            (ceiling_a, ceiling_c)
        };
        println!(
            "{:<36} {:>9.0} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>9.1}  {:?}",
            r.name,
            r.per_second,
            r.p50_ms,
            r.p90_ms,
            r.p99_ms,
            r.p999_ms,
            r.per_second / base_a,
            r.per_second / base_c,
            r.peak_rss_mib.unwrap_or(0.0),
            r.errors
        );
    }
    println!("(the read rows' ratios are against primary-key SELECTs at the same client count)");
    Ok(())
}
