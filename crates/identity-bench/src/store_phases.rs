//! Phases that seed or measure the store itself: replay and growth of a large log, ListUsers
//! at 100k users, the embedded SQLite store, and PostgreSQL's pgbench ceilings.

#![allow(clippy::wildcard_imports)]

use super::*;
pub(crate) async fn connect(url: &str) -> anyhow::Result<sqlx::PgPool> {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(url)
        .await
        .with_context(|| format!("PostgreSQL at {url}"))
}

/// Creates the service's schema (the store migrates on open).
pub(crate) async fn migrate(url: &str) -> anyhow::Result<()> {
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
pub(crate) async fn seed_wallet_events(
    pool: &sqlx::PgPool,
    from: u64,
    count: u64,
) -> anyhow::Result<()> {
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
pub(crate) fn admin_rebuild(url: &str, model: &str) -> anyhow::Result<(u64, f64, f64)> {
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
pub(crate) fn copy_rate(db: &str, rows: u64) -> anyhow::Result<f64> {
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
pub(crate) async fn replay_and_growth(
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
            let copy = copy_rate(&db.name, stored)?;
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
        warm_up(args, credit_spread(&channels, &wallets, &format!("w{run}"))).await;
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
    db.drop().await;
    result
}

/// 100k users in the directory, then ListUsers with a search term at 8 concurrent.
pub(crate) async fn list_users(args: &Args, figures: &mut Vec<Figure>) -> anyhow::Result<Outcome> {
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
        warm_up(&args8, op.clone()).await;
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
    db.drop().await;
    result
}

/// CreditTokens on the embedded SQLite store, and a raw SQLite insert loop (one event row
/// per transaction, WAL, synchronous FULL: the service's settings) in the same directory.
pub(crate) async fn sqlite(args: &Args) -> anyhow::Result<(Outcome, f64)> {
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
        warm_up(args, credit_spread(&channels, &wallet_ids, &format!("w{run}"))).await;
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
pub(crate) async fn ceiling(args: &Args, script: &str) -> anyhow::Result<f64> {
    let (db, _) = fresh_database(&args.pg, "pgbench").await?;
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("pgbench");
    let host_args = ["-h", "127.0.0.1", "-U", "postgres"];
    let setup = Command::new("psql")
        .args(host_args)
        .args(["-q", "-v", "ON_ERROR_STOP=1", "-d", &db.name, "-f"])
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
        .arg(&db.name)
        .output()?;
    db.drop().await;
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
