//! The plain-HTTP port for orchestrators and monitoring: `/healthz` (alive),
//! `/readyz` (keys loaded), `/metrics` (Prometheus).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::authz::Authorizer;
use crate::health::Readiness;

#[derive(Clone)]
struct Probes {
    readiness: Readiness,
    authorizer: Arc<Authorizer>,
}

pub fn router(readiness: Readiness, authorizer: Arc<Authorizer>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(Probes { readiness, authorizer })
}

async fn readyz(State(probes): State<Probes>) -> (StatusCode, &'static str) {
    if probes.readiness.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready: waiting for issuer keys\n")
    }
}

/// Prometheus text 0.0.4, or OpenMetrics for a scraper that asks for it.
async fn metrics(State(probes): State<Probes>, headers: HeaderMap) -> impl IntoResponse {
    let accept = headers.get(header::ACCEPT).and_then(|value| value.to_str().ok());
    let state = probes.authorizer.policy().metrics_state(probes.readiness.is_ready());
    let (content_type, body) = probes.authorizer.metrics().render(accept, state);
    ([(header::CONTENT_TYPE, content_type)], body)
}
