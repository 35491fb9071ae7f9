//! Who a caller is, with nothing of gRPC: bearer tokens and the keys that sign them
//! (`token`), what each RPC needs and each admin type, role and key holds (`permission`),
//! the field scopes a token can list (`scope`), and the registry development starts with
//! (`registry`). The server's request gate (`identity-server` access/) is built on these;
//! `identity-admin` mints and rotates with them without linking the server.

#![forbid(unsafe_code)]

pub mod permission;
pub mod registry;
pub mod scope;
pub mod token;

pub use permission::{Permission, Permissions};
pub use token::{Claims, SigningKey, Verifier};
