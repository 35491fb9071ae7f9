//! Schema migrations: one folder of SQL files per dialect (`migrations/postgres`,
//! `migrations/sqlite`), embedded at build time and applied at start-up by sqlx's migrator,
//! in order, each once, each in its own transaction. Never edit a shipped file (the migrator
//! refuses a store whose applied checksum differs): add the next one.
//!
//! The events table keeps the exact columns postgres-es / sqlite-es write (their INSERT names
//! its columns) and adds columns the database fills by default.
//!
//! Stores migrated before sqlx's migrator ran these kept their versions in
//! `schema_migrations`. `bridge!` records those versions in `_sqlx_migrations` once, with the
//! checksums of the same files, so the migrator sees them applied and goes on from there.
//! `schema_migrations` is left as it was: an older binary started on the store still finds
//! what it applied.

use sqlx::migrate::{Migrate, MigrateError, Migrator};
use sqlx::{PgPool, SqlitePool};

use crate::StoreError;

static POSTGRES: Migrator = sqlx::migrate!("migrations/postgres");
static SQLITE: Migrator = sqlx::migrate!("migrations/sqlite");

/// The advisory lock replicas starting together take around the bridge.
const BRIDGE_LOCK: i64 = 7_305_218_814;

impl From<MigrateError> for StoreError {
    fn from(e: MigrateError) -> Self {
        match e {
            MigrateError::Execute(e) => e.into(),
            other => StoreError::Other(std::sync::Arc::new(other)),
        }
    }
}

/// Records the versions `schema_migrations` holds as applied migrations of `$migrator`, on
/// `$conn` (a `PgConnection` or a `SqliteConnection`: the statements are the same).
macro_rules! bridge {
    ($conn:expr, $migrator:expr) => {{
        let conn = $conn;
        conn.ensure_migrations_table().await?;
        let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM schema_migrations")
            .fetch_all(&mut *conn)
            .await?;
        for m in $migrator.iter().filter(|m| applied.contains(&m.version)) {
            let recorded = sqlx::query(
                "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
                 VALUES ($1, $2, TRUE, $3, -1) ON CONFLICT (version) DO NOTHING",
            )
            .bind(m.version)
            .bind(&*m.description)
            .bind(&*m.checksum)
            .execute(&mut *conn)
            .await?;
            // Later starts find it recorded already and say nothing.
            if recorded.rows_affected() > 0 {
                tracing::info!(version = m.version, "recorded an earlier migration for sqlx");
            }
        }
    }};
}

pub(crate) async fn postgres(pool: &PgPool) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(BRIDGE_LOCK)
        .execute(&mut *tx)
        .await?;
    let old: Option<String> = sqlx::query_scalar("SELECT to_regclass('schema_migrations')::text")
        .fetch_one(&mut *tx)
        .await?;
    if old.is_some() {
        bridge!(&mut *tx, POSTGRES);
    }
    tx.commit().await?;
    // The migrator takes its own advisory lock: replicas starting together migrate once.
    POSTGRES.run(pool).await?;
    Ok(())
}

pub(crate) async fn sqlite(pool: &SqlitePool) -> Result<(), StoreError> {
    // sqlx takes no lock on SQLite, so the whole run holds one: IMMEDIATE takes the write lock
    // up front, and two processes opening a new file together migrate it one after the other
    // (the second finds everything applied). The migrator's own transactions nest inside as
    // savepoints.
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let old: Option<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'",
    )
    .fetch_optional(&mut *tx)
    .await?;
    if old.is_some() {
        bridge!(&mut *tx, SQLITE);
    }
    SQLITE.run_direct(&mut *tx).await?;
    tx.commit().await?;
    Ok(())
}
