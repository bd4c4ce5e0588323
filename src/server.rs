//! Wires the pieces into running listeners: the authz gRPC port (Check +
//! health), the admin port (Admin + health + reflection), the HTTP port
//! (/healthz, /readyz), the HTTP authorization port when configured (the HTTP
//! faces), key refreshers, readiness, and reloads (admin and `--watch`; the
//! binary adds SIGHUP).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::service::auth::v3::authorization_server::AuthorizationServer;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic::codegen::{Body, Bytes, Service, StdError, http};
use tonic::service::Routes;
use tonic::transport::server::{Router, TcpIncoming};
use tonic_health::ServingStatus;
use tonic_health::server::{HealthReporter, HealthService};

use crate::admin::AdminService;
use crate::admin::auth::AdminAuth;
use crate::authz::Authorizer;
use crate::decision_log::DecisionLog;
use crate::face::ext_authz_grpc::AuthzService;
use crate::health::{AUTHZ_SERVICE, Readiness};
use crate::intake::{self, Bounds, IntakeLayer};
use crate::observe::Observer;
use crate::policy::Policy;
use crate::proto::admin::v1::admin_server::AdminServer;
use crate::reflection;
use crate::reload::Reloader;
use crate::shutdown::Shutdown;
use crate::tls::ReloadingTls;
use crate::trace::CheckTracing;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind { what: &'static str, addr: SocketAddr, source: std::io::Error },
    #[error("gRPC server failed: {0}")]
    Grpc(#[from] tonic::transport::Error),
    #[error("HTTP server failed: {0}")]
    Http(std::io::Error),
    #[error("cannot open decision_log.to {to:?}: {source}")]
    DecisionLog { to: String, source: std::io::Error },
    #[error("a policy compiled without its secrets cannot serve")]
    WithoutSecrets,
}

/// How this instance was started.
#[derive(Default)]
pub struct ServeOptions {
    /// gRPC reflection for the Envoy protos on the authz port, so grpcurl and
    /// ghz need no .proto files (the admin port always has reflection).
    pub reflection: bool,
    /// The file `ReloadPolicy` and SIGHUP re-read; `None` disables reloads.
    pub config_path: Option<PathBuf>,
    /// Reload when the file changes.
    pub watch: bool,
    /// A span per Check, once the binary has installed the OpenTelemetry pipeline.
    pub tracing: Option<CheckTracing>,
    /// How long a request may take to arrive; `None` is [`intake::REQUEST_ARRIVAL_TIMEOUT`]
    /// (tests set it low rather than wait).
    pub arrival_timeout: Option<Duration>,
}

/// A started service. Dropping it does not stop it; call [`Running::stop`] or trigger the shutdown.
pub struct Running {
    pub authz_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub http_addr: SocketAddr,
    /// The HTTP authorization port (`listen.http_authz`), when configured.
    pub http_authz_addr: Option<SocketAddr>,
    pub authorizer: Arc<Authorizer>,
    pub reloader: Arc<Reloader>,
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

/// Starts every listener. The service stops when `shutdown` resolves (or
/// [`Running::stop`] is called): the binary passes its signal handling, tests
/// pass whatever suits them; the library installs no signal handler.
pub async fn start(
    policy: Policy,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<Running, ServeError> {
    // Its secret headers would carry stand-ins: `--no-secrets` and policy tests only decide offline.
    if !policy.has_secrets() {
        return Err(ServeError::WithoutSecrets);
    }
    let keys_rx = policy.runtime.changed.subscribe();
    let listen = policy.listen.clone();
    let open_admin = policy.admin_token.is_none();
    // Read once: tonic's decoder is built with it (a reload warns when it would change).
    let message_limit = intake::check_message_limit(&policy.limits);
    let bounds = Bounds {
        arrival: options.arrival_timeout.unwrap_or(intake::REQUEST_ARRIVAL_TIMEOUT),
        connection_bytes: intake::connection_budget(message_limit),
    };
    let tls = policy.tls.clone();
    if let Some(tls) = &tls {
        tls.watch();
    }
    let decision_log = match &policy.decision_log {
        Some(config) => Some(
            DecisionLog::open(config, policy.runtime.metrics.decision_log.clone())
                .await
                .map_err(|source| ServeError::DecisionLog { to: config.to.clone(), source })?,
        ),
        None => None,
    };
    policy.connect_state();
    policy.start();
    let observer = Observer::new(Arc::clone(&policy.runtime.metrics), decision_log, options.tracing.clone());
    let authorizer = Arc::new(Authorizer::with_observer(policy, observer));
    let reloader = Arc::new(Reloader::new(options.config_path.clone(), Arc::clone(&authorizer)));

    let (reporter, health_service) = tonic_health::server::health_reporter();
    // Not serving until the first keys arrive; the watcher flips it.
    for service in ["", AUTHZ_SERVICE] {
        reporter.set_service_status(service, ServingStatus::NotServing).await;
    }
    let readiness = Readiness::default();
    let watcher = readiness.spawn_watch(Arc::clone(&authorizer), vec![reporter.clone()], keys_rx);

    let authz_listener = bind("authz", listen.authz).await?;
    let admin_listener = bind("admin", listen.admin).await?;
    let http_listener = bind("http", listen.http).await?;
    let authz_addr = local_addr("authz", &authz_listener, listen.authz)?;
    let admin_addr = local_addr("admin", &admin_listener, listen.admin)?;
    let http_addr = local_addr("http", &http_listener, listen.http)?;
    let http_authz_listener = match listen.http_authz {
        Some(addr) => Some((bind("http_authz", addr).await?, addr)),
        None => None,
    };
    let http_authz_addr = match &http_authz_listener {
        Some((listener, addr)) => Some(local_addr("http_authz", listener, *addr)?),
        None => None,
    };
    match http_authz_addr {
        Some(http_authz) => tracing::info!(
            authz = %authz_addr, admin = %admin_addr, http = %http_addr, http_authz = %http_authz, "portcullis listening"
        ),
        None => tracing::info!(authz = %authz_addr, admin = %admin_addr, http = %http_addr, "portcullis listening"),
    }
    if open_admin {
        // Only on loopback (the config requires a token anywhere else), client certificates or not.
        tracing::warn!(admin = %admin_addr, "admin API without a token: any process on this machine may use it");
    }

    let trigger = Shutdown::default();
    trigger.when(shutdown);
    let shutdown = trigger;
    announce_draining(&shutdown, reporter.clone());
    if options.watch {
        reloader.watch();
    }

    let (reflection_v1, reflection_v1alpha) = match options.reflection {
        true => {
            let (v1, v1alpha) = reflection::services(reflection::AUTHZ_DESCRIPTOR);
            (Some(v1), Some(v1alpha))
        }
        false => (None, None),
    };
    let intake_layer = IntakeLayer::new(bounds, authorizer.metrics().intake.clone());
    let authz = grpc_limits(tonic::transport::Server::builder())
        .layer(intake_layer.clone())
        .add_service(health_service)
        .add_service(
            AuthorizationServer::new(AuthzService::new(Arc::clone(&authorizer)))
                .max_decoding_message_size(message_limit),
        )
        .add_optional_service(reflection_v1)
        .add_optional_service(reflection_v1alpha);
    let authz = serve(authz, authz_listener, tls.as_ref(), &shutdown);
    let admin_auth = AdminAuth::new(reloader.admin_token(), authorizer.metrics().admin_unauthenticated());
    let (admin_reflection_v1, admin_reflection_v1alpha) = reflection::services(reflection::ADMIN_DESCRIPTOR);
    let admin = grpc_limits(tonic::transport::Server::builder())
        .layer(intake_layer)
        .add_service(tonic_health::pb::health_server::HealthServer::new(HealthService::from_health_reporter(reporter)))
        .add_service(AdminServer::with_interceptor(
            AdminService::new(Arc::clone(&authorizer), Arc::clone(&reloader)),
            move |request| admin_auth.check(request),
        ))
        .add_service(admin_reflection_v1)
        .add_service(admin_reflection_v1alpha);
    let admin = serve(admin, admin_listener, tls.as_ref(), &shutdown);
    let http = axum::serve(http_listener, crate::http::router(readiness.clone(), Arc::clone(&authorizer)))
        .with_graceful_shutdown(wait_for(&shutdown));
    let http_authz = http_authz_listener.map(|(listener, _)| {
        let routes = crate::face::http_routes(Arc::clone(&authorizer));
        let limits = authorizer.policy().limits.clone();
        let (tls, shutdown) = (tls.clone(), shutdown.clone());
        async move { crate::http_authz::serve(listener, tls, routes, &limits, shutdown).await }
    });
    let drained = Arc::clone(&authorizer);
    let tasks = tokio::spawn(async move {
        let http_authz = async {
            match http_authz {
                Some(serving) => serving.await.map_err(ServeError::Http),
                None => Ok(()),
            }
        };
        let (authz, admin, http, http_authz) =
            tokio::join!(authz, admin, async { http.await.map_err(ServeError::Http) }, http_authz);
        watcher.abort();
        if let Some(log) = drained.observer.decision_log() {
            log.flush().await;
        }
        authz?;
        admin?;
        http_authz?;
        http
    });
    Ok(Running { authz_addr, admin_addr, http_addr, http_authz_addr, authorizer, reloader, readiness, shutdown, tasks })
}

type Serving = std::pin::Pin<Box<dyn Future<Output = Result<(), tonic::transport::Error>> + Send>>;

/// Serves `router` on `listener`, over TLS when `tls` is set, until shutdown;
/// each connection is [`intake::metered`]. (The bounds are tonic's own for a layered router.)
fn serve<L, ResBody>(
    router: Router<L>,
    listener: TcpListener,
    tls: Option<&Arc<ReloadingTls>>,
    shutdown: &Shutdown,
) -> Serving
where
    L: tower::Layer<Routes> + Send + Sync + 'static,
    L::Service: Service<http::Request<tonic::body::Body>, Response = http::Response<ResBody>> + Clone + Send + 'static,
    <L::Service as Service<http::Request<tonic::body::Body>>>::Future: Send,
    <L::Service as Service<http::Request<tonic::body::Body>>>::Error: Into<StdError> + Send,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<StdError>,
{
    match tls {
        Some(tls) => {
            Box::pin(router.serve_with_incoming_shutdown(intake::metered(tls.incoming(listener)), wait_for(shutdown)))
        }
        None => Box::pin(router.serve_with_incoming_shutdown(
            intake::metered(TcpIncoming::from(listener).with_nodelay(Some(true)).with_keepalive(Some(TCP_KEEPALIVE))),
            wait_for(shutdown),
        )),
    }
}

/// Idle TCP connections are probed after this long (a vanished Envoy is noticed).
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// Bytes a peer may send on one connection before portcullis has read them
/// (HTTP/2 flow control; hyper's default, stated). What was read but is not a
/// complete message yet is bounded by the connection budget (intake.rs).
const CONNECTION_WINDOW: u32 = 1024 * 1024;

/// The gRPC request headers of one stream (hyper's default, stated; Envoy sends a few hundred bytes).
const MAX_REQUEST_METADATA: u32 = 16 * 1024;

/// Concurrent streams per connection (Envoy queues beyond them under its own timeout).
const MAX_STREAMS: u32 = 1024;

/// HTTP/2 limits for both gRPC ports: streams per connection, flow-control
/// windows and request metadata bounded, dead peers found by keepalive
/// pings, and a connection that floods resets closed (hyper's rapid-reset guard).
fn grpc_limits(builder: tonic::transport::Server) -> tonic::transport::Server {
    builder
        .max_concurrent_streams(MAX_STREAMS)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .initial_stream_window_size(CONNECTION_WINDOW)
        .http2_max_header_list_size(MAX_REQUEST_METADATA)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .http2_max_pending_accept_reset_streams(Some(64))
}

fn wait_for(shutdown: &Shutdown) -> impl Future<Output = ()> + use<> {
    let shutdown = shutdown.clone();
    async move { shutdown.wait().await }
}

/// Health turns NOT_SERVING as soon as shutdown starts, so Envoy's health
/// checks move traffic away while in-flight checks drain.
fn announce_draining(shutdown: &Shutdown, reporter: HealthReporter) {
    let shutdown = shutdown.clone();
    tokio::spawn(async move {
        shutdown.wait().await;
        for service in ["", AUTHZ_SERVICE] {
            reporter.set_service_status(service, ServingStatus::NotServing).await;
        }
    });
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr).await.map_err(|source| ServeError::Bind { what, addr, source })
}

fn local_addr(what: &'static str, listener: &TcpListener, addr: SocketAddr) -> Result<SocketAddr, ServeError> {
    listener.local_addr().map_err(|source| ServeError::Bind { what, addr, source })
}
