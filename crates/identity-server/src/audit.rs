//! Replaying stored events into aggregate states for auditors (shared by the AuditService
//! and the `identity-admin` CLI), and redaction of secrets from what auditors see.

use cqrs_es::Aggregate;
use identity_domain::claim::UniqueClaim;
use identity_domain::identification::Identification;
use identity_domain::status_tier::StatusTier;
use identity_domain::user::User;
use identity_domain::wallet::Wallet;
use identity_store::StoredEvent;
use serde_json::Value;

/// Aggregate types an auditor can replay.
pub const AGGREGATE_TYPES: [&str; 5] = [
    "User",
    "Wallet",
    "StatusTier",
    "Identification",
    "UniqueClaim",
];

/// Keys whose values are hashes of secrets: never shown to auditors.
const SECRET_KEYS: [&str; 2] = ["credential", "code_hash"];

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

fn states_of<A: Aggregate>(events: &[StoredEvent]) -> Result<Vec<Value>, ReplayError> {
    let mut aggregate = A::default();
    events
        .iter()
        .map(|e| {
            let fail = |message: String| ReplayError::Event {
                position: e.position,
                event_type: e.event_type.clone(),
                message,
            };
            let event: A::Event =
                serde_json::from_value(e.payload.clone()).map_err(|err| fail(err.to_string()))?;
            aggregate.apply(event);
            serde_json::to_value(&aggregate)
                .map(redact)
                .map_err(|err| fail(err.to_string()))
        })
        .collect()
}

/// The aggregate's state after each of its events (given in sequence order), redacted.
pub fn states_after_each(
    aggregate_type: &str,
    events: &[StoredEvent],
) -> Result<Vec<Value>, ReplayError> {
    match aggregate_type {
        "User" => states_of::<User>(events),
        "Wallet" => states_of::<Wallet>(events),
        "StatusTier" => states_of::<StatusTier>(events),
        "Identification" => states_of::<Identification>(events),
        "UniqueClaim" => states_of::<UniqueClaim>(events),
        other => Err(ReplayError::UnknownType(other.to_string())),
    }
}

/// Where to stop replaying.
#[derive(Debug, Clone)]
pub enum AsOf {
    Position(u64),
    /// RFC 3339.
    Time(String),
}

/// The redacted state of an aggregate after its events up to `at`, with the last event
/// applied; `None` when it had no events by then.
pub fn state_at(
    aggregate_type: &str,
    events: &[StoredEvent],
    at: &AsOf,
) -> Result<Option<(Value, StoredEvent)>, ReplayError> {
    let included: Vec<StoredEvent> = events
        .iter()
        .filter(|e| match at {
            AsOf::Position(p) => e.position <= *p,
            AsOf::Time(t) => match (
                chrono::DateTime::parse_from_rfc3339(&e.recorded_at),
                chrono::DateTime::parse_from_rfc3339(t),
            ) {
                (Ok(recorded), Ok(limit)) => recorded <= limit,
                _ => false,
            },
        })
        .cloned()
        .collect();
    let states = states_after_each(aggregate_type, &included)?;
    Ok(states.into_iter().last().zip(included.into_iter().last()))
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
