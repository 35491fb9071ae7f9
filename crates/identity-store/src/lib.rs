//! The identity service's event log, on PostgreSQL (production) or SQLite (the embedded
//! default), behind one type: [`EventLog`].
//!
//! Events live in the table layout of cqrs-es's postgres-es / sqlite-es (a test reads our
//! log through their repositories, so the ecosystem's tools keep working), with more columns: `global_position`, a total
//! order over all events, `recorded_at`, the chained `hash`, and on PostgreSQL the writing
//! transaction (`xid`), for gap-safe readers of the global feed.
//!
//! [`EventLog::execute`] is the command path: take the aggregate from the cache (or load it),
//! let it decide, append its events through the group-commit writer (`append.rs`), and
//! answer after the commit with the events, the resulting state and the global position of
//! the last event. The cache is safe across replicas because the primary key
//! (aggregate, sequence) still rejects a stale append: the entry is then evicted and the
//! command re-run on fresh state, a bounded number of times.
//!
//! Every event read from the log passes one decode point (`decode.rs`), which runs the
//! domain's upcasters (`identity_domain::upcast`): the only thing this crate takes from the
//! domain. It knows nothing of gRPC.

#![forbid(unsafe_code)]

mod append;
mod audit;
mod backend;
mod cache;
mod chain;
mod checkpoint;
mod decode;
mod error;
mod feed;
mod migrations;
mod outbox;
mod seal;
mod unit;

pub use audit::{ChainBreak, ChainReport, EventFilter, MAX_REPORTED_BREAKS};
pub use cache::DEFAULT_CACHE_CAPACITY;
use cache::{AggregateCache, AggregateLock, CacheKey, Cached, CommandLocks};
pub use chain::{event_hash, HashInput};
pub use checkpoint::{
    Checkpoint, CheckpointCheck, CheckpointSigner, CheckpointVerifier, RunningDigest,
};
pub use decode::Upcasters;
pub use error::{Cause, Report, StoreError};
pub use feed::{FeedCursor, StoredEvent, NOTIFY_CHANNEL};
pub use outbox::OutboxMessage;
pub use seal::{Keyring, MasterKey, SealForward};
pub use unit::{widen, Built, Committed, Decided, Unit};

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use cqrs_es::{Aggregate, EventEnvelope};
use serde_json::Value;
use sqlx::{PgPool, Row};

use backend::postgres::Postgres;
use backend::sqlite::Sqlite;
use backend::{dialect, on_pool, Backend, Dialect, EventRow as _};

/// How many times a command is re-run after losing an optimistic-concurrency race.
pub const MAX_CONFLICT_RETRIES: u32 = 16;

/// Why a command did not go through.
#[derive(Debug, thiserror::Error)]
pub enum ExecuteError<E: std::error::Error> {
    /// The aggregate refused the command.
    #[error(transparent)]
    Domain(E),
    /// Every retry lost an optimistic-concurrency race.
    #[error("the aggregate kept changing; gave up after {MAX_CONFLICT_RETRIES} retries")]
    Conflict,
    #[error(transparent)]
    Store(StoreError),
}

/// The outcome of a command that went through.
#[derive(Debug)]
pub struct Executed<A: Aggregate> {
    /// The aggregate's state after the command (shared with the aggregate cache).
    pub aggregate: Arc<A>,
    /// The events the command appended (none when it changed nothing).
    pub events: Vec<A::Event>,
    /// The aggregate's sequence number after the command.
    pub sequence: usize,
    /// The global position of the aggregate's last event (0 when it has none).
    pub position: u64,
}

/// An aggregate as loaded from the log.
#[derive(Debug)]
pub struct Loaded<A> {
    pub aggregate: A,
    pub sequence: usize,
}

/// The event log. Cheap to clone: it holds a connection pool.
#[derive(Debug, Clone)]
pub struct EventLog {
    backend: Backend,
    /// Commands on one aggregate in this process run one at a time. Optimistic concurrency
    /// still guards the store (other replicas write too); the lock only spares a hot
    /// aggregate (one wallet credited by many callers) a storm of conflicts and retries.
    /// One lock per aggregate (not striped: a slow command, a login waiting for its
    /// password hash, must not hold up an unrelated wallet).
    locks: Arc<CommandLocks>,
    /// Aggregates as the last commands left them, so that a command does not re-read its
    /// aggregate's whole history.
    cache: Arc<std::sync::Mutex<AggregateCache>>,
    appender: append::Appender,
    /// Woken after every local commit and every PostgreSQL notification of another
    /// process's commit, so feed readers react within milliseconds instead of polling.
    appended: std::sync::Arc<tokio::sync::Notify>,
    url: std::sync::Arc<str>,
    /// The statement timeout of event listings on PostgreSQL (none by default).
    query_timeout: Option<Duration>,
    /// What brings every event read forward to its current shape (`decode.rs`).
    upcasters: Upcasters,
    /// The master key and the people's data keys that seal personal fields (`seal/`).
    keyring: Keyring,
}

/// Connection settings.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// `postgres://…` or `sqlite://path/to/file.db`.
    pub url: String,
    pub max_connections: u32,
    /// Events (over the cached aggregates' histories) kept in memory between commands;
    /// 0 turns the cache off.
    pub cache_capacity: usize,
}

/// How long to wait before re-running after a lost race: grows with the attempt, jittered.
pub fn conflict_backoff(attempt: u32) -> Duration {
    // Spread retries so that racing commands do not collide again in lock step.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let jitter_us = u64::from(nanos % 500);
    Duration::from_micros(u64::from(attempt.min(8)) * 300 + jitter_us)
}

impl EventLog {
    /// Connects to the store named by `config.url` and brings its schema up to date.
    pub async fn open(config: &StoreConfig) -> Result<Self, StoreError> {
        Self::open_with_upcasters(config, Upcasters::standard()).await
    }

    /// [`EventLog::open`], running these upcasters on every event read instead of the
    /// domain's own (a test that stores an event in an old shape registers one more).
    pub async fn open_with_upcasters(
        config: &StoreConfig,
        upcasters: Upcasters,
    ) -> Result<Self, StoreError> {
        let adjusted = backend::postgres::loopback_without_tls(config.url.trim());
        let url = adjusted.as_str();
        let backend = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres(Postgres::connect(url, config.max_connections).await?)
        } else if url.starts_with("sqlite:") {
            Backend::Sqlite(Sqlite::connect(url, config.max_connections).await?)
        } else {
            return Err(StoreError::config(
                "the database URL must start with postgres:// or sqlite://",
            ));
        };
        let log = Self {
            appender: append::Appender::start(&backend),
            backend,
            locks: Arc::default(),
            cache: Arc::new(std::sync::Mutex::new(AggregateCache {
                entries: hashlink::LinkedHashMap::new(),
                weight: 0,
                budget: config.cache_capacity,
            })),
            appended: std::sync::Arc::new(tokio::sync::Notify::new()),
            url: url.into(),
            query_timeout: None,
            upcasters,
            keyring: Keyring::default(),
        };
        log.migrate().await?;
        log.spawn_listener();
        Ok(log)
    }

    /// Seals personal fields under data keys wrapped by `master` (docs/adr/0006), and opens
    /// them on every read. Without it nothing is sealed, and a sealed field cannot be read.
    pub fn with_master_key(mut self, master: MasterKey) -> Self {
        self.keyring = Keyring::new(Some(master));
        self
    }

    /// Master keys rotated out (`IDENTITY_PREVIOUS_MASTER_KEY_FILES`): data keys they wrapped
    /// still open until [`EventLog::rewrap_keys`] moves them to the current master key.
    pub fn with_previous_master_keys(mut self, previous: Vec<MasterKey>) -> Self {
        self.keyring.set_previous(previous);
        self
    }

    /// Bounds event listings (ListEvents) on PostgreSQL by a statement timeout.
    pub fn with_query_timeout(mut self, timeout: Duration) -> Self {
        self.query_timeout = Some(timeout).filter(|t| !t.is_zero());
        self
    }

    /// Which database this is, for logs and health details.
    pub fn kind(&self) -> &'static str {
        dialect!(&self.backend, D, _pool => D::KIND)
    }

    /// The URL the log was opened with (it may hold a password: never log it).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Notified after commits; see [`EventLog::wait_for_events`].
    pub fn notifier(&self) -> std::sync::Arc<tokio::sync::Notify> {
        self.appended.clone()
    }

    /// The PostgreSQL pool, when the log lives there.
    pub fn pg_pool(&self) -> Option<&PgPool> {
        match &self.backend {
            Backend::Postgres(p) => Some(p),
            Backend::Sqlite(_) => None,
        }
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        dialect!(&self.backend, D, pool => D::migrate(pool).await)
    }

    /// Connections of the command path's pool: (open, idle).
    pub fn pool_stats(&self) -> (u32, usize) {
        on_pool!(&self.backend, p => (p.size(), p.num_idle()))
    }

    /// Checks that the store answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        on_pool!(&self.backend, p => sqlx::query("SELECT 1").execute(p).await.map(|_| ()))
            .map_err(StoreError::from)
    }

    /// Closes the pool, waiting for connections to be returned.
    pub async fn close(&self) {
        on_pool!(&self.backend, p => p.close().await)
    }

    /// Loads an aggregate's current state; `None` when it has no events.
    pub async fn load<A: Aggregate>(&self, id: &str) -> Result<Option<Loaded<A>>, StoreError> {
        let state = self.read_state::<A>(id).await?;
        Ok((state.sequence > 0).then(|| Loaded {
            aggregate: Arc::into_inner(state.aggregate).unwrap_or_default(),
            sequence: state.sequence,
        }))
    }

    /// Reads an aggregate's events from the store and applies them in order, keeping what
    /// the next append needs (last hash and position).
    async fn read_state<A: Aggregate>(&self, id: &str) -> Result<Cached<A>, StoreError> {
        type Stored = (i64, Option<String>, i64);
        let mut aggregate = A::default();
        let mut last: Stored = (0, None, 0);
        // The person's data key is read once, at the first event with personal fields (a
        // new aggregate, a registration's, needs none).
        let mut key_ready = !identity_domain::personal::is_personal(A::TYPE);
        let mut key = None;
        let apply = |aggregate: &mut A,
                     key: Option<&seal::Known>,
                     event_type: &str,
                     version: String,
                     payload: Value| {
            let at = seal::Place {
                aggregate_type: A::TYPE,
                aggregate_id: id,
                event_type,
            };
            let payload = seal::open_payload(key, at, payload)?;
            let (version, payload) =
                self.upcasters
                    .bring_forward(A::TYPE, event_type, version, payload);
            aggregate.apply(decode::payload(A::TYPE, id, event_type, &version, payload)?);
            Ok::<_, StoreError>(())
        };
        on_pool!(&self.backend, pool => {
            let mut rows = sqlx::query(
                "SELECT sequence, payload, hash, global_position, event_type, event_version
                 FROM events WHERE aggregate_type = $1 AND aggregate_id = $2 ORDER BY sequence",
            )
            .bind(A::TYPE)
            .bind(id)
            .fetch(pool);
            while let Some(row) = futures::TryStreamExt::try_next(&mut rows).await? {
                let event_type: &str = row.try_get("event_type")?;
                if !key_ready
                    && !identity_domain::personal::sealed_fields(A::TYPE, event_type).is_empty()
                {
                    key = self.prepare_key(id).await?;
                    key_ready = true;
                }
                apply(
                    &mut aggregate,
                    key.as_ref(),
                    row.try_get("event_type")?,
                    row.try_get("event_version")?,
                    row.json("payload")?,
                )?;
                last = (row.try_get(0)?, row.try_get(2)?, row.try_get(3)?);
            }
        });
        let number = |n: i64| u64::try_from(n).map_err(StoreError::from);
        Ok(Cached {
            aggregate: Arc::new(aggregate),
            sequence: usize::try_from(number(last.0)?).map_err(StoreError::from)?,
            hash: last.1.unwrap_or_default(),
            position: number(last.2)?,
        })
    }

    /// Every event of one aggregate, in order, as its type (through the decode point).
    pub async fn events<A: Aggregate>(
        &self,
        id: &str,
    ) -> Result<Vec<EventEnvelope<A>>, StoreError> {
        self.aggregate_history(A::TYPE, id)
            .await?
            .into_iter()
            .map(|e| {
                let metadata = match &e.metadata {
                    Value::Object(m) => m
                        .iter()
                        .map(|(k, v)| {
                            (
                                k.clone(),
                                v.as_str().map_or_else(|| v.to_string(), str::to_string),
                            )
                        })
                        .collect(),
                    _ => HashMap::new(),
                };
                Ok(EventEnvelope {
                    aggregate_id: e.aggregate_id.clone(),
                    sequence: usize::try_from(e.sequence).map_err(StoreError::from)?,
                    payload: e.decode()?,
                    metadata,
                })
            })
            .collect()
    }

    /// Runs a command: take the aggregate from the cache (or load it), decide, append; re-run
    /// on fresh state after a lost race. A unit of one decision (`unit.rs`).
    pub async fn execute<A, C>(
        &self,
        id: &str,
        command: &C,
        services: &A::Services,
        metadata: &HashMap<String, String>,
    ) -> Result<Executed<A>, ExecuteError<A::Error>>
    where
        A: Aggregate<Command = C> + Clone + 'static,
        A::Error: Send,
        C: Clone + Send + Sync,
    {
        self.run_unit(
            metadata,
            |mut unit| {
                let command = command.clone();
                Box::pin(async move {
                    let decided = unit.decide::<A>(id, command, services).await?;
                    Ok((unit, decided))
                })
            },
            unit::widen,
        )
        .await
    }

    fn keep<A: Send + Sync + 'static>(&self, key: CacheKey, state: Cached<A>) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.put(key, state);
        }
    }

    /// The global position of one event of an aggregate (0 for sequence 0).
    pub async fn position_of(
        &self,
        aggregate_type: &str,
        id: &str,
        sequence: usize,
    ) -> Result<u64, StoreError> {
        if sequence == 0 {
            return Ok(0);
        }
        let seq = i64::try_from(sequence)?;
        let position: Option<i64> = on_pool!(&self.backend, pool => sqlx::query_scalar(
            "SELECT global_position FROM events WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence = $3",
        )
        .bind(aggregate_type)
        .bind(id)
        .bind(seq)
        .fetch_optional(pool)
        .await?);
        let position = position.ok_or_else(|| {
            StoreError::other(format!(
                "event {aggregate_type}/{id}#{sequence} has no position"
            ))
        })?;
        Ok(u64::try_from(position)?)
    }

    /// The highest global position written so far (0 for an empty log).
    pub async fn head_position(&self) -> Result<u64, StoreError> {
        let sql = "SELECT COALESCE(MAX(global_position), 0) FROM events";
        let head: i64 = on_pool!(&self.backend, p => sqlx::query_scalar(sql).fetch_one(p).await?);
        Ok(u64::try_from(head)?)
    }
}
