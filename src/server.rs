//! Wires the pieces into running listeners: the authz gRPC port (Check +
//! health), the HTTP port (/healthz, /readyz), key refreshers and readiness.

use std::net::SocketAddr;
use std::sync::Arc;

use envoy_types::pb::envoy::service::auth::v3::authorization_server::AuthorizationServer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;

use crate::authz::{Authorizer, AuthzService};
use crate::config::Config;
use crate::health::{AUTHZ_SERVICE, Readiness};
use crate::keys::Fetcher;
use crate::policy::Policy;
use crate::shutdown::Shutdown;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind { what: &'static str, addr: SocketAddr, source: std::io::Error },
    #[error("gRPC server failed: {0}")]
    Grpc(#[from] tonic::transport::Error),
    #[error("HTTP server failed: {0}")]
    Http(std::io::Error),
}

/// Extra services some modes add to the authz port.
#[derive(Default)]
pub struct ServeOptions {
    /// gRPC reflection for the Envoy protos, so grpcurl and ghz need no .proto files.
    pub reflection: bool,
}

/// A started service. Dropping it does not stop it; call [`Running::stop`] or trigger the shutdown.
pub struct Running {
    pub authz_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub authorizer: Arc<Authorizer>,
    pub readiness: Readiness,
    pub shutdown: Shutdown,
    tasks: JoinHandle<Result<(), ServeError>>,
}

impl Running {
    /// Waits until the servers have drained after a shutdown trigger.
    pub async fn wait(self) -> Result<(), ServeError> {
        match self.tasks.await {
            Ok(result) => result,
            Err(join) => Err(ServeError::Http(std::io::Error::other(join))),
        }
    }

    pub async fn stop(self) -> Result<(), ServeError> {
        self.shutdown.trigger();
        self.wait().await
    }
}

pub async fn start(config: Config, options: ServeOptions) -> Result<Running, ServeError> {
    let (keys_changed, keys_rx) = watch::channel(0u64);
    let fetcher = Fetcher::new();
    let mut policy = Policy::new(&config, &fetcher, &keys_changed, 1);
    policy.start();
    let authorizer = Arc::new(Authorizer::new(policy));

    let (reporter, health_service) = tonic_health::server::health_reporter();
    // Not serving until the first keys arrive; the watcher flips it.
    reporter.set_service_status("", tonic_health::ServingStatus::NotServing).await;
    reporter.set_service_status(AUTHZ_SERVICE, tonic_health::ServingStatus::NotServing).await;
    let readiness = Readiness::default();
    let watcher = readiness.spawn_watch(Arc::clone(&authorizer), vec![reporter.clone()], keys_rx);

    let authz_listener = bind("authz", config.listen.authz).await?;
    let http_listener = bind("http", config.listen.http).await?;
    let authz_addr = local_addr("authz", &authz_listener, config.listen.authz)?;
    let http_addr = local_addr("http", &http_listener, config.listen.http)?;
    tracing::info!(authz = %authz_addr, http = %http_addr, "portcullis listening");

    let shutdown = Shutdown::default();
    announce_draining(&shutdown, reporter);
    let reflection = options.reflection.then(crate::reflection::authz_reflection);
    let grpc = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(AuthorizationServer::new(AuthzService::new(Arc::clone(&authorizer))))
        .add_optional_service(reflection)
        .serve_with_incoming_shutdown(TcpIncoming::from(authz_listener).with_nodelay(Some(true)), {
            let shutdown = shutdown.clone();
            async move { shutdown.wait().await }
        });
    let http = axum::serve(http_listener, crate::http::router(readiness.clone())).with_graceful_shutdown({
        let shutdown = shutdown.clone();
        async move { shutdown.wait().await }
    });
    let tasks = tokio::spawn(async move {
        let (grpc, http) = tokio::join!(grpc, async { http.await.map_err(ServeError::Http) });
        watcher.abort();
        grpc?;
        http
    });
    Ok(Running { authz_addr, http_addr, authorizer, readiness, shutdown, tasks })
}

/// Health turns NOT_SERVING as soon as shutdown starts, so Envoy's health
/// checks move traffic away while in-flight checks drain.
fn announce_draining(shutdown: &Shutdown, reporter: tonic_health::server::HealthReporter) {
    let shutdown = shutdown.clone();
    tokio::spawn(async move {
        shutdown.wait().await;
        for service in ["", AUTHZ_SERVICE] {
            reporter.set_service_status(service, tonic_health::ServingStatus::NotServing).await;
        }
    });
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr).await.map_err(|source| ServeError::Bind { what, addr, source })
}

fn local_addr(what: &'static str, listener: &TcpListener, addr: SocketAddr) -> Result<SocketAddr, ServeError> {
    listener.local_addr().map_err(|source| ServeError::Bind { what, addr, source })
}
