//! Generated code for the `identity.v1` gRPC API, and nothing else. Other crates use these
//! types through this crate and never call `include_proto!` themselves.

#![allow(missing_docs, unreachable_pub, missing_debug_implementations)]
#![allow(clippy::all, clippy::pedantic)]

pub use prost;
pub use prost_types;
pub use tonic;

/// The `identity.v1` package.
pub mod v1 {
    tonic::include_proto!("identity.v1");
}

/// The encoded file descriptor set of every `identity.v1` file, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/identity_descriptor.bin"));
