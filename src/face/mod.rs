//! The faces: the wire formats portcullis answers in. Each face turns its wire
//! request into the neutral request view ([`HttpRequest`]), asks the pipeline
//! ([`Authorizer::decide_for`]) and renders the [`Decision`] back in its own
//! conventions. The pipeline knows no wire format; a face knows no policy
//! beyond its own settings (`faces:` in the config).
//!
//! One file per face, named after what calls it:
//! - [`ext_authz_grpc`]: Envoy's gRPC ext_authz (`envoy.service.auth.v3.Authorization/Check`), on `listen.authz`;
//! - [`ext_authz_http`]: Envoy's HTTP ext_authz (`http_service`), on `listen.http_authz`;
//! - [`forward_auth`]: nginx `auth_request`, Traefik `forwardAuth`, Caddy `forward_auth`, on `listen.http_authz`.
//!
//! The HTTP faces share one listener ([`crate::http_authz`]); each mounts its
//! own routes in [`http_routes`].

use std::sync::Arc;

use axum::Router;
use axum::http::header::{CONTENT_TYPE, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use ipnet::IpNet;

use crate::authz::Authorizer;
use crate::config::{FacesConfig, LimitsConfig, Problems};
use crate::decision::{Allowed, Denied};
use crate::request::{HttpRequest, RequestProblem};

#[cfg(doc)]
use crate::decision::Decision;

pub mod ext_authz_grpc;
pub mod ext_authz_http;
pub mod forward_auth;

/// The face a request came through: the `face` label of the checks metrics,
/// the decision log's `face` field and the trace span's `portcullis.face`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Face {
    /// Envoy's gRPC ext_authz (`grpc_service`).
    ExtAuthzGrpc,
    /// Envoy's HTTP ext_authz (`http_service`).
    ExtAuthzHttp,
    /// nginx `auth_request`, Traefik `forwardAuth`, Caddy `forward_auth`.
    ForwardAuth,
    /// Hasura's auth webhook (`HASURA_GRAPHQL_AUTH_HOOK`).
    HasuraWebhook,
    /// Token introspection for services.
    Introspect,
}

impl Face {
    /// The name in metrics, logs and traces.
    pub fn label(self) -> &'static str {
        match self {
            Face::ExtAuthzGrpc => "ext_authz_grpc",
            Face::ExtAuthzHttp => "ext_authz_http",
            Face::ForwardAuth => "forward_auth",
            Face::HasuraWebhook => "hasura_webhook",
            Face::Introspect => "introspect",
        }
    }
}

/// Every route of the HTTP authorization listener: each face mounts its own.
/// Fixed paths first; Envoy's HTTP ext_authz answers under its `path_prefix`
/// (read per request, so a reload changes it) as the fallback.
pub fn http_routes(authorizer: Arc<Authorizer>) -> Router {
    Router::new().merge(forward_auth::routes(Arc::clone(&authorizer))).merge(ext_authz_http::routes(authorizer))
}

/// First path segments the fixed-path faces use (a `path_prefix` may not start with one).
pub const RESERVED_SEGMENTS: [&str; 3] = [forward_auth::SEGMENT, "hasura", "introspect"];

/// The faces' settings, compiled from `faces:`; they apply on reload.
#[derive(Debug, Clone)]
pub struct FaceSettings {
    /// Envoy's `http_service.path_prefix`.
    pub path_prefix: String,
    /// Peers whose forwarded headers are believed.
    pub trusted_proxies: Vec<IpNet>,
}

impl FaceSettings {
    pub fn compile(config: &FacesConfig, problems: &mut Problems) -> FaceSettings {
        let prefix = &config.ext_authz_http.path_prefix;
        if let Err(message) = check_path_prefix(prefix) {
            problems.push("faces.ext_authz_http.path_prefix", message);
        }
        let trusted_proxies = config
            .forward_auth
            .trusted_proxies
            .iter()
            .enumerate()
            .filter_map(|(index, text)| match parse_network(text) {
                Some(network) => Some(network),
                None => {
                    let path = format!("faces.forward_auth.trusted_proxies[{index}]");
                    problems.push(path, "expected an address or a CIDR block (10.0.0.0/8, ::1/128)");
                    None
                }
            })
            .collect();
        FaceSettings { path_prefix: prefix.clone(), trusted_proxies }
    }
}

impl Default for FaceSettings {
    fn default() -> Self {
        FaceSettings::compile(&FacesConfig::default(), &mut Problems::default())
    }
}

/// An address is its own /32 (or /128).
fn parse_network(text: &str) -> Option<IpNet> {
    let text = text.trim();
    text.parse::<IpNet>().ok().or_else(|| text.parse::<std::net::IpAddr>().ok().map(IpNet::from))
}

/// `/segment[/segment...]` of unreserved characters, no dot-segments, no
/// trailing `/`, and not a path another face answers on.
fn check_path_prefix(prefix: &str) -> Result<(), String> {
    let Some(rest) = prefix.strip_prefix('/') else {
        return Err("must start with `/` (e.g. /envoy)".into());
    };
    let segment_ok = |segment: &str| {
        !segment.is_empty()
            && segment != "."
            && segment != ".."
            && segment.bytes().all(|byte| byte.is_ascii_alphanumeric() || b"-._~".contains(&byte))
    };
    if !rest.split('/').all(segment_ok) {
        return Err("must be `/` followed by plain path segments (letters, digits, `-._~`), no trailing `/`".into());
    }
    let first = rest.split('/').next().unwrap_or_default();
    if RESERVED_SEGMENTS.contains(&first) {
        return Err(format!("/{first} is where another face answers; choose another prefix"));
    }
    Ok(())
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
/// A value HTTP cannot carry (a control character from a claim) fails closed: 500.
#[allow(clippy::result_large_err, reason = "the Err is the finished 500, built once on a rare path and returned as is")]
pub fn allow_response(allowed: &Allowed) -> Result<HeaderMap, Response> {
    let mut headers = HeaderMap::with_capacity(allowed.set_headers.len() + 1);
    for (name, value) in &allowed.set_headers {
        let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_bytes(value.as_bytes()))
        else {
            tracing::warn!(route = %allowed.route, "an allow's header cannot be sent over HTTP: refused");
            return Err((StatusCode::INTERNAL_SERVER_ERROR, "portcullis: a header value cannot be sent over HTTP\n")
                .into_response());
        };
        headers.insert(name, value);
    }
    Ok(headers)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_prefixes_are_plain_paths_away_from_other_faces() {
        for good in ["/envoy", "/authz/envoy", "/a-b_c.d~"] {
            assert_eq!(check_path_prefix(good), Ok(()), "{good}");
        }
        for bad in ["", "envoy", "/", "/envoy/", "/a//b", "/a/../b", "/a b", "/forward-auth", "/hasura/x", "/%65"] {
            assert!(check_path_prefix(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn trusted_proxies_are_cidr_blocks_or_addresses() {
        assert_eq!(parse_network("10.0.0.0/8"), Some("10.0.0.0/8".parse().unwrap()));
        assert_eq!(parse_network("192.0.2.7"), Some("192.0.2.7/32".parse().unwrap()));
        assert_eq!(parse_network("::1"), Some("::1/128".parse().unwrap()));
        assert_eq!(parse_network("10.0.0.0/33"), None);
        assert_eq!(parse_network("localhost"), None);
    }
}
