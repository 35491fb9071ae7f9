//! Projectors and read models of the identity service.
//!
//! Three read models, each a [`Projection`] with its own tables and its own checkpoint:
//! - **balances**: wallets and per-token balances;
//! - **status**: the tiers each user qualifies for and the highest one;
//! - **directory**: users (contact fields, names, roles, public profile, wallet addresses,
//!   person codes) for lookups, search, sorting and paging.
//!
//! A projector tails the global feed ([`identity_store::EventLog::read_feed`]) from its
//! checkpoint and, in **one transaction**, applies a batch of events and moves the checkpoint.
//! The transaction first locks the checkpoint row and checks it is where the batch started,
//! so two processes projecting the same database can never apply an event twice: each event
//! is applied exactly once per read model, across crashes and restarts. Read models are
//! rebuildable from position 0 beside the live tables and swapped in ([`Projections::rebuild`]).
//!
//! cqrs-es's inline query dispatch is not used: it runs after the commit, in the request, and
//! a crash in between loses the update (DESIGN.md, decision 3).
//!
//! This crate must not depend on gRPC types.

#![forbid(unsafe_code)]

mod apply;
mod balances;
mod directory;
mod jobs;
mod projector;
pub mod queries;
mod read_model;
mod rebuild;
pub mod replay;
mod schema;
mod status;

pub use jobs::{JobState, ProjectorHealth, RebuildJob};

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use identity_store::{EventLog, FeedCursor, StoreError};
use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Row};
use tokio::sync::{watch, Mutex};

use apply::Sql;

/// Events applied per transaction.
const BATCH: u32 = 500;
/// Balance answers kept in memory by default ([`Projections::with_read_cache`]).
pub const DEFAULT_READ_CACHE: usize = 10_000;
/// Events per read while replaying into fresh tables.
const REBUILD_READ: u32 = 4_000;
/// Folded rows a replay keeps in memory before writing them.
const REBUILD_PENDING: usize = 50_000;

/// A checkpoint row as a feed cursor. A negative number there is corrupt, never a reason to
/// start the read model over from the beginning.
pub(crate) fn checkpoint_cursor(
    name: &str,
    row: &sqlx::any::AnyRow,
) -> Result<FeedCursor, ProjectionError> {
    let number = |i: usize| -> Result<u64, ProjectionError> {
        let n: i64 = row.try_get(i)?;
        u64::try_from(n).map_err(|_| {
            ProjectionError::CorruptRow(format!("checkpoint {name}: a negative cursor ({n})"))
        })
    };
    Ok(FeedCursor {
        xid: number(0)?,
        position: number(1)?,
    })
}

#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error("read-model database error")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("event at position {position}: {message}")]
    Event { position: u64, message: String },
    #[error("unknown read model {name:?}; known: {known}")]
    UnknownProjection { name: String, known: String },
    #[error("a read-model row holds what no event writes: {0}")]
    CorruptRow(String),
    #[error("a rebuild of {0} is already running")]
    RebuildRunning(String),
}

impl ProjectionError {
    /// Whether PostgreSQL cancelled the query at its statement timeout.
    pub fn is_too_slow(&self) -> bool {
        match self {
            Self::Database(sqlx::Error::Database(db)) => db.code().as_deref() == Some("57014"),
            Self::Store(StoreError::TooSlow) => true,
            _ => false,
        }
    }

    /// Whether the database could not be reached (worth retrying), as opposed to a bug or
    /// bad data.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            Self::Database(
                sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed
            ) | Self::Store(StoreError::Unavailable(_))
        )
    }
}

/// The read models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Projection {
    Balances,
    Status,
    Directory,
}

impl Projection {
    pub const ALL: [Projection; 3] = [Self::Balances, Self::Status, Self::Directory];

    /// The read model behind each projection: the one list of them.
    pub(crate) fn model(self) -> &'static read_model::ReadModel {
        match self {
            Self::Balances => &balances::MODEL,
            Self::Status => &status::MODEL,
            Self::Directory => &directory::MODEL,
        }
    }

    pub fn name(self) -> &'static str {
        self.model().name
    }

    pub fn parse(name: &str) -> Result<Self, ProjectionError> {
        Self::ALL
            .into_iter()
            .find(|p| p.name() == name)
            .ok_or_else(|| ProjectionError::UnknownProjection {
                name: name.to_string(),
                known: Self::ALL.map(Self::name).join(", "),
            })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Postgres,
    Sqlite,
}

impl Dialect {
    /// `$N` → `?N` for SQLite (which binds `?N` to argument N exactly). Only placeholders
    /// change: a `$` inside a quoted literal or identifier (`'$.path'`) stays as written.
    pub(crate) fn placeholders(self, sql: &str) -> String {
        match self {
            Dialect::Postgres => sql.to_string(),
            Dialect::Sqlite => {
                let mut out = String::with_capacity(sql.len());
                let mut quote: Option<char> = None;
                let mut chars = sql.chars().peekable();
                while let Some(c) = chars.next() {
                    match quote {
                        Some(q) if c == q => quote = None,
                        Some(_) => {}
                        None if c == '\'' || c == '"' => quote = Some(c),
                        None if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) => {
                            out.push('?');
                            continue;
                        }
                        None => {}
                    }
                    out.push(c);
                }
                out
            }
        }
    }

    fn begin(self) -> &'static str {
        match self {
            // IMMEDIATE takes SQLite's write lock up front, so a read-then-write transaction
            // cannot fail half-way on a lock upgrade.
            Dialect::Sqlite => "BEGIN IMMEDIATE",
            Dialect::Postgres => "BEGIN",
        }
    }

    fn lock_suffix(self) -> &'static str {
        match self {
            Dialect::Postgres => " FOR UPDATE",
            Dialect::Sqlite => "",
        }
    }
}

/// Where a projector stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProjectionStatus {
    pub projection: Projection,
    pub cursor: FeedCursor,
}

/// The read models of one database, and their projectors.
#[derive(Debug, Clone)]
pub struct Projections {
    /// Queries (the read side of the API).
    pool: AnyPool,
    /// Projectors, their leases and rebuilds: their own connections, so that a flood of
    /// queries cannot stall projection (nor projection the queries).
    writer: AnyPool,
    dialect: Dialect,
    log: EventLog,
    cursors: Arc<HashMap<Projection, watch::Sender<FeedCursor>>>,
    /// Held by a projector while it applies a batch, and by a rebuild while it swaps tables.
    locks: Arc<HashMap<Projection, Mutex<()>>>,
    /// Whether this process runs each projector (holds its lease).
    leaders: Arc<HashMap<Projection, std::sync::atomic::AtomicBool>>,
    /// Events per read, and folded rows kept before writing, while replaying.
    replay_sizes: (u32, usize),
    /// Recent balance answers, emptied whenever the balances cursor moves.
    balance_cache: Arc<queries::ReadCache>,
    /// Whether PostgreSQL's pg_trgm is installed: ListUsers' search then uses an index.
    trigram: bool,
    /// Projector failures and rebuild jobs (`jobs.rs`).
    board: Arc<jobs::Board>,
}

fn now_text() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

impl Projections {
    /// Connects to the log's database and creates missing read-model tables.
    pub async fn open(log: EventLog) -> Result<Self, ProjectionError> {
        Self::open_with_query_timeout(log, Duration::ZERO).await
    }

    /// [`Projections::open`], with queries (not projectors) bounded by a PostgreSQL
    /// statement timeout (zero: none), so that one expensive search cannot hold a
    /// connection for long.
    pub async fn open_with_query_timeout(
        log: EventLog,
        query_timeout: Duration,
    ) -> Result<Self, ProjectionError> {
        sqlx::any::install_default_drivers();
        let dialect = match log.kind() {
            "postgres" => Dialect::Postgres,
            _ => Dialect::Sqlite,
        };
        // Wait for the command path's writers instead of failing with "database is locked"
        // (on every connection: a pragma is per connection).
        let options = |max: u32, timeout: Duration| {
            AnyPoolOptions::new()
                .max_connections(max)
                .acquire_timeout(Duration::from_secs(10))
                // No ping before each use: it doubled the round trips of every query. A
                // connection that died is found by its next query, which fails (a retryable
                // UNAVAILABLE for a reader; the projectors retry) and is not returned to the
                // pool.
                .test_before_acquire(false)
                .after_connect(move |conn, _| {
                    Box::pin(async move {
                        if dialect == Dialect::Sqlite {
                            sqlx::query("PRAGMA busy_timeout = 10000")
                                .execute(&mut *conn)
                                .await?;
                            // An erased person's rows are zeroed when deleted (ADR 0006).
                            sqlx::query("PRAGMA secure_delete = ON")
                                .execute(&mut *conn)
                                .await?;
                        } else if !timeout.is_zero() {
                            sqlx::query(&format!(
                                "SET statement_timeout = {}",
                                timeout.as_millis()
                            ))
                            .execute(conn)
                            .await?;
                        }
                        Ok(())
                    })
                })
        };
        // One lease per projector, one batch per projector, and a rebuild.
        let writer = options(2 * Projection::ALL.len() as u32 + 2, Duration::ZERO)
            .connect(log.url())
            .await?;
        let pool = options(16, query_timeout).connect(log.url()).await?;
        // Schema work (index builds may be long) on the writer pool, which has no timeout.
        let trigram = dialect == Dialect::Postgres && Self::install_trigram(&writer).await;
        let mut cursors = HashMap::new();
        let mut locks = HashMap::new();
        let mut leaders = HashMap::new();
        sqlx::query(schema::CHECKPOINTS).execute(&writer).await?;
        for p in Projection::ALL {
            schema::reshape_if_changed(&writer, dialect, p).await?;
            Self::create_tables(&writer, dialect, p, "", trigram).await?;
            sqlx::query(&dialect.placeholders(
                "INSERT INTO projection_checkpoints (name, xid, position, updated_at) VALUES ($1, 0, 0, $2)
                 ON CONFLICT (name) DO NOTHING",
            ))
            .bind(p.name())
            .bind(now_text())
            .execute(&writer)
            .await?;
            let cursor = Self::checkpoint_of(&writer, dialect, p.name()).await?;
            cursors.insert(p, watch::channel(cursor).0);
            locks.insert(p, Mutex::new(()));
            leaders.insert(p, std::sync::atomic::AtomicBool::new(false));
        }
        Ok(Self {
            pool,
            writer,
            dialect,
            log,
            cursors: Arc::new(cursors),
            locks: Arc::new(locks),
            leaders: Arc::new(leaders),
            replay_sizes: (REBUILD_READ, REBUILD_PENDING),
            balance_cache: Arc::new(queries::ReadCache::new(DEFAULT_READ_CACHE)),
            trigram,
            board: Arc::default(),
        }
        .with_leftovers_dropped()
        .await)
    }

    /// Drops the shadow tables and checkpoints a rebuild killed midway left behind, for
    /// every read model nobody is rebuilding now.
    async fn with_leftovers_dropped(self) -> Self {
        for p in Projection::ALL {
            let Ok(Some(lease)) = self.try_rebuild_lease(p).await else {
                continue;
            };
            if let Err(e) = self.drop_leftovers(p).await {
                tracing::warn!(projection = p.name(), error = %identity_store::Report(&e), "cannot drop a killed rebuild's tables");
            }
            drop(lease);
        }
        self
    }

    async fn drop_leftovers(&self, p: Projection) -> Result<(), ProjectionError> {
        let list = match self.dialect {
            Dialect::Postgres => {
                "SELECT table_name::text FROM information_schema.tables WHERE table_schema = current_schema()"
            }
            Dialect::Sqlite => "SELECT name FROM sqlite_master WHERE type = 'table'",
        };
        let tables: Vec<String> = sqlx::query_scalar(list).fetch_all(&self.writer).await?;
        for t in schema::tables(p) {
            let shadow = format!("{}__r", t.name);
            for name in tables.iter().filter(|n| n.starts_with(&shadow)) {
                tracing::info!(projection = p.name(), table = %name, "dropping a killed rebuild's table");
                sqlx::query(&format!("DROP TABLE IF EXISTS {name}"))
                    .execute(&self.writer)
                    .await?;
            }
        }
        let names: Vec<String> = sqlx::query_scalar("SELECT name FROM projection_checkpoints")
            .fetch_all(&self.writer)
            .await?;
        let shadow = format!("{}__r", p.name());
        for name in names.iter().filter(|n| n.starts_with(&shadow)) {
            sqlx::query(
                &self
                    .dialect
                    .placeholders("DELETE FROM projection_checkpoints WHERE name = $1"),
            )
            .bind(name)
            .execute(&self.writer)
            .await?;
        }
        Ok(())
    }

    /// Installs pg_trgm (a trusted extension: the database's owner may) for the directory's
    /// search index. Without it, searches still work, by scanning.
    async fn install_trigram(pool: &AnyPool) -> bool {
        if let Err(e) = sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_trgm")
            .execute(pool)
            .await
        {
            // Another replica may have installed it at the same moment.
            let installed: Result<i64, _> =
                sqlx::query_scalar("SELECT COUNT(*) FROM pg_extension WHERE extname = 'pg_trgm'")
                    .fetch_one(pool)
                    .await;
            if !matches!(installed, Ok(n) if n > 0) {
                tracing::warn!(error = %e, "pg_trgm is not available; ListUsers searches will scan");
                return false;
            }
        }
        true
    }

    async fn create_tables(
        pool: &AnyPool,
        dialect: Dialect,
        p: Projection,
        suffix: &str,
        trigram: bool,
    ) -> Result<(), ProjectionError> {
        let first = schema::tables(p)[0].name;
        let exists_sql = match dialect {
            Dialect::Postgres => {
                "SELECT COUNT(*) FROM information_schema.tables WHERE table_name = $1"
            }
            Dialect::Sqlite => {
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?1"
            }
        };
        let exists: i64 = sqlx::query_scalar(exists_sql)
            .bind(format!("{first}{suffix}"))
            .fetch_one(pool)
            .await?;
        // Existing live tables still get indexes added since they were created.
        let only_indexes = exists > 0 && suffix.is_empty();
        for stmt in schema::create_statements(p, suffix, trigram) {
            if only_indexes && !stmt.starts_with("CREATE INDEX") {
                continue;
            }
            sqlx::query(&stmt).execute(pool).await?;
        }
        Ok(())
    }

    async fn checkpoint_of(
        pool: &AnyPool,
        dialect: Dialect,
        name: &str,
    ) -> Result<FeedCursor, ProjectionError> {
        let row = sqlx::query(
            &dialect
                .placeholders("SELECT xid, position FROM projection_checkpoints WHERE name = $1"),
        )
        .bind(name)
        .fetch_optional(pool)
        .await?;
        row.map_or(Ok(FeedCursor::default()), |r| checkpoint_cursor(name, &r))
    }

    /// The same read models, replaying with other sizes: `read` events per read and at most
    /// `pending` folded rows before a write. Small sizes make a replay pass through every
    /// kind of write point, which is what tests want.
    pub fn with_replay_sizes(mut self, read: u32, pending: usize) -> Self {
        self.replay_sizes = (read.max(1), pending.max(1));
        self
    }

    /// The same read models, keeping up to `answers` recent balance answers in memory
    /// (`0`: none). Call it before starting the projectors.
    pub fn with_read_cache(mut self, answers: usize) -> Self {
        self.balance_cache = Arc::new(queries::ReadCache::new(answers));
        self
    }

    pub(crate) fn balance_cache(&self) -> &queries::ReadCache {
        &self.balance_cache
    }

    /// Moves `p`'s cursor, first forgetting every cached answer (the read model may have
    /// changed anywhere: another replica's batch, a swapped-in rebuild).
    fn publish(&self, p: Projection, cursor: FeedCursor) {
        if p == Projection::Balances {
            self.balance_cache.clear();
        }
        self.cursors[&p].send_replace(cursor);
    }

    /// Moves `p`'s cursor past a batch this process applied, first forgetting the cached
    /// answers that batch made stale.
    fn publish_applied(&self, p: Projection, cursor: FeedCursor, touched: &apply::Touched) {
        if p == Projection::Balances {
            self.balance_cache.forget(touched);
        }
        self.cursors[&p].send_replace(cursor);
    }

    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub(crate) fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Where each projector stands now.
    pub fn statuses(&self) -> Vec<ProjectionStatus> {
        Projection::ALL
            .into_iter()
            .map(|p| ProjectionStatus {
                projection: p,
                cursor: self.cursor(p),
            })
            .collect()
    }

    pub fn cursor(&self, p: Projection) -> FeedCursor {
        self.cursors
            .get(&p)
            .map(|c| *c.borrow())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_negative_checkpoint_is_corrupt_not_the_start_of_the_feed() {
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect("sqlite::memory:")
            .await
            .expect("connects");
        let row = sqlx::query("SELECT CAST(7 AS BIGINT), CAST(42 AS BIGINT)")
            .fetch_one(&pool)
            .await
            .expect("reads");
        let cursor = checkpoint_cursor("balances", &row).expect("a cursor");
        assert_eq!((cursor.xid, cursor.position), (7, 42));
        let row = sqlx::query("SELECT CAST(0 AS BIGINT), CAST(-1 AS BIGINT)")
            .fetch_one(&pool)
            .await
            .expect("reads");
        let refused = checkpoint_cursor("balances", &row).expect_err("corrupt");
        assert!(
            matches!(&refused, ProjectionError::CorruptRow(m) if m.contains("balances")),
            "{refused}"
        );
    }

    #[test]
    fn only_placeholders_change_for_sqlite() {
        let sql = r#"SELECT "a$1", '$.path', 'it''s $2' FROM t WHERE x = $1 AND y = $12"#;
        assert_eq!(
            Dialect::Sqlite.placeholders(sql),
            r#"SELECT "a$1", '$.path', 'it''s $2' FROM t WHERE x = ?1 AND y = ?12"#
        );
        assert_eq!(Dialect::Postgres.placeholders(sql), sql);
    }

    #[test]
    fn every_read_model_is_listed_once_with_its_own_tables() {
        let mut tables = std::collections::BTreeSet::new();
        for p in Projection::ALL {
            assert_eq!(Projection::parse(p.name()).ok(), Some(p));
            for t in p.model().tables {
                assert!(tables.insert(t.name), "{} is listed twice", t.name);
            }
        }
        let unknown = Projection::parse("nope").expect_err("unknown");
        assert!(
            unknown.to_string().contains("balances, status, directory"),
            "{unknown}"
        );
    }
}
