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

/// Every method in an encoded descriptor set, as `package.Service/Method` (the gRPC path
/// without its leading `/`). A set that does not decode has none.
pub fn method_names(descriptor_set: &[u8]) -> Vec<String> {
    use prost::Message as _;
    let Ok(files) = prost_types::FileDescriptorSet::decode(descriptor_set) else {
        return Vec::new();
    };
    let mut names = Vec::new();
    for file in files.file {
        let package = file.package.unwrap_or_default();
        for service in file.service {
            let service_name = service.name.unwrap_or_default();
            names.extend(service.method.into_iter().map(|method| {
                format!(
                    "{package}.{service_name}/{}",
                    method.name.unwrap_or_default()
                )
            }));
        }
    }
    names
}
