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
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
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

fn mint_token() -> anyhow::Result<String> {
    let dir =
        std::env::temp_dir().join(format!("identity-bench-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir)?;
    let bin = std::env::current_exe()?.with_file_name("identity-admin");
    let out = Command::new(&bin)
        .env("IDENTITY_DATA_DIR", &dir)
        .env_remove("IDENTITY_SIGNING_KEY_FILE")
        .args([
            "token",
            "--tenant",
            "dev",
            "--service",
            "bench",
            "--permissions",
            PERMISSIONS,
            "--ttl",
            "86400",
        ])
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    if !out.status.success() {
        bail!(
            "identity-admin token: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let _ = DATA_DIR.set(dir);
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
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
async fn load(name: &str, args: &Args, seconds: u64, op: Op) -> Outcome {
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
    // Both: a build from before authentication reads only the header.
    r.metadata_mut()
        .insert("x-tenant-id", "dev".parse().expect("ascii"));
    if let Some(token) = TOKEN.get() {
        if let Ok(v) = format!("Bearer {token}").parse() {
            r.metadata_mut().insert("authorization", v);
        }
    }
    r
}

struct Server {
    child: Child,
    addr: String,
}

impl Server {
    fn start(url: &str, env: &[(&str, &str)]) -> anyhow::Result<Self> {
        let exe = std::env::current_exe()?;
        let bin: PathBuf = SERVER_BIN
            .get()
            .cloned()
            .unwrap_or_else(|| exe.with_file_name("identity-server"));
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
            .env(
                "IDENTITY_DATA_DIR",
                DATA_DIR.get().cloned().unwrap_or_else(std::env::temp_dir),
            )
            .envs(env.iter().copied())
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
        peak_rss_of(self.child.id())
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

/// Peak resident memory of a process so far (VmHWM), in MiB.
fn peak_rss_of(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
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

type Op =
    std::sync::Arc<dyn Fn(usize, u64) -> BoxFuture<'static, Result<(), Status>> + Send + Sync>;

/// CreditTokens spread over `wallets`, each request with a fresh idempotency key.
fn credit_spread(channels: &[Channel], wallets: &[String], tag: &str) -> Op {
    let (channels, wallets, tag) = (channels.to_vec(), wallets.to_vec(), tag.to_string());
    std::sync::Arc::new(move |w, i| {
        let ch = channels[w % channels.len()].clone();
        let wallet = wallets[(w * 7919 + i as usize) % wallets.len()].clone();
        let key = format!("{tag}-{w}-{i}");
        async move {
            WalletServiceClient::new(ch)
                .credit_tokens(req(credit(&wallet, key)))
                .await
                .map(|_| ())
        }
        .boxed()
    })
}

/// One of the gRPC workloads on its own database: seed, warm up, measure.
async fn service_workload(args: &Args, kind: &str) -> anyhow::Result<Outcome> {
    let (db, url) = fresh_database(&args.pg, kind).await?;
    let env: &[(&str, &str)] = if kind == "reads_uncached" {
        &[("IDENTITY_READ_CACHE", "0")]
    } else {
        &[]
    };
    let server = Server::start(&url, env)?;
    let channels = server.channels(args.connections).await?;
    let seeded = wallets(
        &channels[0],
        if kind == "register" { 1 } else { args.wallets },
    )
    .await?;
    let wallet_ids: Vec<String> = seeded.iter().map(|(_, w)| w.clone()).collect();
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    // Each worker's last write position, for read-your-writes in the mixed workload.
    let positions: std::sync::Arc<Vec<AtomicU64>> =
        std::sync::Arc::new((0..args.concurrency).map(|_| AtomicU64::new(0)).collect());
    let make = |phase: &'static str| -> Op {
        let tag = format!("{phase}-{run_id}");
        match kind {
            "credit_spread" => credit_spread(&channels, &wallet_ids, &tag),
            "credit_hot" => credit_spread(&channels, &wallet_ids[..1], &tag),
            _ => {
                let channels = channels.clone();
                // Shared, not copied per request: the load generator shares the machine's
                // two cores with the server and must stay cheap.
                let seeded = std::sync::Arc::new(seeded.clone());
                let kind: std::sync::Arc<str> = kind.into();
                let positions = positions.clone();
                std::sync::Arc::new(move |w: usize, i: u64| {
                    let ch = channels[w % channels.len()].clone();
                    let seeded = seeded.clone();
                    let kind = kind.clone();
                    let positions = positions.clone();
                    let key = format!("{tag}-{w}-{i}");
                    async move {
                        match &*kind {
                            "reads" | "reads_uncached" => {
                                let (user, _) = &seeded[(w * 31 + i as usize) % seeded.len()];
                                WalletServiceClient::new(ch)
                                    .get_balances(req(pb::GetBalancesRequest {
                                        key: Some(pb::get_balances_request::Key::UserId(
                                            user.clone(),
                                        )),
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
                                // 90% reads of the worker's own user, each waiting for the
                                // worker's own last credit (read-your-writes); 10% credits.
                                let (user, wallet) = &seeded[w % seeded.len()];
                                if i.is_multiple_of(10) {
                                    let done = WalletServiceClient::new(ch)
                                        .credit_tokens(req(credit(wallet, key)))
                                        .await?
                                        .into_inner();
                                    positions[w].store(done.position, Ordering::Relaxed);
                                    Ok(())
                                } else {
                                    WalletServiceClient::new(ch)
                                        .get_balances(req(pb::GetBalancesRequest {
                                            key: Some(pb::get_balances_request::Key::UserId(
                                                user.clone(),
                                            )),
                                            min_position: positions[w].load(Ordering::Relaxed),
                                        }))
                                        .await
                                        .map(|_| ())
                                }
                            }
                        }
                    }
                    .boxed()
                })
            }
        }
    };
    let _ = load("warm-up", args, args.warmup, make("warm")).await;
    let name = match kind {
        "credit_spread" => format!("CreditTokens, {} wallets", args.wallets),
        "credit_hot" => "CreditTokens, one hot wallet".to_string(),
        "register" => "RegisterUser, unique emails".to_string(),
        "reads" => format!("GetBalances, {} concurrent, reads only", args.concurrency),
        "reads_uncached" => format!(
            "GetBalances, {} concurrent, no read cache",
            args.concurrency
        ),
        _ => "90% GetBalances (min_position) / 10% credits".to_string(),
    };
    let mut outcome = load(&name, args, args.duration, make("run")).await;
    outcome.peak_rss_mib = server.peak_rss_mib();
    drop(server);
    drop_database(&args.pg, &db).await;
    Ok(outcome)
}

/// CreditTokens alone, then the same beside callers of VerifyPassword (argon2id).
/// The argon phase's measurements: credits alone, beside a control load, beside logins.
struct ArgonRun {
    alone: Outcome,
    /// Beside a process that only spins in Linux's idle scheduling class (no memory traffic):
    /// what any use of the otherwise idle CPU costs the service on this machine.
    control: Option<Outcome>,
    beside: Outcome,
    logins_per_second: f64,
    /// Credits beside callers of AuthService.SignIn (argon2id, a session event, a signed
    /// token), and their sign-ins per second.
    beside_sign_in: Outcome,
    sign_ins_per_second: f64,
}

/// Runs `load` of credits beside 4 callers repeating `call`; returns it and calls/s.
async fn beside_callers<F, Fut>(
    name: &str,
    args: &Args,
    channels: &[Channel],
    op: Op,
    call: F,
) -> (Outcome, f64)
where
    F: Fn(Channel, usize) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let done = std::sync::Arc::new(AtomicU64::new(0));
    let mut callers = Vec::new();
    for c in 0..4 {
        let ch = channels[c % channels.len()].clone();
        let (stop, done, call) = (stop.clone(), done.clone(), call.clone());
        callers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if call(ch.clone(), c).await {
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let started = Instant::now();
    let outcome = load(name, args, args.duration, op).await;
    stop.store(true, Ordering::Relaxed);
    for c in callers {
        let _ = c.await;
    }
    let per_second = done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    (outcome, per_second)
}

/// Runs `load` beside `chrt -i 0` spinning in a shell; `None` when chrt cannot start.
async fn beside_idle_spinner(args: &Args, op: Op) -> Option<Outcome> {
    let mut spinner = Command::new("chrt")
        .args(["-i", "0", "sh", "-c", "while :; do :; done"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| eprintln!("control not measured: cannot start chrt: {e}"))
        .ok()?;
    let outcome = load(
        "CreditTokens beside an idle-class CPU spinner",
        args,
        args.duration,
        op,
    )
    .await;
    let _ = spinner.kill();
    let _ = spinner.wait();
    Some(outcome)
}

async fn argon(args: &Args) -> anyhow::Result<ArgonRun> {
    let (db, url) = fresh_database(&args.pg, "argon").await?;
    // One harness is one caller: the per-caller SignIn rate must not be what is measured.
    let server = Server::start(&url, &[("IDENTITY_SIGN_IN_PER_MINUTE", "100000000")])?;
    let channels = server.channels(args.connections).await?;
    let seeded = wallets(&channels[0], args.wallets).await?;
    let password = "correct horse battery staple 42";
    let sign_in_run = uuid::Uuid::new_v4().simple().to_string();
    for i in 0..4 {
        let user = UserServiceClient::new(channels[0].clone())
            .register_user(req(pb::RegisterUserRequest {
                user: Some(pb::UserInput {
                    email: format!("signin{i}-{sign_in_run}@bench.example"),
                    ..Default::default()
                }),
            }))
            .await?
            .into_inner()
            .user
            .map(|u| u.user_id)
            .unwrap_or_default();
        UserServiceClient::new(channels[0].clone())
            .set_password(req(pb::SetPasswordRequest {
                user_id: user,
                password: password.into(),
            }))
            .await?;
    }
    let mut users = UserServiceClient::new(channels[0].clone());
    for (user, _) in seeded.iter().take(8) {
        users
            .set_password(req(pb::SetPasswordRequest {
                user_id: user.clone(),
                password: password.into(),
            }))
            .await?;
    }
    let wallet_ids: Vec<String> = seeded.iter().map(|(_, w)| w.clone()).collect();
    let run = uuid::Uuid::new_v4().simple().to_string();
    let _ = load(
        "warm-up",
        args,
        args.warmup,
        credit_spread(&channels, &wallet_ids, &format!("w{run}")),
    )
    .await;
    let alone = load(
        "CreditTokens alone",
        args,
        args.duration,
        credit_spread(&channels, &wallet_ids, &format!("a{run}")),
    )
    .await;
    let control = beside_idle_spinner(
        args,
        credit_spread(&channels, &wallet_ids, &format!("c{run}")),
    )
    .await;
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let logins = std::sync::Arc::new(AtomicU64::new(0));
    let mut callers = Vec::new();
    for c in 0..4 {
        let (ch, user) = (
            channels[c % channels.len()].clone(),
            seeded[c % 8].0.clone(),
        );
        let (stop, logins) = (stop.clone(), logins.clone());
        callers.push(tokio::spawn(async move {
            let mut client = UserServiceClient::new(ch);
            while !stop.load(Ordering::Relaxed) {
                let ok = client
                    .verify_password(req(pb::VerifyPasswordRequest {
                        user_id: user.clone(),
                        password: password.into(),
                    }))
                    .await
                    .is_ok();
                if ok {
                    logins.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let started = Instant::now();
    let mut beside = load(
        "CreditTokens beside 4 VerifyPassword callers",
        args,
        args.duration,
        credit_spread(&channels, &wallet_ids, &format!("b{run}")),
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    for c in callers {
        let _ = c.await;
    }
    let logins_per_second = logins.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    let (beside_sign_in, sign_ins_per_second) = beside_callers(
        "CreditTokens beside 4 SignIn callers",
        args,
        &channels,
        credit_spread(&channels, &wallet_ids, &format!("s{run}")),
        move |ch, c| {
            let email = format!("signin{c}-{sign_in_run}@bench.example");
            async move {
                identity_proto::v1::auth_service_client::AuthServiceClient::new(ch)
                    .sign_in(req(pb::SignInRequest {
                        identifier: Some(pb::sign_in_request::Identifier::Email(email)),
                        password: password.into(),
                    }))
                    .await
                    .is_ok()
            }
        },
    )
    .await;
    beside.peak_rss_mib = server.peak_rss_mib();
    drop(server);
    drop_database(&args.pg, &db).await;
    Ok(ArgonRun {
        alone,
        control,
        beside,
        logins_per_second,
        beside_sign_in,
        sign_ins_per_second,
    })
}

async fn connect(url: &str) -> anyhow::Result<sqlx::PgPool> {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(url)
        .await
        .with_context(|| format!("PostgreSQL at {url}"))
}

/// Creates the service's schema (the store migrates on open).
async fn migrate(url: &str) -> anyhow::Result<()> {
    let log = identity_store::EventLog::open(&identity_store::StoreConfig {
        url: url.to_string(),
        max_connections: 1,
        cache_capacity: 0,
    })
    .await?;
    log.close().await;
    Ok(())
}

/// Appends the events of wallets `from..from + count` (100 each: opened, activated, 98
/// credits), interleaved across wallets as real traffic would be. Seed rows carry no hash.
async fn seed_wallet_events(pool: &sqlx::PgPool, from: u64, count: u64) -> anyhow::Result<()> {
    sqlx::query(
        r#"INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
        SELECT 'Wallet', 'bench/' || md5('wallet' || w)::uuid, s,
               CASE WHEN s = 1 THEN 'WalletOpened' WHEN s = 2 THEN 'WalletActivated' ELSE 'TokensCredited' END,
               '1.0',
               CASE WHEN s = 1 THEN jsonb_build_object('WalletOpened', jsonb_build_object(
                        'wallet_id', md5('wallet' || w)::uuid::text, 'tenant', 'bench',
                        'owner', jsonb_build_object('owner_type', 'user', 'owner_id', md5('user' || w)::uuid::text),
                        'wallet_type', 'internal', 'network', jsonb_build_object('kind', 'evm', 'chain_id', 8453),
                        'address', '0x' || md5('address' || w) || '00000000', 'explorer_url', NULL,
                        'opened_at', '2026-11-24T00:00:00Z'))
                    WHEN s = 2 THEN '{"WalletActivated":{"at":"2026-11-24T00:00:01Z"}}'::jsonb
                    ELSE jsonb_build_object('TokensCredited', jsonb_build_object(
                        'token', 'PTS', 'amount', '1', 'balance', (s - 2)::text,
                        'idempotency_key', 'seed-' || w || '-' || s, 'at', '2026-11-24T00:00:02Z'))
               END,
               '{"command":"Seed","tenant":"bench"}'::jsonb
          FROM generate_series($1::bigint, $2::bigint) AS w, generate_series(1, 100) AS s
         ORDER BY s, w"#,
    )
    .bind(i64::try_from(from)?)
    .bind(i64::try_from(from + count - 1)?)
    .execute(pool)
    .await?;
    sqlx::query("ANALYZE events").execute(pool).await?;
    Ok(())
}

/// Runs `identity-admin rebuild <model>`; returns (events, seconds, peak RSS MiB).
fn admin_rebuild(url: &str, model: &str) -> anyhow::Result<(u64, f64, f64)> {
    let bin = std::env::current_exe()?.with_file_name("identity-admin");
    if !bin.exists() {
        bail!(
            "{} is missing: cargo build --release -p identity-cli",
            bin.display()
        );
    }
    let started = Instant::now();
    let mut child = Command::new(bin)
        .args(["rebuild", model])
        .env("DATABASE_URL", url)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let pid = child.id();
    let mut peak = 0.0f64;
    while child.try_wait()?.is_none() {
        peak = peak.max(peak_rss_of(pid).unwrap_or(0.0));
        std::thread::sleep(Duration::from_millis(10));
    }
    let seconds = started.elapsed().as_secs_f64();
    let output = child.wait_with_output()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let events = text
        .split("position 0: ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("identity-admin rebuild {model} printed: {text}"))?;
    Ok((events, seconds, peak))
}

/// PostgreSQL alone streaming the feed's rows, in rows per second.
fn copy_rate(db: &str, rows: u64) -> anyhow::Result<f64> {
    let started = Instant::now();
    let status = Command::new("psql")
        .args(["-h", "127.0.0.1", "-U", "postgres", "-q", "-d", db, "-c"])
        .arg(
            "COPY (SELECT global_position, xid, aggregate_type, aggregate_id, sequence, event_type, event_version,
                          payload, metadata, recorded_at, hash FROM events ORDER BY xid, global_position) TO STDOUT",
        )
        .stdout(Stdio::null())
        .status()?;
    if !status.success() {
        bail!("COPY failed");
    }
    Ok(rows as f64 / started.elapsed().as_secs_f64())
}

/// Replay: 1M events, COPY rate, rebuild of balances. Then growth: 2M events, CreditTokens.
async fn replay_and_growth(
    args: &Args,
    phases: &Phases,
    figures: &mut Vec<Figure>,
) -> anyhow::Result<Option<Outcome>> {
    let (db, url) = fresh_database(&args.pg, "replay").await?;
    let result = async {
        migrate(&url).await?;
        let pool = connect(&url).await?;
        let per_seed = (args.events / 100).max(1);
        let started = Instant::now();
        seed_wallet_events(&pool, 1, per_seed).await?;
        let stored = per_seed * 100;
        eprintln!(
            "seeded {stored} events in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        if phases.has("replay") {
            let copy = copy_rate(&db, stored)?;
            figures.push(Figure::new(
                format!("COPY {stored} events TO STDOUT (PostgreSQL alone)"),
                copy,
                "events/s",
            ));
            let (events, seconds, rss) = admin_rebuild(&url, "balances")?;
            let rate = events as f64 / seconds;
            figures.push(
                Figure::new(
                    format!("rebuild balances from {events} events"),
                    rate,
                    "events/s",
                )
                .vs("COPY", rate / copy),
            );
            figures.push(Figure::new(
                "peak RSS of the rebuilding process".into(),
                rss,
                "MiB",
            ));
        }
        if !phases.has("growth") {
            return Ok(None);
        }
        seed_wallet_events(&pool, per_seed + 1, per_seed).await?;
        let stored = stored * 2;
        for model in ["balances", "status", "directory"] {
            let (events, seconds, _) = admin_rebuild(&url, model)?;
            figures.push(Figure::new(
                format!("rebuild {model} from {events} events"),
                events as f64 / seconds,
                "events/s",
            ));
        }
        let server = Server::start(&url, &[])?;
        let channels = server.channels(args.connections).await?;
        let wallets: Vec<String> = sqlx::query_scalar(
            "SELECT md5('wallet' || w)::uuid::text FROM generate_series(1, $1::bigint) AS w",
        )
        .bind(i64::try_from(args.wallets)?)
        .fetch_all(&pool)
        .await?;
        pool.close().await;
        let run = uuid::Uuid::new_v4().simple().to_string();
        let _ = load(
            "warm-up",
            args,
            args.warmup,
            credit_spread(&channels, &wallets, &format!("w{run}")),
        )
        .await;
        let mut outcome = load(
            &format!(
                "CreditTokens, {} wallets, {stored} events stored",
                args.wallets
            ),
            args,
            args.duration,
            credit_spread(&channels, &wallets, &format!("r{run}")),
        )
        .await;
        outcome.peak_rss_mib = server.peak_rss_mib();
        Ok(Some(outcome))
    }
    .await;
    drop_database(&args.pg, &db).await;
    result
}

/// 100k users in the directory, then ListUsers with a search term at 8 concurrent.
async fn list_users(args: &Args, figures: &mut Vec<Figure>) -> anyhow::Result<Outcome> {
    let (db, url) = fresh_database(&args.pg, "directory").await?;
    let result = async {
        migrate(&url).await?;
        let pool = connect(&url).await?;
        sqlx::query(
            r#"INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
            SELECT 'User', 'bench/' || md5('user' || n)::uuid, 1, 'UserRegistered', '1.0',
                   jsonb_build_object('UserRegistered', jsonb_build_object(
                       'user_id', md5('user' || n)::uuid::text, 'tenant', 'bench',
                       'email', 'member' || n || '@bench.example', 'phone', NULL, 'external_id', NULL,
                       'identifier_email', 'u' || n || '@bench.id', 'first_name', NULL, 'last_name', NULL,
                       'locale', 'en', 'custom_data', '{}'::jsonb, 'public_profile', '{}'::jsonb,
                       'registered_at', '2026-11-24T00:00:00Z')),
                   '{"command":"Seed","tenant":"bench"}'::jsonb
              FROM generate_series(1, $1::bigint) AS n"#,
        )
        .bind(i64::try_from(args.users)?)
        .execute(&pool)
        .await?;
        pool.close().await;
        let (events, seconds, _) = admin_rebuild(&url, "directory")?;
        figures.push(Figure::new(
            format!("rebuild directory from {events} registrations"),
            events as f64 / seconds,
            "events/s",
        ));
        let server = Server::start(&url, &[])?;
        let channels = server.channels(args.connections).await?;
        let users = args.users.max(1);
        let op: Op = {
            let channels = channels.clone();
            std::sync::Arc::new(move |w: usize, i: u64| {
                let ch = channels[w % channels.len()].clone();
                let n = 1 + (w as u64 * 7919 + i * 104_729) % users;
                async move {
                    UserServiceClient::new(ch)
                        .list_users(req(pb::ListUsersRequest {
                            search: format!("member{n}@"),
                            limit: 50,
                            ..Default::default()
                        }))
                        .await
                        .map(|_| ())
                }
                .boxed()
            })
        };
        let mut args8 = args.clone();
        args8.concurrency = 8;
        let _ = load("warm-up", &args8, args.warmup, op.clone()).await;
        let mut outcome = load(
            &format!("ListUsers search, {} users, 8 concurrent", args.users),
            &args8,
            args.duration,
            op,
        )
        .await;
        outcome.peak_rss_mib = server.peak_rss_mib();
        Ok(outcome)
    }
    .await;
    drop_database(&args.pg, &db).await;
    result
}

/// CreditTokens on the embedded SQLite store, and a raw SQLite insert loop (one event row
/// per transaction, WAL, synchronous FULL: the service's settings) in the same directory.
async fn sqlite(args: &Args) -> anyhow::Result<(Outcome, f64)> {
    let dir =
        std::env::temp_dir().join(format!("identity_bench_{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir)?;
    let result = async {
        let raw = {
            use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
            use sqlx::ConnectOptions as _;
            let mut conn = SqliteConnectOptions::new()
                .filename(dir.join("raw.db"))
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Full)
                .connect()
                .await?;
            sqlx::raw_sql(
                "CREATE TABLE events (aggregate_type text NOT NULL, aggregate_id text NOT NULL, sequence integer NOT NULL,
                   event_type text NOT NULL, event_version text NOT NULL, payload text NOT NULL, metadata text NOT NULL,
                   global_position integer, recorded_at text NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
                   hash text, PRIMARY KEY (aggregate_type, aggregate_id, sequence)) STRICT;
                 CREATE UNIQUE INDEX events_global_position ON events (global_position);",
            )
            .execute(&mut conn)
            .await?;
            let payload = r#"{"TokensCredited":{"token":"PTS","amount":"1","balance":"120","idempotency_key":"k-0123456789","at":"2026-11-24T00:00:00.000000Z"}}"#;
            let metadata = r#"{"tenant":"bench","actor":"bench","request_id":"0b6f0e2c-6f39-4c1e-9a53-1c3a6d1f2b7e","command":"CreditTokens"}"#;
            let started = Instant::now();
            let mut n = 0i64;
            while started.elapsed() < Duration::from_secs(args.duration) {
                n += 1;
                sqlx::query(
                    "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, hash, global_position)
                     VALUES ('Wallet', ?1, ?2, 'TokensCredited', '1.0', ?3, ?4, 'c9517da779fab87ea99be418bd5e25e423c3bf39d3aa0699a3449144e32a433e', ?5)",
                )
                .bind(format!("bench/w{}", n % 200))
                .bind(n)
                .bind(payload)
                .bind(metadata)
                .bind(n)
                .execute(&mut conn)
                .await?;
            }
            n as f64 / started.elapsed().as_secs_f64()
        };
        let url = format!("sqlite://{}/identity.db", dir.display());
        let server = Server::start(&url, &[])?;
        let channels = server.channels(args.connections).await?;
        let seeded = wallets(&channels[0], args.wallets).await?;
        let wallet_ids: Vec<String> = seeded.into_iter().map(|(_, w)| w).collect();
        let run = uuid::Uuid::new_v4().simple().to_string();
        let _ = load(
            "warm-up",
            args,
            args.warmup,
            credit_spread(&channels, &wallet_ids, &format!("w{run}")),
        )
        .await;
        let mut outcome = load(
            &format!("CreditTokens on SQLite, {} wallets", args.wallets),
            args,
            args.duration,
            credit_spread(&channels, &wallet_ids, &format!("r{run}")),
        )
        .await;
        outcome.peak_rss_mib = server.peak_rss_mib();
        Ok::<_, anyhow::Error>((outcome, raw))
    }
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    result
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
