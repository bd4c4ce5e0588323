//! The HTTP authorization listener (`listen.http_authz`): one port for every
//! HTTP face (Envoy's HTTP ext_authz, nginx / Traefik / Caddy forward auth),
//! HTTP/1.1 and h2c (cleartext HTTP/2, told apart by the connection preface),
//! or TLS with `listen.tls` offering h2 and http/1.1.
//!
//! The same intake spirit as the gRPC port: request heads are bounded in count,
//! size and arrival time by hyper (at twice the configured limits, so that the
//! request view's own 431 answers, and counts, the usual oversized request);
//! HTTP/2 streams per connection and pending resets are bounded; decisions go
//! through the same admission gate. Each face's routes come from
//! the router the faces build (`http_routes` in src/face/mod.rs); every request carries its connection's [`Peer`].

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_stream::StreamExt;
use tower::Service;

use crate::config::LimitsConfig;
use crate::shutdown::Shutdown;
use crate::tls::{Alpn, ReloadingTls};

/// The address of the peer that sent a request (the proxy), for the faces that trust proxies.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// How long a request's head may take to arrive (the gRPC port's arrival bound).
pub const HEAD_TIMEOUT: Duration = crate::intake::REQUEST_ARRIVAL_TIMEOUT;

/// How long open connections get to finish their requests after a shutdown.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Concurrent HTTP/2 streams per connection (as on the gRPC ports).
const MAX_STREAMS: u32 = 1024;

/// Serves `router` on `listener` until `shutdown`, then drains within [`DRAIN_TIMEOUT`].
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<ReloadingTls>>,
    router: Router,
    limits: &LimitsConfig,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    let builder = connection_builder(limits);
    let graceful = GracefulShutdown::new();
    match tls {
        None => loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = shutdown.wait() => break,
            };
            let Ok((tcp, peer)) = accepted else {
                // Out of file descriptors and the like: do not spin.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let _ = tcp.set_nodelay(true);
            connect(&builder, &graceful, tcp, peer, router.clone());
        },
        Some(tls) => {
            let mut incoming = tls.incoming_with(listener, Alpn::Http);
            loop {
                let accepted = tokio::select! {
                    accepted = incoming.next() => accepted,
                    () = shutdown.wait() => break,
                };
                match accepted {
                    Some(Ok(stream)) => {
                        let Ok(peer) = stream.get_ref().0.peer_addr() else { continue };
                        connect(&builder, &graceful, stream, peer, router.clone());
                    }
                    Some(Err(_)) => continue,
                    None => break,
                }
            }
        }
    }
    // Idle keep-alive connections close now; requests in progress get their answer.
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown()).await;
    Ok(())
}

/// HTTP/1.1 and HTTP/2 with bounded heads (see the module docs).
fn connection_builder(limits: &LimitsConfig) -> Builder<TokioExecutor> {
    let head_bytes = limits.max_header_bytes.saturating_mul(2).saturating_add(16 * 1024);
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .max_headers(limits.max_headers.saturating_mul(2).max(100))
        .max_buf_size(head_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_STREAMS)
        .max_header_list_size(u32::try_from(head_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10))
        .max_pending_accept_reset_streams(64);
    builder
}

/// Serves one connection in its own task, every request tagged with `peer`.
fn connect<IO>(builder: &Builder<TokioExecutor>, graceful: &GracefulShutdown, io: IO, peer: SocketAddr, router: Router)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(Peer(peer));
        let mut router = router.clone();
        async move { Ok::<_, Infallible>(router.call(request).await.unwrap_or_else(|never| match never {})) }
    });
    let connection = graceful.watch(builder.serve_connection(TokioIo::new(io), service).into_owned());
    tokio::spawn(async move {
        let _ = connection.await;
    });
}
