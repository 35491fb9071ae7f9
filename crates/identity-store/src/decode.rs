//! The one decode point for stored events. Every read of the log (aggregate loading, the
//! feed and therefore the projectors, audit listings and histories, the CLI) hands its rows
//! through [`Upcasters::bring_forward`], which reads `event_version` and runs the registered
//! upcasters, so that code above the store only ever sees events in their current shape;
//! [`StoredEvent::decode`] then reads one into its type.
//!
//! An upcaster is cqrs-es's own [`EventUpcaster`] (usually a `SemanticVersionEventUpcaster`:
//! event type, the version it produces, a function over the payload), registered for one
//! aggregate type. The domain's list is `identity_domain::upcast::registered`; a new
//! upcaster is one entry there. Verification of the hash chain reads the rows as stored,
//! because the hashes cover the stored bytes, not the upcast ones.

use std::sync::Arc;

use cqrs_es::persist::{EventUpcaster, SerializedEvent};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::{StoreError, StoredEvent};

/// One registered upcaster and the aggregate type whose events it reads.
#[derive(Clone)]
struct Registered {
    aggregate_type: &'static str,
    upcaster: Arc<dyn EventUpcaster>,
}

/// The upcasters a log runs on every event it reads. Cheap to clone.
#[derive(Clone, Default)]
pub struct Upcasters(Arc<[Registered]>);

impl std::fmt::Debug for Upcasters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|r| r.aggregate_type))
            .finish()
    }
}

impl Upcasters {
    /// The domain's upcasters: what every log runs unless told otherwise.
    pub fn standard() -> Self {
        identity_domain::upcast::registered()
            .into_iter()
            .fold(Self::default(), |all, (aggregate_type, upcaster)| {
                all.with(aggregate_type, upcaster)
            })
    }

    /// These upcasters and one more, run after them, on the events of `aggregate_type`.
    pub fn with(self, aggregate_type: &'static str, upcaster: Box<dyn EventUpcaster>) -> Self {
        let mut all = self.0.to_vec();
        all.push(Registered {
            aggregate_type,
            upcaster: Arc::from(upcaster),
        });
        Self(all.into())
    }

    /// Brings one stored payload forward to its current shape: every upcaster registered for
    /// the aggregate type that can read the event's type and version runs, in order. A
    /// payload no upcaster reads is returned as it is.
    pub(crate) fn bring_forward(
        &self,
        aggregate_type: &str,
        event_type: &str,
        event_version: String,
        payload: Value,
    ) -> (String, Value) {
        let mut current: Option<SerializedEvent> = None;
        for r in self.0.iter().filter(|r| r.aggregate_type == aggregate_type) {
            let version = current
                .as_ref()
                .map_or(event_version.as_str(), |e| e.event_version.as_str());
            if !r.upcaster.can_upcast(event_type, version) {
                continue;
            }
            let e = current.take().unwrap_or_else(|| SerializedEvent {
                aggregate_id: String::new(),
                sequence: 0,
                aggregate_type: aggregate_type.to_string(),
                event_type: event_type.to_string(),
                event_version: event_version.clone(),
                payload: payload.clone(),
                metadata: Value::Null,
            });
            current = Some(r.upcaster.upcast(e));
        }
        match current {
            Some(e) => (e.event_version, e.payload),
            None => (event_version, payload),
        }
    }

    /// [`Upcasters::bring_forward`] for a row read from the log.
    pub(crate) fn event(&self, mut e: StoredEvent) -> StoredEvent {
        if self.0.is_empty() {
            return e;
        }
        let payload = std::mem::take(&mut e.payload);
        let version = std::mem::take(&mut e.event_version);
        (e.event_version, e.payload) =
            self.bring_forward(&e.aggregate_type, &e.event_type, version, payload);
        e
    }
}

/// Reads a payload, already brought forward, into its event type.
pub(crate) fn payload<E: DeserializeOwned>(
    aggregate_type: &str,
    aggregate_id: &str,
    event_type: &str,
    event_version: &str,
    payload: Value,
) -> Result<E, StoreError> {
    serde_json::from_value(payload).map_err(|e| {
        StoreError::corrupt_by(
            format!("{aggregate_type}/{aggregate_id}: cannot read {event_type} {event_version}"),
            e,
        )
    })
}

impl StoredEvent {
    /// This event as its type. The store has brought it forward already (see the module),
    /// so this is the only place a stored payload becomes a domain event above the store.
    pub fn decode<E: DeserializeOwned>(&self) -> Result<E, StoreError> {
        payload(
            &self.aggregate_type,
            &self.aggregate_id,
            &self.event_type,
            &self.event_version,
            self.payload.clone(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::persist::SemanticVersionEventUpcaster;
    use serde_json::json;

    fn renaming(from: &'static str, to: &'static str, version: &str) -> Box<dyn EventUpcaster> {
        Box::new(SemanticVersionEventUpcaster::new(
            "Credited",
            version,
            Box::new(move |mut v: Value| {
                if let Some(body) = v.get_mut("Credited").and_then(Value::as_object_mut) {
                    if let Some(x) = body.remove(from) {
                        body.insert(to.to_string(), x);
                    }
                }
                v
            }),
        ))
    }

    #[test]
    fn upcasters_run_in_order_and_only_on_older_versions_of_their_aggregate() {
        let ups = Upcasters::default()
            .with("Wallet", renaming("amt", "amount_v2", "2.0"))
            .with("Wallet", renaming("amount_v2", "amount", "3.0"));
        let old = json!({"Credited": {"amt": "5"}});
        assert_eq!(
            ups.bring_forward("Wallet", "Credited", "1.0".into(), old.clone()),
            ("3.0.0".to_string(), json!({"Credited": {"amount": "5"}}))
        );
        // A newer event, another event type or another aggregate type is left alone.
        let current = json!({"Credited": {"amount": "5"}});
        assert_eq!(
            ups.bring_forward("Wallet", "Credited", "3.0".into(), current.clone()),
            ("3.0".to_string(), current)
        );
        assert_eq!(
            ups.bring_forward("Wallet", "Debited", "1.0".into(), old.clone())
                .1,
            old
        );
        assert_eq!(
            ups.bring_forward("User", "Credited", "1.0".into(), old.clone())
                .1,
            old
        );
    }
}
