//! The harness: the token every call carries, the server as a child process, fresh databases,
//! and the load loop that turns a workload into an [`Outcome`].

#![allow(clippy::wildcard_imports)]

use super::*;
pub(crate) fn mint_token() -> anyhow::Result<String> {
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
pub(crate) struct Outcome {
    pub(crate) name: String,
    pub(crate) ops: u64,
    pub(crate) seconds: f64,
    pub(crate) per_second: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p90_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) p999_ms: f64,
    pub(crate) errors: BTreeMap<String, u64>,
    pub(crate) peak_rss_mib: Option<f64>,
}

/// Runs `op` for the warm-up seconds, unreported.
pub(crate) async fn warm_up(args: &Args, op: Op) {
    let _ = load("warm-up", args, args.warmup, op).await;
}

/// Runs `op` from `concurrency` workers for `seconds`; returns counts and latencies.
pub(crate) async fn load(name: &str, args: &Args, seconds: u64, op: Op) -> Outcome {
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

pub(crate) fn req<T>(msg: T) -> Request<T> {
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

/// The server under test, as a child process (the shared test kit's launcher).
pub(crate) struct Server {
    pub(crate) process: identity_testkit::ServerProcess,
}

impl Server {
    pub(crate) fn start(url: &str, env: &[(&str, &str)]) -> anyhow::Result<Self> {
        let exe = std::env::current_exe()?;
        let bin: PathBuf = SERVER_BIN
            .get()
            .cloned()
            .unwrap_or_else(|| exe.with_file_name("identity-server"));
        let data_dir = DATA_DIR
            .get()
            .cloned()
            .unwrap_or_else(std::env::temp_dir)
            .display()
            .to_string();
        let mut all = vec![
            ("DATABASE_URL", url),
            ("RUST_LOG", "warn,identity_server=info"),
            ("IDENTITY_DATA_DIR", data_dir.as_str()),
        ];
        all.extend_from_slice(env);
        let process = identity_testkit::ServerProcess::spawn(
            &bin,
            None,
            &all,
            Duration::from_secs(60),
            false,
        )
        .map_err(|e| anyhow::anyhow!("{e} (cargo build --release -p identity-server)"))?;
        Ok(Self { process })
    }

    /// Peak resident memory so far, from /proc.
    pub(crate) fn peak_rss_mib(&self) -> Option<f64> {
        peak_rss_of(self.process.child.id())
    }

    pub(crate) async fn channels(&self, n: usize) -> anyhow::Result<Vec<Channel>> {
        let mut out = Vec::new();
        for _ in 0..n.max(1) {
            out.push(
                Channel::from_shared(format!("http://{}", self.process.addr))?
                    .connect()
                    .await?,
            );
        }
        Ok(out)
    }
}

/// Peak resident memory of a process so far (VmHWM), in MiB.
pub(crate) fn peak_rss_of(pid: u32) -> Option<f64> {
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

pub(crate) async fn fresh_database(
    admin: &str,
    label: &str,
) -> anyhow::Result<(identity_testkit::PgDatabase, String)> {
    let db = identity_testkit::PgDatabase::create_on(admin, &format!("identity_bench_{label}"))
        .await
        .map_err(anyhow::Error::msg)?;
    let url = db.url.clone();
    Ok((db, url))
}
