//! The floor of the load tool (scripts/load.py): the cheapest ext_authz server a
//! team could write with the same stack, so portcullis' cost reads as a ratio to
//! "doing nothing" measured in the same run. It decodes every CheckRequest the
//! naive way (prost turns Envoy's whole header map into owned strings) and
//! answers OK; no token, no policy, no metrics.
//!
//! An example rather than a `[[bin]]`: `cargo build --release --example floor`
//! builds it, and the shipped binary and its dependencies stay as they are.
//! It listens with portcullis' HTTP/2 settings (TCP_NODELAY, 1 MiB windows,
//! 1024 streams), so the two differ only in what they do per Check.
//!
//! Usage: `floor ADDR` (a loopback address, e.g. 127.0.0.1:50161). It prints
//! `floor listening on ADDR` once the port is bound and serves until killed.

use std::net::SocketAddr;

use envoy_types::pb::envoy::service::auth::v3::authorization_server::{Authorization, AuthorizationServer};
use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse};
use envoy_types::pb::google::rpc::Status;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response};

/// Answers every Check with OK, after prost has decoded the whole request.
struct Floor;

#[tonic::async_trait]
impl Authorization for Floor {
    async fn check(&self, request: Request<CheckRequest>) -> Result<Response<CheckResponse>, tonic::Status> {
        // The decoded message is dropped here: its cost (one String per header) is the floor's work.
        drop(request.into_inner());
        Ok(Response::new(CheckResponse { status: Some(Status::default()), ..Default::default() }))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr: SocketAddr = std::env::args().nth(1).ok_or("usage: floor ADDR")?.parse()?;
    if !addr.ip().is_loopback() {
        return Err("the floor listens on loopback only".into());
    }
    let listener = TcpListener::bind(addr).await?;
    println!("floor listening on {}", listener.local_addr()?);
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    tonic::transport::Server::builder()
        .max_concurrent_streams(1024)
        .initial_connection_window_size(1024 * 1024)
        .initial_stream_window_size(1024 * 1024)
        .add_service(AuthorizationServer::new(Floor))
        .serve_with_incoming(incoming)
        .await?;
    Ok(())
}
