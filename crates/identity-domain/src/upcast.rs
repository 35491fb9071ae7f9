//! Upcasters: how an event stored in an older shape is read in today's. The store runs them
//! on every event it reads (`identity_store::decode`), so aggregates, projectors and audits
//! only ever see current shapes, and an event's shape can change without rewriting the log.
//!
//! To change an event's shape: give the event a new `event_version` in its `DomainEvent`
//! impl, change the type, and add one entry below that turns the previous version's payload
//! into the new one (cqrs-es's `SemanticVersionEventUpcaster`: the event type, the version it
//! produces, and a function over the JSON payload). Keep the golden file
//! (`tests/event_schema.rs`) holding the old shape beside the new one.

use cqrs_es::persist::EventUpcaster;

/// Every upcaster, with the aggregate type whose events it reads, in the order they run.
/// No event has changed shape since the log began, so the list is empty.
pub fn registered() -> Vec<(&'static str, Box<dyn EventUpcaster>)> {
    Vec::new()
}
