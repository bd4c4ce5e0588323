//! A real OIDC issuer on loopback (discovery and JWKS over HTTP, or over HTTPS
//! with a certificate from a CA nobody trusts) that the tests can make
//! misbehave on command: go down, answer slowly or never, publish any
//! document, send garbage, a body over the size limit or a redirect loop,
//! change its cache headers, rotate keys; it counts every request. The shipped
//! `portcullis dev` issuer has none of these controls.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use portcullis::dev::SigningKey;
use portcullis::token::Clock;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};

/// How the JWKS endpoint misbehaves (discovery keeps answering).
#[derive(Debug, Clone)]
pub enum Fault {
    /// Accepts the request and never answers.
    Hang,
    /// 200 with this body as `application/json`.
    Body(String),
    /// 200 with a JSON body just over the 1 MiB limit: announced by
    /// Content-Length, or streamed in chunks without one.
    Huge { chunked: bool },
    /// 302 to itself, forever.
    RedirectLoop,
    /// 302 to this URL.
    RedirectTo(String),
}

/// One byte more than portcullis accepts.
const HUGE_BYTES: usize = 1024 * 1024 + 1;

struct IssuerState {
    issuer: String,
    /// Where discovery and the JWKS are served (the issuer without its path).
    base: String,
    jwks: RwLock<Value>,
    cache_control: RwLock<Option<String>>,
    up: AtomicBool,
    fault: RwLock<Option<Fault>>,
    /// Milliseconds every JWKS answer waits.
    jwks_delay_ms: AtomicU64,
    jwks_fetches: AtomicU64,
    /// Every request to the JWKS URL, whatever was answered.
    jwks_requests: AtomicU64,
    discovery_fetches: AtomicU64,
}

/// A running loopback issuer. Stops when dropped.
pub struct DevIssuer {
    pub addr: SocketAddr,
    state: Arc<IssuerState>,
    task: tokio::task::JoinHandle<()>,
}

impl DevIssuer {
    /// Serves discovery and a JWKS with `keys` on 127.0.0.1 (random port).
    pub async fn start(keys: &[&SigningKey]) -> std::io::Result<Self> {
        Self::start_at(keys, "").await
    }

    /// Like [`DevIssuer::start`], with `iss` = `http://127.0.0.1:PORT{path}`, as
    /// Auth0's trailing slash (`path` "/"); discovery stays at the root.
    pub async fn start_at(keys: &[&SigningKey], path: &str) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (state, app) = app(format!("http://{addr}"), path, keys);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(DevIssuer { addr, state, task })
    }

    /// The same issuer at `https://127.0.0.1:PORT`, with a certificate (for
    /// 127.0.0.1 and localhost) signed by a CA generated now, which no client trusts.
    pub async fn start_untrusted_tls(keys: &[&SigningKey]) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (state, app) = app(format!("https://{addr}"), "", keys);
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(untrusted_server_config()));
        let task = tokio::spawn(async move {
            let _ = axum::serve(TlsListener { tcp: listener, acceptor }, app).await;
        });
        Ok(DevIssuer { addr, state, task })
    }

    /// The `iss` value (also the discovery base URL).
    pub fn issuer(&self) -> &str {
        &self.state.issuer
    }

    /// `http://127.0.0.1:PORT`: where discovery and the JWKS are served.
    pub fn base(&self) -> &str {
        &self.state.base
    }

    pub fn jwks_uri(&self) -> String {
        format!("{}/.well-known/jwks.json", self.state.base)
    }

    /// Replaces the published keys (rotation).
    pub fn set_keys(&self, keys: &[&SigningKey]) {
        *self.state.jwks.write().unwrap() = jwks(keys);
    }

    /// Publishes an arbitrary JWKS body (for malformed-document tests).
    pub fn set_jwks_document(&self, document: Value) {
        *self.state.jwks.write().unwrap() = document;
    }

    pub fn set_cache_control(&self, value: Option<&str>) {
        *self.state.cache_control.write().unwrap() = value.map(str::to_string);
    }

    /// While down, every endpoint answers 503.
    pub fn set_up(&self, up: bool) {
        self.state.up.store(up, Ordering::SeqCst);
    }

    /// Makes the JWKS endpoint misbehave (`None`: behave again).
    pub fn set_fault(&self, fault: Option<Fault>) {
        *self.state.fault.write().unwrap() = fault;
    }

    /// Requests to the JWKS URL, answered or not (down, faults included).
    pub fn jwks_requests(&self) -> u64 {
        self.state.jwks_requests.load(Ordering::SeqCst)
    }

    /// Every JWKS answer from now on waits this long (a slow IdP).
    pub fn set_jwks_delay(&self, delay: Duration) {
        self.state.jwks_delay_ms.store(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX), Ordering::SeqCst);
    }

    /// JWKS requests received (counted on arrival, before any delay).
    pub fn jwks_fetches(&self) -> u64 {
        self.state.jwks_fetches.load(Ordering::SeqCst)
    }

    pub fn discovery_fetches(&self) -> u64 {
        self.state.discovery_fetches.load(Ordering::SeqCst)
    }

    /// Standard claims for a token of this issuer: `sub`, `aud`, and a lifetime
    /// in seconds relative to now (negative = already expired).
    pub fn claims(&self, sub: &str, aud: &str, lifetime: i64) -> Value {
        let now = Clock::system().now() as i64;
        json!({ "iss": self.issuer(), "sub": sub, "aud": aud, "iat": now, "exp": now + lifetime })
    }
}

impl Drop for DevIssuer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn app(base: String, path: &str, keys: &[&SigningKey]) -> (Arc<IssuerState>, Router) {
    let state = Arc::new(IssuerState {
        issuer: format!("{base}{path}"),
        base,
        jwks: RwLock::new(jwks(keys)),
        cache_control: RwLock::new(None),
        up: AtomicBool::new(true),
        fault: RwLock::new(None),
        jwks_delay_ms: AtomicU64::new(0),
        jwks_fetches: AtomicU64::new(0),
        jwks_requests: AtomicU64::new(0),
        discovery_fetches: AtomicU64::new(0),
    });
    let app = Router::new()
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/.well-known/jwks.json", get(serve_jwks))
        // Kinde's JWKS path, for configs that name it.
        .route("/.well-known/jwks", get(serve_jwks))
        .with_state(Arc::clone(&state));
    (state, app)
}

/// A server certificate for `localhost` and 127.0.0.1, signed by a fresh CA.
fn untrusted_server_config() -> rustls::ServerConfig {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "an unknown test CA");
    let ca = Issuer::new(ca, KeyPair::generate().unwrap());
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, "localhost");
    let cert = params.signed_by(&key, &ca).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], key)
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config
}

/// TCP connections that become HTTP once the TLS handshake is done; a client
/// that refuses the certificate ends its connection here.
struct TlsListener {
    tcp: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else { continue };
            let handshake = tokio::time::timeout(Duration::from_secs(5), self.acceptor.accept(tcp));
            if let Ok(Ok(stream)) = handshake.await {
                return (stream, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

fn jwks(keys: &[&SigningKey]) -> Value {
    json!({ "keys": keys.iter().map(|key| &key.jwk).collect::<Vec<_>>() })
}

/// An unsigned token with the given header and claims (for `alg: none` tests).
pub fn unsigned_token(header: &Value, claims: &Value) -> String {
    let part = |value: &Value| URL_SAFE_NO_PAD.encode(value.to_string());
    format!("{}.{}.", part(header), part(claims))
}

async fn discovery(State(state): State<Arc<IssuerState>>) -> Response {
    if !state.up.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    state.discovery_fetches.fetch_add(1, Ordering::SeqCst);
    axum::Json(json!({"issuer": state.issuer, "jwks_uri": format!("{}/.well-known/jwks.json", state.base)}))
        .into_response()
}

async fn serve_jwks(State(state): State<Arc<IssuerState>>) -> Response {
    state.jwks_requests.fetch_add(1, Ordering::SeqCst);
    if !state.up.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let fault = state.fault.read().unwrap().clone();
    if let Some(fault) = fault {
        return misbehave(fault).await;
    }
    state.jwks_fetches.fetch_add(1, Ordering::SeqCst);
    let delay = state.jwks_delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let body = state.jwks.read().unwrap().clone();
    let mut headers = HeaderMap::new();
    if let Some(value) = state.cache_control.read().unwrap().as_deref()
        && let Ok(value) = HeaderValue::from_str(value)
    {
        headers.insert(header::CACHE_CONTROL, value);
    }
    (headers, axum::Json(body)).into_response()
}

async fn misbehave(fault: Fault) -> Response {
    let json = [(header::CONTENT_TYPE, "application/json")];
    match fault {
        Fault::Hang => std::future::pending::<Response>().await,
        Fault::Body(body) => (json, body).into_response(),
        Fault::Huge { chunked: false } => (json, huge_document()).into_response(),
        Fault::Huge { chunked: true } => {
            let chunks: Vec<Result<Bytes, std::convert::Infallible>> =
                huge_document().chunks(64 * 1024).map(|chunk| Ok(Bytes::copy_from_slice(chunk))).collect();
            (json, Body::from_stream(tokio_stream::iter(chunks))).into_response()
        }
        Fault::RedirectLoop => redirect("/.well-known/jwks.json"),
        Fault::RedirectTo(url) => redirect(&url),
    }
}

/// A JWKS-shaped document of [`HUGE_BYTES`]: `{"keys":[],"pad":"xxx..."}`.
fn huge_document() -> Vec<u8> {
    let frame = br#"{"keys":[],"pad":""}"#.len();
    format!(r#"{{"keys":[],"pad":"{}"}}"#, "x".repeat(HUGE_BYTES - frame)).into_bytes()
}

fn redirect(location: &str) -> Response {
    (StatusCode::FOUND, [(header::LOCATION, location.to_string())]).into_response()
}
