//! What operators see of the projectors beyond their cursors: failures (an event a projector
//! cannot apply is retried with backoff, and reported here, never silently), and rebuilds
//! run as background jobs, one per read model at a time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::{Projection, ProjectionError, Projections};

/// A projector's recent failures.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProjectorHealth {
    /// Failed attempts in a row (0 once a batch goes through again).
    pub consecutive_failures: u32,
    /// Failed attempts since the process started.
    pub total_failures: u64,
    /// What the last failure said (empty once a batch goes through again).
    pub last_error: String,
}

/// Where a rebuild job stands.
#[derive(Debug, Clone, PartialEq)]
pub enum JobState {
    Running,
    Succeeded,
    Failed(String),
}

impl JobState {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed(_) => "failed",
        }
    }
}

/// One rebuild of one read model.
#[derive(Debug, Clone, PartialEq)]
pub struct RebuildJob {
    pub id: String,
    pub projection: Projection,
    pub state: JobState,
    /// Events replayed so far.
    pub events_replayed: u64,
    /// Seconds since the job started, or that it took.
    pub seconds: f64,
    started: Instant,
}

#[derive(Debug, Default)]
pub(crate) struct Board {
    health: Mutex<HashMap<Projection, ProjectorHealth>>,
    jobs: Mutex<HashMap<Projection, RebuildJob>>,
}

impl Board {
    pub(crate) fn failed(&self, p: Projection, e: &ProjectionError) {
        if let Ok(mut health) = self.health.lock() {
            let h = health.entry(p).or_default();
            h.consecutive_failures = h.consecutive_failures.saturating_add(1);
            h.total_failures += 1;
            h.last_error = e.to_string();
        }
    }

    pub(crate) fn recovered(&self, p: Projection) {
        if let Ok(mut health) = self.health.lock() {
            if let Some(h) = health.get_mut(&p) {
                h.consecutive_failures = 0;
                h.last_error.clear();
            }
        }
    }

    fn update(&self, p: Projection, id: &str, change: impl FnOnce(&mut RebuildJob)) {
        if let Ok(mut jobs) = self.jobs.lock() {
            if let Some(job) = jobs.get_mut(&p).filter(|j| j.id == id) {
                change(job);
                job.seconds = job.started.elapsed().as_secs_f64();
            }
        }
    }
}

impl Projections {
    /// A projector's recent failures.
    pub fn health(&self, p: Projection) -> ProjectorHealth {
        self.board
            .health
            .lock()
            .ok()
            .and_then(|h| h.get(&p).cloned())
            .unwrap_or_default()
    }

    /// The latest rebuild job of a read model started by this process, if any.
    pub fn rebuild_job(&self, p: Projection) -> Option<RebuildJob> {
        let mut job = self.board.jobs.lock().ok()?.get(&p).cloned()?;
        if job.state == JobState::Running {
            job.seconds = job.started.elapsed().as_secs_f64();
        }
        Some(job)
    }

    /// Starts rebuilding a read model in the background and returns its job at once. One
    /// rebuild per read model at a time: in this process, and on PostgreSQL across
    /// replicas (the rebuild holds an advisory lock).
    pub async fn start_rebuild(&self, p: Projection) -> Result<RebuildJob, ProjectionError> {
        let job = {
            let mut jobs = self
                .board
                .jobs
                .lock()
                .map_err(|_| ProjectionError::RebuildRunning(p.name().to_string()))?;
            if jobs.get(&p).is_some_and(|j| j.state == JobState::Running) {
                return Err(ProjectionError::RebuildRunning(p.name().to_string()));
            }
            let job = RebuildJob {
                id: job_id(),
                projection: p,
                state: JobState::Running,
                events_replayed: 0,
                seconds: 0.0,
                started: Instant::now(),
            };
            jobs.insert(p, job.clone());
            job
        };
        let lease = match self.try_rebuild_lease(p).await {
            Ok(Some(lease)) => lease,
            Ok(None) => {
                self.forget_job(p, &job.id);
                return Err(ProjectionError::RebuildRunning(p.name().to_string()));
            }
            Err(e) => {
                self.forget_job(p, &job.id);
                return Err(e);
            }
        };
        let (this, id) = (self.clone(), job.id.clone());
        tokio::spawn(async move {
            let board = Arc::clone(&this.board);
            let outcome = this
                .rebuild_with_progress(p, |n| {
                    board.update(p, &id, |j| j.events_replayed = n);
                })
                .await;
            drop(lease);
            match outcome {
                Ok(n) => this.board.update(p, &id, |j| {
                    j.events_replayed = n;
                    j.state = JobState::Succeeded;
                }),
                Err(e) => {
                    tracing::error!(projection = p.name(), error = %identity_store::Report(&e), "rebuild failed");
                    this.board
                        .update(p, &id, |j| j.state = JobState::Failed(e.to_string()));
                }
            }
        });
        Ok(job)
    }

    fn forget_job(&self, p: Projection, id: &str) {
        if let Ok(mut jobs) = self.board.jobs.lock() {
            if jobs.get(&p).is_some_and(|j| j.id == id) {
                jobs.remove(&p);
            }
        }
    }
}

/// A job id, unique within the process (jobs live in its memory): the start time in
/// microseconds and a counter.
fn job_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let micros = chrono::Utc::now().timestamp_micros();
    format!("rebuild-{micros:x}-{n}")
}
