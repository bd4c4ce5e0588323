//! Compiles portcullis' own protos and the descriptor sets served by gRPC
//! reflection. protox parses .proto files in pure Rust, so a fresh machine
//! needs no protoc; Envoy's Rust types come prebuilt from envoy-types.
use std::path::PathBuf;

use prost::Message;

const ADMIN: &str = "proto/portcullis/admin/v1/admin.proto";
const EXT_AUTHZ: &str = "envoy/service/auth/v3/external_auth.proto";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let out = PathBuf::from(std::env::var("OUT_DIR")?);

    let admin = protox::compile([ADMIN], ["proto"])?;
    std::fs::write(out.join("admin_descriptor.bin"), admin.encode_to_vec())?;
    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(admin)?;

    let authz = protox::compile([EXT_AUTHZ], ["proto/vendor"])?;
    std::fs::write(out.join("authz_descriptor.bin"), authz.encode_to_vec())?;
    Ok(())
}
