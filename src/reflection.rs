//! gRPC server reflection, so grpcurl and ghz work without .proto files. Both
//! protocol versions are served: grpcurl asks v1, ghz (v0.9x) only v1alpha.

use tonic_reflection::server::{v1, v1alpha};

/// Descriptor set of the Envoy ext_authz protos (built by build.rs from proto/vendor).
pub const AUTHZ_DESCRIPTOR: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/authz_descriptor.bin"));

/// Descriptor set of portcullis' own Admin API.
pub const ADMIN_DESCRIPTOR: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/admin_descriptor.bin"));

/// v1 and v1alpha reflection for one service's descriptors plus grpc.health.v1,
/// which every port serves.
pub fn services(
    descriptor: &'static [u8],
) -> (
    v1::ServerReflectionServer<impl v1::ServerReflection>,
    v1alpha::ServerReflectionServer<impl v1alpha::ServerReflection>,
) {
    let builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(descriptor)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let invalid = "descriptor sets compiled by build.rs are valid";
    (builder().build_v1().expect(invalid), builder().build_v1alpha().expect(invalid))
}
