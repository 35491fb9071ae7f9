//! Reads for auditors: filtered event listings, one aggregate's history, and verification
//! of the hash chains.

use futures::TryStreamExt;

use crate::backend::{dialect, on_pool, to_i64, Dialect as _, EventRow as _};
use crate::chain::{event_hash, HashInput};
use crate::feed::StoredEvent;
use crate::{EventLog, StoreError};

/// Which events a listing returns. Empty fields do not filter.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    /// Only aggregates of this tenant (aggregate ids start with `<tenant>/`).
    pub tenant: Option<String>,
    pub aggregate_type: Option<String>,
    /// The full aggregate id (`<tenant>/<id>`).
    pub aggregate_id: Option<String>,
    pub event_type: Option<String>,
    pub actor: Option<String>,
    pub request_id: Option<String>,
    /// RFC 3339, inclusive.
    pub from_time: Option<String>,
    /// RFC 3339, exclusive.
    pub to_time: Option<String>,
    /// Inclusive.
    pub from_position: Option<u64>,
    /// Inclusive.
    pub to_position: Option<u64>,
}

impl EventFilter {
    /// Whether an event passes the filter (used on live events of a stream).
    pub fn matches(&self, e: &StoredEvent) -> bool {
        let meta = |k: &str| e.metadata.get(k).and_then(|v| v.as_str());
        self.tenant
            .as_ref()
            .is_none_or(|t| e.aggregate_id.starts_with(&format!("{t}/")))
            && self
                .aggregate_type
                .as_ref()
                .is_none_or(|t| *t == e.aggregate_type)
            && self
                .aggregate_id
                .as_ref()
                .is_none_or(|i| *i == e.aggregate_id)
            && self.event_type.as_ref().is_none_or(|t| *t == e.event_type)
            && self
                .actor
                .as_ref()
                .is_none_or(|a| meta("actor") == Some(a.as_str()))
            && self
                .request_id
                .as_ref()
                .is_none_or(|r| meta("request_id") == Some(r.as_str()))
            && self.from_position.is_none_or(|p| e.position >= p)
            && self.to_position.is_none_or(|p| e.position <= p)
            && self
                .from_time
                .as_ref()
                .is_none_or(|t| times_ordered(t, &e.recorded_at))
            && self
                .to_time
                .as_ref()
                .is_none_or(|t| !times_ordered(t, &e.recorded_at))
    }
}

/// Whether `a <= b` for two RFC 3339 times (false when either does not parse).
fn times_ordered(a: &str, b: &str) -> bool {
    match (
        chrono::DateTime::parse_from_rfc3339(a),
        chrono::DateTime::parse_from_rfc3339(b),
    ) {
        (Ok(a), Ok(b)) => a <= b,
        _ => false,
    }
}

/// A place where a hash chain is broken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainBreak {
    pub position: u64,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: u64,
    pub reason: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChainReport {
    pub events_checked: u64,
    pub aggregates_checked: u64,
    /// Events without a hash (written before hashing existed, or by hand). Each is also a
    /// break: nothing proves it was not inserted or edited.
    pub unhashed: u64,
    /// Every break, in log order per aggregate, up to [`MAX_REPORTED_BREAKS`].
    pub breaks: Vec<ChainBreak>,
    /// How many breaks there are in all (more than `breaks` holds when over the cap).
    pub breaks_found: u64,
}

/// The most breaks one report lists; `breaks_found` still counts them all.
pub const MAX_REPORTED_BREAKS: usize = 1000;

impl ChainReport {
    pub fn intact(&self) -> bool {
        self.breaks_found == 0
    }

    pub fn first_break(&self) -> Option<&ChainBreak> {
        self.breaks.first()
    }

    fn record(&mut self, b: ChainBreak) {
        self.breaks_found += 1;
        if self.breaks.len() < MAX_REPORTED_BREAKS {
            self.breaks.push(b);
        }
    }
}

impl EventLog {
    /// Rows read from the log, their personal fields opened (`seal/`) and brought
    /// forward to their current shape (`decode.rs`): the decode point of every read but the
    /// aggregate load's.
    pub(crate) async fn decoded(
        &self,
        rows: Vec<StoredEvent>,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        Ok(self
            .open_rows(rows)
            .await?
            .into_iter()
            .map(|e| self.upcasters.event(e))
            .collect())
    }

    /// Events matching `filter` with a position above `after`, in position order.
    pub async fn list_events(
        &self,
        filter: &EventFilter,
        after: u64,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let mut args: Vec<String> = Vec::new();
        let mut conds: Vec<String> = Vec::new();
        let arg = |v: String, args: &mut Vec<String>| {
            args.push(v);
            format!("${}", args.len())
        };
        let pos = arg(to_i64(after).to_string(), &mut args);
        conds.push(format!("global_position > CAST({pos} AS BIGINT)"));
        if let Some(t) = &filter.tenant {
            let prefix = format!("{t}/");
            let len = prefix.len();
            let p = arg(prefix, &mut args);
            conds.push(format!("substr(aggregate_id, 1, {len}) = {p}"));
        }
        for (col, v) in [
            ("aggregate_type", &filter.aggregate_type),
            ("aggregate_id", &filter.aggregate_id),
            ("event_type", &filter.event_type),
        ] {
            if let Some(v) = v {
                let p = arg(v.clone(), &mut args);
                conds.push(format!("{col} = {p}"));
            }
        }
        for (key, v) in [("actor", &filter.actor), ("request_id", &filter.request_id)] {
            if let Some(v) = v {
                let p = arg(v.clone(), &mut args);
                conds.push(dialect!(&self.backend, D, _pool => D::metadata_field(key, &p)));
            }
        }
        for (bound, op) in [(filter.from_position, ">="), (filter.to_position, "<=")] {
            if let Some(p) = bound {
                let a = arg(to_i64(p).to_string(), &mut args);
                conds.push(format!("global_position {op} CAST({a} AS BIGINT)"));
            }
        }
        for (t, op) in [(&filter.from_time, ">="), (&filter.to_time, "<")] {
            if let Some(t) = t {
                let a = format!("${}", args.len() + 1);
                let (cond, value) =
                    dialect!(&self.backend, D, _pool => D::recorded_at_bound(t, op, &a))?;
                args.push(value);
                conds.push(cond);
            }
        }
        let sql = format!(
            "SELECT {} FROM events WHERE {} ORDER BY global_position LIMIT {}",
            self.backend.event_columns(),
            conds.join(" AND "),
            limit.max(1)
        );
        let rows = dialect!(&self.backend, D, pool => D::fetch_listing(pool, &sql, &args, self.query_timeout).await?);
        self.decoded(rows).await
    }

    /// Every event of one aggregate, in sequence order.
    pub async fn aggregate_history(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let sql = format!(
            "SELECT {} FROM events WHERE aggregate_type = $1 AND aggregate_id = $2 ORDER BY sequence",
            self.backend.event_columns()
        );
        let rows = on_pool!(&self.backend, pool => sqlx::query(&sql)
            .bind(aggregate_type)
            .bind(aggregate_id)
            .fetch_all(pool)
            .await?
            .iter()
            .map(|r| r.stored_event())
            .collect::<Result<Vec<_>, StoreError>>())?;
        self.decoded(rows).await
    }

    /// Recomputes every hash chain (of one tenant, or all) and reports every broken link.
    /// After a break, checking goes on from the stored hash, so one edited event is one
    /// break and the rest of its chain is still verified.
    /// `progress` is called every 10 000 events with the number checked so far.
    pub async fn verify_chains(
        &self,
        tenant: Option<&str>,
        mut progress: impl FnMut(u64),
    ) -> Result<ChainReport, StoreError> {
        let mut report = ChainReport::default();
        let mut current: Option<(String, String)> = None;
        let mut expected_sequence = 1u64;
        let mut previous = String::new();
        let mut check = |e: StoredEvent, report: &mut ChainReport| {
            if let Some(t) = tenant {
                if !e.aggregate_id.starts_with(&format!("{t}/")) {
                    return;
                }
            }
            report.events_checked += 1;
            if report.events_checked.is_multiple_of(10_000) {
                progress(report.events_checked);
            }
            let key = (e.aggregate_type.clone(), e.aggregate_id.clone());
            if current.as_ref() != Some(&key) {
                current = Some(key);
                report.aggregates_checked += 1;
                expected_sequence = 1;
                previous.clear();
            }
            let broken = |reason: String| ChainBreak {
                position: e.position,
                aggregate_type: e.aggregate_type.clone(),
                aggregate_id: e.aggregate_id.clone(),
                sequence: e.sequence,
                reason,
            };
            let in_sequence = e.sequence == expected_sequence;
            if !in_sequence {
                report.record(broken(if e.sequence > expected_sequence {
                    format!(
                        "sequence {expected_sequence} is missing: the next stored event is {}",
                        e.sequence
                    )
                } else {
                    format!(
                        "sequence {} appears where {expected_sequence} was expected",
                        e.sequence
                    )
                }));
            }
            expected_sequence = e.sequence + 1;
            let Some(stored) = e.hash.clone() else {
                report.unhashed += 1;
                report.record(broken(
                    "the event has no hash: nothing proves it was not inserted or edited"
                        .to_string(),
                ));
                previous.clear();
                return;
            };
            let computed = event_hash(&previous, &HashInput::from(&e));
            // After a sequence break the predecessor is gone: that break says it all.
            if in_sequence && computed != stored {
                report.record(broken(
                    "the stored hash does not match the event and its predecessor: the event, or one before it, was edited, removed or reordered".to_string(),
                ));
            }
            previous = stored;
        };
        // One tenant's events only, chosen in the database (the check above stays as a
        // guard); every tenant's when none is given.
        let prefix = tenant.map(|t| format!("{t}/"));
        let sql = format!(
            "SELECT {} FROM events
              WHERE (CAST($1 AS TEXT) IS NULL
                     OR substr(aggregate_id, 1, length(CAST($1 AS TEXT))) = CAST($1 AS TEXT))
              ORDER BY aggregate_type, aggregate_id, sequence",
            self.backend.event_columns()
        );
        // As stored: the hashes cover the stored bytes, not an upcast shape.
        on_pool!(&self.backend, pool => {
            let mut rows = sqlx::query(&sql).bind(&prefix).fetch(pool);
            while let Some(r) = rows.try_next().await? {
                check(r.stored_event()?, &mut report);
            }
        });
        Ok(report)
    }
}
