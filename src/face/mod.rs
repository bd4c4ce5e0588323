//! The faces: the wire formats portcullis answers in. Each face turns its wire
//! request into the neutral request view ([`HttpRequest`]), asks the pipeline
//! ([`Authorizer::decide_for`]) and renders the [`Decision`] back in its own
//! conventions. The pipeline knows no wire format; a face knows no policy
//! beyond its own settings (`faces:` in the config).
//!
//! One file per face, named after what calls it:
//! - [`ext_authz_grpc`]: Envoy's gRPC ext_authz (`envoy.service.auth.v3.Authorization/Check`), on `listen.authz`;
//! - [`ext_authz_http`]: Envoy's HTTP ext_authz (`http_service`), on `listen.http_authz`;
//! - [`forward_auth`]: nginx `auth_request`, Traefik `forwardAuth`, Caddy `forward_auth`, on `listen.http_authz`;
//! - [`hasura_webhook`]: Hasura's auth webhook (`auth_hooks:`), on `listen.http_authz`.
//!
//! The HTTP faces share one listener ([`crate::http_authz`]); each mounts its
//! own routes in [`http_routes`].

use std::sync::Arc;

use axum::Router;
use axum::http::header::{CONTENT_TYPE, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::authz::Authorizer;
use crate::config::LimitsConfig;
use crate::decision::{Allowed, Denied};
use crate::request::{HttpRequest, RequestProblem};

#[cfg(doc)]
use crate::decision::Decision;

pub mod ext_authz_grpc;
pub mod ext_authz_http;
pub mod forward_auth;
pub mod hasura_webhook;

pub use crate::policy::faces::{Face, FaceSettings, RESERVED_SEGMENTS};

/// Every route of the HTTP authorization listener: each face mounts its own.
/// Fixed paths first; Envoy's HTTP ext_authz answers under its `path_prefix`
/// (read per request, so a reload changes it) as the fallback.
pub fn http_routes(authorizer: Arc<Authorizer>) -> Router {
    Router::new()
        .merge(forward_auth::routes(Arc::clone(&authorizer)))
        .merge(hasura_webhook::routes(Arc::clone(&authorizer)))
        .merge(ext_authz_http::routes(authorizer))
}

/// The neutral view of a request an HTTP proxy described: `method`, the
/// original `target` (path and query), `authority` and the headers it passed,
/// read within `limits` (a larger one is not read further: 431).
pub fn view_of(method: &str, target: &str, authority: &str, headers: &HeaderMap, limits: &LimitsConfig) -> HttpRequest {
    if headers.len() > limits.max_headers {
        return HttpRequest::refused(RequestProblem::TooManyHeaders);
    }
    let bytes: usize = headers.iter().map(|(name, value)| name.as_str().len() + value.len()).sum();
    if bytes + target.len() > limits.max_header_bytes {
        return HttpRequest::refused(RequestProblem::HeadersTooLarge);
    }
    let mut request = HttpRequest::default();
    for (name, value) in headers {
        request.add_header(name.as_str(), &String::from_utf8_lossy(value.as_bytes()));
    }
    request.set_line(method, target, authority);
    request
}

/// An allow over HTTP: 200 with the headers to set upstream as response headers.
/// A value HTTP cannot carry (a control character from a claim) fails closed.
pub fn allow_response(allowed: &Allowed) -> Result<HeaderMap, Unsendable> {
    let mut headers = HeaderMap::with_capacity(allowed.set_headers.len() + 1);
    for (name, value) in &allowed.set_headers {
        let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_bytes(value.as_bytes()))
        else {
            tracing::warn!(route = %allowed.route, "an allow's header cannot be sent over HTTP: refused");
            return Err(Unsendable);
        };
        headers.insert(name, value);
    }
    Ok(headers)
}

/// An allow whose headers HTTP cannot carry: answered 500, which every proxy treats as a refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unsendable;

impl IntoResponse for Unsendable {
    fn into_response(self) -> Response {
        (StatusCode::INTERNAL_SERVER_ERROR, "portcullis: a header cannot be sent over HTTP\n").into_response()
    }
}

/// A deny over HTTP, with the same status, content type, challenge and body
/// as the gRPC face; never a 200 (over HTTP a 200 means allow): a deny a
/// backend renders with 200 (Hasura's `error_status: graphql`) keeps its body
/// and takes the reason's own status.
pub fn deny_response(denied: &Denied, status: u16) -> Response {
    let rendered = &denied.rendered;
    let mut response = (
        StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN),
        [(CONTENT_TYPE, HeaderValue::from_static(rendered.content_type))],
        rendered.body.clone(),
    )
        .into_response();
    if let Some(challenge) = rendered.challenge.as_deref().and_then(|value| HeaderValue::from_str(value).ok()) {
        response.headers_mut().insert(WWW_AUTHENTICATE, challenge);
    }
    response
}

/// The status a deny answers with over HTTP (see [`deny_response`]).
pub fn deny_status(denied: &Denied) -> u16 {
    match denied.rendered.http_status {
        200..=299 => denied.reason.http_status(),
        status => status,
    }
}
