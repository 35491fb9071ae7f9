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
mod jobs;
pub mod queries;
mod schema;

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

#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error("read-model database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("event at position {position}: {message}")]
    Event { position: u64, message: String },
    #[error("unknown read model {0:?}; known: balances, status, directory")]
    UnknownProjection(String),
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

    pub fn name(self) -> &'static str {
        match self {
            Self::Balances => "balances",
            Self::Status => "status",
            Self::Directory => "directory",
        }
    }

    pub fn parse(name: &str) -> Result<Self, ProjectionError> {
        Self::ALL
            .into_iter()
            .find(|p| p.name() == name)
            .ok_or_else(|| ProjectionError::UnknownProjection(name.to_string()))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Postgres,
    Sqlite,
}

impl Dialect {
    /// `$N` → `?N` for SQLite (which binds `?N` to argument N exactly).
    pub(crate) fn placeholders(self, sql: &str) -> String {
        match self {
            Dialect::Postgres => sql.to_string(),
            Dialect::Sqlite => sql.replace('$', "?"),
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

/// The PostgreSQL advisory-lock key of a projector's lease (scoped to the database).
fn lease_key(p: Projection) -> i64 {
    0x6964_656e_0000 + p as i64
}

/// The PostgreSQL advisory-lock key held while a read model is rebuilt.
fn rebuild_key(p: Projection) -> i64 {
    0x6964_656e_0100 + p as i64
}

/// Held while a rebuild runs. Its connection is closed, never returned to the pool, when
/// dropped: PostgreSQL then releases the advisory lock with the session.
#[derive(Debug)]
pub(crate) struct RebuildLease {
    conn: Option<sqlx::pool::PoolConnection<sqlx::Any>>,
}

impl Drop for RebuildLease {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            drop(conn.detach());
        }
    }
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
                                .execute(conn)
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
                tracing::warn!(projection = p.name(), error = %e, "cannot drop a killed rebuild's tables");
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

    /// Takes the rebuild lock of a read model: `None` when another process holds it. On
    /// SQLite (one process) the in-process job table is the only guard.
    pub(crate) async fn try_rebuild_lease(
        &self,
        p: Projection,
    ) -> Result<Option<RebuildLease>, ProjectionError> {
        if self.dialect == Dialect::Sqlite {
            return Ok(Some(RebuildLease { conn: None }));
        }
        let mut conn = self.writer.acquire().await?;
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(rebuild_key(p))
            .fetch_one(&mut *conn)
            .await?;
        Ok(got.then_some(RebuildLease { conn: Some(conn) }))
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
        Ok(match row {
            Some(r) => FeedCursor {
                xid: u64::try_from(r.try_get::<i64, _>(0)?).unwrap_or(0),
                position: u64::try_from(r.try_get::<i64, _>(1)?).unwrap_or(0),
            },
            None => FeedCursor::default(),
        })
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

    /// Applies at most one batch of `p`'s pending events into the tables with `suffix`,
    /// starting at `from`. Returns the new cursor (unchanged when nothing was pending).
    async fn step(
        &self,
        p: Projection,
        name: &str,
        suffix: &str,
        from: FeedCursor,
        limit: u32,
    ) -> Result<(FeedCursor, usize, apply::Touched), ProjectionError> {
        let events = self.log.read_feed(from, limit).await?;
        let Some(last) = events.last().map(identity_store::StoredEvent::cursor) else {
            return Ok((from, 0, apply::Touched::default()));
        };
        let mut tx = self.writer.begin_with(self.dialect.begin()).await?;
        // The checkpoint row is locked for the transaction: another process projecting the
        // same database waits here, then sees the moved checkpoint and applies nothing twice.
        let row = sqlx::query(&self.dialect.placeholders(&format!(
            "SELECT xid, position FROM projection_checkpoints WHERE name = $1{}",
            self.dialect.lock_suffix()
        )))
        .bind(name)
        .fetch_one(&mut *tx)
        .await?;
        let stored = FeedCursor {
            xid: u64::try_from(row.try_get::<i64, _>(0)?).unwrap_or(0),
            position: u64::try_from(row.try_get::<i64, _>(1)?).unwrap_or(0),
        };
        if stored != from {
            tx.rollback().await?;
            self.wake_feed_readers();
            return Ok((stored, 0, apply::Touched::default()));
        }
        let sql = Sql::new(self.dialect, suffix);
        let touched = apply::apply_batch(p, &mut tx, &sql, &events).await?;
        self.save_checkpoint(&mut tx, name, last).await?;
        tx.commit().await?;
        self.wake_feed_readers();
        Ok((last, events.len(), touched))
    }

    /// Wakes every feed reader of this process after one of our write transactions ended.
    /// On PostgreSQL the feed stops below the oldest running transaction, and a projector's
    /// batch transaction is one: events committed meanwhile stayed hidden from the other
    /// projectors, which then slept until their one-second poll (seen: read models two events
    /// behind for over a second). Nothing notifies the end of a transaction that wrote no
    /// event, so the projector does.
    fn wake_feed_readers(&self) {
        self.log.notifier().notify_waiters();
    }

    /// Whether this process currently runs projector `p`.
    pub fn is_leader(&self, p: Projection) -> bool {
        self.leaders[&p].load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Tries to take `p`'s lease: a session advisory lock held on a dedicated connection for as
    /// long as this process projects. SQLite is embedded in one process: no lease needed.
    async fn try_lease(
        &self,
        p: Projection,
    ) -> Result<Option<Option<sqlx::pool::PoolConnection<sqlx::Any>>>, ProjectionError> {
        if self.dialect == Dialect::Sqlite {
            return Ok(Some(None));
        }
        let mut conn = self.writer.acquire().await?;
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(lease_key(p))
            .fetch_one(&mut *conn)
            .await?;
        Ok(got.then_some(Some(conn)))
    }

    /// Runs one projector until the process ends. On PostgreSQL only the replica holding the
    /// projector's lease applies events; the others follow its checkpoint (for `min_position`
    /// waits) and take over when the lease is released, e.g. when the holder dies.
    pub async fn run(self, p: Projection) {
        let notifier = self.log.notifier();
        let mut failures = 0u32;
        let mut lease: Option<Option<sqlx::pool::PoolConnection<sqlx::Any>>> = None;
        loop {
            let notified = notifier.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if lease.is_none() {
                match self.try_lease(p).await {
                    Ok(Some(held)) => {
                        lease = Some(held);
                        self.leaders[&p].store(true, std::sync::atomic::Ordering::SeqCst);
                        tracing::info!(projection = p.name(), "took the projector lease");
                        if let Ok(c) =
                            Self::checkpoint_of(&self.writer, self.dialect, p.name()).await
                        {
                            self.publish(p, c);
                        }
                    }
                    Ok(None) => {
                        // Another replica projects: mirror its checkpoint.
                        if let Ok(c) =
                            Self::checkpoint_of(&self.writer, self.dialect, p.name()).await
                        {
                            if c != self.cursor(p) {
                                self.publish(p, c);
                            }
                        }
                        tokio::select! {
                            () = &mut notified => tokio::time::sleep(Duration::from_millis(20)).await,
                            () = tokio::time::sleep(Duration::from_millis(200)) => {}
                        }
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(projection = p.name(), error = %e, "cannot take the projector lease; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                }
            }
            let from = self.cursor(p);
            let result = {
                let _guard = self.locks[&p].lock().await;
                self.step(p, p.name(), "", from, BATCH).await
            };
            match result {
                Ok((cursor, applied, touched)) => {
                    if failures > 0 {
                        self.board.recovered(p);
                    }
                    failures = 0;
                    if applied > 0 {
                        tracing::debug!(
                            projection = p.name(),
                            position = cursor.position,
                            applied,
                            "applied events"
                        );
                    }
                    if applied as u32 == BATCH {
                        tracing::info!(
                            projection = p.name(),
                            position = cursor.position,
                            "catching up"
                        );
                    }
                    if applied > 0 {
                        self.publish_applied(p, cursor, &touched);
                    } else if cursor != from {
                        // Another process moved the checkpoint.
                        self.publish(p, cursor);
                    }
                    if applied == 0 && cursor == from {
                        tokio::select! {
                            () = &mut notified => {}
                            () = tokio::time::sleep(Duration::from_secs(1)) => {}
                        }
                    }
                }
                Err(e) => {
                    failures += 1;
                    self.board.failed(p, &e);
                    tracing::error!(projection = p.name(), error = %e, failures, "projector failed; retrying");
                    if e.is_unavailable() {
                        // The lease's connection may be gone with the database: close it (a
                        // pooled connection would keep the lock) and take the lease anew.
                        if let Some(Some(conn)) = lease.take() {
                            let _ = sqlx::Connection::close(conn.detach()).await;
                        }
                        self.leaders[&p].store(false, std::sync::atomic::Ordering::SeqCst);
                    }
                    tokio::time::sleep(Duration::from_millis(100 * u64::from(failures.min(50))))
                        .await;
                    if let Ok(c) = Self::checkpoint_of(&self.writer, self.dialect, p.name()).await {
                        self.publish(p, c);
                    }
                }
            }
        }
    }

    /// Starts every projector in the background.
    pub fn spawn_all(&self) {
        for p in Projection::ALL {
            tokio::spawn(self.clone().run(p));
        }
    }

    /// Waits until `p` has applied the event at global position `position`, or `timeout`
    /// passes. Returns whether it got there.
    pub async fn wait_for(
        &self,
        p: Projection,
        position: u64,
        timeout: Duration,
    ) -> Result<bool, ProjectionError> {
        let deadline = Instant::now() + timeout;
        let mut rx = self.cursors[&p].subscribe();
        // The target's place in feed order; it may not be visible yet, so look again later.
        let mut target = self.log.cursor_of(position).await?;
        loop {
            if let Some(t) = target {
                if *rx.borrow() >= t {
                    return Ok(true);
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(false);
            }
            let _ = tokio::time::timeout(left.min(Duration::from_millis(250)), rx.changed()).await;
            if target.is_none() {
                target = self.log.cursor_of(position).await?;
            }
        }
    }

    /// Rebuilds a read model from position 0 beside the live one, then swaps it in while the
    /// service keeps running. Returns the number of events replayed.
    pub async fn rebuild(&self, p: Projection) -> Result<u64, ProjectionError> {
        self.rebuild_with_progress(p, |_| {}).await
    }

    /// [`Projections::rebuild`], calling `progress` with the events replayed so far after
    /// every batch.
    pub async fn rebuild_with_progress(
        &self,
        p: Projection,
        progress: impl FnMut(u64),
    ) -> Result<u64, ProjectionError> {
        let suffix = format!("__r{}", chrono::Utc::now().timestamp_micros());
        let replayed = self.build_beside(p, &suffix, progress).await?;
        let guard = self.locks[&p].lock().await;
        // Catch up with what arrived meanwhile, then swap under the projector's lock.
        let shadow_name = format!("{}{suffix}", p.name());
        let mut cursor = Self::checkpoint_of(&self.writer, self.dialect, &shadow_name).await?;
        loop {
            let (next, n, _) = self.step(p, &shadow_name, &suffix, cursor, BATCH).await?;
            if n == 0 {
                break;
            }
            cursor = next;
        }
        let mut tx = self.writer.begin_with(self.dialect.begin()).await?;
        for t in schema::tables(p) {
            sqlx::query(&format!("DROP TABLE IF EXISTS {}", t.name))
                .execute(&mut *tx)
                .await?;
            sqlx::query(&format!(
                "ALTER TABLE {}{suffix} RENAME TO {}",
                t.name, t.name
            ))
            .execute(&mut *tx)
            .await?;
            // Indexes keep their names through a table's rename: give them the live names,
            // which the next start looks for.
            for index in schema::indexes(t, self.trigram) {
                let name = schema::index_name(index);
                let shadow = name.replace("{t}", &format!("{}{suffix}", t.name));
                let live = name.replace("{t}", t.name);
                let statements = match self.dialect {
                    Dialect::Postgres => {
                        vec![format!("ALTER INDEX IF EXISTS {shadow} RENAME TO {live}")]
                    }
                    // SQLite cannot rename an index: make it anew under the live name.
                    Dialect::Sqlite => vec![
                        format!("DROP INDEX IF EXISTS {shadow}"),
                        index.replace("{t}", t.name),
                    ],
                };
                for statement in statements {
                    sqlx::query(&statement).execute(&mut *tx).await?;
                }
            }
        }
        self.save_checkpoint(&mut tx, p.name(), cursor).await?;
        sqlx::query(
            &self
                .dialect
                .placeholders("DELETE FROM projection_checkpoints WHERE name = $1"),
        )
        .bind(&shadow_name)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.wake_feed_readers();
        self.publish(p, cursor);
        drop(guard);
        tracing::info!(
            projection = p.name(),
            replayed,
            "read model rebuilt and swapped in"
        );
        Ok(replayed)
    }

    /// Replays every event into fresh tables with `suffix`; returns the events replayed.
    ///
    /// A reader task streams the log in large chunks while this one folds them in memory
    /// ([`apply::Folder`]): a wallet credited a hundred times is written once, not a hundred
    /// times. Pending rows are written, with the shadow checkpoint, when they reach
    /// [`REBUILD_PENDING`], when an event must be applied alone, and at the end, so memory
    /// stays bounded however long the log is.
    async fn build_beside(
        &self,
        p: Projection,
        suffix: &str,
        mut progress: impl FnMut(u64),
    ) -> Result<u64, ProjectionError> {
        Self::create_tables(&self.writer, self.dialect, p, suffix, self.trigram).await?;
        let shadow_name = format!("{}{suffix}", p.name());
        sqlx::query(&self.dialect.placeholders(
            "INSERT INTO projection_checkpoints (name, xid, position, updated_at) VALUES ($1, 0, 0, $2)",
        ))
        .bind(&shadow_name)
        .bind(now_text())
        .execute(&self.writer)
        .await?;
        let (chunks, mut received) = tokio::sync::mpsc::channel(2);
        let log = self.log.clone();
        let (read, pending) = self.replay_sizes;
        let reader = tokio::spawn(async move {
            let mut cursor = FeedCursor::default();
            loop {
                let chunk = log.read_feed(cursor, read).await;
                let last = match &chunk {
                    Ok(events) => events.last().map(identity_store::StoredEvent::cursor),
                    Err(_) => None,
                };
                if chunks.send(chunk).await.is_err() {
                    return;
                }
                match last {
                    Some(c) => cursor = c,
                    None => return,
                }
            }
        });
        let sql = Sql::new(self.dialect, suffix);
        let mut folder = apply::Folder::new(p);
        let mut replayed = 0u64;
        let mut cursor = FeedCursor::default();
        let mut saved = cursor;
        while let Some(chunk) = received.recv().await {
            let events = chunk?;
            let Some(last) = events.last().map(identity_store::StoredEvent::cursor) else {
                break;
            };
            let mut tx = None;
            for e in &events {
                if !folder.fold(e)? {
                    let conn = match &mut tx {
                        Some(tx) => tx,
                        None => tx.insert(self.writer.begin_with(self.dialect.begin()).await?),
                    };
                    folder.apply_alone(conn, &sql, e).await?;
                }
            }
            cursor = last;
            replayed += events.len() as u64;
            if tx.is_some() || folder.pending() >= pending {
                let mut tx = match tx {
                    Some(tx) => tx,
                    None => self.writer.begin_with(self.dialect.begin()).await?,
                };
                folder.finish(&mut tx, &sql).await?;
                self.save_checkpoint(&mut tx, &shadow_name, cursor).await?;
                tx.commit().await?;
                self.wake_feed_readers();
                saved = cursor;
            }
            progress(replayed);
        }
        reader.abort();
        if saved != cursor {
            let mut tx = self.writer.begin_with(self.dialect.begin()).await?;
            folder.finish(&mut tx, &sql).await?;
            self.save_checkpoint(&mut tx, &shadow_name, cursor).await?;
            tx.commit().await?;
            self.wake_feed_readers();
        }
        Ok(replayed)
    }

    async fn save_checkpoint(
        &self,
        conn: &mut sqlx::AnyConnection,
        name: &str,
        cursor: FeedCursor,
    ) -> Result<(), ProjectionError> {
        sqlx::query(&self.dialect.placeholders(
            "UPDATE projection_checkpoints SET xid = $1, position = $2, updated_at = $3 WHERE name = $4",
        ))
        .bind(i64::try_from(cursor.xid).unwrap_or(i64::MAX))
        .bind(i64::try_from(cursor.position).unwrap_or(i64::MAX))
        .bind(now_text())
        .bind(name)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    /// Replays every event into fresh tables beside the live ones, up to the live
    /// projector's checkpoint, and lists every row that differs. Drops the fresh tables.
    pub async fn verify(&self, p: Projection) -> Result<Vec<String>, ProjectionError> {
        let suffix = format!("__v{}", chrono::Utc::now().timestamp_micros());
        let result = self.verify_with(p, &suffix).await;
        for t in schema::tables(p) {
            let _ = sqlx::query(&format!("DROP TABLE IF EXISTS {}{suffix}", t.name))
                .execute(&self.writer)
                .await;
        }
        let _ = sqlx::query(
            &self
                .dialect
                .placeholders("DELETE FROM projection_checkpoints WHERE name = $1"),
        )
        .bind(format!("{}{suffix}", p.name()))
        .execute(&self.writer)
        .await;
        result
    }

    async fn verify_with(
        &self,
        p: Projection,
        suffix: &str,
    ) -> Result<Vec<String>, ProjectionError> {
        // Hold the live projector still so both sides stand at the same place in the feed.
        let _guard = self.locks[&p].lock().await;
        let live = Self::checkpoint_of(&self.writer, self.dialect, p.name()).await?;
        Self::create_tables(&self.writer, self.dialect, p, suffix, self.trigram).await?;
        let shadow_name = format!("{}{suffix}", p.name());
        sqlx::query(&self.dialect.placeholders(
            "INSERT INTO projection_checkpoints (name, xid, position, updated_at) VALUES ($1, 0, 0, $2)",
        ))
        .bind(&shadow_name)
        .bind(now_text())
        .execute(&self.writer)
        .await?;
        let mut cursor = FeedCursor::default();
        while cursor < live {
            let events = self.log.read_feed(cursor, BATCH).await?;
            let events: Vec<_> = events.into_iter().filter(|e| e.cursor() <= live).collect();
            if events.is_empty() {
                break;
            }
            let sql = Sql::new(self.dialect, suffix);
            let mut tx = self.writer.begin_with(self.dialect.begin()).await?;
            apply::apply_batch(p, &mut tx, &sql, &events).await?;
            tx.commit().await?;
            self.wake_feed_readers();
            cursor = events
                .last()
                .map(identity_store::StoredEvent::cursor)
                .unwrap_or(live);
        }
        let mut differences = Vec::new();
        for t in schema::tables(p) {
            let live_rows = self.dump(t.name, t.key).await?;
            let fresh_rows = self.dump(&format!("{}{suffix}", t.name), t.key).await?;
            if live_rows != fresh_rows {
                let n = live_rows.len().max(fresh_rows.len());
                for i in 0..n {
                    let a = live_rows.get(i);
                    let b = fresh_rows.get(i);
                    if a != b {
                        differences.push(format!("{}: live {:?} != replayed {:?}", t.name, a, b));
                        if differences.len() > 20 {
                            return Ok(differences);
                        }
                    }
                }
            }
        }
        Ok(differences)
    }

    /// Every row of a table as text, in key order.
    async fn dump(&self, table: &str, key: &str) -> Result<Vec<String>, ProjectionError> {
        let rows = sqlx::query(&format!("SELECT * FROM {table} ORDER BY {key}"))
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                let mut cells = Vec::new();
                for i in 0..r.len() {
                    let cell = r
                        .try_get::<Option<String>, _>(i)
                        .map(|v| v.unwrap_or_else(|| "NULL".into()))
                        .or_else(|_| {
                            r.try_get::<Option<i64>, _>(i)
                                .map(|v| v.map_or("NULL".into(), |n| n.to_string()))
                        })?;
                    cells.push(cell);
                }
                Ok(cells.join("|"))
            })
            .collect()
    }
}
