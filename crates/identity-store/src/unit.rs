//! Units of work: decisions on one or several aggregates, committed in one transaction or
//! not at all.
//!
//! A saga such as "claim the email, then register the user" used to be two commands: a
//! caller's cancelled future (a short deadline, a dropped connection) or a crash between
//! them left the claim taken with no user behind it. In a unit, every decision is made in
//! memory first and all their events go to the group-commit writer as one append, which the
//! writer commits atomically (one statement on PostgreSQL, one savepoint on SQLite). A unit
//! dropped before [`Unit::commit`] appends nothing; once the append is handed over, the
//! writer finishes it whether or not the caller still waits.
//!
//! Answers that append nothing (a refusal, an idempotent retry, a successful password check)
//! are decided on cached state, which another replica may have moved. Before such an answer
//! goes out, the aggregate's stored head sequence is compared with the cached one: a stale
//! refusal is re-decided on fresh state, a stale no-op fails the commit with a conflict so
//! that the caller re-runs the unit (DESIGN.md, performance notes).

use std::any::Any;
use std::sync::Arc;

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde_json::Value;

use crate::append::{AppendError, NewEvent};
use crate::{event_hash, AggregateLock, CacheKey, Cached, EventLog, ExecuteError, HashInput};
use crate::{StoreError, MAX_CONFLICT_RETRIES};

/// What one decision of a unit produced. Its global position is known after the commit:
/// [`Committed::position`].
#[derive(Debug)]
pub struct Decided<A: Aggregate> {
    /// The aggregate's state after the decision.
    pub aggregate: Arc<A>,
    /// The events the decision staged (none when it changed nothing).
    pub events: Vec<A::Event>,
    /// The aggregate's sequence number after the decision.
    pub sequence: usize,
    staged: usize,
}

/// The outcome of a committed unit: the global position of each staged aggregate's last
/// event.
#[derive(Debug)]
pub struct Committed {
    positions: Vec<u64>,
}

impl Committed {
    /// The global position of the decided aggregate's last event after the commit (0 when
    /// it has none).
    pub fn position<A: Aggregate>(&self, decided: &Decided<A>) -> u64 {
        self.positions.get(decided.staged).copied().unwrap_or(0)
    }
}

/// One aggregate taken into a unit: its command lock, its state as the unit's decisions
/// left it, and what the commit must check or keep.
struct Staged<A> {
    key: CacheKey,
    state: Cached<A>,
    /// Read from the store in this unit (true), or taken from the cache and not yet
    /// checked against the stored head (false).
    verified: bool,
    /// A decision refused: the state may be half-applied, so it is neither reused nor kept.
    poisoned: bool,
    /// The index in the unit's rows of this aggregate's last staged event.
    last_row: Option<usize>,
}

/// The type-erased side of a staged aggregate, for the commit.
trait StagedEntry: Send + Sync {
    fn key(&self) -> &CacheKey;
    fn as_any_mut(&mut self) -> &mut dyn Any;
    /// The cached sequence to check against the store, when the answer depends on it.
    fn unverified_sequence(&self) -> Option<usize>;
    /// Puts the state back in the cache after the commit; returns its position.
    fn keep(self: Box<Self>, log: &EventLog, positions: &[u64]) -> u64;
}

impl<A: Aggregate + 'static> StagedEntry for Staged<A> {
    fn key(&self) -> &CacheKey {
        &self.key
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }

    fn unverified_sequence(&self) -> Option<usize> {
        (!self.verified && self.last_row.is_none()).then_some(self.state.sequence)
    }

    fn keep(self: Box<Self>, log: &EventLog, positions: &[u64]) -> u64 {
        let mut state = self.state;
        if let Some(row) = self.last_row {
            state.position = positions.get(row).copied().unwrap_or(state.position);
        }
        let position = state.position;
        if !self.poisoned {
            log.keep(self.key, state);
        }
        position
    }
}

/// Decisions on several aggregates that commit together. Holds the command lock of every
/// aggregate it has touched until it is committed or dropped.
pub struct Unit<'l> {
    log: &'l EventLog,
    metadata: Value,
    staged: Vec<Box<dyn StagedEntry>>,
    rows: Vec<NewEvent>,
    /// Data keys made for people new in this unit, stored with its events.
    keys: crate::seal::PendingKeys,
    _locks: Vec<AggregateLock>,
}

impl std::fmt::Debug for Unit<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unit")
            .field("aggregates", &self.staged.len())
            .field("events", &self.rows.len())
            .finish()
    }
}

fn other(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Other(std::sync::Arc::new(e))
}

impl<'l> Unit<'l> {
    pub(crate) fn new(log: &'l EventLog, metadata: Value) -> Self {
        Self {
            log,
            metadata,
            staged: Vec::new(),
            rows: Vec::new(),
            keys: crate::seal::PendingKeys::default(),
            _locks: Vec::new(),
        }
    }

    /// The log this unit commits to.
    pub fn log(&self) -> &'l EventLog {
        self.log
    }

    /// Takes an aggregate into the unit (lock, then cache or store) and returns its index.
    async fn stage<A: Aggregate + 'static>(&mut self, id: &str) -> Result<usize, StoreError> {
        let key: CacheKey = (A::TYPE, id.to_string());
        if let Some(i) = self.staged.iter().position(|s| *s.key() == key) {
            return Ok(i);
        }
        self._locks
            .push(AggregateLock::acquire(&self.log.locks, key.clone()).await);
        let cached = self
            .log
            .cache
            .lock()
            .ok()
            .and_then(|mut c| c.take::<A>(&key));
        let (state, verified) = match cached {
            Some(state) => (state, false),
            None => (self.log.read_state::<A>(id).await?, true),
        };
        self.staged.push(Box::new(Staged {
            key,
            state,
            verified,
            poisoned: false,
            last_row: None,
        }));
        Ok(self.staged.len() - 1)
    }

    /// The aggregate as this unit sees it now (its own earlier decisions included).
    pub async fn state<A: Aggregate + 'static>(&mut self, id: &str) -> Result<Arc<A>, StoreError> {
        let index = self.stage::<A>(id).await?;
        let log = self.log;
        let staged = Self::staged_mut::<A>(&mut self.staged, index)?;
        if staged.poisoned {
            staged.state = log.read_state::<A>(id).await?;
            staged.poisoned = false;
            staged.verified = true;
        }
        Ok(staged.state.aggregate.clone())
    }

    fn staged_mut<A: Aggregate + 'static>(
        staged: &mut [Box<dyn StagedEntry>],
        index: usize,
    ) -> Result<&mut Staged<A>, StoreError> {
        staged
            .get_mut(index)
            .and_then(|s| s.as_any_mut().downcast_mut::<Staged<A>>())
            .ok_or_else(|| StoreError::other("a staged aggregate changed its type"))
    }

    /// Lets one aggregate decide a command and stages its events. A refusal decided on
    /// cached state is checked against the store first and, when the cache was stale,
    /// decided again on fresh state.
    pub async fn decide<A>(
        &mut self,
        id: &str,
        command: A::Command,
        services: &A::Services,
    ) -> Result<Decided<A>, ExecuteError<A::Error>>
    where
        A: Aggregate + Clone + 'static,
        A::Command: Clone,
    {
        let log = self.log;
        let index = self.stage::<A>(id).await.map_err(ExecuteError::Store)?;
        let metadata = &self.metadata;
        let first_row = self.rows.len();
        let staged = Self::staged_mut::<A>(&mut self.staged, index).map_err(ExecuteError::Store)?;
        let events = loop {
            if staged.poisoned {
                staged.state = log.read_state::<A>(id).await.map_err(ExecuteError::Store)?;
                staged.poisoned = false;
                staged.verified = true;
            }
            let sink: EventSink<A> = EventSink::default();
            let decision = Arc::make_mut(&mut staged.state.aggregate)
                .handle(command.clone(), services, &sink)
                .await;
            match decision {
                Ok(()) => break sink.collect().await,
                Err(e) => {
                    staged.poisoned = true;
                    let stale = !staged.verified
                        && staged.last_row.is_none()
                        && log
                            .stored_sequence(A::TYPE, id)
                            .await
                            .map_err(ExecuteError::Store)?
                            != staged.state.sequence;
                    if !stale {
                        return Err(ExecuteError::Domain(e));
                    }
                    tracing::debug!(
                        aggregate_type = A::TYPE,
                        "refusal decided on a stale cache; deciding again on fresh state"
                    );
                }
            }
        };
        let mut hash = staged.state.hash.clone();
        let mut rows = Vec::with_capacity(events.len());
        for (i, event) in events.iter().enumerate() {
            let payload = serde_json::to_value(event).map_err(|e| ExecuteError::Store(other(e)))?;
            let sequence = i64::try_from(staged.state.sequence + i + 1)
                .map_err(|e| ExecuteError::Store(other(e)))?;
            let event_type = event.event_type();
            let event_version = event.event_version();
            // Personal fields are sealed before the hash is chained: the chain covers what
            // is stored (seal/).
            let payload = log
                .seal(
                    crate::seal::Place {
                        aggregate_type: A::TYPE,
                        aggregate_id: id,
                        event_type: &event_type,
                    },
                    staged.state.sequence == 0,
                    payload,
                    &mut self.keys,
                )
                .await
                .map_err(ExecuteError::Store)?;
            hash = event_hash(
                &hash,
                &HashInput {
                    aggregate_type: A::TYPE,
                    aggregate_id: id,
                    sequence: sequence as u64,
                    event_type: &event_type,
                    event_version: &event_version,
                    payload: &payload,
                    metadata,
                },
            );
            rows.push(NewEvent {
                aggregate_type: A::TYPE,
                aggregate_id: id.to_string(),
                sequence,
                event_type,
                event_version,
                payload,
                metadata: metadata.clone(),
                hash: hash.clone(),
            });
        }
        if !rows.is_empty() {
            staged.state.sequence += rows.len();
            staged.state.hash = hash;
            staged.last_row = Some(first_row + rows.len() - 1);
        }
        let decided = Decided {
            aggregate: staged.state.aggregate.clone(),
            events,
            sequence: staged.state.sequence,
            staged: index,
        };
        self.rows.extend(rows);
        Ok(decided)
    }

    /// Appends every staged event in one transaction and answers after the commit. Fails
    /// with a conflict when another writer moved one of the aggregates: re-run the unit.
    pub async fn commit(mut self) -> Result<Committed, ExecuteError<std::convert::Infallible>> {
        for staged in &self.staged {
            if let Some(sequence) = staged.unverified_sequence() {
                let (aggregate_type, id) = staged.key();
                let stored = self
                    .log
                    .stored_sequence(aggregate_type, id)
                    .await
                    .map_err(ExecuteError::Store)?;
                if stored != sequence {
                    return Err(ExecuteError::Conflict);
                }
            }
        }
        let positions = if self.rows.is_empty() {
            Vec::new()
        } else {
            let rows = std::mem::take(&mut self.rows);
            let keys = std::mem::take(&mut self.keys);
            match self.log.appender.append(rows, keys.rows()).await {
                Ok(positions) => {
                    self.log.keep_keys(keys);
                    self.log.appended.notify_waiters();
                    positions
                }
                Err(AppendError::Conflict) => return Err(ExecuteError::Conflict),
                Err(AppendError::Store(e)) => return Err(ExecuteError::Store(e)),
            }
        };
        let staged = std::mem::take(&mut self.staged);
        let positions = staged
            .into_iter()
            .map(|s| s.keep(self.log, &positions))
            .collect();
        Ok(Committed { positions })
    }
}

/// Turns a unit's commit error into the error type of the caller's aggregate.
pub fn widen<E: std::error::Error>(e: ExecuteError<std::convert::Infallible>) -> ExecuteError<E> {
    match e {
        ExecuteError::Domain(never) => match never {},
        ExecuteError::Conflict => ExecuteError::Conflict,
        ExecuteError::Store(s) => ExecuteError::Store(s),
    }
}

/// The future a unit's builder returns: the unit back, with the decision on the aggregate the
/// caller asked about.
pub type Built<'c, A, E> = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<(Unit<'c>, Decided<A>), E>> + Send + 'c>,
>;

impl EventLog {
    /// Builds a unit with `build` and commits it; after a lost race (a conflict on any of
    /// its aggregates) builds it again on fresh state, up to [`MAX_CONFLICT_RETRIES`] times.
    /// `build`'s own errors come back as they are, the commit's through `commit_error`.
    pub async fn run_unit<'c, A, E, F>(
        &'c self,
        metadata: &std::collections::HashMap<String, String>,
        mut build: F,
        commit_error: fn(ExecuteError<std::convert::Infallible>) -> E,
    ) -> Result<crate::Executed<A>, E>
    where
        A: Aggregate + 'static,
        F: FnMut(Unit<'c>) -> Built<'c, A, E>,
    {
        let mut attempt = 0;
        loop {
            let (unit, decided) = build(self.unit(metadata)).await?;
            match unit.commit().await {
                Ok(committed) => {
                    return Ok(crate::Executed {
                        position: committed.position(&decided),
                        aggregate: decided.aggregate,
                        events: decided.events,
                        sequence: decided.sequence,
                    })
                }
                Err(ExecuteError::Conflict) if attempt < MAX_CONFLICT_RETRIES => {
                    attempt += 1;
                    tracing::debug!(
                        aggregate_type = A::TYPE,
                        attempt,
                        "optimistic-concurrency conflict; re-running on fresh state"
                    );
                    tokio::time::sleep(crate::conflict_backoff(attempt)).await;
                }
                Err(e) => return Err(commit_error(e)),
            }
        }
    }

    /// A new unit of work whose events will carry `metadata`.
    pub fn unit(&self, metadata: &std::collections::HashMap<String, String>) -> Unit<'_> {
        let metadata = serde_json::to_value(metadata).unwrap_or(Value::Null);
        Unit::new(self, metadata)
    }

    /// The highest sequence stored for one aggregate (0 when it has no events).
    pub(crate) async fn stored_sequence(
        &self,
        aggregate_type: &str,
        id: &str,
    ) -> Result<usize, StoreError> {
        let sequence: i64 = crate::backend::on_pool!(&self.backend, p => sqlx::query_scalar(
            "SELECT COALESCE(MAX(sequence), 0) FROM events WHERE aggregate_type = $1 AND aggregate_id = $2",
        )
        .bind(aggregate_type)
        .bind(id)
        .fetch_one(p)
        .await?);
        Ok(usize::try_from(sequence)?)
    }
}

impl EventLog {
    /// The latest sequence of every aggregate of one type: a cheap way for a small registry
    /// (tenants, admins) to see which of its aggregates changed, on any replica, without
    /// waiting for the feed's horizon.
    pub async fn heads_of_type(
        &self,
        aggregate_type: &str,
    ) -> Result<Vec<(String, usize)>, StoreError> {
        let rows: Vec<(String, i64)> = crate::backend::on_pool!(&self.backend, p => sqlx::query_as(
            "SELECT aggregate_id, MAX(sequence) FROM events WHERE aggregate_type = $1 GROUP BY aggregate_id",
        )
        .bind(aggregate_type)
        .fetch_all(p)
        .await?);
        rows.into_iter()
            .map(|(id, seq)| {
                usize::try_from(seq)
                    .map(|s| (id, s))
                    .map_err(StoreError::from)
            })
            .collect()
    }
}
