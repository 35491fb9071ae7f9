//! What the store's tests, the integration and black-box tests and the benchmark share:
//! a PostgreSQL database that exists for one run ([`PgDatabase`]), and the server binary as
//! a child process that has said it is ready ([`ServerProcess`]).

#![forbid(unsafe_code)]

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The PostgreSQL server tests and benchmarks create their databases on:
/// `IDENTITY_TEST_PG_URL`, else the local one.
pub fn admin_url() -> String {
    std::env::var("IDENTITY_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string())
}

/// A uniquely named PostgreSQL database, created on the admin server; [`PgDatabase::drop`]
/// removes it (connections and all).
#[derive(Debug, Clone)]
pub struct PgDatabase {
    pub name: String,
    pub url: String,
    admin: String,
}

impl PgDatabase {
    /// Creates `<prefix>_<random>` on [`admin_url`]. PostgreSQL that cannot be reached is an
    /// error that says so: these tests are never skipped.
    pub async fn create(prefix: &str) -> Result<Self, String> {
        Self::create_on(&admin_url(), prefix).await
    }

    /// [`PgDatabase::create`] on a given admin URL.
    pub async fn create_on(admin: &str, prefix: &str) -> Result<Self, String> {
        let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
        let pool = sqlx::PgPool::connect(admin).await.map_err(|e| {
            format!(
                "PostgreSQL is not reachable at {admin} ({e}). Start it (see README) or set IDENTITY_TEST_PG_URL; PostgreSQL tests are never skipped."
            )
        })?;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&pool)
            .await
            .map_err(|e| format!("creating database {name}: {e}"))?;
        pool.close().await;
        let base = admin.rsplit_once('/').map_or(admin, |(b, _)| b);
        Ok(Self {
            url: format!("{base}/{name}"),
            name,
            admin: admin.to_string(),
        })
    }

    /// Removes the database, ending its connections. Best effort: a test's outcome does not
    /// depend on its cleanup.
    pub async fn drop(&self) {
        if let Ok(pool) = sqlx::PgPool::connect(&self.admin).await {
            let _ = sqlx::query(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .execute(&pool)
            .await;
            pool.close().await;
        }
    }
}

/// The server binary as a child process, started with JSON logs on ports chosen by the
/// system, after it logged "identity service ready". Killed when dropped.
#[derive(Debug)]
pub struct ServerProcess {
    pub child: Child,
    /// The gRPC address (`127.0.0.1:port`).
    pub addr: String,
    /// The admin HTTP address (health, metrics).
    pub admin_addr: String,
    /// Every line the server wrote to stdout so far (when asked to keep them).
    pub logs: Arc<Mutex<Vec<String>>>,
}

impl ServerProcess {
    /// Starts `bin` in `dir` (the current directory when `None`) with the environment
    /// given after the defaults (ports chosen by the system, JSON logs, no inherited
    /// `DATABASE_URL`), and waits up to `ready_within` for it to be ready. With
    /// `keep_logs` every line is kept in [`ServerProcess::logs`] (a test that reads them);
    /// without, lines are read and dropped (a benchmark's millions).
    pub fn spawn(
        bin: &Path,
        dir: Option<&Path>,
        env: &[(&str, &str)],
        ready_within: Duration,
        keep_logs: bool,
    ) -> Result<Self, String> {
        if !bin.exists() {
            return Err(format!(
                "{} is missing: build it first (scripts/test.sh does)",
                bin.display()
            ));
        }
        let mut cmd = Command::new(bin);
        if let Some(dir) = dir {
            cmd.current_dir(dir);
        }
        // The embedded default store unless `env` names a database: never one this process
        // happens to have in its environment.
        cmd.env_remove("DATABASE_URL")
            .env("IDENTITY_LISTEN_ADDR", "127.0.0.1:0")
            .env("IDENTITY_ADMIN_ADDR", "127.0.0.1:0")
            .env("IDENTITY_LOG_FORMAT", "json")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("starting {}: {e}", bin.display()))?;
        let stdout = child.stdout.take().ok_or("the server has no stdout")?;
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let kept = logs.clone();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if !sent {
                    if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                        if v["message"] == "identity service ready" {
                            let field = |k: &str| v[k].as_str().unwrap_or_default().to_string();
                            let _ = tx.send((field("addr"), field("admin_addr")));
                            sent = true;
                        }
                    }
                }
                if keep_logs {
                    if let Ok(mut l) = kept.lock() {
                        l.push(line);
                    }
                }
            }
        });
        match rx.recv_timeout(ready_within) {
            Ok((addr, admin_addr)) => Ok(Self {
                child,
                addr,
                admin_addr,
                logs,
            }),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(format!(
                    "the server did not report it was ready within {ready_within:?}"
                ))
            }
        }
    }
}

impl Drop for ServerProcess {
    /// A run that fails half-way must not leave a server running.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
