//! framewatch wire types: generated protobuf messages and gRPC stubs for `framewatch.v1`. No logic lives here.

#[allow(missing_debug_implementations, clippy::all)]
pub mod v1 {
    tonic::include_proto!("framewatch.v1");
}

/// Encoded `FileDescriptorSet` of every framewatch proto, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/framewatch_descriptor.bin"));
