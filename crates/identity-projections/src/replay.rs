//! Replaying stored events into aggregate states for auditors (shared by the AuditService
//! and the `identity-admin` CLI), and redaction of secrets from what auditors see. The
//! events come through the store's decode point, in their current shape.

use cqrs_es::Aggregate;
use identity_domain::claim::UniqueClaim;
use identity_domain::identification::Identification;
use identity_domain::status_tier::StatusTier;
use identity_domain::user::User;
use identity_domain::wallet::Wallet;
use identity_store::StoredEvent;
use serde_json::Value;

/// Aggregate types an auditor can replay.
pub const AGGREGATE_TYPES: [&str; 7] = [
    "User",
    "Wallet",
    "StatusTier",
    "Identification",
    "UniqueClaim",
    "Tenant",
    "Admin",
];

/// Keys whose values are hashes of secrets: never shown to auditors.
const SECRET_KEYS: [&str; 4] = ["credential", "code_hash", "digest", "refresh_digest"];

/// Replaces secret hashes with a marker, anywhere in a JSON value.
pub fn redact(mut v: Value) -> Value {
    fn walk(v: &mut Value) {
        match v {
            Value::Object(map) => {
                for (k, child) in map.iter_mut() {
                    if SECRET_KEYS.contains(&k.as_str()) && !child.is_null() {
                        *child = Value::String("[redacted]".into());
                    } else {
                        walk(child);
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut v);
    v
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("unknown aggregate type {0:?}; known: User, Wallet, StatusTier, Identification, UniqueClaim")]
    UnknownType(String),
    #[error("event at position {position} ({event_type}) cannot be replayed: {message}")]
    Event {
        position: u64,
        event_type: String,
        message: String,
    },
}

/// The event as its type, through the store's decode point ([`StoredEvent::decode`]).
fn decode<A: Aggregate>(e: &StoredEvent) -> Result<A::Event, ReplayError> {
    e.decode().map_err(|err| ReplayError::Event {
        position: e.position,
        event_type: e.event_type.clone(),
        message: err.to_string(),
    })
}

fn snapshot<A: Aggregate>(aggregate: &A, e: &StoredEvent) -> Result<Value, ReplayError> {
    serde_json::to_value(aggregate)
        .map(redact)
        .map_err(|err| ReplayError::Event {
            position: e.position,
            event_type: e.event_type.clone(),
            message: err.to_string(),
        })
}

/// Folds every event and serializes the state only after those in `page`: one page costs one
/// pass over the history plus the page's states, not a serialized state per event.
fn page_of<A: Aggregate>(
    events: &[StoredEvent],
    page: std::ops::Range<usize>,
) -> Result<Vec<Value>, ReplayError> {
    let mut aggregate = A::default();
    let mut states = Vec::with_capacity(page.len());
    for (i, e) in events.iter().enumerate().take(page.end) {
        aggregate.apply(decode::<A>(e)?);
        if page.contains(&i) {
            states.push(snapshot(&aggregate, e)?);
        }
    }
    Ok(states)
}

/// The aggregate's redacted state after each event with an index in `page` (events given
/// in sequence order). CPU-bound: call it off the async workers.
pub fn states_after(
    aggregate_type: &str,
    events: &[StoredEvent],
    page: std::ops::Range<usize>,
) -> Result<Vec<Value>, ReplayError> {
    match aggregate_type {
        "User" => page_of::<User>(events, page),
        "Wallet" => page_of::<Wallet>(events, page),
        "StatusTier" => page_of::<StatusTier>(events, page),
        "Identification" => page_of::<Identification>(events, page),
        "UniqueClaim" => page_of::<UniqueClaim>(events, page),
        "Tenant" => page_of::<identity_domain::tenant::Tenant>(events, page),
        "Admin" => page_of::<identity_domain::admin::Admin>(events, page),
        other => Err(ReplayError::UnknownType(other.to_string())),
    }
}

/// The aggregate's redacted state after each of its events (given in sequence order).
pub fn states_after_each(
    aggregate_type: &str,
    events: &[StoredEvent],
) -> Result<Vec<Value>, ReplayError> {
    states_after(aggregate_type, events, 0..events.len())
}

/// Where to stop replaying.
#[derive(Debug, Clone)]
pub enum AsOf {
    Position(u64),
    /// RFC 3339.
    Time(String),
}

/// The redacted state of an aggregate after its events up to `at`, with the last event
/// applied; `None` when it had no events by then. Serializes one state, however long the
/// history.
pub fn state_at(
    aggregate_type: &str,
    events: &[StoredEvent],
    at: &AsOf,
) -> Result<Option<(Value, StoredEvent)>, ReplayError> {
    let limit = match at {
        AsOf::Time(t) => chrono::DateTime::parse_from_rfc3339(t).ok(),
        AsOf::Position(_) => None,
    };
    let included = events
        .iter()
        .take_while(|e| match at {
            AsOf::Position(p) => e.position <= *p,
            AsOf::Time(_) => match (chrono::DateTime::parse_from_rfc3339(&e.recorded_at), limit) {
                (Ok(recorded), Some(limit)) => recorded <= limit,
                _ => false,
            },
        })
        .count();
    if included == 0 {
        return Ok(None);
    }
    let last = included - 1;
    let state = states_after(aggregate_type, events, last..included)?;
    Ok(state.into_iter().next().map(|s| (s, events[last].clone())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_wherever_they_appear() {
        let v = serde_json::json!({"PasswordSet": {"credential": {"scheme": "modern", "phc": "$argon2id$x"}}, "pending_email": {"code_hash": "ab", "value": "a@b.c"}, "list": [{"credential": null}]});
        let r = redact(v);
        assert_eq!(r["PasswordSet"]["credential"], "[redacted]");
        assert_eq!(r["pending_email"]["code_hash"], "[redacted]");
        assert_eq!(r["pending_email"]["value"], "a@b.c");
        assert!(r["list"][0]["credential"].is_null());
    }
}
