//! The gRPC services, one module each. Handlers parse (`convert`), run a command through
//! `Core`, and map errors through `error`; they hold no domain rules.

pub mod admin;
pub mod audit;
pub mod auth;
mod auth_admin;
pub mod identification;
pub mod me;
pub mod projection;
mod refresh;
pub mod status_tier;
pub mod tenant;
pub mod user;
pub mod wallet;
