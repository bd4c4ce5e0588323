//! gRPC server reflection, so grpcurl and ghz work without .proto files.

use tonic_reflection::server::v1::{ServerReflection, ServerReflectionServer};

/// Descriptor set of the Envoy ext_authz protos (built by build.rs from proto/vendor).
pub const AUTHZ_DESCRIPTOR: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/authz_descriptor.bin"));

/// Descriptor set of portcullis' own Admin API.
pub const ADMIN_DESCRIPTOR: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/admin_descriptor.bin"));

/// Reflection for `portcullis.admin.v1.Admin` (and health), on the admin port.
pub fn admin_reflection() -> ServerReflectionServer<impl ServerReflection> {
    reflection_for(ADMIN_DESCRIPTOR)
}

/// Reflection for `envoy.service.auth.v3.Authorization` (and health).
pub fn authz_reflection() -> ServerReflectionServer<impl ServerReflection> {
    reflection_for(AUTHZ_DESCRIPTOR)
}

/// One service's descriptors plus grpc.health.v1, which every port serves.
fn reflection_for(descriptor: &'static [u8]) -> ServerReflectionServer<impl ServerReflection> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(descriptor)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .expect("descriptor sets compiled by build.rs are valid")
}
