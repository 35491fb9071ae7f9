//! Tamper evidence: every event carries a SHA-256 hash chaining it to the previous event of
//! its aggregate, written in the same transaction as the event.
//!
//! `hash = SHA-256(previous hash (hex, "" for the first event) ‖ 0x0A ‖ canonical(event))`,
//! where `canonical(event)` is the compact JSON array
//! `[aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata]`
//! with object keys sorted and numbers written one way (whole numbers as integers). The
//! encoding depends only on the stored values, so PostgreSQL's `jsonb` and SQLite's text give
//! the same hash.
//!
//! postgres-es / sqlite-es cannot write a column they do not know in their insert, so the
//! command path appends through our own writer (`append.rs`), which stores each event with
//! the hash computed here (DESIGN.md, 10).

use serde_json::Value;
use sha2::{Digest, Sha256};

/// Writes `v` in the canonical form the hash chain uses.
fn canonical(v: &Value, out: &mut String) {
    match v {
        Value::Null | Value::Bool(_) | Value::String(_) => {
            out.push_str(&serde_json::to_string(v).unwrap_or_default());
        }
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                out.push_str(&i.to_string());
            } else if let Some(u) = n.as_u64() {
                out.push_str(&u.to_string());
            } else {
                let f = n.as_f64().unwrap_or(0.0);
                if f.fract() == 0.0 && f.abs() < 9.0e15 {
                    out.push_str(&(f as i64).to_string());
                } else {
                    out.push_str(&serde_json::to_string(&f).unwrap_or_default());
                }
            }
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::to_string(k).unwrap_or_default());
                out.push(':');
                canonical(&map[k], out);
            }
            out.push('}');
        }
    }
}

/// The fields of an event that its hash covers.
#[derive(Debug, Clone, Copy)]
pub struct HashInput<'a> {
    pub aggregate_type: &'a str,
    pub aggregate_id: &'a str,
    pub sequence: u64,
    pub event_type: &'a str,
    pub event_version: &'a str,
    pub payload: &'a Value,
    pub metadata: &'a Value,
}

impl<'a> From<&'a crate::StoredEvent> for HashInput<'a> {
    /// What the hash of a stored event covers, as it is stored.
    fn from(e: &'a crate::StoredEvent) -> Self {
        Self {
            aggregate_type: &e.aggregate_type,
            aggregate_id: &e.aggregate_id,
            sequence: e.sequence,
            event_type: &e.event_type,
            event_version: &e.event_version,
            payload: &e.payload,
            metadata: &e.metadata,
        }
    }
}

/// The chained hash of an event, as lowercase hex.
pub fn event_hash(previous: &str, e: &HashInput<'_>) -> String {
    let mut body = String::new();
    let head = Value::Array(vec![
        Value::from(e.aggregate_type),
        Value::from(e.aggregate_id),
        Value::from(e.sequence),
        Value::from(e.event_type),
        Value::from(e.event_version),
        e.payload.clone(),
        e.metadata.clone(),
    ]);
    canonical(&head, &mut body);
    let mut h = Sha256::new();
    h.update(previous.as_bytes());
    h.update(b"\n");
    h.update(body.as_bytes());
    hex::encode(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_form_ignores_key_order_and_number_spelling() {
        let a: Value = serde_json::from_str(r#"{"b":1,"a":{"y":2.0,"x":[1,"s"]}}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"a":{"x":[1,"s"],"y":2},"b":1}"#).unwrap();
        let (mut sa, mut sb) = (String::new(), String::new());
        canonical(&a, &mut sa);
        canonical(&b, &mut sb);
        assert_eq!(sa, sb);
        assert_eq!(sa, r#"{"a":{"x":[1,"s"],"y":2},"b":1}"#);
    }

    #[test]
    fn the_hash_chains_to_the_previous_one() {
        let payload = serde_json::json!({"E": {"n": 1}});
        let meta = serde_json::json!({"actor": "a"});
        let input = HashInput {
            aggregate_type: "T",
            aggregate_id: "t/1",
            sequence: 1,
            event_type: "E",
            event_version: "1.0",
            payload: &payload,
            metadata: &meta,
        };
        let first = event_hash("", &input);
        assert_eq!(first.len(), 64);
        assert_ne!(first, event_hash("00", &input));
        assert_eq!(first, event_hash("", &input));
    }
}
