//! The identity service's gRPC server: configuration, telemetry, the gRPC services, the
//! conversion of requests into domain commands, and the mapping of errors to statuses.
//!
//! - `settings`: configuration from the environment.
//! - `app`: `Application::build(settings)` binds and wires; `run_until_stopped` serves.
//! - `api`: one module per gRPC service.
//! - `convert`: proto ⇄ domain, where every field is parsed.
//! - `core`: the command path shared by all services (execute, claims, codes).
//! - `audit`: replaying stored events into states for auditors, and redaction.
//! - `credentials`: argon2id hashing on dedicated low-priority threads.
//! - `observability`: metrics and the admin HTTP endpoints.
//! - `error`: the one exhaustive error → `Status` mapping.
//! - `limits`: bounds on expensive calls and event streams.
//! - `stream`: one shared tail of the feed, fanned out to StreamEvents subscribers.
//! - `access`: authentication, tenants and permissions, checked before any handler runs.
//! - `tls`: TLS for the admin HTTP port.
//! - `wire`: gRPC's codes for transport-level failures (oversized, undecodable messages).
//!
//! Domain rules live in `identity-domain`, storage in `identity-store`; this crate must not
//! grow either.

#![forbid(unsafe_code)]

pub mod access;
pub mod api;
pub mod app;
pub mod checkpoints;
pub mod context;
pub mod convert;
pub mod core;
pub mod credentials;
pub mod delivery;
pub mod error;
pub mod factories;
pub mod limits;
pub mod observability;
pub use identity_settings as settings;
pub mod stream;
pub mod telemetry;
pub mod tls;
pub mod wire;

pub use app::Application;
pub use settings::Settings;
