//! A real OIDC issuer on loopback (discovery and JWKS over HTTP) that the tests
//! can make misbehave on command: go down, answer slowly, publish any document,
//! change its cache headers, rotate keys; it counts every request. The shipped
//! `portcullis dev` issuer has none of these controls.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use portcullis::dev::SigningKey;
use portcullis::token::Clock;
use serde_json::{Value, json};
use tokio::net::TcpListener;

struct IssuerState {
    issuer: String,
    jwks: RwLock<Value>,
    cache_control: RwLock<Option<String>>,
    up: AtomicBool,
    /// Milliseconds every JWKS answer waits.
    jwks_delay_ms: AtomicU64,
    jwks_fetches: AtomicU64,
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
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(IssuerState {
            issuer: format!("http://{addr}"),
            jwks: RwLock::new(jwks(keys)),
            cache_control: RwLock::new(None),
            up: AtomicBool::new(true),
            jwks_delay_ms: AtomicU64::new(0),
            jwks_fetches: AtomicU64::new(0),
            discovery_fetches: AtomicU64::new(0),
        });
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/.well-known/jwks.json", get(serve_jwks))
            .with_state(Arc::clone(&state));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(DevIssuer { addr, state, task })
    }

    /// The `iss` value (also the discovery base URL).
    pub fn issuer(&self) -> &str {
        &self.state.issuer
    }

    pub fn jwks_uri(&self) -> String {
        format!("{}/.well-known/jwks.json", self.state.issuer)
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
    axum::Json(json!({"issuer": state.issuer, "jwks_uri": format!("{}/.well-known/jwks.json", state.issuer)}))
        .into_response()
}

async fn serve_jwks(State(state): State<Arc<IssuerState>>) -> Response {
    if !state.up.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
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
