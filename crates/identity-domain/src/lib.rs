//! The identity service's domain: aggregates, commands, events, value objects and errors.
//!
//! - [`user::User`]: registration, profile, activation, email/phone confirmation with one-time
//!   codes, roles, credentials (hashes only) and merging.
//! - [`wallet::Wallet`]: a wallet of an owner on a network with per-token balances; credits and
//!   debits are idempotent by key and never make a balance negative.
//! - [`status_tier::StatusTier`]: loyalty tiers, and [`status_tier::qualify`], the pure rule
//!   that says which tiers a set of balances reaches.
//! - [`identification::Identification`]: identity, documents, PEP flag and KYC level of a user.
//! - [`claim::UniqueClaim`]: **where uniqueness is decided.** Email, phone, external id and
//!   person code are unique per tenant; each normalized value has one claim aggregate (id from
//!   [`derive::claim_id`]), and the event store's primary key on (aggregate, sequence) lets
//!   exactly one of two concurrent claims append its first event.
//!
//! - [`tenant::Tenant`] and [`admin::Admin`]: the access registry (tenants, their project keys
//!   and role tables; admins, their types and tenants), under the reserved `@system` scope.
//!
//! Every aggregate id starts with its tenant ([`derive::aggregate_id`]), so nothing of one
//! tenant can be loaded in another.
//!
//! Rules of this crate: no tonic, no sqlx, no clock and no randomness. Ids, times, code hashes
//! and password hashes arrive inside commands, so `handle` is a pure decision and `apply` a
//! pure fold. Events are past tense, versioned (`event_version`) and pinned by tests: never
//! edit a shipped event; add a version and an upcaster instead.

#![forbid(unsafe_code)]

/// Implements cqrs-es's `DomainEvent` for an aggregate's event enum: every event's type is
/// its variant's name (the compiler checks the list is complete), and the version is the one
/// its current shape has (`upcast.rs` says what to do when it changes).
macro_rules! domain_event {
    ($enum:ty, $version:literal, [$($variant:ident),* $(,)?]) => {
        impl cqrs_es::DomainEvent for $enum {
            fn event_type(&self) -> String {
                match self {
                    $(Self::$variant { .. } => stringify!($variant),)*
                }
                .to_string()
            }
            fn event_version(&self) -> String {
                $version.to_string()
            }
        }
    };
}

/// The `Aggregate` impl of an aggregate: `handle` writes the events its `decide` returns
/// (with the services, when it names them), `apply` is its `evolve`. Both stay inherent, so a test can call
/// them without a sink.
macro_rules! decided_aggregate {
    // An aggregate whose `decide` is async and takes the services.
    ($aggregate:ident, $command:ty, $event:ty, services: $services:ty) => {
        impl cqrs_es::Aggregate for $aggregate {
            const TYPE: &'static str = stringify!($aggregate);
            type Command = $command;
            type Event = $event;
            type Error = $crate::DomainError;
            type Services = $services;

            async fn handle(
                &mut self,
                command: Self::Command,
                services: &Self::Services,
                sink: &cqrs_es::event_sink::EventSink<Self>,
            ) -> Result<(), Self::Error> {
                for event in self.decide(command, services).await? {
                    sink.write(event, self).await;
                }
                Ok(())
            }

            fn apply(&mut self, event: Self::Event) {
                self.evolve(event)
            }
        }
    };
    ($aggregate:ident, $command:ty, $event:ty) => {
        impl cqrs_es::Aggregate for $aggregate {
            const TYPE: &'static str = stringify!($aggregate);
            type Command = $command;
            type Event = $event;
            type Error = $crate::DomainError;
            type Services = ();

            async fn handle(
                &mut self,
                command: Self::Command,
                _services: &Self::Services,
                sink: &cqrs_es::event_sink::EventSink<Self>,
            ) -> Result<(), Self::Error> {
                for event in self.decide(command)? {
                    sink.write(event, self).await;
                }
                Ok(())
            }

            fn apply(&mut self, event: Self::Event) {
                self.evolve(event)
            }
        }
    };
}

pub mod admin;
pub mod claim;
pub mod derive;
pub mod error;
pub mod identification;
pub mod personal;
pub mod session;
pub mod status_tier;
pub mod tenant;
pub mod upcast;
pub mod user;
pub mod values;
pub mod wallet;

pub use error::{ClaimKind, DomainError, FieldViolation, ValueError, Violations};

/// Events that record a refused attempt (a wrong confirmation code): they are appended, so the
/// attempt counts, and the caller still receives the error they stand for.
pub trait RecordsRejection {
    /// The refusal this event records, if it records one; most events record none.
    fn rejection(&self) -> Option<DomainError> {
        None
    }
}
